"""The benchmark harnesses: both trainers must be asked for the same run, and the harness runs end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.augment_speed import double_backward, time_resolution
from benchmarks.common import synthetic_dataset
from benchmarks.draw_coverage import nvidia_draws, our_draws, spread
from benchmarks.parity import verdict
from benchmarks.phase_memory import phase_peak
from benchmarks.profile_vs_official import memory_by_phase, read_trace, summarize
from benchmarks.saved_for_backward import LiveBytes, SavedStorages
from benchmarks.speed_vs_official import official_cmd, ours_cmd, run_settings
from stylegan.train.augment import AugmentPipe
from tests.conftest import REPO, TINY_TRAIN


def test_speed_runs_give_both_trainers_the_same_networks_batch_and_gamma():
    s = run_settings(1024, "config-f", batch_gpu=4)
    official = dict(a[2:].split("=", 1) for a in official_cmd(Path("o"), Path("d.zip"), Path("out"), s, "fixed", 4, 2)
                    if a.startswith("--"))
    ours = dict(a.split("=", 1) for a in ours_cmd(Path("d"), Path("out"), "r", 1024, s, "fixed", 4, 2, [])
                if "=" in a and not a.startswith("-"))
    assert (official["cbase"], official["map-depth"], official["batch"]) == ("32768", "8", "8")
    assert (ours["channel_base"], ours["map_layers"], ours["batch"]) == ("32768", "8", "8")
    assert float(official["gamma"]) == float(ours["r1_gamma"]) == 0.0002 * 1024 ** 2 / 4
    assert official["glr"] == ours["glr"] and official["p"] == ours["aug_p"]
    # the parity settings are what the earlier figures ran
    assert run_settings(64, "parity", None) == {"batch": 32, "cbase": 16384, "map": 2, "lr": 0.0025,
                                                "gamma": 0.0002 * 64 * 64 / 32}


def run_benchmark(module: str, workdir: Path, *args: str) -> str:
    """`python -m benchmarks.<module>` on ours alone at 16x16 with the tiny network; it must succeed. Its stdout."""
    tiny = [f"--set={kv}" for kv in TINY_TRAIN if not kv.startswith("resolution=")]
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--workdir", str(workdir), "--res", "16",
                             *args, *tiny], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def run_harness(workdir: Path, *args: str) -> dict:
    """speed_vs_official on ours alone with the tiny network at 16x16 and 8 textures; its one results row."""
    run_benchmark("speed_vs_official", workdir, "--aug", "noaug", "--images", "16=8", *args)
    [row] = json.loads((workdir / "results.json").read_text())
    return row


def test_speed_harness_runs_ours_end_to_end(tmp_path):
    """Textures made, preprocessed and trained through the harness's own steps (ours only: NVIDIA's trainer is not
    here), so that a device call does not find a broken harness; its row holds the ticks' speed."""
    row = run_harness(tmp_path, "--kimg", "16=1")
    assert (row["side"], row["rc"], row["ticks"]) == ("ours (cold)", 0, 1)
    assert row["sec_per_kimg"] > 0 and row["startup_s"] > 0


def test_startup_only_stops_ours_at_its_first_tick(tmp_path):
    """--startup-only: the run gets SIGTERM at its first tick line, snapshots and exits 3 long before its kimg."""
    row = run_harness(tmp_path, "--kimg", "16=1000", "--startup-only")
    assert (row["rc"], row["ticks"], row["sec_per_kimg"]) == (3, 0, None) and row["startup_s"] > 0
    log = (tmp_path / "logs" / "ours-16-noaug-1gpu-cold.log").read_text()
    assert "stopping on signal 15" in log and "snapshot written, exit 3" in log


def test_profile_harness_profiles_ours_window_and_ends_the_run(tmp_path):
    """Ours runs as users run it, with the profiling hook on its PYTHONPATH: steps 3-4 are traced (two Gmain
    ranges in the trace), the trace is written whole and the run ends there, long before its kimg."""
    stdout = run_benchmark("profile_vs_official", tmp_path, "--sides", "ours", "--widths", "parity", "--batch-gpu",
                           "2", "--images", "8", "--skip", "2", "--steps", "2")
    assert "ours: exit 0, traced" in stdout
    assert "profile: steps 3-4 of Gmain" in (tmp_path / "logs" / "ours.log").read_text()
    names = [e["name"] for e in read_trace(tmp_path / "trace-ours.json.gz")["traceEvents"]
             if e.get("cat") == "user_annotation"]
    assert names.count("Gmain") == 2 and names.count("Dmain") == 2
    # the run's first snapshot (after its first step) and none after: it ended in the window, not at kimg 1
    assert [p.name for p in (tmp_path / "r16" / "runs").rglob("network-snapshot-*")] == [
        "network-snapshot-000000.002.pt"]
    assert json.loads((tmp_path / "profile.json").read_text())["ours"]["steps"] == 2


def test_profile_summary_counts_overlapping_kernels_once_and_maps_nvidias_ranges_to_phases():
    def x(cat, name, ts, dur):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur}
    trace = {"traceEvents": [
        x("gpu_user_annotation", "Gmain_forward", 0, 100), x("gpu_user_annotation", "Gmain_backward", 100, 100),
        x("kernel", "void at::native::vectorized_elementwise_kernel", 210, 20),  # backward: launched outside
        x("gpu_user_annotation", "Gmain_opt", 240, 10),
        x("gpu_user_annotation", "Gpl_forward", 300, 100), x("gpu_user_annotation", "pl_grads", 320, 50),
        x("gpu_user_annotation", "data_fetch", 500, 10),
        x("kernel", "sm90_xmma_fprop_implicit_gemm", 10, 80), x("kernel", "upfirdn2d_kernel_small", 50, 100),
        x("gpu_memcpy", "Memcpy DtoD (Device -> Device)", 310, 40), x("kernel", "triton_poi_fused_mul_0", 600, 20),
        x("cpu_op", "aten::conv2d", 0, 2000)]}
    s = summarize(trace, steps=2)
    assert s["gpu_busy_ms"] == (140 + 20 + 40 + 20) / 2000  # the overlapping kernels count once
    # Gmain from its forward's start to its optimizer's end, the backward between; pl_grads counts through Gpl_forward
    assert s["phases_ms"] == {"Gmain": 160 / 2000, "Greg": 40 / 2000}
    assert s["kinds_ms"] == {"NVIDIA's CUDA ops (upfirdn2d, bias_act, filtered_lrelu)": 0.05,
                             "Triton (torch.compile)": 0.01, "convolution and matmul (cuDNN, cuBLAS, CUTLASS)": 0.04,
                             "copies and fills": 0.02, "other elementwise (ATen)": 0.01}
    assert s["window_ms"] == 1.0 and s["kernels"][0] == {"name": "upfirdn2d_kernel_small", "ms": 0.05, "calls": 0.5}


def test_memory_by_phase_counts_ranges_that_name_no_phase_in_the_phase_before_them():
    gib = 2**30
    ranges = [["data_fetch", 1 * gib], ["Gmain_forward", 5 * gib], ["split_ws", 6 * gib], ["Gmain_backward", 7 * gib],
              ["Gmain_opt", 4 * gib], ["Dgen_forward", 3 * gib], ["data_fetch", 9 * gib], ["Gmain_forward", 2 * gib],
              ["Dr1_forward", 8 * gib], ["r1_grads", 10 * gib]]
    # the window's first data fetch precedes any phase; the second one's peak counts in Dmain, r1_grads' in Dreg
    assert memory_by_phase({"start": gib // 2, "ranges": ranges}) == {
        "start_gb": 0.5, "peak_gb": {"Gmain": 7.0, "Dmain": 9.0, "Dreg": 10.0}}


def test_phase_peak_counts_what_a_call_allocates_at_its_peak_and_names_the_ops():
    before = torch.ones(1 << 20)  # alive before the call: neither counted nor, freed inside it, subtracted

    def call():
        nonlocal before
        a = torch.ones(1 << 18)  # 1 MiB
        before = None
        b = torch.full([1 << 19], 2.0)  # 2 MiB: the peak is a + b
        del a
        return b.sum() + torch.zeros(1 << 17).sum()  # 0.5 MiB after a is freed: below the peak

    peak, groups = phase_peak(call, torch.device("cpu"))
    assert peak == 3 << 20
    assert sum(size for size, _ in groups.values()) == peak
    assert {name.split(" [")[0].split(" > ")[0] for name in groups} == {"aten::ones", "aten::full"}


def test_saved_storages_count_each_storage_once_by_dtype_and_by_shape():
    x = torch.randn(8, 8, requires_grad=True)
    h = torch.randn(4, 4, dtype=torch.float16, requires_grad=True)
    saved = SavedStorages()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        # x, twice, and two views of it: one storage; exp saves its output (a second); h * h saves h
        loss = (x * x).sum() + (x[:4] * x[4:]).sum() + (x + 1).exp().sum() + (h * h).float().sum()
    assert saved.total() == 256 + 256 + 32
    assert saved.by_dtype() == [("float32", (512, 2)), ("float16", (32, 1))]
    assert saved.largest(1) == [(("float32", (8, 8)), 2)]
    loss.backward()


def test_live_bytes_follow_what_ops_create_and_free_and_not_views_or_older_tensors():
    x = torch.randn(256)  # made before: not counted, nor are its in-place results
    with LiveBytes() as live:
        a = x * 2
        b = a.view(16, 16)
        c = b + 1
        assert live.bytes == 2048
        del a, b, c
        d = x + 1
        x.mul_(2)
    assert (live.peak, live.bytes) == (2048, 1024) and live.peak_op.startswith("aten.add")
    del d
    assert live.bytes == 0

def test_the_saved_bytes_benchmark_runs_every_phase_eager_and_compiled():
    """On the meta device, with the fp16 blocks: Dmain as two terms of which the trainer holds one at a time."""
    for compiled in ([], ["--compiled"]):
        out = subprocess.run([sys.executable, "-m", "benchmarks.saved_for_backward", "--res", "16", "--batch", "2",
                              "--largest", "2", *compiled, "channel_base=512", "channel_max=32", "map_layers=1",
                              "z_dim=32", "w_dim=32"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        results = [line for line in out.splitlines() if line.startswith("RESULT")]
        assert [line.split()[1] for line in results] == ["Gmain", "Greg", "Dmain", "Dreg"], out
        assert "float16" in results[0] and results[2].count(" / ") == 1, out
        assert all(("peak" in line) != (compiled and line.split()[1] in ("Gmain", "Dmain")) for line in results), out
        assert out.count("    ") >= 8, out  # the largest shapes of each phase

def test_augment_timing_runs_each_pass_and_the_r1_shape_reaches_the_images():
    pipe = AugmentPipe("bgc", 1.0)  # every transform on every image
    times = time_resolution(pipe, 16, 2, 1, False, torch.device("cpu"))
    assert list(times) == ["forward", "forward+backward", "double backward"] and min(times.values()) > 0
    img = torch.randn(2, 3, 16, 16, requires_grad=True)
    double_backward(pipe, img, torch.randn_like(img))
    assert img.grad.isfinite().all() and img.grad.abs().sum() > 0


def test_draw_coverage_counts_every_image_of_the_trainers_stream_and_nvidias_order(tmp_path):
    """40 images in 4 shards, 400 draws: the trainer's stream holds them all, each known by its pixels; NVIDIA's
    order, without its swaps, is one permutation after another, so each image exactly 10 times."""
    data = synthetic_dataset(tmp_path, 16, 40, shard_size=10)
    ours = our_draws(data, 400, 0, seed=0)
    assert len(ours) == 400 and len(set(ours)) == 40
    exact = "mean 10.00, std 0.00, least 10, most 10, never 0"
    assert spread(nvidia_draws(40, 400, seed=0, window_size=0), 40) == exact


def test_parity_verdict_pairs_the_runs_of_one_seed_and_gives_the_mean_difference_with_its_standard_error():
    values = {"ours-s0": 120.0, "official-s0": 110.0, "ours-s1": 100.0, "official-s1": 104.0, "ours-s2": 90.0,
              "official-s3": 95.0, "ours-by-kind-s0": 130.0}
    said = verdict(values, "swd")
    # seeds 0 and 1 pair up (+10 and -4); seeds 2 and 3 have one side each
    assert "paired by seed: +3.0 (standard error 7.0, 2 seeds)" in said
    assert said.startswith("mean: within or better; each: worse by 10.0; ours-by-kind-s0: worse by 20.0")
    assert "paired" not in verdict({"ours-s0": 1.0, "official-s1": 2.0}, "swd")
    assert verdict({"ours-s0": 1.0, "official-s0": 3.0}, "swd").endswith("paired by seed: -2.0 (1 seed)")
