"""Single-file models whose large weights stay in the file: a protobuf wire scan that maps them.

Why: ``ParseFromString`` needs the file's bytes and the parsed message at once (2x the file), and
every proto copy the pipeline makes copies the weights again — a 90 MB single-file encoder peaked at
8x its size in ``analyze``.  The weights of an ONNX file are ``raw_data`` fields of the graph's
initializers: plain byte ranges of the file.  This module walks the wire format of ``ModelProto →
graph → initializer`` over a read-only ``mmap`` of the file, parses every other field as usual
(field by field, each a small slice), and gives each large initializer a stub whose values are a view
of the mapping (:class:`onnxprune.io.weights.WeightStore`, as for external data).  Peak memory then
follows the weights actually read, not the file.

Fail safe: anything the scan does not expect (groups, a truncated varint, an initializer that is not
little-endian plain numeric ``raw_data``, a second ``graph`` field) returns None, and the caller parses
the file the ordinary way.  The result is the same message ``ParseFromString`` gives, except that the
mapped initializers are stubs (tests compare every model in ``models/`` value by value).
"""

from __future__ import annotations

import mmap

from onnx import GraphProto, ModelProto, TensorProto

from onnxprune.io import weights
from onnxprune.io.wire import LENGTH, Malformed, fields

#: Initializers with at least this many bytes of ``raw_data`` are mapped; smaller ones are parsed inline.
MAP_MIN_BYTES = 64 * 1024

_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9


def scan(mapping: mmap.mmap, min_bytes: int = MAP_MIN_BYTES) -> ModelProto | None:
    """The model in a read-only ``mapping`` of its file with its initializers of at least ``min_bytes``
    mapped, or None to parse it the ordinary way (nothing that large, or a layout the scan does not
    handle)."""
    try:
        return _scan_model(mapping, min_bytes)
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - Malformed, or protobuf refusing a field: the ordinary parse reports it
        return None


def _scan_model(mapping: mmap.mmap, min_bytes: int) -> ModelProto | None:
    model, graph_span = ModelProto(), None
    for number, wire, first, payload, end in fields(mapping, 0, len(mapping)):
        if number == _MODEL_GRAPH and wire == LENGTH:
            if graph_span is not None:
                raise Malformed("two graph fields")
            graph_span = (payload, end)
        else:
            model.MergeFromString(mapping[first:end])
    if graph_span is None:
        return None
    store = weights.WeightStore(from_files=False)
    graph = GraphProto()
    mapped = 0
    for number, wire, first, payload, end in fields(mapping, *graph_span):
        tensor = _mapped_initializer(mapping, store, payload, end) \
            if number == _GRAPH_INITIALIZER and wire == LENGTH and end - payload >= min_bytes else None
        if tensor is None:
            graph.MergeFromString(mapping[first:end])
        else:
            graph.initializer.append(tensor)
            mapped += 1
    if not mapped:
        return None  # nothing large: the ordinary parse is as cheap
    model.graph.CopyFrom(graph)
    _drop_pages(mapping)
    return model


def _drop_pages(mapping: mmap.mmap) -> None:
    """Drop the resident pages the scan touched (readahead around every header brings in megabytes of
    weights): the store keeps the mapping for the process, and RSS counts its touched pages until then.
    A weight read later faults its pages back in from the page cache."""
    try:
        mapping.madvise(mmap.MADV_DONTNEED)
    except (AttributeError, OSError, ValueError):
        pass  # an optimisation only


def _mapped_initializer(mapping: mmap.mmap, store: weights.WeightStore, start: int, end: int) -> TensorProto | None:
    """A stub for the initializer serialized in [start, end), or None when it is not mappable raw data."""
    tensor, raw = TensorProto(), None
    for number, wire, first, payload, field_end in fields(mapping, start, end):
        if number == _TENSOR_RAW_DATA and wire == LENGTH:
            raw = (payload, field_end)
        else:
            tensor.MergeFromString(mapping[first:field_end])
    dtype = weights.numpy_dtype(tensor.data_type)
    if raw is None or dtype is None or tensor.data_location == TensorProto.EXTERNAL:
        return None
    count = 1
    for dim in tensor.dims:
        count *= int(dim)
    if count * dtype.itemsize != raw[1] - raw[0]:
        return None  # a payload that does not match its dims: let the ordinary checks report it
    store.make_stub(tensor, store.add_mapped(mapping, raw[0], dtype, tuple(int(d) for d in tensor.dims)))
    return tensor
