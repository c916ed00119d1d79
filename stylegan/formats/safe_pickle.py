"""Unpickling network files that were written by code we will not run: NVIDIA's PyTorch and TensorFlow StyleGAN2
pickles and TensorFlow StyleGAN (2018) ones (stylegan.formats.nvidia_pickle, tf_pickle, tf_stylegan1).

A restricted unpickler admits only the handful of globals such files need and turns each network object into a
plain record of its state; the source code such files embed is never executed and their modules never imported.
Hostile files are refused before they cost memory: the opcode stream is scanned first, so no declared length can
exceed what the file holds; tensors must be contiguous views inside their storage (a zero-stride view of a few
bytes would otherwise expand when copied) and their storages uncompressed; numpy arrays hold numbers and are made
only through numpy's pickling path; tensor hooks and attributes set on dicts are refused; dict keys and set elements
are checked before they are hashed (CPU); and the walk over the records (Budget) is bounded in depth, in nodes and in
bytes copied or built into names, so shared references cannot expand.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylegan.errors import UserError

MAX_DEPTH = 64  # nesting of modules, records and argument values
MAX_NODES = 200_000  # records, containers and values visited while reading one file


class PersistentRecord:
    """What `_reconstruct_persistent_obj(meta)` becomes here: the meta dict, with module_src never executed."""

    def __init__(self, meta: dict):
        self.meta = meta

    @property
    def state(self) -> dict:
        state = self.meta.get("state") if isinstance(self.meta, dict) else None
        return state if isinstance(state, dict) else {}


class TFNetworkRecord:
    """What a pickled `dnnlib.tflib.network.Network` becomes here: its state, build_module_src never executed."""

    state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


_FLAT = (str, bytes, int, float, type(None), np.generic)


def _check_keys(keys: Any) -> None:
    # A dict key or set element is hashed as it is inserted, and hashing a tuple hashes what it holds: a deep
    # structure of shared tuples (a few hundred bytes of pickle) would take exponential time. Network pickles key
    # by names and numbers.
    for key in keys:
        if not isinstance(key, _FLAT) and not (isinstance(key, tuple) and all(isinstance(k, _FLAT) for k in key)):
            _refuse(f"a {type(key).__name__} as a dict key or set element: not a network pickle")


def _refuse_state(self: Any, state: Any) -> None:
    # BUILD would otherwise set attributes on these dicts, e.g. replace their methods
    if state:
        _refuse(f"attributes set on a {type(self).__name__}: not a network pickle")


class _AttrDict(dict):
    """Stands in for dnnlib.util.EasyDict (a dict with attribute access); only its items matter."""

    __setstate__ = _refuse_state


class _OrderedDict(collections.OrderedDict):
    """collections.OrderedDict whose items are checked as they come and whose attributes cannot be set."""

    def __init__(self, items: Any = ()):
        items = list(items.items() if isinstance(items, dict) else items)
        _check_keys(k for k, _ in items)
        super().__init__(items)

    __setstate__ = _refuse_state


def _set(items: Any = ()) -> set:
    items = list(items)
    _check_keys(items)
    return set(items)


def _frozenset(items: Any = ()) -> frozenset:
    return frozenset(_set(items))


class _NDArrayClass:
    """Stands in for the numpy.ndarray global, which array pickles name only as _reconstruct's first argument:
    creating one (NEWOBJ) would allocate the shape the file declares."""

    def __new__(cls, *args: Any) -> None:
        _refuse("a numpy array created directly: not a network pickle")


def _refuse(why: str) -> None:
    raise pickle.UnpicklingError(why)


def _contiguous_strides(size: tuple) -> list[int]:
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= max(int(n), 1)
    return strides[::-1]


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if backward_hooks or metadata:
        _refuse("a tensor with hooks or metadata: not a plain network pickle")
    with warnings.catch_warnings():  # TypedStorage's size() warns of its deprecation
        warnings.simplefilter("ignore")
        elements = storage.size()
    if list(stride) != _contiguous_strides(tuple(size)) or offset < 0 or \
            offset + int(np.prod(size, dtype=np.int64)) > elements:
        _refuse(f"a tensor of size {list(size)} that is not a contiguous part of its storage")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, collections.OrderedDict())


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if backward_hooks or state:
        _refuse("a parameter with hooks or state: not a plain network pickle")
    return data


def _load_storage(data: bytes) -> Any:
    # Tensors in a plain pickle carry their storage as bytes in torch.save format: load those with torch's own
    # restricted loader, so no code path here unpickles arbitrary objects. torch.save writes a zip of stored
    # (uncompressed) members; a deflated one would inflate beyond the file before any budget could see it.
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for member in z.infolist():
                if member.compress_type != zipfile.ZIP_STORED or member.file_size > len(data):
                    _refuse(f"tensor storage with a compressed or oversized member ({member.filename!r:.60}): not "
                            "written by torch.save")
    return torch.load(io.BytesIO(data), weights_only=True)


def _numpy_dtype(obj: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(obj, align, copy)
    # numbers only: objects would be unpickled, and a zero-sized type (void, empty string) makes an array of any
    # length from no bytes at all, which a copy to float32 then allocates
    if dtype.kind not in "biuf" or dtype.itemsize == 0 or dtype.fields or dtype.subdtype:
        _refuse(f"a numpy array of type {dtype}: network pickles hold numbers")
    return dtype


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    return np.frombuffer(data, dtype=_numpy_dtype(dtype))[0]


def _numpy_reconstruct(subtype: type, shape: tuple, dtype: Any) -> np.ndarray:
    # numpy pickles an empty array here and sets shape and data afterwards (which numpy checks against each
    # other); never allocate the shape a file declares.
    if subtype is not _NDArrayClass:
        _refuse(f"numpy array subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, (0,), _numpy_dtype(dtype))


def _numpy_frombuffer(buf: bytes | bytearray, dtype: Any, shape: tuple, order: str) -> np.ndarray:
    # Protocol 5 pickles of arrays (numpy >= 1.16): a view of bytes the file holds, reshaped (numpy checks the
    # element count), so nothing larger than the file is ever allocated.
    if not isinstance(buf, (bytes, bytearray)) or order not in ("C", "F"):
        _refuse("a numpy buffer that is not plain bytes")
    return np.frombuffer(buf, dtype=_numpy_dtype(dtype)).reshape(shape, order=order)


def _latin1_bytes(text: str, encoding: str) -> bytes:
    # Protocol 2 writes bytes (numpy array data) as _codecs.encode(text, 'latin1'): only that is allowed.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        _refuse("a codec call other than protocol 2's latin-1 bytes")
    return text.encode("latin-1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("dnnlib.tflib.network", "Network"): TFNetworkRecord,
    ("dnnlib.util", "EasyDict"): _AttrDict,
    ("collections", "OrderedDict"): _OrderedDict,
    ("builtins", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): _NDArrayClass,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
}


def _checking(load: Any, keys: Any) -> Any:
    """An opcode of pickle's Python unpickler that first checks the keys it is about to hash."""
    def checked(self: pickle._Unpickler) -> None:
        _check_keys(keys(self.stack))
        load(self)
    return checked


class _RestrictedUnpickler(pickle._Unpickler):
    """pickle's Python unpickler (the C one hashes dict keys and set elements out of reach): only the allow-listed
    globals, and every key checked before it is hashed."""

    dispatch = dict(pickle._Unpickler.dispatch)
    for _op, _keys in ((pickle.SETITEM, lambda stack: stack[-2:-1]), (pickle.SETITEMS, lambda stack: stack[0::2]),
                       (pickle.DICT, lambda stack: stack[0::2]), (pickle.ADDITEMS, lambda stack: stack),
                       (pickle.FROZENSET, lambda stack: stack)):
        dispatch[_op[0]] = _checking(dispatch[_op[0]], _keys)
    del _op, _keys

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        _refuse(f"refusing to load global '{module}.{name}': it is not part of a StyleGAN network pickle (the file "
                "may be malicious)")

    def persistent_load(self, pid: Any) -> Any:
        _refuse("unexpected persistent id: not a plain NVIDIA network pickle")


class _BoundedReader:
    """A file whose read() refuses a length beyond what is left, before anything is allocated."""

    def __init__(self, f: io.BufferedReader, size: int):
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.left
        if n > self.left:
            _refuse(f"declares {n:,} bytes where the file has {self.left:,} left: truncated or forged")
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def readline(self) -> bytes:
        line = self.f.readline()
        self.left -= len(line)
        return line


def unpickle(path: Path) -> Any:
    size = path.stat().st_size
    with open(path, "rb") as f:
        for _ in pickletools.genops(_BoundedReader(f, size)):  # every declared length checked, nothing built
            pass
        f.seek(0)
        return _RestrictedUnpickler(f).load()


class Budget:
    """Bounds one file's walk: depth, nodes visited and tensor bytes copied."""

    def __init__(self, path: Path, max_bytes: int):
        self.path, self.nodes, self.bytes_left = path, 0, max_bytes

    def visit(self, depth: int) -> None:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise UserError(f"{self.path}: nested deeper than {MAX_DEPTH} or larger than {MAX_NODES} values: not a "
                            "network pickle (a forged file?)")

    def text(self, s: str) -> str:
        """`s`, charged: names built from a file's strings (shared records would otherwise repeat them without end)."""
        self.bytes_left -= len(s)
        if self.bytes_left < 0:
            raise UserError(f"{self.path}: its names would grow to more bytes than the file holds (shared "
                            "references): not a network pickle")
        return s

    def copy(self, t: torch.Tensor) -> torch.Tensor:
        self.bytes_left -= t.numel() * t.element_size()
        if self.bytes_left < 0:
            raise UserError(f"{self.path}: its tensors would copy to more bytes than the file holds (shared "
                            "references): not a network pickle")
        return t.detach().clone()


def plain(value: Any, budget: Budget, depth: int = 0) -> Any:
    """Argument values as plain data: EasyDicts and tuples to dicts and lists, numpy scalars to Python numbers.
    Anything else (tensors, arrays, records) has no place in constructor arguments."""
    budget.visit(depth)
    if isinstance(value, dict):
        return {str(k): plain(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, budget, depth + 1) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise UserError(f"{budget.path}: a {type(value).__name__} among a network's arguments: not a network pickle")
