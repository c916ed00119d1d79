"""Our export against NVIDIA's loader: does `stylegan convert --dest x.pkl` give NVIDIA's tools our networks?

    python -m benchmarks.export_reference --official <stylegan3 checkout> [--official <stylegan2-ada-pytorch>]
        [--device cuda] [--seeds 0-15] [--workdir DIR]
For each case (the textures preset's widths with fp16 layers and clamping; a conditional network in float32), random
weights moved off their initial values are saved as our checkpoint and exported with `python -m jobs.convert`.
NVIDIA's `legacy.load_network_pkl` then loads the export in an outside program (benchmarks/export_official_side.py,
run with each checkout on the path) and we compare G_ema's ws and images at psi 0.7 with stored noise and D's logits
with ours on the same inputs. On CUDA the comparison runs twice, as PyTorch runs by default (TF32 convolutions) and
with TF32 off on both sides, and NVIDIA's own gen_images.py (stylegan3) or generate.py (stylegan2-ada-pytorch) also
writes PNGs of the export, compared pixel by pixel with `python -m jobs.sample` on our checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylegan.formats.checkpoint import FORMAT, build_discriminator, build_generator, load_checkpoint, save_checkpoint
from stylegan.models.stylegan2 import Discriminator, Generator
from stylegan.seeds import parse_seeds

OFFICIAL_SIDE = Path(__file__).with_name("export_official_side.py")
ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "64x64, textures preset widths, fp16 top 4, clamp 256": (
        dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=64, channel_base=16384, channel_max=512,
             mapping_kwargs=dict(num_layers=2)),
        dict(c_dim=0, img_resolution=64, channel_base=16384, channel_max=512)),
    "32x32, 4 classes, float32": (
        dict(z_dim=64, c_dim=4, w_dim=64, img_resolution=32, channel_base=4096, channel_max=128,
             num_fp16_res=0, conv_clamp=None, mapping_kwargs=dict(num_layers=3)),
        dict(c_dim=4, img_resolution=32, channel_base=4096, channel_max=128, num_fp16_res=0, conv_clamp=None,
             epilogue_kwargs=dict(mbstd_group_size=2))),
}


@torch.no_grad()
def make_checkpoint(path: Path, G_kwargs: dict, D_kwargs: dict, seed: int = 0) -> Path:
    """Random networks, every tensor moved off its initial value (noise strengths and biases start at zero)."""
    torch.manual_seed(seed)
    nets = {"G": Generator(**G_kwargs), "D": Discriminator(**D_kwargs), "G_ema": Generator(**G_kwargs)}
    for net in nets.values():
        for name, t in net.state_dict().items():
            if not name.endswith("resample_filter"):
                t.add_(torch.randn_like(t) * 0.2)
    save_checkpoint(path, {"format": FORMAT, "G_kwargs": G_kwargs, "D_kwargs": D_kwargs,
                           **{k: v.state_dict() for k, v in nets.items()}})
    return path


def run(cmd: list[str], **kwargs) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def official_env(official: Path, shims: Path) -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(official), str(shims)]))


@torch.no_grad()
def compare_loaded(ckpt_path: Path, export: Path, official: Path, shims: Path, work: Path, device: str,
                   seeds: list[int], tf32: bool = True) -> dict[str, float]:
    """NVIDIA's loader on the export against our networks on the same inputs; `tf32=False` turns TF32 off on both
    sides (PyTorch allows it in convolutions by default, not in matrix products). On CUDA, also NVIDIA's images with
    their reference ops against their CUDA ops: the spread of NVIDIA's own two implementations."""
    torch.backends.cudnn.allow_tf32 = tf32
    ckpt = load_checkpoint(ckpt_path)
    G = build_generator(ckpt, "G_ema", ckpt_path).eval().to(device)
    D = build_discriminator(ckpt, ckpt_path).eval().to(device)
    z = np.concatenate([np.random.RandomState(s).randn(1, G.z_dim) for s in seeds]).astype(np.float32)
    c = np.eye(max(G.c_dim, 1), dtype=np.float32)[np.arange(len(seeds)) % max(G.c_dim, 1)]
    d_input = np.random.RandomState(1).randn(len(seeds), G.img_channels, G.img_resolution, G.img_resolution)
    inputs = dict(z=z, c=c, d_input=d_input.astype(np.float32))
    np.savez(work / "inputs.npz", **inputs)
    variants = {"theirs": []} | ({"theirs-reference-ops": ["--reference-ops"]} if device == "cuda" else {})
    for name, ops in variants.items():
        run([sys.executable, str(OFFICIAL_SIDE), "--network", str(export), "--inputs", str(work / "inputs.npz"),
             "--dest", str(work / f"{name}.npz"), "--device", device, *["--no-tf32"] * (not tf32), *ops],
            env=official_env(official, shims))
    theirs = dict(np.load(work / "theirs.npz"))
    t = {k: torch.from_numpy(v).to(device) for k, v in inputs.items()}
    cond = t["c"] if G.c_dim else None
    ws = G.mapping(t["z"], cond, truncation_psi=0.7)
    img = G.synthesis(ws, noise_mode="const").float().cpu().numpy()
    logits = D(t["d_input"], cond).float().cpu().numpy()
    kwargs = json.loads(bytes(theirs["G_ema_kwargs"]).decode())
    figures = {"ws": float(np.abs(ws.cpu().numpy() - theirs["ws"]).max()),
               "image (float, range [-1, 1])": float(np.abs(img - theirs["img"]).max()),
               "image x 127.5 (uint8 levels)": float(np.abs(img - theirs["img"]).max() * 127.5),
               "D logits": float(np.abs(logits - theirs["d_logits"]).max()),
               "NVIDIA's G: channel_base": kwargs["synthesis_kwargs"]["channel_base"] if "synthesis_kwargs" in kwargs
               else kwargs["channel_base"]}
    if device == "cuda":
        reference = np.load(work / "theirs-reference-ops.npz")["img"]
        figures["NVIDIA's reference ops vs their CUDA ops: image x 127.5"] = float(
            np.abs(reference - theirs["img"]).max() * 127.5)
        figures["ours vs NVIDIA's reference ops: image x 127.5"] = float(np.abs(img - reference).max() * 127.5)
    return figures


def compare_pngs(ckpt_path: Path, export: Path, official: Path, shims: Path, work: Path, seeds: str,
                 c_dim: int) -> dict[str, float] | None:
    """NVIDIA's gen_images.py / generate.py on the export against our sample job on the checkpoint."""
    script = next((official / s for s in ("gen_images.py", "generate.py") if (official / s).is_file()), None)
    if script is None:
        return None
    label = ["--class", "1"] if c_dim else []
    theirs, ours = work / "png-theirs", work / "png-ours"
    run([sys.executable, str(script), "--network", str(export), "--seeds", seeds, "--trunc", "0.7", "--noise-mode",
         "const", "--outdir", str(theirs), *label], env=official_env(official, shims), cwd=official)
    run([sys.executable, "-m", "jobs.sample", "--network", str(ckpt_path), "--seeds", seeds, "--trunc", "0.7",
         "--noise-mode", "const", "--outdir", str(ours), "--device", "cuda", *label], cwd=ROOT)
    diffs = []
    for seed in parse_seeds(seeds):
        a = np.asarray(Image.open(theirs / f"seed{seed:04d}.png"), np.int16)
        b = np.asarray(Image.open(next(ours.rglob(f"seed{seed:04d}.png"))), np.int16)
        diffs.append(np.abs(a - b))
    d = np.stack(diffs)
    return {f"{script.name} PNGs: max level difference": int(d.max()), "share of values off": float((d > 0).mean()),
            "PNGs compared": len(diffs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, action="append", required=True,
                        help="a checkout of NVlabs/stylegan3 or NVlabs/stylegan2-ada-pytorch (repeatable)")
    parser.add_argument("--shims", type=Path, help="folder with pkg_resources.py (../shared/notes/"
                        "official-reference.md); default: .ref/shims")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", default="0-15")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    shims = (args.shims or ROOT / ".ref" / "shims").resolve()
    work_root = args.workdir or Path(tempfile.mkdtemp(prefix="export-ref-"))
    seeds = parse_seeds(args.seeds)
    for i, (case, (G_kwargs, D_kwargs)) in enumerate(CASES.items()):
        work = work_root / f"case{i}"
        work.mkdir(parents=True, exist_ok=True)
        ckpt = make_checkpoint(work / "ours.pt", G_kwargs, D_kwargs)
        export = work / "export.pkl"
        run([sys.executable, "-m", "jobs.convert", "--source", str(ckpt), "--dest", str(export)], cwd=ROOT)
        for official in args.official:
            official = official.resolve()
            print(f"{case} | {official.name} | device {args.device}")
            figures = compare_loaded(ckpt, export, official, shims, work, args.device, seeds)
            if args.device == "cuda":
                figures.update({f"{k}, TF32 off both sides": v for k, v in compare_loaded(
                    ckpt, export, official, shims, work, args.device, seeds, tf32=False).items() if k != "NVIDIA's G: "
                    "channel_base"})
                figures.update(compare_pngs(ckpt, export, official, shims, work / official.name, args.seeds,
                                            G_kwargs["c_dim"]) or {})
            for name, value in figures.items():
                print(f"    {name}: {value:.3g}" if isinstance(value, float) else f"    {name}: {value}")


if __name__ == "__main__":
    main()
