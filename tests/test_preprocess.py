"""The preprocess job on a messy folder: task splitting, rejects, SIGKILL + resume, and the shard reader."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan.data.images import ImageOptions, process_image
from stylegan.data.reader import eval_pipeline, load_dataset_info, make_loader, training_pipeline
from stylegan.errors import UserError
from stylegan.imagefiles import encode_png
from tests.conftest import REPO, run_job
from tests.image_folder import BAD, make_image_folder

RES = 16


def preprocess(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return run_job("preprocess", *args, env=env, check=check, timeout=300)


def shard_samples(dest: Path) -> dict[str, tuple[str, str]]:
    """key -> (sha256 of the PNG bytes, source) over the shards listed in dataset.json."""
    info = json.loads((dest / "dataset.json").read_text())
    out = {}
    for shard in info["shards"]:
        with tarfile.open(dest / shard["name"]) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            if name.endswith(".png"):
                key = name[:-4]
                assert key not in out, f"duplicate key {key}"
                out[key] = (hashlib.sha256(data).hexdigest(), json.loads(members[key + ".json"])["source"])
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("images")
    return root, make_image_folder(root)


@pytest.fixture(scope="module")
def one_task(folder, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("k1")
    preprocess("--source", str(folder[0]), "--dest", str(dest), "--resolution", str(RES), "--min-size", "8",
               "--shard-size", "64", "--workers", "2")
    return dest


def test_one_task_keeps_every_good_image_once_and_lists_every_bad_one(folder, one_task):
    root, count = folder
    samples = shard_samples(one_task)
    assert len(samples) == count
    assert len({s for _, s in samples.values()}) == count
    info = load_dataset_info(one_task, RES)
    assert info["total_images"] == count and info["channels"] == 3 and info["rejected"] == len(BAD)
    assert sum(s["count"] for s in info["shards"]) == count
    rejected = [json.loads(line) for line in (one_task / "rejected-0000.jsonl").read_text().splitlines()]
    reasons = {Path(r["source"]).name: r["reason"] for r in rejected}
    assert set(reasons) == set(BAD)
    for name, reason in BAD.items():
        assert reason in reasons[name], (name, reasons[name])
    with tarfile.open(one_task / info["shards"][0]["name"]) as tar:
        png = next(m for m in tar.getmembers() if m.name.endswith(".png"))
        img = Image.open(io.BytesIO(tar.extractfile(png).read()))
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (RES, RES)


def test_three_tasks_write_the_same_samples_as_one(folder, one_task, tmp_path):
    dest = tmp_path / "k3"
    for task in range(3):  # as a Slurm array would run them
        env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "3"}
        result = preprocess("--source", str(folder[0]), "--dest", str(dest), "--resolution", str(RES),
                            "--min-size", "8", "--shard-size", "64", "--workers", "1", env=env)
    assert "all 3 tasks complete" in result.stdout
    assert shard_samples(dest) == shard_samples(one_task)
    names = [s["name"] for s in json.loads((dest / "dataset.json").read_text())["shards"]]
    assert len({n.split("-")[1] for n in names}) == 3  # every task wrote its own shards


def test_sigkill_midway_then_rerun_loses_and_duplicates_nothing(folder, one_task, tmp_path):
    dest = tmp_path / "killed"
    args = [sys.executable, "-m", "jobs.preprocess", "--source", str(folder[0]), "--dest", str(dest),
            "--resolution", str(RES), "--min-size", "8", "--shard-size", "64", "--workers", "1"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    manifest = dest / "manifest-0000.json"
    while time.time() < deadline and not (manifest.exists() and json.loads(manifest.read_text())["shards"]):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(manifest.read_text())
    assert not done["complete"] and not (dest / "dataset.json").exists()
    first_done = {n: (dest / n).stat().st_mtime_ns for n in done["shards"]}
    rerun = preprocess(*args[3:])
    assert f"{len(first_done)} of 5 shards already complete" in rerun.stdout
    assert {n: (dest / n).stat().st_mtime_ns for n in first_done} == first_done  # not rewritten
    assert shard_samples(dest) == shard_samples(one_task)


def decoded_hashes(dest: Path) -> list[str]:
    hashes = []
    for shard in json.loads((dest / "dataset.json").read_text())["shards"]:
        with tarfile.open(dest / shard["name"]) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".png"):
                    arr = np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
                    hashes.append(hashlib.sha256(arr.transpose(2, 0, 1).tobytes()).hexdigest())
    return sorted(hashes)


def test_eval_reader_two_ranks_two_workers_cover_the_set_exactly_once(one_task):
    seen = []
    for rank in range(2):
        for imgs, labels in make_loader(eval_pipeline(one_task, rank=rank, world=2), batch_size=16, workers=2):
            assert imgs.dtype == torch.uint8 and imgs.shape[1:] == (3, RES, RES) and labels.shape[1] == 0
            seen += [hashlib.sha256(img.numpy().tobytes()).hexdigest() for img in imgs]
    assert sorted(seen) == decoded_hashes(one_task)


def test_training_reader_is_endless_shuffled_and_flips(one_task):
    loader = make_loader(training_pipeline(one_task, rank=1, world=2, xflip=True, shuffle=50), batch_size=32,
                         workers=2, drop_last=True)
    batches = [b for _, b in zip(range(15), loader, strict=False)]  # 480 > 300 images: must wrap around
    assert len(batches) == 15 and all(b[0].shape == (32, 3, RES, RES) for b in batches)
    real = set(decoded_hashes(one_task))
    hashes = [hashlib.sha256(img.numpy().tobytes()).hexdigest() for b in batches for img in b[0]]
    flipped = [hashlib.sha256(img.flip(-1).numpy().tobytes()).hexdigest() for b in batches for img in b[0]]
    assert all(h in real or f in real for h, f in zip(hashes, flipped, strict=True))
    assert 0 < sum(h not in real for h in hashes) < len(hashes)


@pytest.mark.parametrize("workers", [0, 2])
def test_training_batches_follow_from_the_seed(one_task, workers):
    """The same seed, rank and workers give the same batches, flips included (NVIDIA's sampler is seeded too);
    another seed, or another rank, gives others, and two workers do not repeat each other's stream."""
    def keys(seed: int, rank: int = 0) -> list[str]:
        loader = make_loader(training_pipeline(one_task, rank=rank, world=2, seed=seed, xflip=True, shuffle=50),
                             batch_size=16, workers=workers, drop_last=True)
        return [hashlib.sha256(img.numpy().tobytes()).hexdigest()
                for imgs, _ in itertools.islice(loader, 6) for img in imgs]

    first = keys(seed=3)
    assert keys(seed=3) == first
    assert keys(seed=4) != first and keys(seed=3, rank=1) != first
    if workers:  # the loader takes batches from its workers in turn: batch 0 is worker 0's, batch 1 worker 1's
        assert first[:16] != first[16:32]


@pytest.fixture(scope="module")
def class_sorted(tmp_path_factory) -> Path:
    """4 classes of 200 images, one folder per class, so file-name order groups the classes (as most users' folders
    do), written by two array tasks into shards of 100."""
    root = tmp_path_factory.mktemp("sorted")
    labels = {}
    for k, name in enumerate("abcd"):
        (root / "src" / name).mkdir(parents=True)
        for i in range(200):
            Image.new("RGB", (8, 8), (60 * k, i, 0)).save(root / "src" / name / f"{i:03d}.png")
            labels[f"{name}/{i:03d}.png"] = k
    (root / "labels.json").write_text(json.dumps(labels))
    for task in range(2):
        preprocess("--source", str(root / "src"), "--dest", str(root / "data"), "--resolution", "4", "--labels",
                   str(root / "labels.json"), "--shard-size", "100", "--workers", "1", "--task-index", str(task),
                   "--num-tasks", "2")
    return root / "data"


@pytest.mark.parametrize("workers,world", [(0, 1), (2, 1), (8, 1), (2, 4)])
def test_batches_from_a_class_sorted_folder_mix_classes_as_iid_draws(class_sorted, workers, world):
    """NVIDIA's sampler draws from a global permutation: with 4 equal classes a batch of 32 holds each ~8 times.
    Pearson's statistic over 24 batches is then chi-square with 72 degrees of freedom (sd 12); batches in file-name
    order score 96 per batch (2,304) and used to, whatever the number of loader workers."""
    batches = []
    for rank in range(world):
        loader = make_loader(training_pipeline(class_sorted, rank=rank, world=world, seed=rank), batch_size=32,
                             workers=workers, drop_last=True)
        batches += [labels for (_, labels), _ in zip(loader, range(24 // world), strict=False)]
    counts = torch.stack([labels.sum(0) for labels in batches])
    assert counts.shape == (24, 4)
    pearson = float(((counts - 8) ** 2 / 8).sum())
    assert pearson < 72 + 5 * 12, counts.tolist()
    # a class missing from a batch happens to random draws too (about 3e-4 per batch): at most one in 24
    assert int((counts == 0).any(1).sum()) <= 1, counts.tolist()


def test_reader_refuses_wrong_resolution_and_missing_dataset(one_task, tmp_path):
    with pytest.raises(UserError, match="the dataset is 16x16 but 32x32 is needed"):
        training_pipeline(one_task, resolution=32)
    with pytest.raises(UserError, match="dataset.json: missing"):
        eval_pipeline(tmp_path)


def test_labels_and_dedup(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(src / f"{i}.png")
    Image.open(src / "2.png").save(src / "2-copy.bmp")  # same pixels, other format
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"labels": [[f"{i}.png", i % 3] for i in range(5)] + [["2-copy.bmp", 2]]}))
    dest = tmp_path / "out"
    preprocess("--source", str(src), "--dest", str(dest), "--resolution", "8", "--labels", str(labels), "--dedup",
               "--workers", "1")
    info = load_dataset_info(dest, 8)
    assert info["label_count"] == 3 and info["total_images"] == 5 and len(info["exclude"]) == 1
    rejected = (dest / "rejected-0000.jsonl").read_text()
    assert "5.png" in rejected and "no label" in rejected
    got = [lab.argmax().item() for _, lab in eval_pipeline(dest)]
    assert sorted(got) == [0, 0, 1, 1, 2]


def test_an_rgb_jpeg_becomes_what_nvidias_dataset_tool_makes_of_it():
    """Full decode, centre crop as dataset_tool slices it, PIL LANCZOS: pixel for pixel (reduced-scale JPEG decoding
    differed by up to 27 levels)."""
    rng = np.random.default_rng(5)
    smooth = Image.fromarray(rng.integers(0, 256, (13, 15, 3), dtype=np.uint8)).resize((301, 257), Image.BICUBIC)
    buf = io.BytesIO()
    smooth.save(buf, format="JPEG", quality=90)
    ours = np.asarray(Image.open(io.BytesIO(process_image(buf.getvalue(), ImageOptions(resolution=32)).png)))
    img = np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    crop, (h, w) = min(img.shape[:2]), img.shape[:2]
    img = img[(h - crop) // 2:(h + crop) // 2, (w - crop) // 2:(w + crop) // 2]
    assert np.array_equal(ours, np.asarray(Image.fromarray(img, "RGB").resize((32, 32), Image.LANCZOS)))


def test_conversions_exif_sixteen_bit_alpha():
    opts = ImageOptions(resolution=8, transform="stretch", background=(0, 0, 255))

    def decode(img: Image.Image, **save) -> np.ndarray:
        buf = io.BytesIO()
        img.save(buf, **save)
        return np.asarray(Image.open(io.BytesIO(process_image(buf.getvalue(), opts).png)))

    wide = Image.new("RGB", (16, 8), (255, 0, 0))
    wide.paste((0, 255, 0), (8, 0, 16, 8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode(wide, format="JPEG", exif=exif, quality=95)
    assert out[0, 4, 0] > 200 and out[7, 4, 1] > 200  # red on top, green below once orientation is applied
    gray16 = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    assert (decode(gray16, format="PNG") == 255).all()
    clear = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert (decode(clear, format="PNG") == [0, 0, 255]).all()


@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_encoding_is_lossless_at_every_level(level):
    """Level 0 is our own filter-None writer, the others Pillow's; every decoder must read back the same pixels."""
    rng = np.random.default_rng(level)
    for shape in ((1, 1, 3), (7, 13, 3), (64, 64, 3)):
        rgb = rng.integers(0, 256, shape, dtype=np.uint8)
        png = encode_png(rgb, level)
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.mode == "RGB" and np.array_equal(np.asarray(im), rgb)
    assert len(encode_png(np.zeros((64, 64, 3), np.uint8), level)) < (1000 if level else 64 * 64 * 3 + 200)


@pytest.mark.parametrize("args,match", [
    (["--source", "/nonexistent", "--resolution", "16"], "does not exist"),
    (["--source", ".", "--resolution", "48"], "power of two"),
    (["--source", ".", "--resolution", "16", "--task-index", "3", "--num-tasks", "2"], "outside 0..1"),
])
def test_bad_arguments_one_line(tmp_path, args, match):
    result = preprocess("--dest", str(tmp_path / "d"), *args, check=False)
    assert result.returncode == 2 and match in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_dest_under_a_file_is_one_line(folder, tmp_path):
    (tmp_path / "taken").write_text("a file")
    result = preprocess("--source", str(folder[0]), "--dest", str(tmp_path / "taken" / "d"), "--resolution", "16",
                        check=False)
    assert result.returncode == 2 and "taken: is a file, not a folder; choose another --dest" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
