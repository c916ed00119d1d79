"""Generate images from a generator: per-seed PNGs, seed grids, latent walks and style-mixing figures.

Generation is batched on the device; PNG encoding and writing run in worker processes so the device does not wait
for the disk. Every file appears atomically, so an interrupted run leaves only complete files and a rerun skips
them. Per-seed files go to sub-folders of 1,000 seeds: `<outdir>/<seed // 1000:04d>/seed<seed:04d>.png`.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import multiprocessing.forkserver
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylegan.cluster import leave_interrupts_to_parent, task_range
from stylegan.errors import UserError
from stylegan.fileio import atomic_path, write_text_atomic
from stylegan.generate import images_from_ws, one_hot, ws_to_host
from stylegan.imagefiles import png_complete, save_png, tile
from stylegan.models.stylegan2 import Generator
from stylegan.progress import Progress
from stylegan.projection.files import load_w
from stylegan.seeds import parse_ranges, parse_seeds, seed_latents

RING_SLOTS = 4  # batches in flight between the device and the PNG writers


@dataclass(frozen=True)
class SampleOptions:
    psi: float = 1.0
    cutoff: int | None = None
    noise_mode: str = "const"
    class_idx: int | None = None
    batch: int = 32
    device: str = "cpu"
    fixed_batch: bool = False  # pad short batches: one input shape for a compiled network
    png_level: int = 1  # zlib level of per-seed PNGs; 0 is much faster to encode and larger (encode_png)


def seed_path(outdir: Path, seed: int) -> Path:
    return outdir / f"{seed // 1000:04d}" / f"seed{seed:04d}.png"


def labels_for(G: Generator, n: int, opts: SampleOptions) -> torch.Tensor:
    if G.c_dim and opts.class_idx is None:
        raise UserError(f"the network is conditional ({G.c_dim} classes): pass --class 0..{G.c_dim - 1}")
    if G.c_dim and not 0 <= opts.class_idx < G.c_dim:
        raise UserError(f"--class {opts.class_idx}: the network has classes 0..{G.c_dim - 1}")
    if not G.c_dim and opts.class_idx is not None:
        raise UserError("--class given but the network is unconditional")
    return one_hot(torch.full([n], opts.class_idx or 0, device=opts.device), G.c_dim)


@torch.no_grad()
def seed_ws(G: Generator, seeds: list[int], opts: SampleOptions) -> torch.Tensor:
    z = seed_latents(seeds, G.z_dim).to(opts.device)
    return G.mapping(z, labels_for(G, len(seeds), opts), truncation_psi=opts.psi, truncation_cutoff=opts.cutoff)


Key = int | Path  # a seed, or a projected w file (.npz, jobs.project)


def parse_keys(spec: str) -> list[Key]:
    """'200,proj/a.npz,1000-1002': seeds and projected w files, in order."""
    keys: list[Key] = []
    for part in spec.split(","):
        keys += [Path(part.strip())] if part.strip().endswith(".npz") else parse_seeds(part)
    return keys


@torch.no_grad()
def key_ws(G: Generator, keys: list[Key], opts: SampleOptions) -> torch.Tensor:
    """ws [len(keys), num_ws, w_dim]: seeds through the mapping (truncated as opts say), projected ws as they are."""
    seeds = [k for k in keys if isinstance(k, int)]
    found = dict(zip(seeds, seed_ws(G, seeds, opts), strict=True)) if seeds else {}
    found.update({k: torch.from_numpy(load_w(k, G.num_ws, G.w_dim)).to(opts.device)
                  for k in keys if isinstance(k, Path)})
    return torch.stack([found[k] for k in keys])


def synthesize(G: Generator, ws: torch.Tensor, opts: SampleOptions) -> np.ndarray:
    """Any number of ws -> uint8 NHWC images on the host, opts.batch at a time."""
    return ws_to_host(G, ws, opts.batch, opts.noise_mode, opts.fixed_batch)


def seed_images(G: Generator, seeds: list[int], opts: SampleOptions) -> Iterator[tuple[list[int], np.ndarray]]:
    for i in range(0, len(seeds), opts.batch):
        chunk = seeds[i:i + opts.batch]
        yield chunk, synthesize(G, seed_ws(G, chunk, opts), opts)


_ring: torch.Tensor | None = None  # a writer process's view of the shared batch buffers


def attach_ring(ring: torch.Tensor) -> None:
    """A writer's initializer: map the shared ring; leave Ctrl-C to the sampling process."""
    global _ring
    _ring = ring
    leave_interrupts_to_parent()


def part_starts(n: int, workers: int) -> tuple[range, int]:
    """Split a batch of n images into one part per writer: (the parts' first indices, the part size)."""
    step = -(-n // workers)
    return range(0, n, step), step


def write_part(slot: int, start: int, paths: list[str], png_level: int) -> int:
    for i, path in enumerate(paths):
        save_png(_ring[slot, start + i].numpy(), Path(path), png_level, durable=False)
    return len(paths)


def pin(buffer: torch.Tensor, device: torch.device) -> bool:
    """Page-lock a host buffer in place (it stays shared with the writers) so that copies from the device into it
    run asynchronously; False where that is not possible (no CUDA, or the driver refused)."""
    if device.type != "cuda":
        return False
    return int(torch.cuda.cudart().cudaHostRegister(buffer.data_ptr(), buffer.numel() * buffer.element_size(), 0)) == 0


def start_writer_server() -> multiprocessing.context.BaseContext:
    """Start the process that the PNG writers fork from, if it is not running yet, and return its context. A job
    calls this before it loads its network, so that the server's imports overlap the loading.

    The server imports this module, torch included, once; each writer then forks with it loaded and runs only the
    job's main module itself, as multiprocessing's children do (its imports are then found loaded). A bare
    forkserver preloads nothing (Python's preload of `__main__` does not take effect in 3.11/3.12), so each writer
    would import torch by itself, in every call. None inherits the CUDA context or this process's threads, as plain
    fork's children would."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    multiprocessing.forkserver.ensure_running()
    return context


def write_seed_pngs(G: Generator, seeds: list[int], outdir: Path, opts: SampleOptions, workers: int = 2,
                    desc: str = "sample") -> list[int]:
    """One PNG per seed; seeds whose file exists are skipped. Returns the seeds generated now.

    Each batch is copied from the device into one slot of a ring of shared-memory buffers that the writer
    processes mapped once at start; they get only (slot, range, paths), split so that all of them encode the same
    batch while the device generates the next one (a new shared tensor per batch would cost the main process an
    allocation and a mapping each time; benchmarks/RESULTS.md). The ring is page-locked, so the copy
    is queued behind the batch like any kernel: the host queues batch k+1 before it waits for batch k's copy, and
    the device never waits for the host."""
    todo = [s for s in seeds if not png_complete(seed_path(outdir, s))]
    print(f"{desc}: {len(seeds) - len(todo)} of {len(seeds)} seeds already written", flush=True)
    progress = Progress(len(todo), desc)
    chunks = [todo[i:i + opts.batch] for i in range(0, len(todo), opts.batch)]
    if workers == 0 or not todo:
        for chunk in chunks:
            for seed, image in zip(chunk, synthesize(G, seed_ws(G, chunk, opts), opts), strict=True):
                save_png(image, seed_path(outdir, seed), opts.png_level, durable=False)
            progress.update(len(chunk))
        progress.close()
        return todo
    res, device = G.img_resolution, torch.device(opts.device)
    ring = torch.empty((RING_SLOTS, opts.batch, res, res, 3), dtype=torch.uint8).share_memory_()
    pinned = pin(ring, device)
    pool = start_writer_server().Pool(workers, initializer=attach_ring, initargs=(ring,))
    free, busy = collections.deque(range(RING_SLOTS)), collections.deque()

    def hand_off(slot: int, chunk: list[int], copied: torch.cuda.Event | None) -> None:
        if copied is not None:
            copied.synchronize()
        paths = [str(seed_path(outdir, s)) for s in chunk]
        starts, step = part_starts(len(chunk), workers)
        busy.append((slot, [pool.apply_async(write_part, (slot, i, paths[i:i + step], opts.png_level))
                            for i in starts]))

    queued = None  # (slot, seeds, copy event) of the batch whose copy to the ring is queued on the device
    ws = seed_ws(G, chunks[0], opts)
    try:
        for k, chunk in enumerate(chunks):
            # batch k is queued on the device before the host waits for anything: the copy of batch k-1, queued
            # last round, is then done while batch k runs, and the writers get k-1 as the device works on k
            images = images_from_ws(G, ws, opts.noise_mode, opts.batch if opts.fixed_batch else None)
            if k + 1 < len(chunks):
                ws = seed_ws(G, chunks[k + 1], opts)
            if queued:
                hand_off(*queued)
            if not free:  # every slot is being written: wait for the oldest batch
                slot, parts = busy.popleft()
                progress.update(sum(p.get() for p in parts))
                free.append(slot)
            slot = free.popleft()
            ring[slot, :len(chunk)].copy_(images, non_blocking=pinned)
            copied = None
            if pinned:
                copied = torch.cuda.Event()
                copied.record()
            queued = (slot, chunk, copied)
        hand_off(*queued)
        for _, parts in busy:
            progress.update(sum(p.get() for p in parts))
    finally:
        pool.close()
        pool.join()
        if pinned:  # after an error a copy into the ring may still be in flight
            torch.cuda.synchronize(device)
            torch.cuda.cudart().cudaHostUnregister(ring.data_ptr())
    progress.close()
    return todo


def write_manifest(path: Path, seeds: list[int], outdir: Path, checkpoint_sha256: str, opts: SampleOptions) -> None:
    lines = [json.dumps({"seed": s, "file": str(seed_path(outdir, s).relative_to(outdir)),
                         "checkpoint_sha256": checkpoint_sha256, "psi": opts.psi, "noise_mode": opts.noise_mode,
                         "class": opts.class_idx}) for s in seeds]
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def sample_seeds(G: Generator, seeds: list[int], outdir: Path, opts: SampleOptions, checkpoint_sha256: str,
                 task: int = 0, num_tasks: int = 1, rank: int = 0, world: int = 1, workers: int = 2) -> list[int]:
    """This array task's and rank's share of `seeds` as per-seed PNGs, and its manifest. Returns the share."""
    start, end = task_range(len(seeds), task, num_tasks)
    mine = seeds[start:end][rank::world]
    write_seed_pngs(G, mine, outdir, opts, workers=workers, desc=f"sample task {task}/{num_tasks}")
    name = f"manifest-{task:04d}.jsonl" if world == 1 else f"manifest-{task:04d}-rank{rank}.jsonl"
    write_manifest(outdir / name, mine, outdir, checkpoint_sha256, opts)
    print(f"wrote {len(mine)} seeds of {len(seeds)} to {outdir} (task {task}/{num_tasks}, rank {rank}/{world})")
    return mine


# ----------------------------------------------------------------------------------------------------------------
# Figures: grids, walks, style mixing. Each is one job's whole output: written once, by one process.

def parse_grid(text: str) -> tuple[int, int]:
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--grid {text!r}: use COLSxROWS, e.g. 8x8") from None
    if cols < 1 or rows < 1 or cols * rows > 4096:
        raise UserError(f"--grid {text!r}: columns and rows must be >= 1 and at most 4096 cells")
    return cols, rows


def parse_layers(spec: str) -> list[int]:
    """`--layers 0-6` or `0,2,4`: the style layers a style-mixing figure takes from the column seeds."""
    try:
        return parse_ranges(spec, "style layer", "0-6 (the coarse styles) or 8-13", 4096)
    except UserError as e:
        raise UserError(f"--layers: {e}") from None


def write_grids(G: Generator, seeds: list[int], cols: int, rows: int, outdir: Path, opts: SampleOptions,
                labels: bool = False) -> list[Path]:
    """`grid<n>.png` contact sheets of cols x rows seeds (as many sheets as the seeds need)."""
    per_sheet = cols * rows
    images = [img for _, batch in seed_images(G, seeds, opts) for img in batch]
    paths = []
    for n, i in enumerate(range(0, len(seeds), per_sheet)):
        captions = [str(s) for s in seeds[i:i + per_sheet]] if labels else None
        paths.append(outdir / f"grid{n:04d}.png")
        save_png(tile(np.stack(images[i:i + per_sheet]), cols, rows, captions), paths[-1])
    print(f"wrote {len(paths)} grid sheet(s) of {cols}x{rows} to {outdir}")
    return paths


def write_walk(G: Generator, seeds: list[Key], frames: int, space: str, outdir: Path, opts: SampleOptions,
               fps: int = 10) -> list[Path]:
    """The walk's frames as `walk/frame<i>.png`, and walk.gif (+ walk.mp4)."""
    images = synthesize(G, walk_ws(G, seeds, frames, space, opts), opts)
    for i, frame in enumerate(images):
        save_png(frame, outdir / "walk" / f"frame{i:04d}.png")
    written = write_animation(images, outdir, fps=fps)
    animations = " and ".join(p.name for p in written)
    print(f"wrote {len(images)} frames (walk/frame0000.png ...) and {animations} to {outdir}")
    return written


def write_style_mix(G: Generator, row_seeds: list[Key], col_seeds: list[Key], layers: list[int], outdir: Path,
                    opts: SampleOptions) -> Path:
    path = outdir / "style-mix.png"
    save_png(style_mix_figure(G, row_seeds, col_seeds, layers, opts), path)
    print(f"wrote {path}")
    return path


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.arccos((a_n * b_n).sum(-1, keepdim=True).clamp(-1, 1))
    so = torch.sin(omega)
    if float(so.abs().min()) < 1e-6:
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


@torch.no_grad()
def walk_ws(G: Generator, seeds: list[Key], frames: int, space: str, opts: SampleOptions) -> torch.Tensor:
    """ws for a walk through `seeds` (and projected w files): `frames` steps per segment, ending exactly on the
    last one."""
    if len(seeds) < 2:
        raise UserError("--walk needs at least two seeds, e.g. --walk 200,1000,200")
    if frames < 1:
        raise UserError("--frames must be at least 1")
    ts = [i / frames for i in range(frames)]
    if space == "w":
        ws = key_ws(G, seeds, opts)
        out = [torch.lerp(ws[i], ws[i + 1], t) for i in range(len(seeds) - 1) for t in ts] + [ws[-1]]
        return torch.stack(out)
    if space != "z":
        raise UserError(f"--space {space!r}: use w or z")
    if not all(isinstance(s, int) for s in seeds):
        raise UserError("--space z: a projected w file has no z; walk through it in w (--space w)")
    z = seed_latents(seeds, G.z_dim).to(opts.device)
    zs = torch.stack([slerp(z[i], z[i + 1], t) for i in range(len(seeds) - 1) for t in ts] + [z[-1]])
    return G.mapping(zs, labels_for(G, len(zs), opts), truncation_psi=opts.psi, truncation_cutoff=opts.cutoff)


def write_animation(frames: np.ndarray, outdir: Path, fps: int = 10) -> list[Path]:
    """walk.gif always; walk.mp4 when imageio-ffmpeg is installed (said once otherwise)."""
    gif = outdir / "walk.gif"
    pils = [Image.fromarray(f) for f in frames]
    with atomic_path(gif) as tmp:
        pils[0].save(tmp, format="GIF", save_all=True, append_images=pils[1:], duration=1000 // fps, loop=0)
    if not can_write_mp4():
        print("imageio-ffmpeg is not installed: wrote walk.gif only (pip install imageio imageio-ffmpeg for MP4)")
        return [gif]
    write_mp4(frames, outdir / "walk.mp4", fps)
    return [gif, outdir / "walk.mp4"]


def can_write_mp4() -> bool:
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg  # noqa: F401 - the ffmpeg binary ships in this wheel
    except ImportError:
        return False
    return True


def write_mp4(frames: Iterable[np.ndarray], path: Path, fps: int) -> None:
    """Frames (uint8 [H, W, 3] each, taken one at a time) as an H.264 MP4, atomically."""
    import imageio.v2 as imageio

    # yuv420p needs even sides; macro_block_size=1 keeps our exact size when it is even already
    with atomic_path(path) as tmp, imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264",
                                                      macro_block_size=1,
                                                      output_params=["-pix_fmt", "yuv420p"]) as writer:
        for f in frames:
            writer.append_data(f)


@torch.no_grad()
def style_mix_figure(G: Generator, row_seeds: list[Key], col_seeds: list[Key], layers: list[int],
                     opts: SampleOptions) -> np.ndarray:
    """The StyleGAN style-mixing figure: top row = column seeds, left column = row seeds, cell (r, c) = row seed
    with the listed layers' styles taken from column seed. Projected w files can stand for seeds."""
    bad = [i for i in layers if not 0 <= i < G.num_ws]
    if bad:
        raise UserError(f"--layers {bad}: this network has style layers 0..{G.num_ws - 1}")
    all_seeds = list(dict.fromkeys(row_seeds + col_seeds))
    w = dict(zip(all_seeds, key_ws(G, all_seeds, opts), strict=True))
    mixed = []
    for r in row_seeds:
        for c in col_seeds:
            ws = w[r].clone()
            ws[layers] = w[c][layers]
            mixed.append(ws)
    single = synthesize(G, torch.stack([w[s] for s in all_seeds]), opts)
    image = dict(zip(all_seeds, single, strict=True))
    cells = synthesize(G, torch.stack(mixed), opts)
    blank = np.full_like(single[0], 255)
    grid = [blank] + [image[c] for c in col_seeds]
    for i, r in enumerate(row_seeds):
        grid += [image[r]] + list(cells[i * len(col_seeds):(i + 1) * len(col_seeds)])
    return tile(np.stack(grid), len(col_seeds) + 1, len(row_seeds) + 1)
