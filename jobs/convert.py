"""Convert network files: an NVIDIA .pkl (or our .pt) to our .pt checkpoint, or G_ema to .safetensors.

    python -m jobs.convert --source ffhq.pkl --dest ffhq.pt
    python -m jobs.convert --source network-snapshot-000200.pt --dest textures.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs.cli import run
from stylegan.errors import UserError
from stylegan.formats.checkpoint import (
    build_discriminator,
    build_generator,
    export_safetensors,
    load_any,
    save_checkpoint,
)
from stylegan.rundir import network_path


def main(args: argparse.Namespace) -> None:
    source = network_path(args.source, "--source")
    ckpt = load_any(source)
    dest = Path(args.dest)
    G = build_generator(ckpt, "G_ema", source)  # proves the file builds before anything is written
    counts = [f"G_ema {sum(p.numel() for p in G.parameters()):,} parameters"]
    if "D" in ckpt:
        D = build_discriminator(ckpt, source)
        counts.append(f"D {sum(p.numel() for p in D.parameters()):,} parameters")
    if dest.suffix == ".pt":
        save_checkpoint(dest, ckpt)
    elif dest.suffix == ".safetensors":
        export_safetensors(ckpt, dest)
    else:
        raise UserError(f"{dest}: destination must end in .pt or .safetensors")
    print(f"wrote {dest} ({G.img_resolution}x{G.img_resolution}, {', '.join(counts)})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="NVIDIA .pkl, our .pt or .safetensors, or a run folder "
                        "(its newest snapshot)")
    parser.add_argument("--dest", required=True, help="output .pt (full checkpoint) or .safetensors (G_ema only)")
    return parser


if __name__ == "__main__":
    run(main, build_parser())
