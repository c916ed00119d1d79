"""Our StyleGAN (2018) networks against NVIDIA's TensorFlow code: the same pickle, the same latents, the same pixels?

    python -m benchmarks.stylegan1_reference --official <NVlabs/stylegan checkout> --python <python with TF>
        [--res 32 128] [--write-fixture tests/fixtures]
For each resolution (32: up/down-sampling by separate ops; 128: NVIDIA's fused transposed/strided convolutions),
NVIDIA's code (benchmarks/stylegan1_official_side.py, an outside program run with their checkout on the path; TF 2
from PyPI with ../shared/notes/stylegan1.md's shims) builds G, D, Gs, moves every variable off its initial value,
pickles them and records its outputs. We load that pickle with our importer (nothing in it runs) and compare:
uint8 pictures at psi 0.7 and 1.0 with stored noise (what `Gs.run(..., randomize_noise=False,
output_transform=convert_images_to_uint8)` writes), float pictures, ws, a style-mixed synthesis, D's scores, and G
and D at lod 1.3. `--write-fixture` keeps NVIDIA's variables and outputs (not the pickle, which holds NVIDIA's source
text) for the CPU tests (tests/fixtures/README.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from stylegan.formats.checkpoint import build_discriminator, build_generator
from stylegan.formats.nvidia_pickle import load_nvidia_pickle
from stylegan.imagefiles import to_uint8

OFFICIAL_SIDE = Path(__file__).with_name("stylegan1_official_side.py")


@torch.no_grad()
def compare(pickle_path: Path, ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Differences between our networks loaded from `pickle_path` and NVIDIA's recorded outputs `ref`."""
    ckpt = load_nvidia_pickle(pickle_path)
    G, D = build_generator(ckpt, "G_ema", pickle_path).eval(), build_discriminator(ckpt, pickle_path).eval()
    z, ws = torch.from_numpy(ref["z"]), torch.from_numpy(ref["ws"])
    out = {"ws": float((G.mapping(z, None) - ws).abs().max())}
    for psi, key in ((0.7, "img_psi07_uint8"), (1.0, "img_psi10_uint8")):
        ours = to_uint8(G(z, None, truncation_psi=psi, noise_mode="const")).numpy().astype(int)
        diff = np.abs(ours - ref[key].astype(int))
        out[f"uint8 psi {psi:g}: max"], out[f"uint8 psi {psi:g}: share off by one"] = int(diff.max()), diff.mean()
    out["float psi 0.7"] = float((G(z, None, truncation_psi=0.7, noise_mode="const")
                                  - torch.from_numpy(ref["img_psi07"])).abs().max())
    mixed = ws.clone()
    mixed[:, 4:] = ws.flip(0)[:, 4:]
    out["style mixing"] = float((G.synthesis(mixed, noise_mode="const") - torch.from_numpy(ref["img_mixed"]))
                                .abs().max())
    out["D scores"] = float((D(torch.from_numpy(ref["d_input"])) - torch.from_numpy(ref["d_scores"])).abs().max())
    out["D on fakes"] = float((D(torch.from_numpy(ref["img_psi07"])) - torch.from_numpy(ref["d_scores_fake"]))
                              .abs().max())
    G.synthesis.lod.fill_(1.3)
    D.lod.fill_(1.3)
    out["G at lod 1.3"] = float((G(z, None, noise_mode="const") - torch.from_numpy(ref["img_lod13"])).abs().max())
    out["D at lod 1.3"] = float((D(torch.from_numpy(ref["d_input"])) - torch.from_numpy(ref["d_scores_lod13"]))
                                .abs().max())
    return out


def run_official(official: Path, python: str, res: int, dest: Path, count: int) -> Path:
    env = {**os.environ, "PYTHONPATH": str(official), "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([python, str(OFFICIAL_SIDE), "--dest", str(dest.with_suffix(".npz")), "--pickle",
                    str(dest.with_suffix(".pkl")), "--res", str(res), "--count", str(count)], cwd=official, env=env,
                   check=True, capture_output=True)
    return dest.with_suffix(".pkl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="NVlabs/stylegan checkout")
    parser.add_argument("--python", required=True, help="a Python with tensorflow (2.x, CPU) and numpy")
    parser.add_argument("--res", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--write-fixture", type=Path, help="folder for stylegan1_official_<res>.npz")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for res in args.res:
            base = Path(tmp) / f"stylegan1_official_{res}"
            pickle_path = run_official(args.official, args.python, res, base, count=4 if res <= 64 else 2)
            ref = dict(np.load(base.with_suffix(".npz")))
            print(f"{res}x{res} ({'fused' if res >= 128 else 'separate'} up/down-sampling): ours from NVIDIA's pickle "
                  "against NVIDIA's outputs")
            for key, value in compare(pickle_path, ref).items():
                print(f"  {key:<34} {value:.3g}")
            if args.write_fixture:
                dest = args.write_fixture / base.with_suffix(".npz").name
                np.savez_compressed(dest, **ref)
                print(f"  wrote {dest}")


if __name__ == "__main__":
    main()
