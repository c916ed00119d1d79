"""How evenly the training stream covers a dataset: how often each image is drawn among the first `--draws` images
of the trainer's reader, against NVIDIA's sampler and independent draws.

    python -m benchmarks.draw_coverage [--images 2500] [--draws 20000] [--workers 3] [--shard-size 1000] \
        [--seeds 0 1]

Ours: `training_pipeline` and `make_loader` as the trainer builds them (resampled shards, the shuffle buffer, one
stream per loader worker), mirror off, batches of 32; each image is known by its pixels. NVIDIA's: the order its
`InfiniteSampler` visits (a seeded permutation walked in a loop, each visited entry swapped with one of the
`window` entries before it), written out here from its description for the count. The defaults are the parity
runs' (2,500 textures, the default 1,000-image shards, 3 workers, 20 kimg).
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.common import synthetic_dataset
from stylegan.data.reader import make_loader, training_pipeline


def our_draws(data: Path, draws: int, workers: int, seed: int) -> list[bytes]:
    loader = make_loader(training_pipeline(data, seed=seed), batch_size=32, workers=workers)
    seen: list[bytes] = []
    for images, _ in loader:
        seen += [image.numpy().tobytes() for image in images]
        if len(seen) >= draws:
            return seen[:draws]
    raise RuntimeError("the training stream ended")  # it is endless


def nvidia_draws(count: int, draws: int, seed: int, window_size: float = 0.5) -> list[int]:
    rng = np.random.RandomState(seed)
    order = np.arange(count)
    rng.shuffle(order)
    window = int(np.rint(count * window_size))
    seen = []
    for step in range(draws):
        i = step % count
        seen.append(int(order[i]))
        if window >= 2:
            j = (i - rng.randint(window)) % count
            order[i], order[j] = order[j], order[i]
    return seen


def spread(draws: list, count: int) -> str:
    """Mean, standard deviation, least and most draws per image, and how many images were never drawn."""
    drawn = list(Counter(draws).values())
    counts = np.array(drawn + [0] * (count - len(drawn)))
    return (f"mean {counts.mean():.2f}, std {counts.std():.2f}, least {counts.min()}, most {counts.max()}, never "
            f"{int(np.sum(counts == 0))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2500)
    parser.add_argument("--draws", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_dataset(Path(tmp), 16, args.images, shard_size=args.shard_size)
        for seed in args.seeds:
            print(f"RESULT ours, seed {seed}, {args.workers} workers: "
                  f"{spread(our_draws(data, args.draws, args.workers, seed), args.images)}", flush=True)
            print(f"RESULT NVIDIA's sampler, seed {seed}: "
                  f"{spread(nvidia_draws(args.images, args.draws, seed), args.images)}", flush=True)
            independent = np.random.default_rng(seed).integers(0, args.images, args.draws).tolist()
            print(f"RESULT independent draws, seed {seed}: {spread(independent, args.images)}", flush=True)


if __name__ == "__main__":
    main()
