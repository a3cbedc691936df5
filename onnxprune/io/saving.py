"""Saving a model, plans and reports atomically, with the model's provenance.

Why so careful: a pruned model replaces a file a user cares about, so it is written to a temporary file
in the destination folder, fsynced and renamed into place.  A crash or an exception leaves the previous
file or the complete new one, never a half-written model, and never an old model paired with new
external weights.  Protobuf cannot serialize a message above 2 GiB, so large models keep their weights
in one external ``<model file name>.data`` file next to the model; memory-mapped weights are streamed
into it chunk by chunk.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import secrets
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import onnx
from onnx import ModelProto, TensorProto

from onnxprune.errors import InputError, OnnxPruneError
from onnxprune.io import single_file, weights
from onnxprune.io.model_parts import (PROTOBUF_LIMIT_BYTES, Payloads, all_tensors, is_external, one_line,
                                      payload_chunks, require_loaded_weights, split_payloads)
from onnxprune.version import __version__

#: With ``external_data=None`` a model whose serialized size exceeds this is saved with external
#: weights; the margin below :data:`PROTOBUF_LIMIT_BYTES` leaves room for the graph itself.
AUTO_EXTERNAL_BYTES = 1_800_000_000
#: Initializers smaller than this stay inline even in external mode (shape constants, small biases):
#: they keep the graph readable and cost nothing.  Same default as ``onnx.save_model``.
EXTERNAL_MIN_TENSOR_BYTES = 1024
_PROVENANCE_PREFIX = "onnxprune."


def _onnxprune_version() -> str:
    """Version recorded in provenance (``onnxprune/version.py``: a leaf module, so no import of the package)."""
    return __version__


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
        raise InputError(f"provenance is not JSON-serialisable: {one_line(err)}") from err
    kept = [
        (p.key, p.value) for p in model.metadata_props if not p.key.startswith(_PROVENANCE_PREFIX)
    ]
    kept += [("onnxprune.version", _onnxprune_version()), ("onnxprune.settings", settings)]
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)



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
    require_loaded_weights(model, str(target))
    use_external = external_data
    if use_external is None:  # weights mapped from external data stay external
        inline = weights.stub_bytes_in_memory(model)  # a single-file input is saved as one file again
        use_external = (weights.has_stubs(model) and weights.stub_bytes(model) > inline) or \
            model.ByteSize() + inline > AUTO_EXTERNAL_BYTES
    work, payloads = split_payloads(model, EXTERNAL_MIN_TENSOR_BYTES)
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
        raise OnnxPruneError(f"{target}: cannot save model: {one_line(err)}") from err
    finally:
        for temp in temps:
            _unlink_quietly(temp)
    return target


def _write_single_file(work: ModelProto, payloads: Payloads, target: pathlib.Path,
                       temps: list[pathlib.Path]) -> None:
    """One self-contained file, weights streamed into it one tensor at a time (``single_file``).

    The bytes are those ``SerializeToString`` would give for the model with its payloads inline, without
    ever holding that serialization (or a second copy of the weights) in memory.
    """
    spliced = {index: (_payload_nbytes(source), functools.partial(payload_chunks, source))
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
    for tensor in all_tensors(work):
        if is_external(tensor) and tensor.HasField("raw_data"):
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


def _external_chunks(payloads: Payloads, location: str) -> Iterator[bytes]:
    """Yield the payloads in file order, pointing each header at its slice of the data file."""
    offset = 0
    for header, source, _ in payloads:
        length = 0
        for chunk in payload_chunks(source):
            length += len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
            yield chunk
        header.data_location = TensorProto.EXTERNAL
        entries = {"location": location, "offset": str(offset), "length": str(length)}
        for key, value in entries.items():
            header.external_data.add(key=key, value=value)
        offset += length


def _write_files(
    work: ModelProto, payloads: Payloads, target: pathlib.Path, temps: list[pathlib.Path]
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
        raise InputError(f"{pathlib.Path(path)}: cannot write ({one_line(err)})") from err
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
        raise InputError(f"{target}: cannot write ({one_line(err)})") from err
    return target
