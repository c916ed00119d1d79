"""Project real images into a network's W space: NVIDIA's projector, many images per batch, over array tasks.

    python -m jobs.project --network net.pkl --images photos/ --outdir proj/
    sbatch --array=0-7 --gpus-per-node=1 slurm/project.sh --network net.pt --images photos/ --outdir /shared/proj
    python -m jobs.sample --network net.pkl --outdir walk/ --walk proj/a.npz,proj/b.npz,proj/a.npz
--images is an image folder or archive (cropped and resized to the network's resolution as `preprocess` does) or a
preprocessed dataset folder. Per image <name>: <name>.npz (w, NVIDIA's projected_w.npz layout), <name>.png (the
projection), <name>-target.png, and with --video <name>.mp4 (target beside the projection at every step). Images
are split over array tasks; a rerun skips the images whose .npz exists. Needs NVIDIA's VGG16 (`python -m
jobs.fetch_weights --which vgg16`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from jobs.cli import run
from stylegan.cluster import array_task
from stylegan.errors import UserError
from stylegan.fileio import output_dir
from stylegan.formats.checkpoint import load_generator
from stylegan.generate import padded, ws_to_host
from stylegan.imagefiles import save_png
from stylegan.metrics.vgg import LPIPSFeatures, find_vgg16
from stylegan.progress import Progress
from stylegan.projection.files import Target, read_targets, save_w, task_targets, w_path, write_rejected
from stylegan.projection.projector import ProjectOptions, project, w_stats
from stylegan.rundir import network_path
from stylegan.sampling import can_write_mp4, write_mp4


def main(args: argparse.Namespace) -> None:
    if args.steps < 1 or args.batch < 1:
        raise UserError(f"--steps {args.steps} and --batch {args.batch}: both must be at least 1")
    if args.video and not can_write_mp4():
        raise UserError("--video: imageio-ffmpeg is not installed (pip install imageio imageio-ffmpeg)")
    task, num_tasks = array_task(args.task_index, args.num_tasks)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    G = load_generator(network_path(args.checkpoint, "--network"), device)
    vgg = LPIPSFeatures(find_vgg16(args.vgg), device)
    images, outdir = Path(args.images), output_dir(args.outdir, "--outdir")
    share, start, total, unusable = task_targets(images, G.img_resolution, task, num_tasks)
    todo = [t for t in share if not w_path(outdir, t.name).is_file()]
    print(f"task {task}/{num_tasks}: images {start}..{start + len(share) - 1} of {total}, {len(share) - len(todo)} "
          f"already projected, {len(todo)} to go, {args.batch} per batch, {args.steps} steps", flush=True)
    rejected = [{"source": u.where, "reason": u.reason} for u in unusable] if task == 0 else []
    opts = ProjectOptions(num_steps=args.steps, seed=args.seed)
    stats = w_stats(G, opts.w_avg_samples, device) if todo else None
    progress = Progress(len(todo), f"project task {task}/{num_tasks}")
    projected = 0
    for first in range(0, len(todo), args.batch):
        batch, chunk, pixels = todo[first:first + args.batch], [], []
        for target, image in zip(batch, read_targets(images, batch, G.img_resolution), strict=True):
            if isinstance(image, str):
                print(f"skipping {target.name}: {image}", flush=True)
                rejected.append({"source": target.name, "reason": image})
                progress.update()
            else:
                chunk.append(target)
                pixels.append(image)
        if chunk:
            project_batch(G, chunk, np.stack(pixels), vgg, opts, stats, outdir, args)
            projected += len(chunk)
            progress.update(len(chunk))
    progress.close()
    if rejected:
        write_rejected(outdir, task, rejected)
    print(f"task {task}/{num_tasks}: projected {projected} images to {outdir}, {len(rejected)} rejected"
          + (f" (listed in rejected-{task:04d}.json)" if rejected else ""))


def project_batch(G: torch.nn.Module, targets: list[Target], pixels: np.ndarray, vgg: LPIPSFeatures,
                  opts: ProjectOptions, stats: tuple[torch.Tensor, float], outdir: Path, args: argparse.Namespace
                  ) -> None:
    """Project one batch and write each image's files, its .npz last."""
    device = next(G.parameters()).device
    steps: list[torch.Tensor] = []

    def on_step(step: int, w: torch.Tensor, dist: torch.Tensor) -> None:
        if args.video:
            steps.append(w[:len(targets)].cpu())
        if step + 1 == opts.num_steps or (step + 1) % args.log_every == 0:
            print(f"step {step + 1:>4d}/{opts.num_steps}: dist " + " ".join(f"{d:.3f}" for d in
                                                                          dist[:len(targets)].tolist()), flush=True)

    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(device)
    names = [t.name for t in targets]
    if args.compile and len(targets) < args.batch:
        # a short batch is filled with copies of its last image under other names (independent problems, results
        # dropped), so that the compiled network sees one batch size and does not compile again
        names += [f"{names[-1]}#fill{i}" for i in range(args.batch - len(targets))]
        x = padded(x, args.batch)
    ws = project(G, x, names, vgg, opts, on_step, stats, compile=args.compile)[:len(targets)]
    images = ws_to_host(G, ws, args.batch)
    for i, target in enumerate(targets):
        save_png(pixels[i], outdir / f"{target.name}-target.png")
        save_png(images[i], outdir / f"{target.name}.png")
        if args.video:  # rendered a batch of steps at a time: memory stays that of one batch
            path_ws = torch.stack([w[i] for w in steps])[:, None].repeat(1, G.num_ws, 1)
            frames = (np.concatenate([np.broadcast_to(pixels[i], f.shape), f], axis=1)
                      for chunk in path_ws.split(args.batch) for f in ws_to_host(G, chunk.to(device), args.batch))
            write_mp4(frames, outdir / f"{target.name}.mp4", fps=10)  # NVIDIA's proj.mp4 rate
        save_w(w_path(outdir, target.name), ws[i:i + 1].cpu().numpy(), opts.num_steps)  # last: marks it done


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", "--checkpoint", dest="checkpoint", required=True,
                        help="our .pt, an exported .safetensors, an NVIDIA .pkl, or a run folder (its newest snapshot)")
    parser.add_argument("--images", "--target", dest="images", required=True,
                        help="an image folder or archive, or a preprocessed dataset folder")
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--steps", "--num-steps", dest="steps", type=int, default=1000,
                        help="optimisation steps per image (NVIDIA's default)")
    parser.add_argument("--batch", type=int, default=8, help="images optimised together")
    parser.add_argument("--seed", type=int, default=303, help="with the image's name, seeds its random numbers")
    parser.add_argument("--video", "--save-video", dest="video", action="store_true",
                        help="also <name>.mp4: the target beside the projection at every step")
    parser.add_argument("--vgg", help="NVIDIA's vgg16.pt (default: the cache, see jobs.fetch_weights)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the synthesis network (forward and backward): on a GPU, for large "
                             "folders; it compiles once per job (from $STYLEGAN_CACHE's compile cache when filled)")
    parser.add_argument("--log-every", type=int, default=100, help="print the distances every N steps")
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--task-index", type=int, help="default: $SLURM_ARRAY_TASK_ID, else 0")
    parser.add_argument("--num-tasks", type=int, help="default: $SLURM_ARRAY_TASK_COUNT, else 1")
    return parser


if __name__ == "__main__":
    run(main, build_parser())
