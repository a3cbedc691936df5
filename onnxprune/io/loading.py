"""Loading a model file that may be hostile, corrupt or huge.

Why so careful: a model file is untrusted input.  A tensor's ``external_data`` entries name a file, an
offset and a length, so a hostile (or merely broken) model can point at ``/etc/shadow``, at a symlink
leading out of its folder, at a FIFO that blocks forever, or ask for terabytes.  Every check lives here,
runs *before* anything external is opened, and is tested in ``tests/test_io.py``; the rest of onnxprune
receives an in-memory ``ModelProto`` and never handles paths to weights.  With
``load_model(mmap_weights=True)`` external weights are not read at all but memory-mapped into a
:class:`onnxprune.io.weights.WeightStore` and represented in the proto by small stubs.
"""

from __future__ import annotations

import math
import mmap
import os
import pathlib
import re
import stat
from dataclasses import dataclass
from typing import BinaryIO

import onnx
from onnx import ModelProto, TensorProto

from onnxprune.errors import InputError, ModelLoadError
from onnxprune.io import inline_weights, weights
from onnxprune.io.model_parts import PROTOBUF_LIMIT_BYTES, all_tensors, is_external, one_line, tensor_label

_EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum"})
_TYPED_DATA_FIELDS = (
    "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data",
)  # fmt: skip

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
        where = f"{model_path}: tensor {tensor_label(group[0].tensor)}"
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
        raise ModelLoadError(f"{model_path}: cannot access model file: {one_line(err)}") from err
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
        raise ModelLoadError(f"{model_path}: cannot read model file: {one_line(err)}") from err
    if len(data) != size:
        raise ModelLoadError(f"{model_path}: model file changed while it was being read")
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as err:  # DecodeError, RecursionError...: all mean "not a readable model"
        if "alloc failed" in str(err):  # protobuf's arena hit the memory budget: not a corrupt file
            raise MemoryError(str(err)) from err
        raise ModelLoadError(
            f"{model_path}: not a valid ONNX protobuf (truncated or corrupt?): {one_line(err)}"
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
    tensors = [tensor for tensor in all_tensors(model) if is_external(tensor) and not weights.is_stub(tensor)]
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
    where = f"{model_path}: tensor {tensor_label(tensor)}"
    entries = _external_entries(tensor, where)
    location = entries["location"]
    real = _confined_path(location, base, where)
    try:
        info = os.stat(real)
    except FileNotFoundError as err:
        raise ModelLoadError(f"{where}: external data file {location!r} does not exist") from err
    except OSError as err:
        raise ModelLoadError(
            f"{where}: cannot access external data file {location!r}: {one_line(err)}"
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
                f"{model_path}: cannot read external data {real_path}: {one_line(err)}"
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
        where = f"{model_path}: tensor {tensor_label(ref.tensor)}"
        if not stat.S_ISREG(info.st_mode) or ref.offset + ref.nbytes > info.st_size:
            raise ModelLoadError(f"{where}: external data file changed while loading")
        handle.seek(ref.offset)
        data = handle.read(ref.nbytes)
        if len(data) != ref.nbytes:
            raise ModelLoadError(f"{where}: external data file changed while loading")
        ref.tensor.raw_data = data
        ref.tensor.ClearField("data_location")
        del ref.tensor.external_data[:]

