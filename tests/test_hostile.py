"""Hostile and broken inputs, built here: each ends in one `error:` line with exit code 2 (or is listed as rejected),
within a memory cap, and nothing runs or is silently wrong."""

from __future__ import annotations

import collections
import functools
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.nvidia_pickles import (
    EasyDict,
    Network,
    Persistent,
    stub_nvidia_modules,
    tf_networks,
    tf_stylegan1_networks,
    write_nvidia_pickle,
    write_tf_pickle,
)
from stylegan.errors import UserError
from stylegan.formats.checkpoint import save_checkpoint
from stylegan.formats.nvidia_pickle import load_nvidia_pickle
from stylegan.models.stylegan2 import Discriminator, Generator
from stylegan.rundir import RunDir
from tests.conftest import FIXTURES, REPO, TINY_TRAIN, Fixture, tiny_discriminator_kwargs, tiny_generator_kwargs
from tests.image_folder import preprocess_folder

CAP_MB = 1024  # every case runs with at most this much more address space than the job's imports took

CAPPED = """
import resource, sys
from jobs.cli import main
import stylegan.train.trainer, stylegan.sampling, stylegan.data.shards  # imports first: they are not the input's cost
vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + {cap} * 2 ** 20, resource.RLIM_INFINITY))
main(sys.argv[1:])
"""


def job(*args: str, cap_mb: int = CAP_MB, timeout: int = 300) -> subprocess.CompletedProcess:
    """`stylegan <job> args...` in a subprocess whose memory is capped."""
    return subprocess.run([sys.executable, "-c", CAPPED.format(cap=cap_mb), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------------------------------------------
# Pickles

def nvidia_like(path: Path, G_state: dict, G_kwargs: dict | None = None, modules: dict | None = None) -> Path:
    """A file shaped like an NVIDIA PyTorch pickle whose G record holds what the test puts there."""
    with stub_nvidia_modules():
        G = Persistent("Generator", {"_parameters": collections.OrderedDict(G_state), "_buffers": {},
                                     "_modules": modules or {}, "_init_kwargs": G_kwargs or {}}, "raise SystemExit")
        path.write_bytes(pickle.dumps({"G": G, "D": G, "G_ema": G}))
    return path


class Reduce:
    """Pickles as `fn(*args)`: how a forged file calls the admitted functions with arguments of its choosing."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def expanding(depth: int = 40) -> list:
    nested: list = [0]
    for _ in range(depth):
        nested = [nested, nested]  # pickled once per level; walked naively, 2**depth leaves
    return nested


def storage_of(t: torch.Tensor):
    return Reduce(torch.storage._load_from_bytes, _storage_bytes(t))


def _storage_bytes(t: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    torch.save(t.untyped_storage(), buf)
    return buf.getvalue()


def shared_modules(depth: int = 30) -> dict:
    with stub_nvidia_modules():
        leaf = Persistent("L", {"_parameters": {"w": torch.zeros(1000)}}, "")
        for _ in range(depth):
            leaf = Persistent("M", {"_parameters": {}, "_modules": {"a": leaf, "b": leaf}}, "")
    return {"m": leaf}


def _deep_kwargs(path: Path, n: int) -> None:
    value: list = []
    for _ in range(n):
        value = [value]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20 * n)
    try:
        nvidia_like(path, {}, {"z_dim": 4, "deep": value})
    finally:
        sys.setrecursionlimit(limit)


RECONSTRUCT = getattr(np, "_core", np.core).multiarray._reconstruct


def shared_tuples(container: bytes) -> bytes:
    """A pickle that puts a deep structure of shared tuples (a few bytes per level; hashed naively, 2**60 tuples)
    into a dict or set by the opcodes `container` (written out here: building it in Python would hash it)."""
    key: tuple = ()
    for _ in range(60):
        key = (key, key)
    body = pickle.dumps(key, protocol=2)[2:-1]  # without PROTO and STOP
    return b"\x80\x04" + container.replace(b"KEY", body) + b"."


HASHED = {  # how each container opcode gets the key
    "dict key (SETITEM)": b"}KEYK\x01s",
    "dict keys (SETITEMS)": b"}(KEYK\x01u",
    "set (ADDITEMS)": b"\x8f(KEY\x90",
    "frozenset (FROZENSET)": b"(KEY\x91",
    "set() call": b"cbuiltins\nset\n](KEYe\x85R",
}


class WithState:
    """Pickles as `cls()` followed by BUILD with `state`."""

    def __init__(self, cls, state: dict):
        self.cls, self.state = cls, state

    def __reduce__(self):
        return self.cls, (), self.state


def easydict_with_methods(path: Path) -> None:
    nvidia_like(path, {}, WithState(EasyDict, {"items": set, "keys": frozenset}))


def zero_stride_array(path: Path) -> None:
    """numpy.ndarray(shape, dtype, buffer, offset, strides) called by NEWOBJ: 14 GB of float32 viewing 4 bytes."""
    args = pickle.dumps(((60000, 60000), "f4", b"\0" * 4, 0, (0, 0)), protocol=2)[2:-1]
    path.write_bytes(b"\x80\x02cnumpy\nndarray\n" + args + b"\x81.")


def tf_names_growing(path: Path, depth: int = 14) -> None:
    """TF records whose components share one record under long names: each level doubles the names walked."""
    leaf = Network("leaf", "x", {}, {"w": np.zeros(1, np.float32)})
    for level in range(depth):
        leaf = Network(f"n{level}", "x", {}, {}, {f"{'k' * 10_000}{j}": leaf for j in range(2)})
    write_tf_pickle(path, (leaf, leaf, leaf))


def deflated_storage(path: Path) -> None:
    """A tensor whose storage bytes (torch.save's zip) hold a deflated member: 1000:1 before any budget sees it."""
    packed = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(_storage_bytes(torch.zeros(1000)))) as src, \
            zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dest:
        for member in src.infolist():
            dest.writestr(member.filename, src.read(member))
    weight = Reduce(torch._utils._rebuild_tensor_v2, Reduce(torch.storage._load_from_bytes, packed.getvalue()), 0,
                    (1000,), (1,), False, collections.OrderedDict())
    nvidia_like(path, {"weight": weight})

HOSTILE_PICKLES = {
    "expanding references": (lambda p: nvidia_like(p, {}, {"z_dim": 4, "bomb": expanding()}), "larger than"),
    "declared 5 GB of bytes": (lambda p: p.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 5 << 30) + b"x" * 64
                                                       + b"."), "declares 5,368,709,120 bytes"),
    "declared 40 GB array": (lambda p: p.write_bytes(pickle.dumps(Reduce(RECONSTRUCT, np.ndarray, (10 ** 10,), b"f"))),
                             "not an NVIDIA network pickle"),
    "zero-stride tensor view": (lambda p: nvidia_like(p, {"weight": Reduce(
        torch._utils._rebuild_tensor_v2, storage_of(torch.zeros(4)), 0, (60000, 60000), (0, 0), False,
        collections.OrderedDict())}), "not a contiguous part of its storage"),
    "shared module records": (lambda p: nvidia_like(p, {}, {}, shared_modules()), "not a network pickle"),
    "deep nesting": (lambda p: _deep_kwargs(p, 3000), "nested deeper"),
    "a string for a tensor": (lambda p: nvidia_like(p, {"weight": "not a tensor"}), "where a plain tensor belongs"),
    "state set on a parameter": (lambda p: nvidia_like(p, {"weight": Reduce(
        torch._utils._rebuild_parameter_with_state, torch.zeros(2), False, collections.OrderedDict(),
        {"detach": 1})}), "parameter with hooks or state"),
    "zero-stride numpy view": (zero_stride_array, "numpy array created directly"),
    "zero-size numpy type": (lambda p: p.write_bytes(pickle.dumps(np.zeros(10 ** 9, "V0"))), "numpy array of type"),
    "names growing through shared records": (tf_names_growing, "names would grow"),
    "deflated tensor storage": (deflated_storage, "compressed or oversized member"),
    **{f"shared tuples as a {where}": (lambda p, ops=ops: p.write_bytes(shared_tuples(ops)), "tuple as a dict key")
       for where, ops in HASHED.items()},
    "EasyDict methods replaced": (easydict_with_methods, "attributes set on a _AttrDict"),
}


@pytest.mark.parametrize("case", list(HOSTILE_PICKLES))
def test_hostile_pickles_are_refused_in_one_line_within_the_memory_cap(tmp_path, case):
    make, match = HOSTILE_PICKLES[case]
    path = tmp_path / "net.pkl"
    make(path)
    assert path.stat().st_size < 1 << 20  # each under 1 MB
    one_line_error(job("convert", "--source", str(path), "--dest", str(tmp_path / "out.pt"), timeout=120), match,
                   str(path))
    assert not (tmp_path / "out.pt").exists()


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints

def tiny_checkpoint(**changes) -> dict:
    torch.manual_seed(0)
    G, D = Generator(**tiny_generator_kwargs()), Discriminator(**tiny_discriminator_kwargs())
    ckpt = {"format": 1, "G_kwargs": tiny_generator_kwargs(), "D_kwargs": tiny_discriminator_kwargs(),
            "G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict()}
    ckpt.update(changes)
    return ckpt


def nan_state() -> dict:
    state = Generator(**tiny_generator_kwargs()).state_dict()
    state["synthesis.b8.conv1.weight"][0, 0, 0, 0] = float("nan")
    return state


@pytest.mark.parametrize("change,match", [
    ({"G_kwargs": {**tiny_generator_kwargs(), "z_dim": 40_000_000}}, "does not fit its architecture arguments"),
    ({"G_kwargs": {**tiny_generator_kwargs(), "img_resolution": 12}}, "bad G_kwargs"),
    ({"G_ema": "a string"}, "'G_ema' is not a state dict of tensors"),
    ({"G_ema": nan_state()}, "G_ema has non-finite values (NaN or inf) in synthesis.b8.conv1.weight"),
])
def test_hostile_checkpoints_are_refused_before_allocating(tmp_path, change, match):
    path = tmp_path / "net.pt"
    save_checkpoint(path, tiny_checkpoint(**change))
    one_line_error(job("sample", "--checkpoint", str(path), "--outdir", str(tmp_path / "out"), "--seeds", "0"),
                   match, str(path))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))  # no black images


def test_broken_safetensors_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "g.safetensors"
    save_file({"x": torch.zeros(2)}, str(path), metadata={"format": "1", "G_kwargs": "{not json"})
    one_line_error(job("sample", "--checkpoint", str(path), "--outdir", str(tmp_path), "--seeds", "0"),
                   "corrupt safetensors file or metadata (JSONDecodeError")


def test_a_damaged_detector_never_advises_unsafe_loading(tmp_path):
    detector = tmp_path / "inception.pth"
    detector.write_bytes(pickle.dumps(Reduce(os.getcwd)))  # a pickle torch's weights-only loader refuses
    G = Generator(**tiny_generator_kwargs())
    save_checkpoint(tmp_path / "g.pt", tiny_checkpoint(G_ema=G.state_dict()))
    data = preprocess_folder(_images(tmp_path / "img", 8), tmp_path / "data")
    line = one_line_error(job("evaluate", "--checkpoint", str(tmp_path / "g.pt"), "--data", str(data), "--metrics",
                              "fid1k", "--detector", str(detector)), str(detector), "fetch_weights")
    assert "weights_only=False" not in line


def _images(folder: Path, count: int, size: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


TRAIN = [*TINY_TRAIN, "batch=4", "kimg=0.012", "tick_kimg=0.004", "snap=1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile-data")
    return preprocess_folder(_images(root / "img", 24), root / "data", 16, "--shard-size", "8")


def train(data: Path, outdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return job("train", f"data={data}", f"outdir={outdir}", "run_name=r", *TRAIN, *extra, timeout=600)


@pytest.mark.parametrize("damage,match", [
    (lambda c: c.pop("G_opt"), "it lacks G_opt (not a training snapshot); move it out of"),
    (lambda c: c["D"].update({"b16.conv0.weight": torch.zeros(3, 3, 3, 3)}),
     "cannot resume from it: its D does not fit"),
    (lambda c: c["G"].update({"mapping.fc0.bias": torch.full_like(c["G"]["mapping.fc0.bias"], float("inf"))}),
     "G has non-finite values"),
])
def test_resuming_from_a_damaged_snapshot_says_how_to_go_on(tmp_path, dataset, damage, match):
    assert train(dataset, tmp_path).returncode == 0
    run = RunDir(tmp_path / "r")
    ckpt = torch.load(run.latest(), weights_only=True)
    damage(ckpt)
    save_checkpoint(run.latest(), ckpt)
    one_line_error(train(dataset, tmp_path, "kimg=0.02"), match, str(run.latest()))


# ----------------------------------------------------------------------------------------------------------------
# Image folders and archives

def rejected(dest: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(dest.glob("rejected-*.jsonl")) for line in p.read_text().splitlines()]


def preprocess(*args: str, cap_mb: int = CAP_MB) -> subprocess.CompletedProcess:
    return job("preprocess", "--resolution", "16", "--workers", "1", *args, cap_mb=cap_mb)


def test_bad_names_unreadable_files_links_and_loops_are_listed_and_the_rest_goes_on(tmp_path):
    src = _images(tmp_path / "src", 6)
    os.close(os.open(os.fsencode(src) + b"/latin1-\xe9.png", os.O_CREAT | os.O_WRONLY))  # not UTF-8
    os.symlink("/proc/self/mem", src / "unreadable.png")  # a regular file whose read fails (EIO), even as root
    os.symlink(".", src / "loop")  # a folder that contains itself
    os.symlink("missing.png", src / "dangling.png")
    result = preprocess("--source", str(src), "--dest", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    info = json.loads((tmp_path / "data" / "dataset.json").read_text())
    reasons = {Path(r["source"]).name: r["reason"] for r in rejected(tmp_path / "data")}
    assert info["total_images"] == 6 and info["rejected"] == len(reasons) == 4, reasons
    assert "not valid UTF-8" in reasons["latin1-\\xe9.png"] and "unreadable (OSError" in reasons["unreadable.png"]
    assert "symbolic link loop" in reasons["loop"] and "not a regular file" in reasons["dangling.png"]


def test_members_with_the_same_name_are_both_kept(tmp_path):
    images = [np.full((16, 16, 3), v, np.uint8) for v in (10, 200)]
    encoded = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        encoded.append(buf.getvalue())
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        for data in encoded:
            z.writestr("same.png", data)
    with tarfile.open(tmp_path / "b.tar", "w") as t:
        for data in encoded:
            info = tarfile.TarInfo("same.png")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "same.png"
        t.addfile(link)
    result = preprocess("--source", str(tmp_path / "a.zip"), str(tmp_path / "b.tar"), "--dest", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    with tarfile.open(next((tmp_path / "d").glob("shard-*.tar"))) as shard:
        means = sorted(int(np.asarray(Image.open(shard.extractfile(m))).mean()) for m in shard
                       if m.name.endswith("png"))
    assert means == [10, 10, 200, 200]  # each archive's first and second member, none twice
    assert [r["reason"] for r in rejected(tmp_path / "d")] == ["archive member is a link or device, not a file"]


def test_bombs_are_read_only_up_to_the_limit(tmp_path):
    """A ~1 MB zip whose member inflates to 1 GB, and a 6 GB sparse file named .png: listed as too large, with
    the memory cap far below what reading either would take."""
    src = _images(tmp_path / "src", 3)
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as z, z.open("bomb.png", "w") as f:
        chunk = b"\0" * (1 << 20)
        for _ in range(1024):
            f.write(chunk)
    assert (tmp_path / "bomb.zip").stat().st_size < 2 << 20
    with open(src / "sparse.png", "wb") as f:
        f.truncate(6 << 30)
    result = preprocess("--source", str(src), str(tmp_path / "bomb.zip"), "--dest", str(tmp_path / "d"),
                        cap_mb=1024)
    assert result.returncode == 0, result.stderr[-2000:]
    reasons = sorted(r["reason"] for r in rejected(tmp_path / "d"))
    assert reasons == ["larger than the 256 MB limit per input (--max-file-mb)"] * 2
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["total_images"] == 3


# ----------------------------------------------------------------------------------------------------------------
# Shards, runs and evaluation

def copy_dataset(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for p in src.iterdir():
        if not p.name.startswith("stats-"):
            (dest / p.name).write_bytes(p.read_bytes())
    return dest


def test_a_truncated_shard_is_refused_by_training_and_evaluation(tmp_path, dataset):
    data = copy_dataset(dataset, tmp_path / "data")
    shard = sorted(data.glob("shard-*.tar"))[1]
    whole = shard.read_bytes()
    shard.write_bytes(whole[:len(whole) // 2])
    one_line_error(train(data, tmp_path), str(shard), "truncated or replaced")
    save_checkpoint(tmp_path / "g.pt", tiny_checkpoint())
    evaluate = ("evaluate", "--checkpoint", str(tmp_path / "g.pt"), "--data", str(data), "--metrics", "swd")
    one_line_error(job(*evaluate), str(shard))
    assert not list(data.glob("stats-*"))  # nothing cached from the short shard
    shard.write_bytes(whole[:-512] + b"\1" * 512)  # the same size, other bytes (the tar's zero padding)
    one_line_error(job(*evaluate), str(shard), "differs from what dataset.json records")
    shard.write_bytes(whole)
    assert job(*evaluate).returncode == 0


def test_a_damaged_member_names_its_shard(tmp_path, dataset):
    data = copy_dataset(dataset, tmp_path / "data")
    for shard in data.glob("shard-*.tar"):  # every member, so the first batch meets one whatever the shuffle
        raw = bytearray(shard.read_bytes())
        at = 0
        while (at := raw.find(b"IDAT", at)) >= 0:
            raw[at + 8:at + 72] = b"\xff" * 64  # same size: the start-up check passes, decoding fails
            at += 72
        shard.write_bytes(bytes(raw))
    line = one_line_error(train(data, tmp_path))
    assert re.search(r"shard-\d{4}-\d{5}\.tar: sample \d{9} is damaged", line), line


@pytest.mark.parametrize("edit,match", [
    ("total 0", "no usable images"), ("total kept", "the file was edited"),
    ("counts doubled to fit", "excluded samples in a row: dataset.json excludes every image"),
])
def test_a_dataset_with_every_sample_excluded_fails_at_once(tmp_path, dataset, edit, match):
    """Every key excluded, with total_images set to 0, left as it was, or every count forged to fit: one line from
    the trainer, which would otherwise search the shards for a usable image for ever (and from the dry run where the
    file says so)."""
    data = copy_dataset(dataset, tmp_path / "data")
    info = json.loads((data / "dataset.json").read_text())
    info["exclude"] = [f"{i:09d}" for i in range(info["total_images"])]
    if edit == "total 0":
        info["total_images"] = 0
    for shard in info["shards"] if edit == "counts doubled to fit" else ():
        shard["count"] *= 2
    (data / "dataset.json").write_text(json.dumps(info))
    if edit != "counts doubled to fit":
        one_line_error(job("train", f"data={data}", f"outdir={tmp_path}", *TRAIN, "--dry-run"), match)
    one_line_error(train(data, tmp_path), match)


@pytest.mark.parametrize("field,value,match", [
    ("shards", "shard-0000.tar", "field 'shards' must be list"),
    ("resolution", "16", "field 'resolution' must be int"),
    ("total_images", None, "field 'total_images' must be int"),
    ("shards", [7], "shards[0] must be an object with a 'name'"),
    ("label_count", True, "field 'label_count' must be int"),
])
def test_a_dataset_json_with_wrongly_typed_fields_is_one_line(tmp_path, dataset, field, value, match):
    data = copy_dataset(dataset, tmp_path / "data")
    info = json.loads((data / "dataset.json").read_text())
    info[field] = value
    (data / "dataset.json").write_text(json.dumps(info))
    one_line_error(job("train", f"data={data}", f"outdir={tmp_path}", *TRAIN, "--dry-run"), match)


def test_a_nan_checkpoint_never_becomes_black_images_and_a_diverging_run_stops(tmp_path, dataset):
    fx = Fixture("uncond32")
    G, D = fx.networks()
    with torch.no_grad():
        G.synthesis.b32.conv1.weight[0, 0, 0, 0] = float("nan")
    pkl = write_nvidia_pickle(tmp_path / "nan.pkl", G, D, fx.meta["G_kwargs"], fx.meta["D_kwargs"])
    one_line_error(job("sample", "--checkpoint", str(pkl), "--outdir", str(tmp_path / "s"), "--seeds", "0"),
                   "non-finite")
    result = train(dataset, tmp_path, "inject_nan_steps=[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]",
                   "nan_rollback=2", "kimg=0.08")
    one_line_error(result, "training diverged", "again after 2 rollbacks")
    assert "training complete" not in result.stdout


def _deep_components(nets, k: int, depth: int = 3000) -> None:
    record = nets[k]
    for i in range(depth):
        record.state["components"]["deeper"] = record = Network(f"c{i}", "x", {}, {})


MALFORMED_TF = {
    "no version": (lambda n, k: n[k].state.pop("version"), "of version None"),
    "version 2.5": (lambda n, k: n[k].state.update(version=2.5), "of version 2.5"),
    "resolution 0": (lambda n, k: n[k].state["static_kwargs"].update(resolution=0), "resolution 0: expected a power"),
    "resolution -32": (lambda n, k: n[k].state["static_kwargs"].update(resolution=-32), "resolution=-32"),
    "resolution '32'": (lambda n, k: n[k].state["static_kwargs"].update(resolution="32"), "resolution='32'"),
    "resolution [32]": (lambda n, k: n[k].state["static_kwargs"].update(resolution=[32]), "resolution=[32]"),
    "fmap_max {}": (lambda n, k: n[k].state["static_kwargs"].update(fmap_max={}), "fmap_max={}"),
    "static_kwargs a list": (lambda n, k: n[k].state.update(static_kwargs=[1, 2]), "static_kwargs is a list"),
    "components a list": (lambda n, k: n[k].state.update(components=[1]), "components of type list"),
    "a component a number": (lambda n, k: n[k].state.update(components={"mapping": 3}), "component 'mapping'"),
    "a component holds its parent": (lambda n, k: n[k].state["components"].update(parent=n[k]), "nested deeper"),
    "components 3000 deep": (_deep_components, "nested deeper"),
}


@pytest.mark.parametrize("family", ["stylegan2", "stylegan1"])
@pytest.mark.parametrize("case", list(MALFORMED_TF))
def test_malformed_tf_records_are_one_line(tmp_path, family, case):
    """Allow-listed but malformed TF records, in G (index 0) and D (1): one UserError naming the file."""
    change, match = MALFORMED_TF[case]
    for k in (0, 1):
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(60_000)  # pickling 3000 nested records (pickle's Python pickler: ~8 frames each)
        try:
            path = _tf_file(tmp_path / f"{k}.pkl", family, functools.partial(change, k=k))
        finally:
            sys.setrecursionlimit(limit)
        with pytest.raises(UserError, match=re.escape(match)) as info:
            load_nvidia_pickle(path)
        assert str(path) in str(info.value) and len(str(info.value).splitlines()) == 1


def _tf_file(path: Path, family: str, change=lambda nets: None, dtype=np.float32, **G_changes) -> Path:
    if family == "stylegan1":
        ref = dict(np.load(FIXTURES / "stylegan1_official_32.npz"))
        meta = json.loads(bytes(ref["meta_json"]).decode())
        nets = tf_stylegan1_networks({k: v for k, v in ref.items() if k.startswith(("Gs/", "D/"))}, meta["G"],
                                     meta["D"])
    else:
        fx = Fixture("uncond32")
        G_kwargs, D_kwargs = {**fx.meta["G_kwargs"], **G_changes}, {**fx.meta["D_kwargs"], **G_changes}
        torch.manual_seed(0)
        nets = tf_networks(Generator(**G_kwargs), Discriminator(**D_kwargs), G_kwargs, D_kwargs)
    for net in nets:
        for record in (net, *net.state["components"].values()):
            record.state["variables"] = [(name, v.astype(dtype)) for name, v in record.state["variables"]]
    change(nets)
    return write_tf_pickle(path, nets)


def test_a_float16_tf_pickle_loads_and_its_tensors_are_counted_once(tmp_path):
    """Tensors stored in float16 are copied to float32: twice the file's bytes, within its budget."""
    path = _tf_file(tmp_path / "half.pkl", "stylegan2", dtype=np.float16, channel_base=16384, channel_max=256)
    assert path.stat().st_size > 4 << 20  # well beyond the budget's 1 MB of slack
    ckpt = load_nvidia_pickle(path)
    assert ckpt["G"]["synthesis.b32.conv1.weight"].dtype == torch.float32


def full_disk_mount() -> list[str] | None:
    """unshare's flags for a mount namespace of our own (root: -m; else a user namespace: -rm); None where neither
    is allowed."""
    for flags in (["-m"], ["-rm"]):
        if subprocess.run(["unshare", *flags, "sh", "-c", "mount -t tmpfs -o size=8k tmpfs /mnt"],
                          capture_output=True).returncode == 0:
            return flags
    return None


def on_full_disk(dest: Path, size: str, *args: str) -> subprocess.CompletedProcess:
    """`stylegan <args>` with `dest` a new tmpfs of `size` bytes, in a mount namespace that ends with the job."""
    flags = full_disk_mount()
    if flags is None:
        pytest.skip("no mount namespace here (unshare -m / -rm refused): cannot make a full disk")
    dest.mkdir(parents=True, exist_ok=True)
    mount = 'mount -t tmpfs -o size="$1" tmpfs "$0" && shift && exec "$@"'
    return subprocess.run(["unshare", *flags, "sh", "-c", mount, str(dest), size, sys.executable, "-m", "jobs",
                           *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_full_disk_is_named_as_such_in_one_line(tmp_path, dataset):
    """Training (its snapshot), sampling and preprocessing into a full file system: one line that says the disk is
    full and names the file, exit 2 (the serializer's own message would speak of stream positions)."""
    out = tmp_path / "full"
    result = on_full_disk(out, "40k", "train", f"data={dataset}", f"outdir={out}", "run_name=r", *TRAIN)
    one_line_error(result, f"{out}/r/", "no space left on the device")
    net = tmp_path / "net.pt"
    save_checkpoint(net, tiny_checkpoint())
    one_line_error(on_full_disk(out, "8k", "sample", "--network", str(net), "--outdir", str(out), "--seeds", "0-99"),
                   f"{out}/0000/seed", "no space left")
    one_line_error(on_full_disk(out, "8k", "preprocess", "--source", str(_images(tmp_path / "img", 24)), "--dest",
                                str(out), "--resolution", "16", "--min-size", "8"), str(out), "no space left")
