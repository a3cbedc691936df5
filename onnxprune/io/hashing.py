"""Hashes that tie plans, reports and provenance to a model: of a file's bytes, of a model with its weights.

Why a hash of the model and not of its file: a plan must find its model again however the model was
saved (one file, external data) or loaded (weights read, memory-mapped); :func:`model_sha256` hashes each
weight's bytes apart from the graph, so it is the same either way and needs no 2 GiB serialization.
"""

from __future__ import annotations

import hashlib
import os
import threading

import onnx
from onnx import TensorProto

from onnxprune.errors import InputError
from onnxprune.io import memory_budget, weights
from onnxprune.io.model_parts import PROTOBUF_LIMIT_BYTES, one_line, payload_chunks, require_loaded_weights, split_payloads

_HASH_DOMAIN = b"onnxprune.model_sha256.v1\0"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, streamed: ties reports and plans to the exact input file."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise InputError(f"{path}: cannot read file for hashing: {one_line(err)}") from err
    return digest.hexdigest()



def _payload_sha256(source: TensorProto) -> bytes:
    """SHA-256 of a tensor's raw bytes; a stub's are streamed from its store (pages released) once per run
    (:func:`onnxprune.io.weights.payload_sha256`)."""
    if weights.is_stub(source):
        return weights.payload_sha256(source)
    digest = hashlib.sha256()
    for chunk in payload_chunks(source):
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



def model_sha256(model: onnx.ModelProto) -> str:
    """Deterministic hex SHA-256 of a model including its weights, to tie a saved plan to a model.

    The hash does not depend on where weights live: a model saved with external data and loaded
    again hashes the same as the in-memory original.  Initializer payloads are replaced by their
    own SHA-256 before the deterministic serialization, so models above 2 GiB can be hashed.
    Raises :class:`InputError` when weights were not loaded: a hash without them would tie a plan
    to the graph alone.
    """
    require_loaded_weights(model, "model_sha256")
    skeleton, payloads = split_payloads(model, 0)
    for header, source, _ in payloads:
        header.raw_data = _payload_sha256(source)
    if skeleton.ByteSize() > PROTOBUF_LIMIT_BYTES:
        raise InputError("model_sha256: the model without its initializer payloads exceeds 2 GiB")
    digest = hashlib.sha256(_HASH_DOMAIN)
    digest.update(skeleton.SerializeToString(deterministic=True))
    return digest.hexdigest()
