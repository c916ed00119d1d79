"""Convert network files: an NVIDIA .pkl (or our .pt) to our .pt checkpoint, G_ema to .safetensors, or a StyleGAN2
network to a pickle NVIDIA's PyTorch tools load (stylegan2-ada-pytorch, stylegan3: gen_images.py, projector.py, the
visualizer, train.py --resume; and PTI, e4e, StyleGAN-NADA, which load through them).

    python -m jobs.convert --source ffhq.pkl --dest ffhq.pt
    python -m jobs.convert --source network-snapshot-000200.pt --dest textures.safetensors
    python -m jobs.convert --source runs/textures --dest textures.pkl
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
from stylegan.formats.tf_export import tf_networks, write_tf_pickle
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
    elif dest.suffix == ".pkl":
        if ckpt.get("family", "stylegan2") != "stylegan2":
            raise UserError(f"{source}: a StyleGAN (2018) network: NVIDIA's PyTorch tools load StyleGAN2 networks "
                            "only (export it to .pt or .safetensors instead)")
        write_tf_pickle(dest, tf_networks(ckpt, str(source)))
    else:
        raise UserError(f"{dest}: destination must end in .pt, .safetensors or .pkl")
    print(f"wrote {dest} ({G.img_resolution}x{G.img_resolution}, {', '.join(counts)})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="NVIDIA .pkl, our .pt or .safetensors, or a run folder "
                        "(its newest snapshot)")
    parser.add_argument("--dest", required=True, help="output .pt (full checkpoint), .safetensors (G_ema only) or "
                        ".pkl (G, D and G_ema as NVIDIA's TF StyleGAN2 pickles hold them: NVIDIA's PyTorch loader "
                        "legacy.load_network_pkl reads it without running anything from it)")
    return parser


if __name__ == "__main__":
    run(main, build_parser())
