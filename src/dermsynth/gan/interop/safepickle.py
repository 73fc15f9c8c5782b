"""A restricted unpickler for NVIDIA's StyleGAN2-ADA / StyleGAN3 network pickles: data in, no code run.

What such a `.pkl` is (stylegan2-ada-pytorch's `torch_utils/persistence.py` and `training/training_loop.py`,
read as a description of the format): `pickle.dump` of a dict {"G", "D", "G_ema", "augment_pipe",
"training_set_kwargs"}. Each network module is pickled by its persistent-class decorator's `__reduce__` as a
call `torch_utils.persistence._reconstruct_persistent_obj(meta)`, where `meta` is a dict {"type": "class",
"version", "module_src" (the text of the Python module defining the class), "class_name", "state" (the module's
`__dict__`: `_parameters`, `_buffers`, `_modules` — child modules, themselves such calls — `_init_args`,
`_init_kwargs`, hooks and plain attributes)}. NVIDIA's own loader executes `module_src` to rebuild the class, so
`pickle.load` on an untrusted file runs whatever that text (or any other global the pickle names) contains.

`load_network_pickle` never imports or runs anything named by the file. `RestrictedUnpickler.find_class`
answers only the globals of `ALLOWED_GLOBALS`, each with dermsynth's own harmless stand-in:

* `_reconstruct_persistent_obj` → a `PersistentRecord` holding class name, state and the source *as text*;
* `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` → a tensor viewed from its storage;
* `torch.storage._load_from_bytes` (how a storage is pickled by plain `pickle`) → the storage's bytes read by
  `read_legacy_storage`: the nested legacy `torch.save` stream, unpickled by the same restricted class with a
  `persistent_load` that, as torch's own loader does, turns ('storage', type, key, location, numel, view) ids into
  storages filled from the raw little-endian data that follows the pickle;
* `collections.OrderedDict`, `dnnlib.util.EasyDict` (a dict), numpy scalars of numeric dtypes (`numpy.dtype`,
  `numpy.core.multiarray.scalar`), `builtins.set`/`frozenset`, `_codecs.encode` of text to latin-1 bytes (how
  pickle protocol 2 stores bytes).

Any other global — `os.system`, `builtins.eval`, a module's class — raises `UnsafePickleError` in one line that
names it, before anything else of the file is read.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import DermsynthError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER of the legacy (non-zip) format
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                  "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                  "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                  "BoolStorage": torch.bool}
NUMPY_SCALARS = {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"}


class UnsafePickleError(DermsynthError):
    """A pickle names a global that a StyleGAN2 network pickle does not contain; nothing of it was executed."""


class EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict` (a dict with attribute access): here, just its items."""


@dataclass
class PersistentRecord:
    """One `_reconstruct_persistent_obj(meta)` of an NVIDIA pickle, as data: `class_name` ("Generator",
    "SynthesisLayer", …), `state` (the module's `__dict__`: `_parameters`, `_buffers`, `_modules`, `_init_kwargs`, …;
    children are records too), `module_src` (the defining module's source text — read, never executed)."""

    class_name: str
    state: dict
    module_src: str = field(repr=False, default="")
    version: int | None = None

    def children(self) -> dict[str, "PersistentRecord"]:
        """Child modules by attribute name (`_modules`; None entries left out)."""
        return {k: v for k, v in (self.state.get("_modules") or {}).items() if v is not None}

    def init_kwargs(self) -> dict:
        """The keyword arguments the module was built with (`_init_kwargs`; {} when not recorded)."""
        return dict(self.state.get("_init_kwargs") or {})

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Flat {dotted name: tensor} of parameters and persistent buffers, like `nn.Module.state_dict()`."""
        out: dict[str, torch.Tensor] = {}
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for kind in ("_parameters", "_buffers"):
            for name, value in (self.state.get(kind) or {}).items():
                if value is not None and name not in skip:
                    out[prefix + name] = value
        for name, child in self.children().items():
            if isinstance(child, PersistentRecord):
                out.update(child.tensors(f"{prefix}{name}."))
        return out


def _record(meta: dict) -> PersistentRecord:
    if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
        raise UnsafePickleError("a persistence record without a state dict")
    return PersistentRecord(str(meta.get("class_name", "")), meta["state"], str(meta.get("module_src", "")),
                            meta.get("version"))


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, requires_grad=False, hooks=None,
                    metadata=None) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor):
        raise UnsafePickleError("a tensor whose storage is not a storage")
    if len(size) == 0 and storage.numel() == 0:
        return storage.new_empty(())
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


def _rebuild_parameter(data: torch.Tensor, requires_grad=False, hooks=None, state=None) -> torch.Tensor:
    return data


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError("_codecs.encode other than of text to latin-1 bytes (how protocol 2 stores bytes)")
    return text.encode("latin1")


def _set(*args):
    return set(*args)


def _frozenset(*args):
    return frozenset(*args)


class _DType:
    """Stand-in for `numpy.dtype(name, align, copy)` (+ BUILD state with the byte order)."""

    def __init__(self, name: str, *_):
        self.name, self.order = str(name), "<"

    def __setstate__(self, state):
        self.order = state[1] if isinstance(state, tuple) and len(state) > 1 and state[1] in "<>|=" else "<"


def _numpy_scalar(dtype: _DType, data: bytes | None = None):
    if not isinstance(dtype, _DType) or dtype.name not in NUMPY_SCALARS or not isinstance(data, bytes):
        raise UnsafePickleError(f"a numpy scalar of dtype {getattr(dtype, 'name', dtype)!r} (only numbers are read)")
    order = "|" if dtype.name in ("i1", "u1", "b1") else (dtype.order if dtype.order in "<>" else "<")
    return np.frombuffer(data, dtype=np.dtype(order + dtype.name))[0].item()


ALLOWED_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _record,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("_codecs", "encode"): _latin1,
    ("builtins", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
}


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only `ALLOWED_GLOBALS` (to dermsynth's stand-ins) and, in a legacy torch
    storage stream (`storages` given), storage persistent ids. `where` names the file in errors."""

    def __init__(self, file, where: str, storages: dict | None = None):
        super().__init__(file)
        self.where, self.storages = where, storages

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return self._storage_from_bytes
        if self.storages is not None and module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module.startswith("dnnlib.tflib"):
            raise UnsafePickleError(
                f"{self.where}: a TensorFlow StyleGAN/StyleGAN2 pickle ({module}.{name}), not a PyTorch one; convert it "
                "with stylegan2-ada-pytorch's legacy.py (or take the PyTorch release of the network) and import that")
        raise UnsafePickleError(
            f"{self.where}: refused, the pickle calls {module}.{name}, which a StyleGAN2 network pickle does not "
            f"contain (pickle.load would have run it); nothing from the file was executed — import only network "
            f"pickles of stylegan2-ada-pytorch or stylegan3, or a rosinality .pt")

    def persistent_load(self, pid):
        if self.storages is None or not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"{self.where}: refused, a persistent id {str(pid)[:60]!r} that is not a torch "
                                    "storage")
        _, dtype, key, _location, numel = pid[:5]
        if len(pid) > 5 and pid[5] is not None:
            raise UnsafePickleError(f"{self.where}: refused, a storage view (torch < 0.4 pickles are not read)")
        if not isinstance(dtype, torch.dtype):
            raise UnsafePickleError(f"{self.where}: refused, a storage of type {dtype!r}")
        return self.storages.setdefault(str(key), _StorageRef(dtype, int(numel)))

    def _storage_from_bytes(self, blob: bytes) -> torch.Tensor:
        return read_legacy_storage(blob, self.where)


@dataclass
class _StorageRef:
    dtype: torch.dtype
    numel: int
    tensor: torch.Tensor | None = None


def read_legacy_storage(blob: bytes, where: str) -> torch.Tensor:
    """The storage of a legacy `torch.save` stream (what `torch.storage._load_from_bytes` receives in a plain
    pickle) as a flat tensor of its dtype: magic number, protocol, system info, the pickled storage (persistent
    id), the list of storage keys, then per key its element count (int64, little-endian) and raw bytes.
    Raises UnsafePickleError for any global other than a storage type, or a stream that is not of this form."""
    f = io.BytesIO(blob)
    header = [RestrictedUnpickler(f, where).load() for _ in range(3)]
    if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL or not header[2].get("little_endian", False):
        raise UnsafePickleError(f"{where}: refused, a tensor storage that is not a little-endian legacy torch stream")
    storages: dict[str, _StorageRef] = {}
    obj = RestrictedUnpickler(f, where, storages).load()
    keys = RestrictedUnpickler(f, where).load()
    for key in keys:
        ref = storages[str(key)]
        numel = int.from_bytes(f.read(8), "little")
        size = numel * torch.empty((), dtype=ref.dtype).element_size()
        data = f.read(size)
        if numel != ref.numel or len(data) != size:
            raise UnsafePickleError(f"{where}: a tensor storage is truncated ({len(data)} of {size} bytes)")
        ref.tensor = torch.frombuffer(bytearray(data), dtype=ref.dtype) if size else torch.empty(0, dtype=ref.dtype)
    if not isinstance(obj, _StorageRef) or obj.tensor is None:
        raise UnsafePickleError(f"{where}: refused, a storage stream that holds no storage")
    return obj.tensor


def load_network_pickle(path: str | Path) -> Any:
    """The content of an NVIDIA network pickle, every persistent module as a `PersistentRecord` and every tensor
    as a CPU tensor (no code from the file is executed; see the module docstring).
    Raises UnsafePickleError (one line naming the global) for anything else, pickle.UnpicklingError/EOFError for
    a file that is not a complete pickle."""
    path = Path(path)
    with path.open("rb") as f:
        return RestrictedUnpickler(f, str(path)).load()
