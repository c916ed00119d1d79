"""List user inputs (folders, .zip, .tar) in one stable order and read their bytes, one bounded input at a time.

Whatever cannot be used is listed with its reason instead of stopping the task: file names that are not UTF-8,
unreadable files and folders, symbolic-link loops, archive members that are links or devices, and inputs larger
than the limit (a zip bomb's member is read only up to the limit, whatever size it declares).
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stylegan.errors import UserError

MAX_FILE_BYTES = 256 << 20  # the default limit per input (preprocess --max-file-mb, the projection job)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass(frozen=True)
class InputItem:
    source: int  # index into the --source list
    name: str  # path relative to its source root (or archive member name): the label-file key
    member: int = -1  # position in the archive's listing: two members may share a name

    def describe(self, sources: list[Path]) -> str:
        root = sources[self.source]
        if root.is_dir():
            return str(root / self.name)
        return f"{root}!{self.name}" + (f" (member {self.member})" if self.member >= 0 else "")


@dataclass(frozen=True)
class Unusable:
    where: str
    reason: str


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.fsdecode keeps undecodable bytes as surrogates
        return False
    return True


def _shown(path: str) -> str:
    """A path for the rejected list: bytes that are not UTF-8 shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _walk_folder(root: Path) -> tuple[list[str], list[Unusable]]:
    """Image files under `root` (symlinked folders followed once, loops refused), and what could not be used."""
    names, bad = [], []
    seen = {os.path.realpath(root)}

    def unreadable(e: OSError) -> None:
        bad.append(Unusable(_shown(str(e.filename)), f"unreadable folder ({e.strerror})"))

    for folder, dirs, files in os.walk(root, onerror=unreadable, followlinks=True):
        for d in list(dirs):
            real = os.path.realpath(os.path.join(folder, d))
            if real in seen:
                bad.append(Unusable(_shown(os.path.join(folder, d)), "symbolic link loop (a folder seen before)"))
                dirs.remove(d)
            seen.add(real)
        for f in files:
            full = os.path.join(folder, f)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if not _is_image(f):
                continue
            if not _utf8(rel):
                bad.append(Unusable(_shown(full), "file name is not valid UTF-8: rename it"))
            elif not os.path.isfile(full):
                bad.append(Unusable(_shown(full), "not a regular file (a broken link or a link loop)"))
            else:
                names.append(rel)
    return names, bad


def list_inputs(sources: list[Path]) -> tuple[list[InputItem], list[Unusable]]:
    """Every image-named input of every source, sorted by (source order, name, member position): the same on every
    task; and the image-named entries that cannot be used, with the reason."""
    items: list[InputItem] = []
    bad: list[Unusable] = []
    for idx, src in enumerate(sources):
        if src.is_dir():
            names, unusable = _walk_folder(src)
            items += [InputItem(idx, n) for n in sorted(names)]
            bad += unusable
            continue
        if not src.exists():
            raise UserError(f"{src}: --source does not exist")
        suffix = src.suffix.lower()
        try:
            if src.is_file() and suffix == ".zip":
                with zipfile.ZipFile(src) as z:
                    members = [(i.filename, True) for i in z.infolist() if not i.is_dir()]
            elif src.is_file() and suffix == ".tar":
                with tarfile.open(src) as t:
                    members = [(m.name, m.isfile()) for m in t.getmembers() if not m.isdir()]
            else:
                raise UserError(f"{src}: --source must be a folder, a .zip or a .tar archive")
        except (zipfile.BadZipFile, tarfile.TarError, OSError) as e:
            raise UserError(f"{src}: cannot read the archive ({e})") from None
        found = [(n, pos) for pos, (n, regular) in enumerate(members) if _is_image(n) and regular]
        bad += [Unusable(f"{src}!{_shown(n)}", "archive member is a link or device, not a file")
                for n, regular in members if _is_image(n) and not regular]
        items += [InputItem(idx, n, pos) for n, pos in sorted(found)]
    return items, bad


def read_items(sources: list[Path], items: list[InputItem], max_bytes: int) -> Iterator[bytes | Unusable]:
    """Bytes of each item, in order, or Unusable (unreadable, larger than max_bytes); archives stay open."""
    archives: dict[int, tuple] = {}
    try:
        for item in items:
            root = sources[item.source]
            try:
                if root.is_dir():
                    path = root / item.name
                    if path.stat().st_size > max_bytes:
                        raise _TooLargeError
                    yield path.read_bytes()
                    continue
                if item.source not in archives:
                    if root.suffix.lower() == ".zip":
                        z = zipfile.ZipFile(root)  # noqa: SIM115 - closed in the finally below
                        archives[item.source] = (z, [i for i in z.infolist() if not i.is_dir()])
                    else:
                        t = tarfile.open(root)  # noqa: SIM115 - closed in the finally below
                        archives[item.source] = (t, [m for m in t.getmembers() if not m.isdir()])
                archive, members = archives[item.source]
                info = members[item.member]
                opened = archive.open(info) if isinstance(archive, zipfile.ZipFile) else archive.extractfile(info)
                with opened as f:
                    data = f.read(max_bytes + 1)  # never more than the limit, whatever the member declares
                if len(data) > max_bytes:
                    raise _TooLargeError
                yield data
            except _TooLargeError:
                yield Unusable(item.describe(sources), f"larger than the {max_bytes >> 20} MB limit per input "
                                                        "(--max-file-mb)")
            except (OSError, zipfile.BadZipFile, tarfile.TarError, RuntimeError, EOFError) as e:
                yield Unusable(item.describe(sources), f"unreadable ({type(e).__name__}: {e})")
    finally:
        for archive, _ in archives.values():
            archive.close()


class _TooLargeError(Exception):
    pass
