"""Decode one user image and turn it into a square RGB image of the target resolution, or say why not.

RGB images become what NVIDIA's dataset_tool makes of them: the full decode, the same centre crop, LANCZOS
resizing. The suite also takes what dataset_tool refuses or mangles, and says so in `preprocess --help`: it
applies EXIF orientation (dataset_tool ignores it), composites transparency on a background colour (default
white), expands grayscale and palette images to RGB and scales 16-bit images to 8 bits.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from stylegan.imagefiles import encode_png

TRANSFORMS = ("center-crop", "center-crop-wide", "pad", "stretch")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class Rejected(Exception):  # noqa: N818 - reads as "raise Rejected(reason)"
    """An input that cannot become a training image; the message is the reason written to rejected-*.jsonl."""


@dataclass(frozen=True)
class ImageOptions:
    resolution: int
    transform: str = "center-crop"
    min_size: int = 0  # shorter side below this is rejected; 0 = any
    max_pixels: int = 16384 * 16384  # larger declared sizes are rejected as decompression bombs
    background: tuple[int, int, int] = (255, 255, 255)
    pixel_hash: bool = False  # hash decoded pixels, for --dedup
    # zlib level of the stored PNGs. 0 (stored, still lossless, see encode_png) encodes and decodes much faster than
    # level 1 for larger files; decoding is on the training hot path (figures: benchmarks/RESULTS.md).
    png_level: int = 0


@dataclass
class Processed:
    png: bytes
    original_size: tuple[int, int]
    pixel_sha256: str | None  # of the decoded RGB pixels: equal for equal images in any file format


def _open(data: bytes, opts: ImageOptions) -> tuple[Image.Image, tuple[int, int]]:
    if not data:
        raise Rejected("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise Rejected("decompression bomb: declared size too large") from None
    except Exception:  # PIL raises UnidentifiedImageError, SyntaxError, ValueError... for non-images
        raise Rejected("not an image (unrecognised format)") from None
    w, h = img.size
    if w * h > opts.max_pixels:
        raise Rejected(f"decompression bomb: declared size {w}x{h} exceeds {opts.max_pixels} pixels")
    if min(w, h) < max(opts.min_size, 1):
        raise Rejected(f"too small: {w}x{h}, the minimum side is {opts.min_size}")
    # JPEGs are decoded in full, as NVIDIA's dataset_tool does: libjpeg's reduced-scale decoding (`draft`) would be
    # 2-8x faster but changes the pixels (by 27 levels at most at 1200x1024 -> 256).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
    except Exception as e:
        raise Rejected(f"truncated or corrupt image data ({type(e).__name__})") from None
    return img, (w, h)


def to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: 16-bit scaled (not clipped), alpha composited on `background`."""
    if img.mode in SIXTEEN_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def fit_square(img: Image.Image, opts: ImageOptions) -> Image.Image:
    r = opts.resolution
    w, h = img.size
    if opts.transform == "stretch":
        return img.resize((r, r), Image.LANCZOS)
    if opts.transform == "center-crop":
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        return img.resize((r, r), Image.LANCZOS)
    if opts.transform == "center-crop-wide":
        # A 2:1 band through the centre, letterboxed on the background colour. NVIDIA's dataset_tool has a mode of
        # this name that differs: its band's height is the --resolution WxH height it is given, on black.
        ch = min(h, w // 2)
        img = img.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch)).resize((r, r // 2), Image.LANCZOS)
        canvas = Image.new("RGB", (r, r), opts.background)
        canvas.paste(img, (0, (r - r // 2) // 2))
        return canvas
    if opts.transform == "pad":
        s = max(w, h)
        canvas = Image.new("RGB", (s, s), opts.background)
        canvas.paste(img, ((s - w) // 2, (s - h) // 2))
        return canvas.resize((r, r), Image.LANCZOS)
    raise ValueError(f"unknown transform {opts.transform!r}; choose from {', '.join(TRANSFORMS)}")


def process_image(data: bytes, opts: ImageOptions) -> Processed:
    """Bytes of any image file -> PNG bytes of an R x R RGB image. Raises Rejected with the reason."""
    img, original_size = _open(data, opts)
    img = to_rgb(ImageOps.exif_transpose(img), opts.background)
    pixel_sha = hashlib.sha256(img.tobytes()).hexdigest() if opts.pixel_hash else None
    return Processed(encode_png(np.asarray(fit_square(img, opts)), opts.png_level), original_size, pixel_sha)
