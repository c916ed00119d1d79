"""Atomic file writes, lock files with an owner, and content hashes: shared by every job that writes to the shared
filesystem. Files and folders are created with the process's umask (a group or colleague can read what a job
wrote wherever the umask lets them)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from stylegan.errors import UserError

TMP_PREFIX = ".tmp-"


def _create_temp(directory: Path, name: str) -> Path:
    """A new empty file beside `name`, mode 0666 less the umask (mkstemp would make it 0600 whatever the umask)."""
    while True:
        tmp = directory / f"{TMP_PREFIX}{secrets.token_hex(4)}-{name}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path in the same directory (same suffix, so format-sniffing writers work); when the block
    succeeds, fsync it (when `durable`) and rename it over `path`.

    Readers see either the old file or the complete new one, never a partial write; a crash leaves only a
    `.tmp-*` file that every lister in this project ignores. Without `durable` a killed process still leaves
    only complete files, but a node that loses power may keep a renamed file whose data never reached the disk:
    for bulk outputs whose readers check completeness themselves (sampling.png_complete).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path.parent, path.name)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a write through a file object: name what failed
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    if durable:
        _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """An open file whose contents appear under `path` atomically when the block succeeds (see atomic_path)."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse directory fsync; the rename is still atomic
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def check_can_create(path: str | os.PathLike, what: str) -> None:
    """`path` is a folder, or can be made as one, that this process may write to; else a UserError naming `what`
    (the flag or config key that chose it). Writes nothing."""
    path = Path(path)
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir():
        raise UserError(f"{existing}: is a file, not a folder; choose another {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{existing}: no permission to write there; choose another {what}, or get write access")


def output_dir(path: str | os.PathLike, what: str) -> Path:
    """`path` as an existing folder this process may write to (made when missing); else a UserError naming `what`."""
    check_can_create(path, what)
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path}: cannot make this folder ({e.strerror}); choose another {what}") from None
    return Path(path)


def cache_dir() -> Path:
    """$STYLEGAN_CACHE (default ~/.cache/stylegan): detector weights and compiled kernels. Put it on the shared
    filesystem, so that every node, rank and requeued job finds what one of them made."""
    return Path(os.environ.get("STYLEGAN_CACHE", Path.home() / ".cache" / "stylegan"))


def use_compile_cache() -> Path:
    """Point torch.compile's caches (Inductor's graphs and AOTAutograd's, Triton's kernels) at
    cache_dir()/torch-compile unless the user set TORCHINDUCTOR_CACHE_DIR: ranks and requeues then reuse one compile.
    Importing torch._dynamo sets that variable to torch's default, $TMPDIR/torchinductor_<user> on one node's disk
    (torch 2.13), so such a value counts as unset; torch reads the variable at each compile."""
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or (Path(current).parent == Path(tempfile.gettempdir())
                           and Path(current).name.startswith("torchinductor_")):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "torch-compile")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


# ----------------------------------------------------------------------------------------------------------------
# Lock files: created with O_EXCL, holding their owner (host, pid, process start time), so that a lock whose owner
# died on this host is taken over at once; a lock of another host is taken over when older than `stale_s`.

def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (distinguishes a reused pid); None when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _owner() -> str:
    """host, pid, process start, time, and the Slurm job (`job=-` outside Slurm)."""
    return (f"{socket.gethostname()} {os.getpid()} {_process_start(os.getpid()) or 0} {time.time():.0f} "
            f"job={os.environ.get('SLURM_JOB_ID') or '-'}")


EMPTY_LOCK_S = 10.0  # an owner writes its line right after creating the lock: an empty one this old is abandoned


def lock_owner(path: Path) -> list[str]:
    """The words of a lock file's owner line (host, pid, process start, time, job); [] for an empty or garbled file.
    A folder at the lock's path is a UserError: nobody can take or release that lock."""
    if path.is_dir():
        raise UserError(f"{path}: a folder where a lock file belongs; remove it")
    words = path.read_bytes().decode("utf-8", errors="replace").split()
    return words if len(words) >= 3 and words[1].isdigit() else []


def lock_is_stale(path: Path, stale_s: float) -> bool:
    """The lock's owner is gone: a process of this host that no longer runs, or (other hosts) a lock older than
    `stale_s`. An empty or garbled lock (its writer died, or it is not ours) is stale after EMPTY_LOCK_S."""
    try:
        owner = lock_owner(path)
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False  # released meanwhile: not ours to remove, just try again
    if not owner:
        return age > EMPTY_LOCK_S
    if owner[0] == socket.gethostname():
        return _process_start(int(owner[1])) != owner[2]
    return age > stale_s


def try_lock(path: Path, stale_s: float) -> bool:
    """Take the lock at `path` if it is free or stale; False when a live owner holds it."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if lock_is_stale(path, stale_s):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            return False
        os.write(fd, (_owner() + "\n").encode())
        os.close(fd)
        return True
    return False


@contextlib.contextmanager
def held_lock(path: Path, stale_s: float = 60.0, wait_s: float = 30.0) -> Iterator[None]:
    """Block until the lock is ours (for short read-modify-write sections), then release it."""
    deadline = time.time() + wait_s
    while not try_lock(path, stale_s):
        if time.time() > deadline:
            raise UserError(f"{path}: lock held for over {wait_s:.0f} s by a live process "
                            f"({' '.join(lock_owner(path)[:2]) if path.exists() else 'gone'}); retry when it is done")
        time.sleep(0.05)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_matches(digest: str, expected: str | None) -> bool:
    """`expected` is a full hash, a prefix (torch.hub's file-name convention) or None (nothing to check)."""
    return not expected or digest.startswith(expected.lower())


def download(url: str, path: Path, expected_sha256: str | None = None) -> str:
    """Fetch `url` (http(s) or file://) into `path` atomically; returns the sha256. With `expected_sha256` (a full
    hash or a prefix) a mismatch raises ValueError and nothing is written."""
    import urllib.request  # only the login-node fetch job needs it

    h = hashlib.sha256()
    with atomic_write(path) as out, urllib.request.urlopen(url, timeout=60) as src:
        while block := src.read(1 << 20):
            h.update(block)
            out.write(block)
        digest = h.hexdigest()
        if not sha256_matches(digest, expected_sha256):
            raise ValueError(f"{url}: sha256 {digest[:16]}... does not match the expected {expected_sha256}")
    return digest
