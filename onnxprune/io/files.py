"""The only module that touches model files: safe loading, atomic saving, hashing, provenance.

Why one module: a model file is untrusted input.  A tensor's ``external_data`` entries name a file,
an offset and a length, so a hostile (or merely broken) model can point at ``/etc/shadow``, at a
symlink leading out of its folder, at a FIFO that blocks forever, or ask for terabytes.  Every check
lives here, runs *before* anything external is opened, and is tested in ``tests/test_io.py``; the
rest of onnxprune receives an in-memory ``ModelProto`` and never handles paths to weights.

Saving is the mirror image: a pruned model replaces a file a user cares about, so it is written to a
temporary file in the destination folder, fsynced and renamed into place.  A crash or an exception
leaves the previous file or the complete new one, never a half-written model, and never an old model
paired with new external weights.

Protobuf cannot serialize a message above 2 GiB, so large models keep their weights in one external
``<model file name>.data`` file next to the model; both directions are handled here.  With
``load_model(mmap_weights=True)`` external weights are not read at all but memory-mapped into a
:class:`onnxprune.io.weights.WeightStore` and represented in the proto by small stubs; saving and
hashing stream them (peak memory follows the weights actually touched, not a multiple of the model).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import mmap
import os
import pathlib
import re
import secrets
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import onnx
from google.protobuf.message import Message
from onnx import GraphProto, ModelProto, NodeProto, TensorProto

from onnxprune.io import inline_weights, memory_budget, single_file, weights
from onnxprune.errors import InputError, ModelLoadError, OnnxPruneError
from onnxprune.version import __version__

__all__ = [
    "AUTO_EXTERNAL_BYTES",
    "EXTERNAL_MIN_TENSOR_BYTES",
    "PROTOBUF_LIMIT_BYTES",
    "add_provenance",
    "file_sha256",
    "load_model",
    "model_sha256",
    "save_model",
]

#: Largest message protobuf can serialize or parse (2 GiB - 1): no ``.onnx`` file can be larger.
PROTOBUF_LIMIT_BYTES = 2**31 - 1
#: With ``external_data=None`` a model whose serialized size exceeds this is saved with external
#: weights; the margin below :data:`PROTOBUF_LIMIT_BYTES` leaves room for the graph itself.
AUTO_EXTERNAL_BYTES = 1_800_000_000
#: Initializers smaller than this stay inline even in external mode (shape constants, small biases):
#: they keep the graph readable and cost nothing.  Same default as ``onnx.save_model``.
EXTERNAL_MIN_TENSOR_BYTES = 1024

_EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum"})
_PROVENANCE_PREFIX = "onnxprune."
_HASH_DOMAIN = b"onnxprune.model_sha256.v1\0"
_TYPED_DATA_FIELDS = (
    "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data",
)  # fmt: skip
_PAYLOAD_FIELDS = frozenset({"raw_data", "external_data", "data_location"})

# Bits per element as stored in raw_data; sub-byte types are packed (ceil(n * bits / 8) bytes).
# STRING and UNDEFINED are absent on purpose: they cannot be stored as raw external bytes.
_BITS_BY_TYPE_NAME = {
    "FLOAT": 32, "UINT8": 8, "INT8": 8, "UINT16": 16, "INT16": 16, "INT32": 32, "INT64": 64,
    "BOOL": 8, "FLOAT16": 16, "DOUBLE": 64, "UINT32": 32, "UINT64": 64, "COMPLEX64": 64,
    "COMPLEX128": 128, "BFLOAT16": 16, "FLOAT8E4M3FN": 8, "FLOAT8E4M3FNUZ": 8, "FLOAT8E5M2": 8,
    "FLOAT8E5M2FNUZ": 8, "UINT4": 4, "INT4": 4, "FLOAT4E2M1": 4, "FLOAT8E8M0": 8, "UINT2": 2,
    "INT2": 2, "FLOAT6E2M3": 6, "FLOAT6E3M2": 6,
}  # fmt: skip
_ELEMENT_BITS = {
    int(getattr(TensorProto, name)): bits
    for name, bits in _BITS_BY_TYPE_NAME.items()
    if hasattr(TensorProto, name)
}


# --------------------------------------------------------------------------------------------------
# small helpers


def _one_line(err: BaseException | str, limit: int = 300) -> str:
    """Collapse an underlying message to one short line: user-facing errors are a single line."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tensor_label(tensor: TensorProto) -> str:
    """Quote a tensor name with repr() so a hostile name cannot inject newlines into a message."""
    return repr(tensor.name) if tensor.name else "'<unnamed>'"


def _is_repeated(field: object) -> bool:
    """Protobuf 5+ has ``is_repeated`` (7 dropped ``label``); older releases only ``label``."""
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == field.LABEL_REPEATED)  # type: ignore[attr-defined]


def _copy_fields(dst: Message, src: Message, skip: frozenset[str] = frozenset()) -> None:
    """Copy every set field of ``src`` into ``dst`` except ``skip``.

    Why: copying a model while leaving out the weight payloads lets us save and hash models
    whose weights exceed what protobuf can serialize, without holding the weights twice.
    """
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        if _is_repeated(field):
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _onnxprune_version() -> str:
    """Version recorded in provenance (``onnxprune/version.py``: a leaf module, so no import of the package)."""
    return __version__


# --------------------------------------------------------------------------------------------------
# walking every tensor of a model


def _graph_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """All tensors of a graph: initializers, sparse initializers, node attributes, recursively."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: NodeProto) -> Iterator[TensorProto]:
    """Tensors held in a node's attributes, including those of its subgraphs (If/Loop/Scan)."""
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        sparse_list = list(attr.sparse_tensors)
        if attr.HasField("sparse_tensor"):
            sparse_list.append(attr.sparse_tensor)
        for sparse in sparse_list:
            yield sparse.values
            yield sparse.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for graph in attr.graphs:
            yield from _graph_tensors(graph)


def _all_tensors(model: ModelProto) -> Iterator[TensorProto]:
    """Every tensor that may carry external data, wherever it sits in the model.

    Why wider than ``onnx.external_data_helper``: that helper skips sparse initializers and training
    graphs, and a check that skips a place is a check an attacker routes around.
    """
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)
    for info in model.training_info:
        yield from _graph_tensors(info.initialization)
        yield from _graph_tensors(info.algorithm)


def _is_external(tensor: TensorProto) -> bool:
    return tensor.HasField("data_location") and tensor.data_location == TensorProto.EXTERNAL


def _require_loaded_weights(model: ModelProto, what: str) -> None:
    """Refuse to save or hash a model whose weights were never read (``load_weights=False``).

    Stubs of a :class:`~onnxprune.io.weights.WeightStore` count as loaded: their values are one
    memory-mapped read away.
    """
    for tensor in _all_tensors(model):
        if _is_external(tensor) and not tensor.HasField("raw_data") and not weights.is_stub(tensor):
            raise InputError(
                f"{what}: tensor {_tensor_label(tensor)} has weights that were not loaded "
                "(load_model(..., load_weights=False)); load the model with its weights first"
            )


# --------------------------------------------------------------------------------------------------
# loading


@dataclass(frozen=True, eq=False)
class _ExternalRef:
    """One validated external-data reference: read ``nbytes`` at ``offset`` of ``real_path``."""

    tensor: TensorProto
    real_path: str
    offset: int
    nbytes: int


def load_model(
    path: str | os.PathLike[str],
    *,
    load_weights: bool = True,
    max_file_bytes: int | None = None,
    mmap_weights: bool = False,
) -> onnx.ModelProto:
    """Read an ONNX model from a file that may be hostile, corrupt or huge.

    Why not plain ``onnx.load``: every external-data reference is validated from its metadata and
    ``os.stat`` alone (known keys, relative location without ``..``, real path inside the model's
    folder, regular file, offset/length inside the file and equal to the tensor's byte size) before
    any external file is opened, and a failure is one :class:`ModelLoadError` line naming the
    file and tensor.  The ``checksum`` key is accepted but not verified (the spec leaves its meaning
    open and no runtime checks it).

    ``load_weights=False`` validates the references but leaves them unread, so analysing a
    multi-gigabyte model does not read its weights.  ``max_file_bytes`` caps the ``.onnx`` file and,
    when weights are loaded, the total external bytes read (or mapped).

    ``mmap_weights=True`` maps the external data read-only instead of reading it: top-level
    initializers become stubs of a :class:`onnxprune.io.weights.WeightStore`, so the proto stays small
    however large the model is and peak memory follows the weights actually touched (see
    :mod:`onnxprune.io.weights`; arrays computed from mapped weights live as long as the process).
    Tensors elsewhere (attributes, subgraphs, sparse) and exotic types are read inline as usual.
    """
    if max_file_bytes is not None and max_file_bytes < 0:
        raise InputError(f"max_file_bytes must be >= 0, got {max_file_bytes}")
    model_path = pathlib.Path(path)
    size = _check_model_file(model_path, max_file_bytes)
    # large weights inside the .onnx file are mapped, not parsed (onnxprune.io.inline_weights)
    model = _parse_model(model_path, size, map_weights=mmap_weights or not load_weights)
    refs = _validate_external_refs(model, model_path)
    if load_weights and refs:
        _check_total(refs, model_path, max_file_bytes)
        if mmap_weights:
            refs = _map_external(model, refs, model_path)
        _read_external(refs, model_path, max_file_bytes)
    return model



def _map_external(
    model: ModelProto, refs: list[_ExternalRef], model_path: pathlib.Path
) -> list[_ExternalRef]:
    """Turn references of top-level initializers of a plain numeric type into stubs of a new weight
    store (see :mod:`onnxprune.io.weights`); returns the references left to read inline."""
    top = {id(init) for init in model.graph.initializer}
    mappable = [
        ref
        for ref in refs
        if id(ref.tensor) in top and weights.numpy_dtype(ref.tensor.data_type) is not None
    ]
    if not mappable:
        return refs
    store = weights.WeightStore()
    for real_path, group in _by_file(mappable).items():
        where = f"{model_path}: tensor {_tensor_label(group[0].tensor)}"
        try:
            fd = os.open(real_path, _READ_FLAGS)
        except OSError as err:
            raise ModelLoadError(f"{where}: cannot open external data {real_path}: {err.strerror}") from err
        try:
            mapping = store.map_fd(fd, max(r.offset + r.nbytes for r in group), where, real_path)
        finally:
            os.close(fd)
        for ref in group:
            dtype = weights.numpy_dtype(ref.tensor.data_type)
            store.make_stub(ref.tensor, store.add_mapped(mapping, ref.offset, dtype, tuple(ref.tensor.dims)))
    chosen = {id(ref) for ref in mappable}
    return [ref for ref in refs if id(ref) not in chosen]


def _check_model_file(model_path: pathlib.Path, max_file_bytes: int | None) -> int:
    """Stat the model file (never open it yet) and return its size."""
    try:
        info = os.stat(model_path)
    except FileNotFoundError as err:
        raise ModelLoadError(f"{model_path}: model file does not exist") from err
    except OSError as err:
        raise ModelLoadError(f"{model_path}: cannot access model file: {_one_line(err)}") from err
    if stat.S_ISDIR(info.st_mode):
        raise ModelLoadError(f"{model_path}: is a directory, not an ONNX model file")
    if not stat.S_ISREG(info.st_mode):
        raise ModelLoadError(f"{model_path}: is not a regular file")
    if info.st_size == 0:
        raise ModelLoadError(f"{model_path}: model file is empty")
    if max_file_bytes is not None and info.st_size > max_file_bytes:
        raise ModelLoadError(
            f"{model_path}: model file is {info.st_size} bytes, above the limit of {max_file_bytes}"
        )
    if info.st_size > PROTOBUF_LIMIT_BYTES:
        raise ModelLoadError(
            f"{model_path}: model file is {info.st_size} bytes; protobuf cannot parse more than "
            "2 GiB, models this large must keep their weights in external data"
        )
    return info.st_size


def _parse_model(model_path: pathlib.Path, size: int, map_weights: bool = False) -> ModelProto:
    """Parse the protobuf and reject files that parse but are not plausibly ONNX models.

    ``map_weights``: large initializers are mapped from the file instead of parsed
    (:mod:`onnxprune.io.inline_weights`); the file is opened once either way.
    """
    try:
        with open(model_path, "rb") as handle:
            if map_weights:
                mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
                model = inline_weights.scan(mapping) if len(mapping) == size else None
                if model is not None:
                    _check_is_onnx(model, model_path)
                    return model
                data = mapping[:size + 1]
                mapping.close()  # parsed the ordinary way: nothing refers to the mapping
            else:
                data = handle.read(size + 1)
    except OSError as err:
        raise ModelLoadError(f"{model_path}: cannot read model file: {_one_line(err)}") from err
    if len(data) != size:
        raise ModelLoadError(f"{model_path}: model file changed while it was being read")
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as err:  # DecodeError, RecursionError...: all mean "not a readable model"
        if "alloc failed" in str(err):  # protobuf's arena hit the memory budget: not a corrupt file
            raise MemoryError(str(err)) from err
        raise ModelLoadError(
            f"{model_path}: not a valid ONNX protobuf (truncated or corrupt?): {_one_line(err)}"
        ) from err
    _check_is_onnx(model, model_path)
    return model


def _check_is_onnx(model: ModelProto, model_path: pathlib.Path) -> None:
    """Protobuf happily parses many non-ONNX byte strings as unknown fields; an ONNX model always has an
    IR version and a graph, and since IR 3 at least one opset import."""
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise ModelLoadError(f"{model_path}: not an ONNX model (no IR version or no graph)")
    if model.ir_version >= 3 and not model.opset_import:
        raise ModelLoadError(f"{model_path}: ONNX model has no opset_import (truncated file?)")


def _validate_external_refs(model: ModelProto, model_path: pathlib.Path) -> list[_ExternalRef]:
    """Validate every external reference of the model; nothing external is opened here."""
    base = os.path.realpath(os.path.dirname(os.path.abspath(model_path)))
    tensors = [tensor for tensor in _all_tensors(model) if _is_external(tensor) and not weights.is_stub(tensor)]
    return [_validate_ref(tensor, base, model_path) for tensor in tensors]


def _external_entries(tensor: TensorProto, where: str) -> dict[str, str]:
    """The tensor's external_data as a dict; unknown or repeated keys are refused, not ignored."""
    entries: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key not in _EXTERNAL_KEYS:
            raise ModelLoadError(
                f"{where}: unknown external data key {entry.key[:80]!r} "
                f"(allowed: {', '.join(sorted(_EXTERNAL_KEYS))})"
            )
        if entry.key in entries:
            raise ModelLoadError(f"{where}: external data key {entry.key!r} is given twice")
        entries[entry.key] = entry.value
    if "location" not in entries:
        raise ModelLoadError(f"{where}: external data has no 'location'")
    has_inline = tensor.HasField("raw_data") or any(getattr(tensor, f) for f in _TYPED_DATA_FIELDS)
    if has_inline:
        raise ModelLoadError(f"{where}: tensor has both inline data and an external data reference")
    return entries


def _confined_path(location: str, base: str, where: str) -> str:
    """Resolve ``location`` against the model folder, refusing anything that could leave it.

    Both POSIX and Windows spellings are refused (``/x``, ``C:\\x``, ``\\\\server\\x``, ``..`` with
    either separator) so a model judged safe here is safe wherever it is run.
    """
    if not location or "\0" in location:
        raise ModelLoadError(
            f"{where}: external data location {location!r} is empty or has a NUL byte"
        )
    windows = pathlib.PureWindowsPath(location)
    if os.path.isabs(location) or location.startswith(("/", "\\")) or windows.drive or windows.root:
        raise ModelLoadError(
            f"{where}: external data location {location!r} is absolute; "
            "it must be relative to the model folder"
        )
    if ".." in re.split(r"[\\/]", location):
        raise ModelLoadError(f"{where}: external data location {location!r} contains '..'")
    real = os.path.realpath(os.path.join(base, location))
    if real == base or os.path.commonpath([base, real]) != base:
        raise ModelLoadError(
            f"{where}: external data location {location!r} resolves outside the model folder {base}"
        )
    return real


def _parse_count(value: str, key: str, where: str) -> int:
    """offset/length must be plain decimal integers (no sign, spaces, underscores or exponents)."""
    if not re.fullmatch(r"[0-9]{1,20}", value, flags=re.ASCII):
        raise ModelLoadError(
            f"{where}: external data {key} {value[:40]!r} is not a non-negative integer"
        )
    return int(value)


def _expected_nbytes(tensor: TensorProto, where: str) -> int:
    """Byte size the tensor's raw data must have, from its dims and data type."""
    bits = _ELEMENT_BITS.get(tensor.data_type)
    if bits is None:
        raise ModelLoadError(
            f"{where}: data type {tensor.data_type} cannot be stored as external raw data"
        )
    if any(dim < 0 for dim in tensor.dims):
        raise ModelLoadError(f"{where}: tensor has negative dims {list(tensor.dims)}")
    return -(-math.prod(tensor.dims) * bits // 8)


def _validate_ref(tensor: TensorProto, base: str, model_path: pathlib.Path) -> _ExternalRef:
    """Check one external reference using its metadata and ``os.stat`` only."""
    where = f"{model_path}: tensor {_tensor_label(tensor)}"
    entries = _external_entries(tensor, where)
    location = entries["location"]
    real = _confined_path(location, base, where)
    try:
        info = os.stat(real)
    except FileNotFoundError as err:
        raise ModelLoadError(f"{where}: external data file {location!r} does not exist") from err
    except OSError as err:
        raise ModelLoadError(
            f"{where}: cannot access external data file {location!r}: {_one_line(err)}"
        ) from err
    if not stat.S_ISREG(info.st_mode):
        raise ModelLoadError(f"{where}: external data location {location!r} is not a regular file")
    offset = _parse_count(entries.get("offset", "0"), "offset", where)
    expected = _expected_nbytes(tensor, where)
    if offset > info.st_size:
        raise ModelLoadError(
            f"{where}: external data offset {offset} is beyond the end of {location!r} "
            f"({info.st_size} bytes)"
        )
    if "length" in entries:
        length = _parse_count(entries["length"], "length", where)
        if offset + length > info.st_size:
            raise ModelLoadError(
                f"{where}: external data range {offset}+{length} exceeds {location!r} "
                f"({info.st_size} bytes)"
            )
        if length != expected:
            raise ModelLoadError(
                f"{where}: external data length {length} does not match dims {list(tensor.dims)} "
                f"({expected} bytes)"
            )
    elif info.st_size - offset < expected:
        raise ModelLoadError(
            f"{where}: {location!r} holds {info.st_size - offset} bytes after offset {offset}, "
            f"tensor needs {expected}"
        )
    return _ExternalRef(tensor=tensor, real_path=real, offset=offset, nbytes=expected)


def _check_total(refs: list[_ExternalRef], model_path: pathlib.Path, max_bytes: int | None) -> None:
    """Apply ``max_file_bytes`` to all external weights, whether they are read or mapped."""
    total = sum(ref.nbytes for ref in refs)
    if max_bytes is not None and total > max_bytes:
        raise ModelLoadError(
            f"{model_path}: external weights total {total} bytes, above the limit of {max_bytes}"
        )


def _read_external(
    refs: list[_ExternalRef], model_path: pathlib.Path, max_bytes: int | None
) -> None:
    """Read validated references into the tensors, each file opened once.

    The file is opened by the real path checked above with ``O_NOFOLLOW`` and its size re-checked
    on the open descriptor, so a file swapped or truncated after validation is caught.
    """
    for real_path, group in _by_file(refs).items():
        try:
            with os.fdopen(os.open(real_path, _READ_FLAGS), "rb") as handle:
                _read_group(handle, group, model_path)
        except OSError as err:
            raise ModelLoadError(
                f"{model_path}: cannot read external data {real_path}: {_one_line(err)}"
            ) from err


#: Opening external data by the real path the validation resolved: never through a symlink swapped in since.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _by_file(refs: list[_ExternalRef]) -> dict[str, list[_ExternalRef]]:
    """References grouped by the file they read, in order (each file is opened once)."""
    by_file: dict[str, list[_ExternalRef]] = {}
    for ref in refs:
        by_file.setdefault(ref.real_path, []).append(ref)
    return by_file


def _read_group(handle: BinaryIO, group: list[_ExternalRef], model_path: pathlib.Path) -> None:
    """Read each tensor's bytes from one open external file and make the tensor inline.

    ``data_location`` is cleared (not set to DEFAULT) so a reloaded tensor is byte-identical to one
    that was never external, which keeps :func:`model_sha256` independent of storage.
    """
    info = os.fstat(handle.fileno())
    for ref in group:
        where = f"{model_path}: tensor {_tensor_label(ref.tensor)}"
        if not stat.S_ISREG(info.st_mode) or ref.offset + ref.nbytes > info.st_size:
            raise ModelLoadError(f"{where}: external data file changed while loading")
        handle.seek(ref.offset)
        data = handle.read(ref.nbytes)
        if len(data) != ref.nbytes:
            raise ModelLoadError(f"{where}: external data file changed while loading")
        ref.tensor.raw_data = data
        ref.tensor.ClearField("data_location")
        del ref.tensor.external_data[:]


# --------------------------------------------------------------------------------------------------
# hashing and provenance


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, streamed: ties reports and plans to the exact input file."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise InputError(f"{path}: cannot read file for hashing: {_one_line(err)}") from err
    return digest.hexdigest()


#: (header in the copy, source tensor holding the raw_data, index among the top-level initializers)
_Payloads = list[tuple[TensorProto, TensorProto, int]]


def _split_payloads(model: ModelProto, min_bytes: int) -> tuple[ModelProto, _Payloads]:
    """Copy the model without the raw payloads of its top-level initializers of >= ``min_bytes``.

    Returns the copy and (header in the copy, source tensor, initializer index) triples.  Why: the payloads are what
    exceeds 2 GiB; saving streams them to the data file one tensor at a time and hashing digests
    them, so neither needs a second in-memory copy of all weights (protobuf copies ``raw_data`` on
    every access, so it is read once per tensor).  Everything else (nodes, small and typed-data
    tensors, subgraph and attribute tensors, metadata) is copied as is.
    """
    skeleton = ModelProto()
    _copy_fields(skeleton, model, frozenset({"graph"}))
    payloads: _Payloads = []
    if not model.HasField("graph"):
        return skeleton, payloads
    skeleton.graph.SetInParent()
    _copy_fields(skeleton.graph, model.graph, frozenset({"initializer"}))
    for index, source in enumerate(model.graph.initializer):
        header = skeleton.graph.initializer.add()
        # ByteSize() (payload plus a few header bytes) avoids copying raw_data just to measure it.
        # Stubs always count: their payload is in a weight store, never in the proto.
        large = source.HasField("raw_data") and source.ByteSize() >= min_bytes
        if large or weights.is_stub(source):
            _copy_fields(header, source, _PAYLOAD_FIELDS)
            payloads.append((header, source, index))
        else:
            header.CopyFrom(source)
    return skeleton, payloads


def _payload_sha256(source: TensorProto) -> bytes:
    """SHA-256 of a tensor's raw bytes; a stub's are streamed from its store (pages released) once per run
    (:func:`onnxprune.io.weights.payload_sha256`)."""
    if weights.is_stub(source):
        return weights.payload_sha256(source)
    digest = hashlib.sha256()
    for chunk in _payload_chunks(source):
        digest.update(chunk)
    return digest.digest()


def hash_weights(model: onnx.ModelProto) -> None:
    """Hash every stub payload of ``model`` now (kept in its store): reads bytes only, so it may run while
    the isolation child checks the file; :func:`model_sha256` after it costs the skeleton alone."""
    for init in model.graph.initializer:
        if weights.is_stub(init):
            weights.payload_sha256(init)


def start_hashing(model: onnx.ModelProto) -> None:
    """:func:`hash_weights` in a background thread (inline when the memory budget leaves no room for one).

    Why a thread: SHA-256 over a 100 MB model takes a fifth of a ``prune``'s own time, and ``hashlib``
    lets go of the interpreter while it hashes, so the digests are ready by the time the plan records the
    model's hash (:meth:`WeightStore.memo` makes a reader wait for a digest being taken, never take it
    twice).  An error here is left to that reader: it meets the same one and reports it its usual way.
    """
    if not memory_budget.room_for_threads():
        hash_weights(model)
        return
    threading.Thread(target=_hash_quietly, args=(model,), name="onnxprune-hash", daemon=True).start()


def _hash_quietly(model: onnx.ModelProto) -> None:
    try:
        hash_weights(model)
    except Exception:  # noqa: BLE001 - see start_hashing: the reader meets it again
        pass


def _payload_chunks(source: TensorProto) -> Iterator[bytes | memoryview]:
    """A payload as chunks to write: a stub's streamed from its store, inline ``raw_data`` whole."""
    if weights.is_stub(source):
        yield from weights.chunks(source)
    else:
        yield source.raw_data


def model_sha256(model: onnx.ModelProto) -> str:
    """Deterministic hex SHA-256 of a model including its weights, to tie a saved plan to a model.

    The hash does not depend on where weights live: a model saved with external data and loaded
    again hashes the same as the in-memory original.  Initializer payloads are replaced by their
    own SHA-256 before the deterministic serialization, so models above 2 GiB can be hashed.
    Raises :class:`InputError` when weights were not loaded: a hash without them would tie a plan
    to the graph alone.
    """
    _require_loaded_weights(model, "model_sha256")
    skeleton, payloads = _split_payloads(model, 0)
    for header, source, _ in payloads:
        header.raw_data = _payload_sha256(source)
    if skeleton.ByteSize() > PROTOBUF_LIMIT_BYTES:
        raise InputError("model_sha256: the model without its initializer payloads exceeds 2 GiB")
    digest = hashlib.sha256(_HASH_DOMAIN)
    digest.update(skeleton.SerializeToString(deterministic=True))
    return digest.hexdigest()


def add_provenance(model: onnx.ModelProto, provenance: dict) -> None:
    """Record which onnxprune and which settings produced this model, in ``metadata_props``.

    Existing ``onnxprune.*`` keys are replaced (a model pruned twice records its last run, not a
    contradictory mix); every other key is kept in order.  Settings are stored as canonical JSON
    (sorted keys, no NaN) so they can be parsed back and compared.
    """
    if not isinstance(provenance, Mapping):
        raise InputError(f"provenance must be a mapping, got {type(provenance).__name__}")
    try:
        settings = json.dumps(provenance, sort_keys=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise InputError(f"provenance is not JSON-serialisable: {_one_line(err)}") from err
    kept = [
        (p.key, p.value) for p in model.metadata_props if not p.key.startswith(_PROVENANCE_PREFIX)
    ]
    kept += [("onnxprune.version", _onnxprune_version()), ("onnxprune.settings", settings)]
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)


# --------------------------------------------------------------------------------------------------
# saving


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    source_path: str | os.PathLike[str] | None = None,
    inplace: bool = False,
    provenance: dict | None = None,
    external_data: bool | None = None,
) -> pathlib.Path:
    """Write ``model`` to ``path`` atomically and return the absolute path written.

    Why so careful: the output often replaces a model a user cares about.

    * The source model is never overwritten unless ``inplace=True`` (same real path or same inode).
    * Files go to hidden temporaries in the destination folder (which must exist; none is created),
      are fsynced and then renamed into place.  Any exception removes the temporaries, restores
      what was there and is re-raised, chained, as an :class:`OnnxPruneError`.
    * ``external_data=True`` (or ``None`` and a model above :data:`AUTO_EXTERNAL_BYTES` or with
      memory-mapped weights, see ``load_model(mmap_weights=True)``) puts every top-level
      initializer of at least :data:`EXTERNAL_MIN_TENSOR_BYTES` (and every weight-store stub) into
      ``<file name>.data`` next to the model, referenced by a relative location; with nothing that
      large, no data file is written.  Stub payloads are streamed chunk by chunk, so neither a
      >2 GiB proto nor a >2 GiB ``bytes`` object is ever built.
    * The caller's model is not modified; ir_version, opsets, producer, doc_string and metadata are
      kept, and ``provenance`` is recorded with :func:`add_provenance` on the copy.
    """
    target = pathlib.Path(os.path.abspath(path))
    _check_destination(target, source_path, inplace)
    _require_loaded_weights(model, str(target))
    use_external = external_data
    if use_external is None:  # weights mapped from external data stay external
        inline = weights.stub_bytes_in_memory(model)  # a single-file input is saved as one file again
        use_external = (weights.has_stubs(model) and weights.stub_bytes(model) > inline) or \
            model.ByteSize() + inline > AUTO_EXTERNAL_BYTES
    work, payloads = _split_payloads(model, EXTERNAL_MIN_TENSOR_BYTES)
    _drop_stale_external_markers(work)
    if provenance is not None:
        add_provenance(work, provenance)
    temps: list[pathlib.Path] = []
    try:
        if use_external:
            _write_files(work, payloads, target, temps)
        else:
            _write_single_file(work, payloads, target, temps)
    except OnnxPruneError:
        raise
    except Exception as err:
        raise OnnxPruneError(f"{target}: cannot save model: {_one_line(err)}") from err
    finally:
        for temp in temps:
            _unlink_quietly(temp)
    return target


def _write_single_file(work: ModelProto, payloads: _Payloads, target: pathlib.Path,
                       temps: list[pathlib.Path]) -> None:
    """One self-contained file, weights streamed into it one tensor at a time (``single_file``).

    The bytes are those ``SerializeToString`` would give for the model with its payloads inline, without
    ever holding that serialization (or a second copy of the weights) in memory.
    """
    spliced = {index: (_payload_nbytes(source), functools.partial(_payload_chunks, source))
               for _, source, index in payloads}
    size, chunks = single_file.chunks(work, spliced)
    if size > PROTOBUF_LIMIT_BYTES:
        raise InputError(f"{target}: model is {size} bytes, above protobuf's 2 GiB limit; save with external_data=True")
    os.replace(_write_temp(target, chunks, temps), target)
    _fsync_dir(target.parent)


def _payload_nbytes(source: TensorProto) -> int:
    """Bytes of a payload: a stub's from its store, inline ``raw_data``'s by reading it (one tensor)."""
    return weights.stub_nbytes(source) if weights.is_stub(source) else len(source.raw_data)


def _drop_stale_external_markers(work: ModelProto) -> None:
    """Make tensors that hold their bytes inline say so.

    ``onnx.external_data_helper.convert_model_to_external_data`` marks tensors EXTERNAL while they
    still carry ``raw_data``; written as is, a runtime would look for a file that we never write.
    """
    for tensor in _all_tensors(work):
        if _is_external(tensor) and tensor.HasField("raw_data"):
            tensor.ClearField("data_location")
            del tensor.external_data[:]


def _same_file(a: pathlib.Path, b: str | os.PathLike[str]) -> bool:
    """True when two paths name one file: same real path, or same inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_destination(
    target: pathlib.Path, source_path: str | os.PathLike[str] | None, inplace: bool
) -> None:
    """Refuse destinations that would lose data or need folders we would have to invent."""
    if not target.parent.is_dir():
        raise InputError(f"{target}: output folder {target.parent} does not exist")
    if target.is_dir():
        raise InputError(f"{target}: output path is a directory")
    if source_path is not None and not inplace and _same_file(target, source_path):
        raise InputError(
            f"{target}: refusing to overwrite the source model {source_path}; "
            "pass --inplace (inplace=True in Python) to replace it"
        )


def _create_temp(target: pathlib.Path, temps: list[pathlib.Path]) -> tuple[int, pathlib.Path]:
    """Create a fresh hidden file next to ``target``; mode 0666 minus umask like a normal file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(temp, flags, 0o666)
        except FileExistsError:
            continue
        temps.append(temp)
        return fd, temp


def _write_temp(
    target: pathlib.Path, chunks: Iterable[bytes | memoryview], temps: list[pathlib.Path]
) -> pathlib.Path:
    """Write chunks to a new temporary file next to ``target`` and fsync it."""
    fd, temp = _create_temp(target, temps)
    with os.fdopen(fd, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    return temp


def _external_chunks(payloads: _Payloads, location: str) -> Iterator[bytes]:
    """Yield the payloads in file order, pointing each header at its slice of the data file."""
    offset = 0
    for header, source, _ in payloads:
        length = 0
        for chunk in _payload_chunks(source):
            length += len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
            yield chunk
        header.data_location = TensorProto.EXTERNAL
        entries = {"location": location, "offset": str(offset), "length": str(length)}
        for key, value in entries.items():
            header.external_data.add(key=key, value=value)
        offset += length


def _write_files(
    work: ModelProto, payloads: _Payloads, target: pathlib.Path, temps: list[pathlib.Path]
) -> None:
    """Write the data file (if any) and the model to temporaries, then commit them in place."""
    data_target = target.with_name(target.name + ".data")
    data_temp = None
    if payloads:
        data_temp = _write_temp(data_target, _external_chunks(payloads, data_target.name), temps)
    size = work.ByteSize()
    if size > PROTOBUF_LIMIT_BYTES:
        raise InputError(
            f"{target}: model is {size} bytes, above protobuf's 2 GiB limit; "
            "save with external_data=True"
        )
    model_temp = _write_temp(target, [work.SerializeToString()], temps)
    if data_temp is None:
        os.replace(model_temp, target)
    else:
        _commit_pair(data_temp, data_target, model_temp, target, temps)
    _fsync_dir(target.parent)


def _commit_pair(
    data_temp: pathlib.Path,
    data_target: pathlib.Path,
    model_temp: pathlib.Path,
    target: pathlib.Path,
    temps: list[pathlib.Path],
) -> None:
    """Put a model and its data file in place so no moment pairs an old model with new weights.

    Existing files are first moved aside (model first), then the new data and the new model are
    renamed in (model last).  A crash in between leaves *no* model at ``target``, never a mismatched
    one; an exception moves everything back.  Backups are removed only after success.
    """
    moved: list[tuple[pathlib.Path, pathlib.Path]] = []  # (backup, original)
    placed: list[pathlib.Path] = []
    try:
        for original in (target, data_target):
            if os.path.lexists(original):
                fd, backup = _create_temp(original, temps)
                os.close(fd)
                os.replace(original, backup)
                moved.append((backup, original))
        for temp, final in ((data_temp, data_target), (model_temp, target)):
            os.replace(temp, final)
            placed.append(final)
    except BaseException:
        for final in reversed(placed):
            _unlink_quietly(final)
        for backup, original in reversed(moved):
            try:
                os.replace(backup, original)
            except OSError:
                temps.remove(backup)  # keep it: it is the only copy of the previous file
        raise


def _unlink_quietly(path: pathlib.Path) -> None:
    """Best-effort removal during cleanup: a cleanup error must not mask the original error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _fsync_dir(folder: pathlib.Path) -> None:
    """Make the renames durable; best-effort because not every platform can open a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike[str], data: Any) -> pathlib.Path:
    """Write a JSON document (plans, reports) atomically: temp file in the same folder, then rename.

    Why here: every file onnxprune writes goes through this module, so a crash never leaves half a
    plan or report either.
    """
    try:
        text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    except ValueError as err:
        raise InputError(f"{pathlib.Path(path)}: cannot write ({_one_line(err)})") from err
    return write_text(path, text)


def write_text(path: str | os.PathLike[str], text: str) -> pathlib.Path:
    """Write a text document (JSON, HTML reports) atomically: temp file in the same folder, then rename."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike[str], data: bytes) -> pathlib.Path:
    """Write a small file (text, PNG) atomically: temp file in the same folder, then rename."""
    target = pathlib.Path(path)
    if not target.parent.is_dir():
        raise InputError(f"{target}: destination folder {target.parent} does not exist")
    temps: list[pathlib.Path] = []
    try:
        temp = _write_temp(target, [data], temps)
        os.replace(temp, target)
    except (OSError, ValueError) as err:
        for temp in temps:
            _unlink_quietly(temp)
        raise InputError(f"{target}: cannot write ({_one_line(err)})") from err
    return target
