"""A runnable copy of NVIDIA's NVlabs/stylegan3, the outside program the comparisons with NVIDIA's code run.

    python -m benchmarks.official_checkout --git <NVlabs/stylegan3 clone>/.git --dest .ref/stylegan3

Exports the snapshot's HEAD into --dest, a folder git ignores (never part of this project: its licence is NVIDIA's
non-commercial one), and makes there the three local edits that torch 2.11 and newer need (CONTRIBUTING.md,
"Measuring against NVIDIA's code"):
  * `torch_utils/misc.py`: the sampler's base class takes no argument any more;
  * `torch_utils/custom_ops.py`: the built plugin is the module `cpp_extension.load` returns, since it can no longer
    be imported by name;
  * `shim/pkg_resources.py`: a stand-in for the `parse_version` that recent setuptools dropped; the harnesses put
    `shim/` on the official code's PYTHONPATH.
Each edit checks that it found what it expects, so a snapshot whose code moved gives a one-line error, not a copy
that fails later on the GPU.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import tarfile
from pathlib import Path

from jobs.cli import run
from stylegan.errors import UserError

# (file, pattern, replacement, times the pattern must match)
EDITS = [
    ("torch_utils/misc.py", r"super\(\)\.__init__\(dataset\)", "super().__init__()", 1),
    ("torch_utils/custom_ops.py", r"(?m)^(\s*)torch\.utils\.cpp_extension\.load\(",
     r"\1module = torch.utils.cpp_extension.load(", 2),
    ("torch_utils/custom_ops.py", r"(?m)^(\s*)module = importlib\.import_module\(module_name\)$",
     r"\1pass  # the module load() returned", 1),
]
SHIM = "from packaging.version import parse as parse_version\n"


def export(git_dir: Path, dest: Path) -> None:
    archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "--format=tar", "HEAD"],
                             capture_output=True)
    if archive.returncode != 0:
        raise UserError(f"{git_dir}: not a git directory with a HEAD ({archive.stderr.decode().strip()}); pass a "
                        "clone's .git folder or a bare copy of NVlabs/stylegan3")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")


def edit(dest: Path) -> None:
    for name, pattern, replacement, times in EDITS:
        path = dest / name
        if not path.is_file():
            raise UserError(f"{path}: missing: is --git a snapshot of NVlabs/stylegan3?")
        text, found = re.subn(pattern, replacement, path.read_text())
        if found != times:
            raise UserError(f"{path}: expected {times} match(es) of {pattern!r}, found {found}: the snapshot's code "
                            "moved; make the edit by hand (CONTRIBUTING.md)")
        path.write_text(text)
    (dest / "shim").mkdir(exist_ok=True)
    (dest / "shim" / "pkg_resources.py").write_text(SHIM)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--git", required=True, type=Path, help="the .git folder of a NVlabs/stylegan3 clone, or a "
                        "bare copy")
    parser.add_argument("--dest", required=True, type=Path, help="an empty or new folder that git ignores")
    return parser


def main(args: argparse.Namespace) -> None:
    if args.dest.exists() and any(args.dest.iterdir()):
        raise UserError(f"{args.dest}: not empty: remove it or name a new folder")
    args.dest.mkdir(parents=True, exist_ok=True)
    export(args.git, args.dest)
    edit(args.dest)
    print(f"wrote {args.dest}: NVlabs/stylegan3 with the three local edits; its PYTHONPATH needs {args.dest / 'shim'}")


if __name__ == "__main__":
    run(main, build_parser())
