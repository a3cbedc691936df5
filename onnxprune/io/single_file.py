"""Write a model as one ``.onnx`` file, streaming its weights instead of serializing it whole.

Why: ``SerializeToString`` builds the whole file in memory, on top of the weights it copies into the
proto first — about twice the model at the moment of saving, the peak of a ``prune``. Here the model is
serialized without its large payloads (a skeleton of kilobytes), and the file is emitted field by field:
the skeleton's framing with each payload spliced in where protobuf would put it, lengths computed
beforehand, payload chunks streamed from the weight store (or the in-memory array) one tensor at a time.

Guarantee: the bytes are exactly ``SerializeToString()`` of the model with its payloads inline — fields
in field-number order, as the protobuf runtime writes them (``tests/test_io.py`` checks it) — so a
streamed save and an in-memory one give identical files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from onnx import ModelProto

from onnxprune.io.wire import encode_varint, fields, length_prefix

_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9

#: a payload: its length in bytes and a function giving its chunks
Payload = tuple[int, Callable[[], Iterable[bytes | memoryview]]]


def chunks(skeleton: ModelProto, payloads: dict[int, Payload]) -> tuple[int, Iterator[bytes | memoryview]]:
    """(file size, chunks) of ``skeleton`` with ``payloads`` (initializer index → payload) as ``raw_data``.

    The skeleton's initializers at those indices carry no ``raw_data``, ``external_data`` or
    ``data_location``; every other field is written as the protobuf runtime serializes it.
    """
    model = skeleton.SerializeToString()
    graph_span = None
    for number, _, start, payload, end in fields(model, 0, len(model)):
        if number == _MODEL_GRAPH:
            graph_span = (start, payload, end)
    if graph_span is None:
        return len(model), iter([model])
    start, payload, end = graph_span
    graph = model[payload:end]
    tensors = _tensor_pieces(graph, payloads)
    graph_size = len(graph) + sum(_growth(len(header), payloads[i][0]) for i, header in tensors.items())
    head = model[:start] + length_prefix(_MODEL_GRAPH, graph_size)
    size = len(head) + graph_size + len(model) - end
    return size, _emit(head, graph, tensors, payloads, model[end:])


def _tensor_pieces(graph: bytes, payloads: dict[int, Payload]) -> dict[int, bytes]:
    """Initializer index → its serialized header, for the initializers that get a payload."""
    out, index = {}, 0
    for number, _, _, payload, end in fields(graph, 0, len(graph)):
        if number == _GRAPH_INITIALIZER:
            if index in payloads:
                out[index] = graph[payload:end]
            index += 1
    return out


def _tensor_size(header: int, payload: int) -> int:
    return header + len(length_prefix(_TENSOR_RAW_DATA, payload)) + payload


def _growth(header: int, payload: int) -> int:
    """How much longer the graph gets when a header of ``header`` bytes takes a payload of ``payload``."""
    return len(encode_varint(_tensor_size(header, payload))) + _tensor_size(header, payload) - \
        len(encode_varint(header)) - header


def _emit(head: bytes, graph: bytes, tensors: dict[int, bytes], payloads: dict[int, Payload],
          tail: bytes) -> Iterator[bytes | memoryview]:
    yield head
    index, pos = 0, 0
    for number, _, start, _, end in fields(graph, 0, len(graph)):
        if number != _GRAPH_INITIALIZER:
            continue
        if index in tensors:
            yield graph[pos:start]
            yield from _tensor(tensors[index], payloads[index])
            pos = end
        index += 1
    yield graph[pos:]
    yield tail


def _tensor(header: bytes, payload: Payload) -> Iterator[bytes | memoryview]:
    """One initializer field: its header's fields with ``raw_data`` (field 9) in field-number order."""
    length, source = payload
    yield length_prefix(_GRAPH_INITIALIZER, _tensor_size(len(header), length))
    split = len(header)
    for number, _, start, _, _ in fields(header, 0, len(header)):
        if number > _TENSOR_RAW_DATA:
            split = start
            break
    yield header[:split]
    yield length_prefix(_TENSOR_RAW_DATA, length)
    written = 0
    for chunk in source():
        written += len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
        yield chunk
    if written != length:
        raise ValueError(f"a weight's payload is {written} bytes, {length} were announced")
    yield header[split:]

