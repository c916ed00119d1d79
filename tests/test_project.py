"""Projection into W: NVIDIA's projector semantics many images at a time, the job over array tasks, walks from its
files. NVIDIA's vgg16.pt is stood in for by a TorchScript network of the same call signature with random weights
(conftest.TinyVGG, the `vgg_file` fixture)."""

from __future__ import annotations

import json
import os

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from stylegan.errors import UserError
from stylegan.imagefiles import to_uint8
from stylegan.metrics.vgg import LPIPSFeatures
from stylegan.models.stylegan2 import Generator
from stylegan.projection.files import list_targets, read_targets, task_targets
from stylegan.projection.projector import ProjectOptions, noise_regularizer, project, w_stats
from tests.conftest import run_job, sg1_networks, tiny_g, write_tiny_network
from tests.image_folder import preprocess_folder


def generated(G: Generator, seeds: list[int]) -> torch.Tensor:
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in seeds]).astype(np.float32))
    with torch.no_grad():
        return to_uint8(G(z, None, noise_mode="const")).permute(0, 3, 1, 2).contiguous()


def test_a_batch_projects_each_image_as_it_would_alone(vgg_file):
    """Each image has its own w, noise maps and random numbers, and Adam works elementwise: projecting two images
    together gives each the result it gets alone, so array tasks and batch sizes do not change results."""
    G, vgg = tiny_g(), LPIPSFeatures(vgg_file, torch.device("cpu"))
    opts = ProjectOptions(num_steps=12, w_avg_samples=200)
    targets = generated(tiny_g(1), [5, 6])
    together = project(G, targets, ["a", "b"], vgg, opts)
    alone = torch.cat([project(G, targets[i:i + 1], [n], vgg, opts) for i, n in enumerate("ab")])
    assert together.shape == (2, G.num_ws, G.w_dim)
    assert torch.allclose(together, alone, atol=1e-5), (together - alone).abs().max()
    renamed = project(G, targets[:1], ["c"], vgg, opts)  # the name seeds the image's random numbers
    assert not torch.allclose(renamed, alone[:1], atol=1e-4)
    assert torch.equal(G.synthesis.b4.conv1.noise_const, tiny_g().synthesis.b4.conv1.noise_const)  # G untouched


def test_projection_finds_a_generated_image(vgg_file):
    """A target the network made itself: the LPIPS distance falls, and G(w) of the projection (with the network's
    own noise, as NVIDIA's proj.png) is nearer the target than G(mean w) it starts from."""
    G, vgg = tiny_g(), LPIPSFeatures(vgg_file, torch.device("cpu"))
    opts = ProjectOptions(num_steps=150, w_avg_samples=500)
    target = generated(G, [7])
    dists = []
    ws = project(G, target, ["t"], vgg, opts, on_step=lambda step, w, dist: dists.append(float(dist[0])))
    w_avg, w_std = w_stats(G, opts.w_avg_samples, torch.device("cpu"))
    assert w_std > 0 and len(dists) == opts.num_steps
    assert dists[-1] < 0.6 * dists[0], (dists[0], dists[-1])
    with torch.no_grad():
        found, start = (to_uint8(G.synthesis(w, noise_mode="const")).permute(0, 3, 1, 2).float()
                        for w in (ws, w_avg[:, None].repeat(1, G.num_ws, 1)))
    error = lambda x: float((x - target.float()).square().mean())  # noqa: E731
    assert error(found) < 0.6 * error(start), (error(found), error(start))  # 0.45 on torch 2.13 CPU


def test_noise_regularizer_is_nvidias_per_image():
    """NVIDIA's regulariser, summed over one image's [1, 1, H, W] maps of several sizes (as a generator's noise
    inputs are), per image for a batch; smooth noise costs more than white."""
    torch.manual_seed(0)
    maps = [torch.randn(3, 1, size, size) for size in (4, 8, 8, 16, 32, 32)]
    maps[5][2] = F.interpolate(torch.randn(1, 1, 8, 8), size=32, mode="bilinear")[0]
    for i in range(3):
        expected = 0.0
        for m in maps:
            noise = m[i][None]
            while True:
                expected += float((noise * torch.roll(noise, shifts=1, dims=3)).mean()) ** 2
                expected += float((noise * torch.roll(noise, shifts=1, dims=2)).mean()) ** 2
                if noise.shape[2] <= 8:
                    break
                noise = F.avg_pool2d(noise, kernel_size=2)
        assert float(noise_regularizer(maps)[i]) == pytest.approx(expected, rel=1e-5)
    assert float(noise_regularizer(maps[5:])[2]) > 10 * float(noise_regularizer(maps[5:])[0])


def test_targets_from_a_preprocessed_dataset_are_its_images(tmp_path):
    """A dataset of three shards, read in an order that jumps between them: every image is the one preprocess
    stored, pixel for pixel, and each appears once."""
    src = tmp_path / "img"
    src.mkdir()
    rng = np.random.default_rng(0)
    originals = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(20)]
    for i, image in enumerate(originals):
        Image.fromarray(image).save(src / f"{i:02d}.png")
    data = preprocess_folder(src, tmp_path / "data", 16, "--shard-size", "8")
    targets, unusable = list_targets(data, 16)
    assert len(targets) == 20 and not unusable and len({t.shard for t in targets}) == 3
    order = targets[::3] + targets[1::3] + targets[2::3]
    images = list(read_targets(data, order, 16))
    assert sorted(a.tobytes() for a in images) == sorted(a.tobytes() for a in originals)

    shares = [task_targets(data, 16, task, 3) for task in range(3)]
    assert [share for share, *_ in shares] == [targets[0:6], targets[6:13], targets[13:20]]
    assert [(start, total, unusable) for _, start, total, unusable in shares] == [(0, 20, []), (6, 20, []),
                                                                                 (13, 20, [])]
    # a task opens only the shards that hold its share (8, 8 and 4 images): task 0 never reads the third
    third = data / json.loads((data / "dataset.json").read_text())["shards"][2]["name"]
    third.write_bytes(np.random.default_rng(1).integers(0, 256, third.stat().st_size, dtype=np.uint8).tobytes())
    assert task_targets(data, 16, 0, 3)[0] == targets[0:6]
    with pytest.raises(UserError, match="not a readable shard"):
        task_targets(data, 16, 2, 3)
    info = json.loads((data / "dataset.json").read_text())
    info["shards"][0]["count"], info["shards"][1]["count"] = 7, 9  # the same total, a wrong split
    (data / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="holds 8 images where dataset.json says 7"):
        task_targets(data, 16, 0, 3)


def test_the_job_over_two_tasks_resumes_and_its_ws_walk(vgg_file, tmp_path):
    """Real files end to end: fetch_weights puts the VGG in the cache from a mirror; two array tasks project a
    folder (one image broken, one in a sub-folder); a rerun rewrites nothing; each PNG is G(w) of its .npz, checked
    pixel by pixel through a walk from the .npz files; the video holds one frame per step."""
    net = write_tiny_network(tmp_path / "net.pt")
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    images = generated(tiny_g(2), [1, 2, 3]).permute(0, 2, 3, 1).numpy()
    for name, image in zip(["a.png", "b.png", "sub/c.png"], images, strict=True):
        Image.fromarray(np.repeat(np.repeat(image, 4, 0), 4, 1)).save(photos / name)  # 64x64: resized to 16
    (photos / "broken.png").write_bytes(b"not an image")
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    (mirror / "vgg16.pt").write_bytes(vgg_file.read_bytes())
    env = {"STYLEGAN_CACHE": str(cache)}
    run_job("fetch_weights", "--which", "vgg16", "--mirror", mirror.as_uri(), env=env)
    out = tmp_path / "proj"
    args = ["--network", str(net), "--images", str(photos), "--outdir", str(out), "--steps", "8", "--batch", "2"]
    logs = [run_job("project", *args, "--task-index", str(t), "--num-tasks", "2", env=env).stdout for t in (0, 1)]
    assert "images 0..1 of 4" in logs[0] and "images 2..3 of 4" in logs[1], logs
    assert "projected 2 images" in logs[0] and "skipping broken" in logs[1] and "projected 1 images" in logs[1]
    assert json.loads((out / "rejected-0001.json").read_text())[0]["source"] == "broken"
    names = ["a", "b", "sub/c"]
    for name in names:
        with np.load(out / f"{name}.npz") as f:
            assert f["w"].shape == (1, tiny_g().num_ws, 16) and int(f["steps"]) == 8
        assert np.asarray(Image.open(out / f"{name}-target.png")).shape == (16, 16, 3)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_job("project", *args, env=env).stdout
    assert "3 already projected, 1 to go" in again and "skipping broken" in again  # tried again: it may be mended
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert not [p for p in out.rglob(".tmp-*")]

    walk = tmp_path / "walk"
    run_job("sample", "--network", str(net), "--outdir", str(walk), "--walk",
            ",".join(str(out / f"{n}.npz") for n in names), "--frames", "1")
    for i, name in enumerate(names):
        assert np.array_equal(np.asarray(Image.open(walk / "walk" / f"frame{i:04d}.png")),
                              np.asarray(Image.open(out / f"{name}.png")))

    run_job("project", *args, "--video", "--steps", "5", "--outdir", str(tmp_path / "video"), env=env)
    frames = imageio.mimread(tmp_path / "video" / "a.mp4", memtest=False)
    assert len(frames) == 5 and frames[0].shape == (16, 32, 3)


def test_compiled_projection_equals_eager_and_fills_its_short_batch(vgg_file, tmp_path):
    """`--compile`: the job compiles one batch size, filling a short last batch with copies of its last image under
    other names; each image's w equals the eager job's, nothing of the fill is written or printed, and the compile
    cache lands in $STYLEGAN_CACHE for the next task."""
    net = write_tiny_network(tmp_path / "net.pt")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, image in zip("abc", generated(tiny_g(2), [1, 2, 3]).permute(0, 2, 3, 1).numpy(), strict=True):
        Image.fromarray(image).save(photos / f"{name}.png")
    env = {"STYLEGAN_CACHE": str(tmp_path / "cache")}
    args = ["--network", str(net), "--images", str(photos), "--vgg", str(vgg_file), "--steps", "6", "--batch", "2",
            "--log-every", "6"]
    eager = tmp_path / "eager"
    run_job("project", *args, "--outdir", str(eager), env=env)
    compiled = tmp_path / "compiled"
    log = run_job("project", *args, "--outdir", str(compiled), "--compile", env=env).stdout
    for name in "abc":
        with np.load(eager / f"{name}.npz") as e, np.load(compiled / f"{name}.npz") as c:
            assert np.allclose(e["w"], c["w"], atol=1e-4), np.abs(e["w"] - c["w"]).max()
    assert sorted(p.name for p in compiled.iterdir()) == sorted(p.name for p in eager.iterdir())
    assert [len(line.split("dist ")[1].split()) for line in log.splitlines() if line.startswith("step")] == [2, 1]
    assert any((tmp_path / "cache" / "torch-compile").iterdir())


def test_bad_input_is_one_line(vgg_file, tmp_path):
    net = write_tiny_network(tmp_path / "net.pt")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (16, 16)).save(photos / "a.png")
    Image.new("RGB", (16, 16)).save(photos / "a.jpg")
    cases = [
        (["--images", str(photos)], {"STYLEGAN_CACHE": str(tmp_path / "empty")}, "no vgg16.pt in"),
        (["--images", str(photos), "--vgg", str(vgg_file)], {}, "a.jpg and a.png would both be projected to a.npz"),
        (["--images", str(tmp_path / "nothing"), "--vgg", str(vgg_file)], {}, "no such folder or archive"),
        (["--images", str(photos), "--vgg", str(net)], {}, "not NVIDIA's TorchScript VGG16"),
    ]
    for extra, env, message in cases:
        result = run_job("project", "--network", str(net), "--outdir", str(tmp_path / "o"), *extra, check=False,
                         env={**os.environ, **env})
        assert result.returncode == 2 and message in result.stderr, (message, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    other = tmp_path / "other.npz"
    np.savez(other, w=np.zeros((1, 3, 8), np.float32))
    result = run_job("sample", "--network", str(net), "--outdir", str(tmp_path / "s"), "--walk", f"1,{other}",
                     check=False)
    assert result.returncode == 2 and "projected with another network" in result.stderr, result.stderr
    result = run_job("sample", "--network", str(net), "--outdir", str(tmp_path / "s"), "--layers", "0-1",
                     "--style-mix", "1,2", str(tmp_path / "missing.npz"), check=False)
    assert result.returncode == 2 and "missing.npz: no such file" in result.stderr, result.stderr


def test_stylegan_2018_networks_project_too(vgg_file):
    """Their noise inputs are per-layer constant maps as well: each image gets its own, and the distance falls."""
    G = sg1_networks(16)[0].eval()
    opts = ProjectOptions(num_steps=40, w_avg_samples=200)
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(3).randn(2, G.z_dim).astype(np.float32))
        targets = to_uint8(G(z, None, noise_mode="const")).permute(0, 3, 1, 2).contiguous()
    dists = []
    ws = project(G, targets, ["a", "b"], LPIPSFeatures(vgg_file, torch.device("cpu")), opts,
                 on_step=lambda step, w, dist: dists.append(dist))
    assert ws.shape == (2, G.num_ws, G.w_dim)
    assert bool((dists[-1] < 0.8 * dists[0]).all()), (dists[0], dists[-1])
