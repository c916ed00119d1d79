"""Time of the augmentation pipeline alone, as training uses it: ADA's 'bgc' at p = 0.2 on a batch of images.

    python -m benchmarks.augment_speed [--res 64 512 1024] [--batch 4] [--calls 20] [--compile]
Per resolution, milliseconds a call (median of `--calls` after warm-up): the forward; forward and backward (what the
compiled Gmain and Dmain graphs run); and R1's shape, a gradient with respect to the images taken with
`create_graph` and differentiated again (what the eager Dreg runs: the resampling, its adjoint and the adjoint's
derivative). `--compile` also times the forward and backward through `torch.compile`, as the trainer's graphs hold
it. Which resampling runs is the checkout's: time two checkouts to compare them.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from functools import partial

import torch

from benchmarks.common import timed
from benchmarks.speed_vs_official import AUG_P
from stylegan.train.augment import AugmentPipe


def forward_backward(pipe: AugmentPipe, img: torch.Tensor, weight: torch.Tensor) -> None:
    (pipe(img) * weight).sum().backward()


def double_backward(pipe: AugmentPipe, img: torch.Tensor, weight: torch.Tensor) -> None:
    # a stand-in for D that is not linear, so that the gradient depends on the images, as R1's does
    (grad,) = torch.autograd.grad((pipe(img).square() * weight).sum(), img, create_graph=True)
    grad.square().sum().backward()


def median_ms(fn: Callable[[], None], calls: int, device: torch.device) -> float:
    for _ in range(3):
        fn()
    return 1e3 * statistics.median(timed(fn, device) for _ in range(calls))


def time_resolution(pipe: AugmentPipe, res: int, batch: int, calls: int, compile: bool,
                    device: torch.device) -> dict[str, float]:
    img = torch.randn(batch, 3, res, res, device=device, requires_grad=True)
    weight = torch.randn_like(img)
    times = {"forward": median_ms(partial(pipe, img.detach()), calls, device),
             "forward+backward": median_ms(partial(forward_backward, pipe, img, weight), calls, device),
             "double backward": median_ms(partial(double_backward, pipe, img, weight), calls, device)}
    if compile:
        compiled = torch.compile(forward_backward)
        times["compiled forward+backward"] = median_ms(partial(compiled, pipe, img, weight), calls, device)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--res", type=int, nargs="+", default=[64, 512, 1024])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipe = AugmentPipe("bgc", AUG_P).to(device)
    for res in args.res:
        times = time_resolution(pipe, res, args.batch, args.calls, args.compile, device)
        print(f"RESULT {res}x{res} batch {args.batch} on {device.type}: "
              + ", ".join(f"{name} {ms:.2f} ms" for name, ms in times.items()), flush=True)


if __name__ == "__main__":
    main()
