"""A model's parts as the file code sees them: every tensor wherever it sits, and the weight payloads apart
from the rest (the skeleton).

Why one module under loading, hashing and saving: all three walk the same places (a check that skips a
place is a check an attacker routes around) and split the same payloads (what exceeds 2 GiB is streamed,
never copied whole), so the walk and the split are written once.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.message import Message
from onnx import GraphProto, ModelProto, NodeProto, TensorProto

from onnxprune.errors import InputError
from onnxprune.io import weights

#: Largest message protobuf can serialize or parse (2 GiB - 1): no ``.onnx`` file can be larger.
PROTOBUF_LIMIT_BYTES = 2**31 - 1
_PAYLOAD_FIELDS = frozenset({"raw_data", "external_data", "data_location"})


def one_line(err: BaseException | str, limit: int = 300) -> str:
    """Collapse an underlying message to one short line: user-facing errors are a single line."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tensor_label(tensor: TensorProto) -> str:
    """Quote a tensor name with repr() so a hostile name cannot inject newlines into a message."""
    return repr(tensor.name) if tensor.name else "'<unnamed>'"


def _is_repeated(field: object) -> bool:
    """Protobuf 5+ has ``is_repeated`` (7 dropped ``label``); older releases only ``label``."""
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == field.LABEL_REPEATED)  # type: ignore[attr-defined]


def copy_fields(dst: Message, src: Message, skip: frozenset[str] = frozenset()) -> None:
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


def all_tensors(model: ModelProto) -> Iterator[TensorProto]:
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


def is_external(tensor: TensorProto) -> bool:
    return tensor.HasField("data_location") and tensor.data_location == TensorProto.EXTERNAL


def require_loaded_weights(model: ModelProto, what: str) -> None:
    """Refuse to save or hash a model whose weights were never read (``load_weights=False``).

    Stubs of a :class:`~onnxprune.io.weights.WeightStore` count as loaded: their values are one
    memory-mapped read away.
    """
    for tensor in all_tensors(model):
        if is_external(tensor) and not tensor.HasField("raw_data") and not weights.is_stub(tensor):
            raise InputError(
                f"{what}: tensor {tensor_label(tensor)} has weights that were not loaded "
                "(load_model(..., load_weights=False)); load the model with its weights first"
            )



#: (header in the copy, source tensor holding the raw_data, index among the top-level initializers)
Payloads = list[tuple[TensorProto, TensorProto, int]]


def split_payloads(model: ModelProto, min_bytes: int) -> tuple[ModelProto, Payloads]:
    """Copy the model without the raw payloads of its top-level initializers of >= ``min_bytes``.

    Returns the copy and (header in the copy, source tensor, initializer index) triples.  Why: the payloads are what
    exceeds 2 GiB; saving streams them to the data file one tensor at a time and hashing digests
    them, so neither needs a second in-memory copy of all weights (protobuf copies ``raw_data`` on
    every access, so it is read once per tensor).  Everything else (nodes, small and typed-data
    tensors, subgraph and attribute tensors, metadata) is copied as is.
    """
    skeleton = ModelProto()
    copy_fields(skeleton, model, frozenset({"graph"}))
    payloads: Payloads = []
    if not model.HasField("graph"):
        return skeleton, payloads
    skeleton.graph.SetInParent()
    copy_fields(skeleton.graph, model.graph, frozenset({"initializer"}))
    for index, source in enumerate(model.graph.initializer):
        header = skeleton.graph.initializer.add()
        # ByteSize() (payload plus a few header bytes) avoids copying raw_data just to measure it.
        # Stubs always count: their payload is in a weight store, never in the proto.
        large = source.HasField("raw_data") and source.ByteSize() >= min_bytes
        if large or weights.is_stub(source):
            copy_fields(header, source, _PAYLOAD_FIELDS)
            payloads.append((header, source, index))
        else:
            header.CopyFrom(source)
    return skeleton, payloads



def payload_chunks(source: TensorProto) -> Iterator[bytes | memoryview]:
    """A payload as chunks to write: a stub's streamed from its store, inline ``raw_data`` whole."""
    if weights.is_stub(source):
        yield from weights.chunks(source)
    else:
        yield source.raw_data

