"""fid50k_full of a 256x256 generator on one GPU, with the real statistics cached, and the parts it is made of.

    python -m benchmarks.fid_speed [--res 256] [--num 50000] [--batch 256]
The detector is our FID Inception-v3 with random weights saved in pytorch-fid's format and loaded through the
real path (the GPU host has no Inception weights; the cost does not depend on them). The generator is randomly
initialised with the anchors' architecture. Also measured: the official metric path's settings (generation in
chunks of 4, detector at batch 64, float32) run with our networks, to compare against.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import synthetic_dataset, timed
from stylegan.generate import compile_synthesis
from stylegan.imagefiles import to_uint8
from stylegan.metrics import distances
from stylegan.metrics.compute import compute_metric, parse_metric, real_features
from stylegan.metrics.detector import Detector
from stylegan.metrics.inception import FEATURES, FIDInceptionV3
from stylegan.models.stylegan2 import Generator


def rate(fn, device: torch.device, n: int) -> float:
    fn()  # warm-up: cuDNN autotuning, allocator
    return n / timed(fn, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--num", type=int, default=50000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--real", type=int, default=2000, help="images in the synthetic dataset")
    parser.add_argument("--rate-images", type=int, default=2048, help="images per rate measurement")
    parser.add_argument("--compile", action="store_true", help="torch.compile the synthesis network (as --compile "
                        "of jobs.evaluate)")
    parser.add_argument("--json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True  # as jobs.evaluate
    G = Generator(512, 0, 512, args.res, mapping_kwargs=dict(num_layers=2), channel_base=16384).eval().to(device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "random-inception.pth"
        torch.save(FIDInceptionV3().state_dict(), weights)
        detector = Detector(weights, device)
        imgs = torch.randint(0, 256, (args.batch, 3, args.res, args.res), dtype=torch.uint8, device=device)
        for batch in (64, args.batch):
            n = batch * max(1, args.rate_images // batch)
            rows.append({"what": f"detector, batch {batch}, float32",
                         "per_s": rate(lambda b=batch, n=n: [detector(imgs[:b]) for _ in range(n // b)], device, n)})
        nhwc = copy.copy(detector)  # the same detector and its TF32 handling, the network channels-last
        nhwc.module = copy.deepcopy(detector.module).to(memory_format=torch.channels_last)
        rows.append({"what": f"detector, batch {args.batch}, float32, channels-last (the job's is NCHW)",
                     "per_s": rate(lambda b=args.batch, n=n: [nhwc(imgs[:b]) for _ in range(n // b)], device, n)})
        z = torch.randn(args.batch, G.z_dim, device=device)
        c = torch.zeros(args.batch, 0, device=device)
        for batch in (4, args.batch):
            n = batch * max(1, args.rate_images // 2 // batch)

            def gen(b: int = batch, n: int = n) -> None:
                with torch.no_grad():
                    for _ in range(n // b):
                        to_uint8(G(z[:b], c[:b], noise_mode="random"))
            rows.append({"what": f"generator, batch {batch}", "per_s": rate(gen, device, n)})
        if args.compile:
            compile_synthesis(G)  # as jobs.evaluate --compile
            rows.append({"what": "compiling the synthesis network + one timed pass (once per evaluate process: "
                                 "snapshots are loaded into the compiled network)",
                         "seconds": timed(gen, device)})
            rows.append({"what": f"generator, batch {args.batch}, compiled", "per_s": rate(gen, device, n)})
        feats = torch.rand(args.num, FEATURES, device=device)  # the statistics' cost depends on the shapes only
        for where in dict.fromkeys((device, torch.device("cpu"))):  # once on a CPU-only machine
            rows.append({"what": f"FID's statistics and distance of {args.num} fakes' features, float64 on "
                                 f"{where.type} (the job's: on the detector's device)",
                         "seconds": timed(lambda w=where: distances.frechet_distance(
                             *distances.gaussian_stats(feats[:2000], w), *distances.gaussian_stats(feats, w)), device)})
        rows.append({"what": f"KID's 100 subsets of 1000, float64 on {device.type}",
                     "seconds": timed(lambda: distances.kernel_inception_distance(feats[:2000], feats), device)})
        per_s = {r["what"]: r.get("per_s") for r in rows}
        official = args.num / per_s["generator, batch 4"] + args.num / per_s["detector, batch 64, float32"]
        rows.append({"what": "official settings (gen batch 4 + detector batch 64), estimated from the rows above",
                     "seconds": official})
        data = synthetic_dataset(Path(tmp), args.res, args.real)
        spec = parse_metric(f"fid{args.num // 1000}k_full")
        start = time.perf_counter()
        real_features(data, spec, detector, device, batch=args.batch)
        rows.append({"what": f"real statistics of {args.real} images (once per dataset)",
                     "seconds": time.perf_counter() - start})
        start = time.perf_counter()
        values, cached = compute_metric(G, data, spec, detector, device, batch=args.batch)
        seconds = time.perf_counter() - start
        assert cached
        rows.append({"what": f"{spec.name}, end to end, batch {args.batch}{', compiled' * args.compile}",
                     "seconds": seconds,
                     "speedup_vs_official_settings": official / seconds, "value": values[spec.name]})
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    for row in rows:
        row.update(res=args.res, device=name)
        figure = f"{row['per_s']:.0f} images/s" if "per_s" in row else f"{row['seconds']:.1f} s"
        print(f"RESULT fid {args.res}x{args.res} {row['what']}: {figure} ({name})", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
