"""Generation: latents and labels, or ws, to uint8 images, a batch at a time in one fixed shape.

The one place where a generator's output becomes pixels: training's fakes grids, the sampling job and the metrics'
fakes all come through here. Padding a short batch to the full size gives every call the same input shape, so a
compiled generator never recompiles for the last batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stylegan.fileio import use_compile_cache
from stylegan.imagefiles import tile, to_uint8
from stylegan.models.stylegan2 import Generator


def one_hot(classes: torch.Tensor, c_dim: int) -> torch.Tensor:
    """Labels [n, c_dim] with a 1 at each class; [n, 0] for an unconditional network."""
    c = torch.zeros(len(classes), c_dim, device=classes.device)
    if c_dim:
        c[torch.arange(len(classes), device=classes.device), classes] = 1
    return c


def compile_synthesis(G: Generator, batch: int | None = None, noise_mode: str = "const") -> Path:
    """torch.compile G's synthesis network in place, for one batch size (see `padded`); the compiled kernels go to
    the shared cache, for array tasks, requeues and later jobs (stylegan.fileio.use_compile_cache), whose folder it
    returns. With `batch`, it compiles now, on one batch of that size, instead of in the first call (a job can then
    say what compiling cost)."""
    cache = use_compile_cache()
    G.synthesis.compile(dynamic=False)
    if batch is not None:
        images_from_ws(G, G.mapping.w_avg.repeat(batch, G.num_ws, 1), noise_mode)  # contiguous, as real ws
    return cache


def padded(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """`x` with its last row repeated up to `size` rows (None or a full batch: `x` itself)."""
    if size is None or len(x) >= size:
        return x
    return torch.cat([x, x[-1:].expand(size - len(x), *x.shape[1:])])


@torch.no_grad()
def images_from_ws(G: Generator, ws: torch.Tensor, noise_mode: str = "const", pad_to: int | None = None
                   ) -> torch.Tensor:
    """ws [n, num_ws, w_dim] -> uint8 NHWC images on ws' device; computed as `pad_to` rows when given."""
    return to_uint8(G.synthesis(padded(ws, pad_to), noise_mode=noise_mode)[:len(ws)])


@torch.no_grad()
def images_from_z(G: Generator, z: torch.Tensor, c: torch.Tensor, noise_mode: str = "const",
                  pad_to: int | None = None) -> torch.Tensor:
    """z [n, z_dim] and labels [n, c_dim] -> uint8 NHWC images (psi 1) on z's device; computed as `pad_to` rows
    when given."""
    return to_uint8(G(padded(z, pad_to), padded(c, pad_to), noise_mode=noise_mode)[:len(z)])


def ws_to_host(G: Generator, ws: torch.Tensor, batch: int, noise_mode: str = "const", fixed: bool = False
               ) -> np.ndarray:
    """Any number of ws -> uint8 NHWC images on the host, `batch` at a time (all `batch` rows with `fixed`)."""
    pad_to = batch if fixed else None
    out = [images_from_ws(G, ws[i:i + batch], noise_mode, pad_to).cpu().numpy() for i in range(0, len(ws), batch)]
    return np.concatenate(out) if out else np.zeros((0, G.img_resolution, G.img_resolution, 3), np.uint8)


def grid_latents(n: int, z_dim: int, c_dim: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed latents of a training run's fakes grids, and labels cycling through the classes."""
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    return z, one_hot(torch.arange(n, device=device) % max(c_dim, 1), c_dim)


def fakes_grid(G: Generator, z: torch.Tensor, c: torch.Tensor, size: int, batch: int) -> np.ndarray:
    """A size x size sheet of G(z, c) with constant noise, `batch` images per call."""
    images = [images_from_z(G, zb, cb, "const", pad_to=batch).cpu()
              for zb, cb in zip(z.split(batch), c.split(batch), strict=True)]
    return tile(torch.cat(images).numpy(), size, size)
