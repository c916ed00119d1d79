"""Build a messy image folder like a user's: many sizes, modes and formats, plus broken files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

MODES = [("RGB", "png"), ("RGB", "jpg"), ("L", "png"), ("P", "gif"), ("RGBA", "png"), ("LA", "png"),
         ("CMYK", "jpg"), ("I;16", "png"), ("1", "bmp"), ("RGB", "webp"), ("RGB", "tiff"), ("RGB", "bmp")]
BAD = {
    "zero-byte.png": "empty file",
    "notes-renamed.jpg": "not an image",
    "truncated.jpg": "truncated or corrupt",
    "huge-declared.png": "decompression bomb",
    "tiny.png": "too small",
}


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels but holds almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        chunk(b"IEND", b"")


def make_image_folder(root: Path, count: int = 300, seed: int = 0) -> int:
    """Write `count` good images (distinct pixels) into root/ and sub-folders, plus the BAD files. Returns count."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        mode, ext = MODES[i % len(MODES)]
        w, h = int(rng.integers(16, 80)), int(rng.integers(16, 80))
        rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img = Image.fromarray(rgb, "RGB")
        if mode == "I;16":
            img = Image.fromarray(rng.integers(0, 65536, size=(h, w), dtype=np.uint16))
        elif mode == "RGBA" or mode == "LA":
            img = img.convert(mode)
            img.putalpha(Image.fromarray(rng.integers(0, 256, size=(h, w), dtype=np.uint8)))
        elif mode != "RGB":
            img = img.convert(mode)
        folder = root / f"part{i % 3}" / ("deep" if i % 5 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"img{i:04d}.{ext}")
    (root / "zero-byte.png").write_bytes(b"")
    (root / "notes-renamed.jpg").write_text("these are my notes, not a picture\n")
    Image.fromarray(rng.integers(0, 256, size=(200, 200, 3), dtype=np.uint8)).save(root / "whole.jpg")
    whole = (root / "whole.jpg").read_bytes()
    (root / "whole.jpg").unlink()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "huge-declared.png").write_bytes(huge_png_header(100_000, 100_000))
    Image.new("RGB", (4, 4), (1, 2, 3)).save(root / "tiny.png")
    (root / "README.txt").write_text("not an image extension: ignored, not rejected\n")
    return count


def preprocess_folder(src: Path, dest: Path, resolution: int = 16, *extra: str) -> Path:
    """Run the real preprocess job on a folder (one task, one worker) and return the dataset folder."""
    from tests.conftest import run_job

    run_job("preprocess", "--source", str(src), "--dest", str(dest), "--resolution", str(resolution), "--workers", "1",
            *extra)
    return dest


def random_dataset(root: Path, count: int, resolution: int) -> Path:
    """`count` random RGB images of `resolution` pixels square, preprocessed at that resolution into root/data."""
    src = root / "img"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)).save(src / f"{i}.png")
    return preprocess_folder(src, root / "data", resolution)
