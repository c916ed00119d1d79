"""Atomic file writes and content hashes, shared by every job that writes to the shared filesystem."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TMP_PREFIX = ".tmp-"


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
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix="-" + path.name, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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
