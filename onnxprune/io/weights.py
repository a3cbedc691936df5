"""Weights that stay on disk: memory-mapped external data and the stub tensors that stand for them.

Why: a pruning run copies the model's protobuf several times (original, folded, normalized, the
shape probe, the checker's copy, graphsurgeon's import and export).  With weights inside the protos
every copy costs the model's size again — about 7x peak memory for a ResNet-50.  A model whose
weights live in external data therefore keeps them *out* of every proto:

* :func:`onnxprune.io.load_model` validates each external reference as before, maps the data files
  read-only (``mmap``) into a :class:`WeightStore` and turns each top-level initializer into a
  **stub**: the same ``TensorProto`` (name, dims, data type, doc string) still marked
  ``EXTERNAL``, whose only external entry names the store and a key
  (``<onnxprune-weights>/<store id>/<key>``) instead of a file.  Copying a stub costs bytes, not
  megabytes, so every proto copy of the pipeline becomes cheap.
* Values are read only when something needs them (a criterion, a slice, the hash): the store hands
  out a read-only ``numpy`` view of the mapping, so a write can never reach the user's file, and
  the pages it touches can be dropped again (:meth:`WeightStore.release`) so reading every weight
  once does not keep the whole model resident.
* Arrays computed by the pipeline (sliced weights, folded constants) are registered in the store on
  export (:func:`onnxprune.ir.graph.export_graph`) and become stubs too; only the kept data exists.
* :func:`onnxprune.io.save_model` and :func:`onnxprune.io.model_sha256` stream stub payloads chunk
  by chunk; onnxruntime receives them as external initializers (:func:`ort_session`), never as bytes
  inside a serialized proto; the ONNX checker sees them as typed graph inputs (:func:`checkable`).

A store lives as long as the process (a stub can only be resolved while its store exists, and protobuf
messages cannot be weakly referenced, so nothing tells the store a proto is gone); the CLI runs one
command per process.  Arrays computed from a store's weights are kept with it, so a caller that
applies many candidate plans to one mapped model (a budget search, a sensitivity scan) keeps every
candidate's slices: the CLI maps weights only for ``analyze``, ``verify`` and ``prune`` without a
budget target.  A stub can never be written to a file by mistake: its location
is not a file, and :func:`onnxprune.io.load_model` refuses it like any location it cannot find.

Passes that slice or mask a stub register a *derived* weight instead (:meth:`WeightStore.add_derived`),
computed when a session or a save reads it; while a store's models run block by block, large computed
arrays are spilled to mapped temporary files (:attr:`WeightStore.spill`).

Only plain fixed-size numeric types are mapped (``float16/32/64``, ``(u)int8..64``, ``bool``);
anything else (bfloat16, float8, packed 4-bit, strings) is read into the proto as before.
"""

from __future__ import annotations

import hashlib
import itertools
import mmap
import os
import re
import secrets
import stat
from collections.abc import Callable, Hashable, Iterator, Mapping
import tempfile
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from onnxprune.errors import InputError, ModelLoadError
from onnxprune.io.ort_initializers import copies_external_initializers

__all__ = [
    "CHUNK_BYTES",
    "STORE_MIN_BYTES",
    "WeightStore",
    "checkable",
    "chunks",
    "entry_of",
    "float_type",
    "has_stubs",
    "in_file_stub",
    "is_stub",
    "ort_session",
    "payload_sha256",
    "release",
    "stub_bytes",
    "store_of",
    "stub_entry",
    "to_array",
]

#: Computed arrays at least this large are kept in the store (not inside protos) when the model is
#: stub-backed; smaller ones (shape constants, biases) stay inline where they are cheap.
STORE_MIN_BYTES = 1024
#: Streaming granularity when hashing or writing a stub's payload.
CHUNK_BYTES = 64 << 20
#: Computed arrays at least this large are spilled to a mapped temporary file when the store spills.
SPILL_MIN_BYTES = 16 << 20

_PREFIX = "<onnxprune-weights>/"
_LOCATION = re.compile(r"<onnxprune-weights>/([0-9a-f]{16})/([0-9]+)")

# Data types mapped as numpy views: their raw bytes are exactly prod(dims) * itemsize, little-endian.
_NUMPY_TYPES = {
    TensorProto.FLOAT: "<f4", TensorProto.DOUBLE: "<f8", TensorProto.FLOAT16: "<f2",
    TensorProto.INT8: "i1", TensorProto.UINT8: "u1", TensorProto.INT16: "<i2", TensorProto.UINT16: "<u2",
    TensorProto.INT32: "<i4", TensorProto.UINT32: "<u4", TensorProto.INT64: "<i8", TensorProto.UINT64: "<u8",
    TensorProto.BOOL: "?",
}  # fmt: skip
_TYPE_OF_DTYPE = {np.dtype(code).newbyteorder("<"): data_type for data_type, code in _NUMPY_TYPES.items()}

_STORES: dict[str, WeightStore] = {}
_MISSING = object()


def float_type(data_type: int) -> bool:
    """Whether tensors of ``data_type`` are mapped as numpy floats (float16/32/64): the weights that norms
    are taken of and whose finiteness is checked.  bfloat16 and float8 are not (numpy has no such dtype)."""
    dtype = numpy_dtype(data_type)
    return dtype is not None and dtype.kind == "f"


def numpy_dtype(data_type: int) -> np.dtype | None:
    """The dtype a tensor of ``data_type`` is mapped as, or None when it is read into the proto."""
    code = _NUMPY_TYPES.get(data_type)
    return None if code is None else np.dtype(code)


@dataclass
class _Entry:
    """One weight: a range of a mapped file (``mapping`` set) or an array the pipeline computed."""

    dtype: np.dtype
    shape: tuple[int, ...]
    mapping: mmap.mmap | None = None
    offset: int = 0
    array: np.ndarray | None = None
    derive: Callable[[], np.ndarray] | None = None  # computed from other entries on demand, never kept

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class WeightStore:
    """Weights of one loaded model (plus what the pipeline computed from them), addressed by key."""

    def __init__(self, from_files: bool = True) -> None:
        self.from_files = from_files  # False: weights taken out of a single-file model's protobuf
        self.id = secrets.token_hex(8)
        self._entries: dict[str, _Entry] = {}
        self._views: dict[str, np.ndarray] = {}
        self._derived: weakref.WeakValueDictionary[str, np.ndarray] = weakref.WeakValueDictionary()
        self._origins: weakref.WeakValueDictionary[str, np.ndarray] = weakref.WeakValueDictionary()
        #: Large computed arrays go to temporary files mapped back (set while models of this store run
        #: block by block): weights a pass computes for every layer (LSQ refits) then cost page cache,
        #: released after each block, instead of resident memory for the rest of the run.
        self.spill = False
        self._key_by_id: dict[int, str] = {}
        self._keys = itertools.count()
        self._facts: dict[tuple[str, Hashable], Any] = {}  # what was computed from a weight (:meth:`memo`)
        self._facts_lock = threading.Lock()  # guards _taking: the facts being computed, by any thread
        self._taking: dict[tuple[str, Hashable], threading.Event] = {}
        _STORES[self.id] = self

    # -- adding ------------------------------------------------------------------------------

    def map_fd(self, fd: int, need_bytes: int, where: str, real_path: str) -> mmap.mmap | None:
        """Map a validated external-data file, opened by the caller (``io``: ``O_NOFOLLOW`` by the real
        path the validation resolved), read-only; None for an empty file (nothing to map).

        The size is re-checked on the open descriptor, so a file swapped or truncated after validation
        is refused.  (A file truncated *while* mapped makes later reads fault: the user's files must not
        change during a run, as with onnxruntime's own memory-mapped external data.)
        """
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size < need_bytes:
                raise ModelLoadError(f"{where}: external data file changed while loading")
            if info.st_size == 0:
                return None
            return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except OSError as err:
            raise ModelLoadError(f"{where}: cannot map external data {real_path}: {err.strerror}") from err

    def add_mapped(self, mapping: mmap.mmap | None, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> str:
        """Register ``shape``/``dtype`` bytes at ``offset`` of a mapping; returns the key."""
        entry = _Entry(np.dtype(dtype), tuple(int(d) for d in shape), mapping, int(offset))
        if mapping is None and entry.nbytes:
            raise ModelLoadError("internal: a non-empty weight needs a mapped file")
        return self._add(entry)

    def add_array(self, array: np.ndarray) -> str:
        """Keep a computed array (read-only from now on) and return its key."""
        key = self.key_of(array)
        if key is not None:
            return key
        array.flags.writeable = False  # stubs promise immutable values; passes always write copies
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if self.spill and array.nbytes >= SPILL_MIN_BYTES:
            return self._spill(array, dtype)
        key = self._add(_Entry(dtype, tuple(array.shape), array=array))
        self._views[key] = array
        self._key_by_id[id(array)] = key
        return key

    def _spill(self, array: np.ndarray, dtype: np.dtype) -> str:
        """Write ``array`` to an unlinked temporary file and map it back (see :attr:`spill`)."""
        handle = tempfile.TemporaryFile(prefix="onnxprune_spill_")  # unlinked: gone with its mapping
        try:
            data = np.ascontiguousarray(array, dtype=dtype).reshape(-1).view(np.uint8)
            for start in range(0, data.size, CHUNK_BYTES):
                handle.write(data[start:start + CHUNK_BYTES])
            handle.flush()
            mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        finally:
            handle.close()
        key = self._add(_Entry(np.dtype(dtype), tuple(array.shape), mapping, 0))
        self._origins[key] = array
        self._key_by_id[id(array)] = key
        return key

    def add_derived(self, dtype: np.dtype, shape: tuple[int, ...], derive: Callable[[], np.ndarray]) -> str:
        """Register a weight computed from others when read (a slice, a masked copy); returns its key.

        Why: a pass that slices or masks every layer of a model larger than memory would otherwise hold
        the results of all layers at once.  A derived weight exists only while something uses it: a
        block's onnxruntime session (:func:`ort_session`), a chunk being saved, or a graph constant a
        pass loaded (kept weakly, so it goes when the graph lets go of it).
        """
        return self._add(_Entry(np.dtype(dtype), tuple(int(d) for d in shape), derive=derive))

    def transient(self, key: str) -> np.ndarray:
        """The weight's values for a use that ends soon (a session, a save): derived weights are computed
        (or reused while a graph holds them) but not kept; everything else is :meth:`array`."""
        entry = self._entry(key)
        if entry.derive is None:
            return self.array(key)
        found = self._derived.get(key)
        return found if found is not None else self._compute(key, entry)

    def _compute(self, key: str, entry: _Entry) -> np.ndarray:
        value = np.ascontiguousarray(entry.derive(), dtype=entry.dtype)
        if value.shape != entry.shape:
            raise InputError(f"internal: derived weight {key} has shape {list(value.shape)}, expected {list(entry.shape)}")
        value.flags.writeable = False
        return value

    def _add(self, entry: _Entry) -> str:
        key = str(next(self._keys))
        self._entries[key] = entry
        return key

    # -- reading -----------------------------------------------------------------------------

    def array(self, key: str) -> np.ndarray:
        """The weight's values as a read-only array (a view of the file for mapped weights)."""
        view = self._views.get(key)
        if view is not None:
            return view
        entry = self._entry(key)
        if entry.derive is not None:  # held weakly: identity (key_of) while a graph uses it, gone after
            view = self._derived.get(key)
            if view is None:
                view = self._compute(key, entry)
                self._derived[key] = view
                self._key_by_id[id(view)] = key
            return view
        if entry.nbytes == 0 or entry.mapping is None:
            view = np.zeros(entry.shape, dtype=entry.dtype)
            view.flags.writeable = False
        else:
            count = entry.nbytes // entry.dtype.itemsize
            view = np.frombuffer(entry.mapping, dtype=entry.dtype, count=count, offset=entry.offset)
            view = view.reshape(entry.shape)
        self._views[key] = view
        self._key_by_id[id(view)] = key
        return view

    def key_of(self, array: object) -> str | None:
        """Key of an array this store handed out or holds (identity, not equality)."""
        key = self._key_by_id.get(id(array))
        if key is None:
            return None
        held = (self._views.get(key), self._derived.get(key), self._origins.get(key))
        return key if any(value is array for value in held) else None

    def memo(self, key: str, fact: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` for weight ``key`` and ``fact`` (a SHA-256, a norm along an axis), once per run.

        Thread-safe: a thread asking for a fact another thread is computing waits for it (the CLI hashes in a
        background thread, :func:`onnxprune.io.files.start_hashing`).
        Why the store may remember it: its weights never change (mapped files are read-only and must not
        change during a run, computed arrays are frozen, derived ones are functions of those), so a fact
        computed early -- the CLI hashes and scores weights while its isolation child runs -- holds later.
        """
        slot = (key, fact)
        while True:
            found = self._facts.get(slot, _MISSING)
            if found is not _MISSING:
                return found
            with self._facts_lock:
                found = self._facts.get(slot, _MISSING)  # again: it may have been stored meanwhile
                if found is not _MISSING:
                    return found
                taking = self._taking.get(slot)
                if taking is None:  # nobody computes it: this thread does
                    taking = self._taking[slot] = threading.Event()
                    break
            taking.wait()  # another thread (hashing ahead) is computing it: wait, never compute twice
        try:
            found = self._facts[slot] = compute()
            return found
        finally:  # also when compute() raised: a waiting thread then tries itself and meets the error
            with self._facts_lock:
                del self._taking[slot]
            taking.set()

    def known(self, key: str, fact: Hashable) -> bool:
        """Whether :meth:`memo` already holds ``fact`` for weight ``key``."""
        return (key, fact) in self._facts

    def meta(self, key: str) -> tuple[np.dtype, tuple[int, ...]]:
        entry = self._entry(key)
        return entry.dtype, entry.shape

    def nbytes(self, key: str) -> int:
        return self._entry(key).nbytes

    def release(self, key: str) -> None:
        """Drop the resident pages of a mapped weight (they are re-read from the page cache if used
        again).  Why: RSS counts touched file-backed pages; a pass that reads every weight once
        would otherwise keep the whole model resident for the rest of the run."""
        entry = self._entries.get(key)
        if entry is None or entry.mapping is None or not entry.nbytes or not hasattr(entry.mapping, "madvise"):
            return
        start = entry.offset - entry.offset % mmap.PAGESIZE
        try:
            entry.mapping.madvise(mmap.MADV_DONTNEED, start, entry.offset + entry.nbytes - start)
        except (OSError, ValueError, AttributeError):
            pass  # an optimisation only

    def _entry(self, key: str) -> _Entry:
        try:
            return self._entries[key]
        except KeyError as err:
            raise InputError(f"weight store {self.id} has no weight {key!r}") from err

    # -- stubs -------------------------------------------------------------------------------

    def make_stub(self, tensor: TensorProto, key: str) -> None:
        """Turn ``tensor`` (name, dims and type already set) into a stub for ``key``, in place."""
        for field in ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data",
                      "uint64_data", "external_data"):
            tensor.ClearField(field)
        tensor.data_location = TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value=f"{_PREFIX}{self.id}/{key}")
        tensor.external_data.add(key="offset", value="0")
        tensor.external_data.add(key="length", value=str(self.nbytes(key)))

    def new_stub(self, name: str, key: str) -> TensorProto:
        """A fresh stub tensor named ``name`` for ``key``."""
        dtype, shape = self.meta(key)
        tensor = TensorProto()
        tensor.name = name
        tensor.dims.extend(shape)
        tensor.data_type = _TYPE_OF_DTYPE[dtype.newbyteorder("<")]
        self.make_stub(tensor, key)
        return tensor

    def storable(self, array: np.ndarray) -> bool:
        """Whether a computed array can be kept here (plain numeric dtype, large enough to matter)."""
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        return isinstance(array, np.ndarray) and dtype in _TYPE_OF_DTYPE and array.nbytes >= STORE_MIN_BYTES


# --------------------------------------------------------------------------------------------------
# stubs in protos


def stub_entry(tensor: TensorProto) -> tuple[WeightStore, str] | None:
    """(store, key) of a stub tensor, or None for any other tensor."""
    if tensor.data_location != TensorProto.EXTERNAL or not tensor.external_data:
        return None
    first = tensor.external_data[0]
    if first.key != "location" or not first.value.startswith(_PREFIX):
        return None
    match = _LOCATION.fullmatch(first.value)
    store = _STORES.get(match.group(1)) if match else None
    if store is None:
        raise InputError(f"tensor {tensor.name!r} refers to weights that are no longer available ({first.value})")
    return store, match.group(2)


def in_file_stub(tensor: TensorProto) -> bool:
    """True for a stub whose weights came from inside a single ``.onnx`` file (or were computed from them)."""
    found = stub_entry(tensor)
    return found is not None and not found[0].from_files


def is_stub(tensor: TensorProto) -> bool:
    """True for a tensor whose values live in a :class:`WeightStore`."""
    return stub_entry(tensor) is not None


def _stubs(model: onnx.ModelProto) -> Iterator[tuple[int, TensorProto, WeightStore, str]]:
    for index, tensor in enumerate(model.graph.initializer):
        found = stub_entry(tensor)
        if found is not None:
            yield index, tensor, found[0], found[1]


def store_of(model: onnx.ModelProto) -> WeightStore | None:
    """The store behind the first stub among ``model``'s top-level initializers (only those can be stubs)."""
    return next((store for _, _, store, _ in _stubs(model)), None)


def has_stubs(model: onnx.ModelProto) -> bool:
    """True when some top-level initializer of ``model`` is a stub."""
    return store_of(model) is not None


def stub_bytes_in_memory(model: onnx.ModelProto) -> int:
    """Bytes of the stubs whose weights came from inside a single ``.onnx`` file (not mapped files)."""
    return sum(store.nbytes(key) for _, _, store, key in _stubs(model) if not store.from_files)


def stub_bytes(model: onnx.ModelProto) -> int:
    """Bytes the model's stubs stand for."""
    return sum(store.nbytes(key) for _, _, store, key in _stubs(model))


def stub_nbytes(tensor: TensorProto) -> int:
    """Bytes of a stub's payload, without reading it."""
    store, key = stub_entry(tensor) or (None, None)
    if store is None:
        raise InputError(f"tensor {tensor.name!r} is not a weight-store stub")
    return store.nbytes(key)


def to_array(tensor: TensorProto) -> np.ndarray:
    """Values of any tensor; a stub's come from its store (read-only), others via ``numpy_helper``."""
    found = stub_entry(tensor)
    if found is not None:
        return found[0].array(found[1])
    return onnx.numpy_helper.to_array(tensor)


def release(tensor_or_array: TensorProto | np.ndarray) -> None:
    """Drop the resident pages behind a stub or a store view (no-op for anything else)."""
    found = stub_entry(tensor_or_array) if isinstance(tensor_or_array, TensorProto) else entry_of(tensor_or_array)
    if found is not None:
        found[0].release(found[1])


def entry_of(array: object) -> tuple[WeightStore, str] | None:
    """The store and key of an array some store handed out (identity), or None."""
    for store in _STORES.values():
        key = store.key_of(array)
        if key is not None:
            return store, key
    return None


def payload_sha256(tensor: TensorProto) -> bytes:
    """SHA-256 of a stub's payload (its little-endian bytes, as :func:`chunks` streams them), kept in its store.

    Why kept (:meth:`WeightStore.memo`): the CLI hashes a model's weights while its isolation child runs, and
    the model hash a later step takes (:func:`onnxprune.io.files.model_sha256`) costs only its small skeleton.
    """
    store, key = stub_entry(tensor) or (None, None)
    if store is None:
        raise InputError(f"tensor {tensor.name!r} is not a weight-store stub")

    def compute() -> bytes:
        digest = hashlib.sha256()
        for chunk in chunks(tensor):
            digest.update(chunk)
        return digest.digest()

    return store.memo(key, "sha256", compute)


def chunks(tensor: TensorProto) -> Iterator[memoryview]:
    """A stub's payload as little-endian bytes, ``CHUNK_BYTES`` at a time, releasing pages behind it.

    Why chunks: a >2 GB payload never exists as one ``bytes`` object (``save_model``, hashing).
    """
    store, key = stub_entry(tensor) or (None, None)
    if store is None:
        raise InputError(f"tensor {tensor.name!r} is not a weight-store stub")
    array = store.transient(key)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    flat = array.reshape(-1) if array.flags.c_contiguous or array.ndim == 0 else None
    rows = max(1, CHUNK_BYTES // max(array.dtype.itemsize, 1))
    if flat is not None:
        data = flat.view(np.uint8) if flat.size else np.zeros(0, np.uint8)
        for start in range(0, data.size, rows * array.dtype.itemsize):
            yield memoryview(data[start:start + rows * array.dtype.itemsize])
            store.release(key)
        return
    # non-contiguous (a view a pass made): copy blocks of the first axis, which keeps row-major order
    per_row = max(1, array[0].size if array.shape[0] else 1)
    step = max(1, rows // per_row)
    for start in range(0, array.shape[0], step):
        yield memoryview(np.ascontiguousarray(array[start:start + step]).reshape(-1).view(np.uint8))


# --------------------------------------------------------------------------------------------------
# consumers that need a self-contained model


def checkable(model: onnx.ModelProto, *, external_files: bool = False) -> onnx.ModelProto:
    """``model`` as the ONNX checker can judge it: stub initializers become typed graph inputs.

    Why: the checker resolves external locations as files.  A stub's bytes were validated when the
    file was loaded (or computed by the pipeline with its dims), so only the graph needs checking.
    ``external_files``: initializers still referring to external data files (a model loaded without its
    weights) become typed inputs as well -- what a stub-backed load of the same file would check.
    Returns ``model`` itself when nothing changes.
    """
    found = [(index, tensor) for index, tensor in enumerate(model.graph.initializer)
             if is_stub(tensor) or (external_files and tensor.data_location == TensorProto.EXTERNAL)]
    if not found:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    listed = {value.name for value in copy.graph.input}
    for index, tensor in reversed(found):
        if tensor.name not in listed:
            copy.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        del copy.graph.initializer[index]
    return copy


def ort_session(model: onnx.ModelProto, options, providers: list[str], weights: Mapping[str, np.ndarray] | None = None):
    """An onnxruntime session for ``model``; stub weights are passed as external initializers.

    Why: serializing the weights into the proto would copy them (and fail above 2 GiB); onnxruntime
    reads ``OrtValue`` s that share the store's memory instead.  The values are kept alive with the
    session, unless onnxruntime copies external initializers at creation (measured once per setting,
    :mod:`onnxprune.io.ort_initializers`): then the computed ones are dropped and the mapped pages it read
    released, so a pruned model's slices do not exist twice while it runs.  ``weights`` (stub name → array) stands in for the store when the model was shipped to
    another process, where the store does not exist (:mod:`onnxprune.runtime.executor`).
    """
    import onnxruntime as ort  # noqa: PLC0415  (keep this module light for io.py)

    names, values = [], []
    arrays = weights.items() if weights is not None else ((t.name, s.transient(k)) for _, t, s, k in _stubs(model))
    for name, array in arrays:
        names.append(name)
        values.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array)))
    if names:
        options.add_external_initializers(names, values)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    if weights is None and names and copies_external_initializers(options):
        # onnxruntime holds its own copy now: computed slices go, mapped pages it read are dropped
        values.clear()
        for _, _, store, key in _stubs(model):
            store.release(key)
    else:
        session._onnxprune_weights = values  # the session reads these buffers
    return session
