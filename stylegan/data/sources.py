"""List user inputs (folders, .zip, .tar) in one stable order and read their bytes."""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stylegan.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass(frozen=True)
class InputItem:
    source: int  # index into the --source list
    name: str  # path relative to its source root (or archive member name): the label-file key

    def describe(self, sources: list[Path]) -> str:
        root = sources[self.source]
        return str(root / self.name) if root.is_dir() else f"{root}!{self.name}"


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def list_inputs(sources: list[Path]) -> list[InputItem]:
    """Every image-named file of every source, sorted by (source order, relative path): the same on every task."""
    items: list[InputItem] = []
    for idx, src in enumerate(sources):
        if src.is_dir():
            names = [p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file() and _is_image(p.name)]
        elif src.is_file() and src.suffix.lower() == ".zip":
            with zipfile.ZipFile(src) as z:
                names = [i.filename for i in z.infolist() if not i.is_dir() and _is_image(i.filename)]
        elif src.is_file() and src.suffix.lower() == ".tar":
            with tarfile.open(src) as t:
                names = [m.name for m in t.getmembers() if m.isfile() and _is_image(m.name)]
        elif not src.exists():
            raise UserError(f"{src}: --source does not exist")
        else:
            raise UserError(f"{src}: --source must be a folder, a .zip or a .tar archive")
        items += [InputItem(idx, n) for n in sorted(names)]
    return items


def read_items(sources: list[Path], items: list[InputItem]) -> Iterator[bytes]:
    """Bytes of each item, in order; archives are opened once and kept open."""
    archives: dict[int, zipfile.ZipFile | tarfile.TarFile] = {}
    try:
        for item in items:
            root = sources[item.source]
            if root.is_dir():
                yield (root / item.name).read_bytes()
                continue
            if item.source not in archives:
                opener = zipfile.ZipFile if root.suffix.lower() == ".zip" else tarfile.open
                archives[item.source] = opener(root)  # noqa: SIM115 - closed in the finally below
            archive = archives[item.source]
            if isinstance(archive, zipfile.ZipFile):
                yield archive.read(item.name)
            else:
                yield archive.extractfile(item.name).read()
    finally:
        for archive in archives.values():
            archive.close()
