"""gradc.save / gradc.load in PyTorch's own file format, without importing torch.

A file is a zip (stored, not compressed) holding `<name>/data.pkl`, one raw little-endian storage per
tensor under `<name>/data/<key>`, `<name>/byteorder` and `<name>/version`. Tensors, containers and Python
primitives (numpy arrays as tensors) are written as PyTorch writes them (`torch._utils._rebuild_tensor_v2`
over a persistent `('storage', torch.FloatStorage, key, 'cpu', numel)`), so PyTorch loads them with
weights_only=True and gradc loads PyTorch's files. Other objects (a whole Module) are pickled as gradc
objects, tensors inline: gradc loads those with weights_only=False; PyTorch cannot.

Loading with weights_only=True (the default, as PyTorch >= 2.6) accepts only tensors, containers and
primitives, and refuses any other global with pickle.UnpicklingError.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

from gradc.device import check_device, device
from gradc.dtypes import bfloat16, complex64, complex128, float16
from gradc.ir.core import DTYPES, DType, dtype_of_numpy
from gradc.tensor import Tensor

__all__ = ["save", "load"]

STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64,
                  "BoolStorage": np.bool_, "IntStorage": np.int32, "ShortStorage": np.int16,
                  "CharStorage": np.int8, "ByteStorage": np.uint8, "HalfStorage": np.float16}
STORAGE_BY_DTYPE = {np.dtype(v): k for k, v in STORAGE_DTYPES.items()}
TORCH_DTYPES = {d.name: d for d in DTYPES}
UNSUPPORTED_DTYPES = (float16, bfloat16, complex64, complex128)


def _c_order(a: np.ndarray) -> np.ndarray:
    """a itself when C-contiguous, else a C-ordered copy (np.ascontiguousarray would make 0-d arrays 1-d)."""
    return a if a.flags.c_contiguous else np.array(a, order="C")


class _Writer:
    """A pickle (protocol 2) writer for the data PyTorch's weights_only loader accepts."""

    class Unsupported(Exception):
        pass

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.storages: list[np.ndarray] = []

    def dump(self, obj: Any) -> bytes:
        self.out.write(b"\x80\x02")
        self.save(obj)
        self.out.write(b".")
        return self.out.getvalue()

    def op(self, data: bytes) -> None:
        self.out.write(data)

    def global_(self, module: str, name: str) -> None:
        self.op(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def save(self, obj: Any) -> None:  # noqa: C901 (one branch per pickled type, as pickle's own table)
        w = self.op
        if obj is None:
            w(b"N")
        elif obj is True or obj is False:
            w(b"\x88" if obj else b"\x89")
        elif isinstance(obj, int):
            if -2**31 <= obj < 2**31:
                w(b"J" + struct.pack("<i", obj))
            else:
                data = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
                w(b"\x8a" + bytes([len(data)]) + data)
        elif isinstance(obj, float):
            w(b"G" + struct.pack(">d", obj))
        elif isinstance(obj, str):
            data = obj.encode("utf-8", "surrogatepass")
            w(b"X" + struct.pack("<I", len(data)) + data)
        elif isinstance(obj, Tensor):
            self.save_tensor(obj)
        elif isinstance(obj, np.ndarray) and obj.dtype in STORAGE_BY_DTYPE:
            # gradc's state_dict holds numpy arrays (copies): they are written as the tensors PyTorch's has
            self.save_tensor(Tensor._from_array(_c_order(obj)))
        elif isinstance(obj, DType):
            self.global_("torch", obj.name)
        elif isinstance(obj, device):
            self.global_("torch", "device")
            self.save((str(obj),))
            w(b"R")
        elif type(obj).__name__ == "Size" and isinstance(obj, tuple):  # gradc's torch.Size
            self.global_("torch", "Size")
            self.save((tuple(int(d) for d in obj),))
            w(b"R")
        elif type(obj) is set:  # (not frozenset: PyTorch's weights_only loader refuses it)
            self.global_("__builtin__", "set")
            self.save((list(obj),))
            w(b"R")
        elif type(obj) is tuple:
            w(b"(")
            for item in obj:
                self.save(item)
            w(b"t")
        elif type(obj) is list:
            w(b"]")
            if obj:
                w(b"(")
                for item in obj:
                    self.save(item)
                w(b"e")
        elif type(obj) in (dict, collections.OrderedDict):
            if type(obj) is dict:
                w(b"}")
            else:
                self.global_("collections", "OrderedDict")
                w(b")R")
            if obj:
                w(b"(")
                for k, v in obj.items():
                    self.save(k)
                    self.save(v)
                w(b"u")
        else:
            raise self.Unsupported(type(obj).__name__)

    def save_tensor(self, t: Tensor) -> None:
        from gradc.nn.module import Parameter
        data = _c_order(t._concrete("gradc.save()"))
        key = str(len(self.storages))
        self.storages.append(data)
        if isinstance(t, Parameter):
            self.global_("torch._utils", "_rebuild_parameter")
            self.op(b"(")
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.op(b"(")
        self.op(b"(")  # the persistent id of the storage
        self.save("storage")
        self.global_("torch", STORAGE_BY_DTYPE[data.dtype])
        self.save(key)
        self.save("cpu")
        self.save(int(data.size))
        self.op(b"tQ")
        self.save(0)
        self.save(tuple(int(d) for d in data.shape))
        self.save(tuple(int(s) // data.itemsize for s in data.strides) if data.size else
                  tuple(int(np.prod(data.shape[i + 1:])) for i in range(data.ndim)))
        self.save(bool(t.requires_grad) if not isinstance(t, Parameter) else False)
        self.global_("collections", "OrderedDict")
        self.op(b")R")
        self.op(b"tR")
        if isinstance(t, Parameter):
            self.save(bool(t.requires_grad))
            self.global_("collections", "OrderedDict")
            self.op(b")R")
            self.op(b"tR")


def save(obj: Any, f: Any, pickle_module: Any = None, pickle_protocol: int = 2, **kwargs: Any) -> None:
    """torch.save: `f` is a path or a writable binary file."""
    writer = _Writer()
    try:
        payload = writer.dump(obj)
        storages = writer.storages
    except _Writer.Unsupported:  # e.g. a whole Module: gradc objects, tensors pickled inline
        payload, storages = pickle.dumps(obj, protocol=2), []
    name = "archive"
    if isinstance(f, (str, os.PathLike)):
        name = os.path.splitext(os.path.basename(os.fspath(f)))[0] or "archive"
        name = "".join(c if c.isalnum() or c in "_-" else "_" for c in name) or "archive"
    target = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f
    try:
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr(f"{name}/data.pkl", payload)
            z.writestr(f"{name}/byteorder", "little")
            for key, data in enumerate(storages):
                z.writestr(f"{name}/data/{key}", data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes())
            z.writestr(f"{name}/version", "3\n")
    finally:
        if target is not f:
            target.close()


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, requires_grad: bool = False,
                    hooks: Any = None, metadata: Any = None) -> Tensor:
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * storage.itemsize for s in stride))
    t = Tensor._from_array(np.array(view, order="C"))  # a copy; keeps 0-d tensors 0-d
    if requires_grad:
        t.requires_grad = True
    return t


def _rebuild_parameter(data: Tensor, requires_grad: bool, hooks: Any = None) -> Any:
    from gradc.nn.module import Parameter
    return Parameter(data, requires_grad=requires_grad)


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])


def _size(dims: Any = ()) -> Any:
    from gradc.tensor_protocol import Size
    return Size(dims)


def _torch_device(spec: Any, index: Any = None) -> device:
    d = device(spec, index)
    check_device(d) if d.type != "cuda" else None  # a cuda tensor's location is mapped to the CPU below
    return d


SAFE_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "device"): _torch_device,
    ("torch", "Size"): _size,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,  # protocol 2 spells builtins the Python 2 way
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
    **{("torch", name): d for name, d in TORCH_DTYPES.items()},
    **{("torch", d.name): d for d in UNSUPPORTED_DTYPES},  # a dtype object may be loaded, not a tensor of it
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str, weights_only: bool) -> None:
        super().__init__(file)
        self.archive, self.prefix, self.weights_only = archive, prefix, weights_only

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS:
            return SAFE_GLOBALS[(module, name)]
        if self.weights_only:
            raise pickle.UnpicklingError(
                f"Weights only load failed. Re-running `gradc.load` with `weights_only` set to `False` will likely "
                f"succeed, but it can result in arbitrary code execution. Do it only if you got the file from a "
                f"trusted source. Unsupported global: GLOBAL {module}.{name} was not an allowed global by default.")
        if module == "torch" or module.startswith("torch."):
            raise pickle.UnpicklingError(f"gradc.load cannot rebuild the PyTorch object {module}.{name} "
                                         "(only tensors, containers and primitives)")
        return super().find_class(module, name)

    def storage(self, key: str, dtype: Any) -> np.ndarray:
        raw = self.archive.read(f"{self.prefix}data/{key}")
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and pid and pid[0] == "storage":
            _, storage_type, key, location, numel = pid
            if not isinstance(storage_type, _StorageType):
                raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
            return self.storage(key, storage_type.dtype)
        raise pickle.UnpicklingError(f"Weights only load failed: unsupported persistent id {pid!r}")


def load(f: Any, map_location: Any = None, pickle_module: Any = None, *, weights_only: bool | None = True,
         mmap: Any = None, **kwargs: Any) -> Any:
    """torch.load of a zip file written by PyTorch or gradc; map_location may name the CPU only."""
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        check_device(map_location)
    weights_only = True if weights_only is None else weights_only
    source = open(f, "rb") if isinstance(f, (str, os.PathLike)) else f
    try:
        if not zipfile.is_zipfile(source):
            raise RuntimeError("gradc.load reads PyTorch's zip file format (torch >= 1.6); this file is not a zip "
                               "archive (legacy torch.save files are not supported)")
        source.seek(0)
        with zipfile.ZipFile(source) as z:
            pkl = [n for n in z.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
            if not pkl:
                raise RuntimeError("PytorchStreamReader failed locating file data.pkl: file not found")
            prefix = pkl[0][: -len("data.pkl")]
            return _Unpickler(io.BytesIO(z.read(pkl[0])), z, prefix, weights_only).load()
    finally:
        if source is not f:
            source.close()


def _tensor_reduce(self: Tensor, protocol: int) -> Any:
    """Plain pickling of a gradc tensor (inside a gradc-only object file, or copy/pickle by users)."""
    data = self._concrete("pickling")
    return _from_state, (data.dtype.str, data.shape, data.tobytes(), bool(self.requires_grad), type(self))


def _from_state(dtype: str, shape: tuple, raw: bytes, requires_grad: bool, cls: type = Tensor) -> Tensor:
    array = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()
    dtype_of_numpy(array.dtype)
    if cls is not Tensor:
        return cls(Tensor._from_array(array), requires_grad=requires_grad)
    t = Tensor._from_array(array)
    t.requires_grad = requires_grad
    return t


Tensor.__reduce_ex__ = _tensor_reduce


def _safetensors_numpy() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError:
        raise ImportError("safetensors files need the optional `safetensors` package (pip install safetensors)") \
            from None
    return st


def save_safetensors(tensors: dict, filename: Any, metadata: dict | None = None) -> None:
    """safetensors.torch.save_file for gradc tensors (through safetensors.numpy: no torch needed)."""
    arrays = {k: _c_order(v._concrete("save_safetensors()")) for k, v in tensors.items()}
    _safetensors_numpy().save_file(arrays, os.fspath(filename), metadata=metadata)


def load_safetensors(filename: Any, device: Any = "cpu") -> dict:
    """safetensors.torch.load_file for gradc: a dict of tensors."""
    check_device(device)
    return {k: Tensor._from_array(np.array(v)) for k, v in _safetensors_numpy().load_file(os.fspath(filename)).items()}
