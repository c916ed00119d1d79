"""Download the FID Inception weights and the projector's VGG16 into the cache, on a machine with internet (the
login node).

    python -m jobs.fetch_weights                        # all three into $STYLEGAN_CACHE (~/.cache/stylegan)
    python -m jobs.fetch_weights --which pytorch-fid
    python -m jobs.fetch_weights --which vgg16          # NVIDIA's LPIPS VGG16, for `project`
    python -m jobs.fetch_weights --mirror https://files.example.org/weights   # a site mirror: <mirror>/<name>
Evaluation jobs then find them there without network. pytorch-fid's file is checked against the sha256 prefix in
its name; NVIDIA publishes no hash for its files, so their sha256 is printed (and recorded with every metric
result and projection).
"""

from __future__ import annotations

import argparse

from jobs.cli import run
from stylegan.errors import UserError
from stylegan.fileio import cache_dir, download
from stylegan.metrics.detector import WEIGHTS
from stylegan.metrics.vgg import VGG16

FILES = {**WEIGHTS, "vgg16": VGG16}


def main(args: argparse.Namespace) -> None:
    names = list(FILES) if args.which == "all" else [args.which]
    for key in names:
        w = FILES[key]
        dest = cache_dir() / w.name
        if dest.is_file() and not args.force:
            print(f"{dest}: present (--force fetches again)", flush=True)
            continue
        url = f"{args.mirror.rstrip('/')}/{w.name}" if args.mirror else w.url
        try:
            digest = download(url, dest, w.sha256)
        except ValueError as e:
            raise UserError(f"{e}; nothing written to {dest}") from None
        except OSError as e:
            raise UserError(f"{url}: download failed ({e}); run this on a machine with internet, or copy "
                            f"{w.name} into {cache_dir()} by hand") from None
        print(f"{dest}: sha256 {digest}{' (checked)' if w.sha256 else ''}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--which", choices=["all", *FILES], default="all")
    parser.add_argument("--mirror", help="base URL (or file:// folder) holding the files under their names")
    parser.add_argument("--force", action="store_true")
    return parser


if __name__ == "__main__":
    run(main, build_parser())
