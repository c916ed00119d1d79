"""Write procedural texture images (PNG) into a folder: a stand-in for a user's image folder.

    python -m jobs.make_textures --count 2500 --resolution 64 --dest textures/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs.cli import run
from stylegan.data.textures import texture
from stylegan.errors import UserError
from stylegan.imagefiles import save_png


def main(args: argparse.Namespace) -> None:
    if args.count < 1 or args.resolution < 8:
        raise UserError("--count must be >= 1 and --resolution >= 8")
    dest = Path(args.dest)
    for i in range(args.count):
        path = dest / f"texture{i:05d}.png"
        if not path.is_file():
            save_png(texture(args.seed, i, args.resolution), path)
    print(f"wrote {args.count} textures of {args.resolution}x{args.resolution} to {dest}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2500)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--seed", type=int, default=0)
    return parser


if __name__ == "__main__":
    run(main, build_parser())
