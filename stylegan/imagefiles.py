"""Image files and image arrays: network output to uint8 pixels, PNG bytes, atomic PNG files and contact sheets."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from stylegan.fileio import atomic_path


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """NCHW float in [-1, 1] -> NHWC uint8, as gen_images.py: (img * 127.5 + 128).clamp(0, 255)."""
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode_png(rgb: np.ndarray, level: int) -> bytes:
    """uint8 HxWx3 -> PNG bytes. Level 0 is written here with the "None" row filter: Pillow always chooses a row
    filter per row, which costs more than the rest of the encode and gains nothing when zlib stores the bytes
    uncompressed, and makes every reader undo it (figures: benchmarks/RESULTS.md, preprocessing)."""
    if level > 0:
        out = io.BytesIO()
        Image.fromarray(rgb).save(out, format="PNG", compress_level=level)
        return out.getvalue()
    h, w, _ = rgb.shape
    rows = np.zeros((h, 1 + w * 3), np.uint8)  # a leading 0 per row: filter type None
    rows[:, 1:] = rgb.reshape(h, w * 3)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, adaptive filtering, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 0))
            + _png_chunk(b"IEND", b""))


def save_png(image: np.ndarray, path: Path, png_level: int = 1, durable: bool = True) -> None:
    with atomic_path(path, durable) as tmp:
        tmp.write_bytes(encode_png(image, png_level))


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every PNG ends with


def png_complete(path: Path) -> bool:
    """The file exists and ends like a PNG: per-seed files skip fsync (two per file were most of a writer's time),
    so after a power loss a rerun must not trust a file that exists but lost its data."""
    try:
        with open(path, "rb") as f:
            f.seek(-len(PNG_END), os.SEEK_END)
            return f.read() == PNG_END
    except OSError:  # missing, or shorter than the trailer
        return False


LABEL_HEIGHT = 12


def tile(images: np.ndarray, cols: int, rows: int, captions: list[str] | None = None) -> np.ndarray:
    """Images [N, H, W, 3] into a rows x cols sheet (row-major), white cells where N < rows*cols; with captions,
    a strip of LABEL_HEIGHT pixels under each cell carries its text."""
    n, h, w, _ = images.shape
    cell_h = h + (LABEL_HEIGHT if captions else 0)
    sheet = np.full((rows * cell_h, cols * w, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        sheet[r * cell_h: r * cell_h + h, c * w: (c + 1) * w] = images[i]
    if not captions:
        return sheet
    pil = Image.fromarray(sheet)
    draw = ImageDraw.Draw(pil)
    for i, text in enumerate(captions):
        r, c = divmod(i, cols)
        draw.text((c * w + 2, r * cell_h + h), text, fill=(0, 0, 0))
    return np.asarray(pil)
