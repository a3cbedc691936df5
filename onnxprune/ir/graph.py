"""Conversion between ``onnx.ModelProto`` and the onnx-graphsurgeon ``Graph`` the passes work on.

Why a module: graphsurgeon's export drops model-level fields (IR version, metadata, model doc string,
extra opset domains).  Every export goes through :func:`export_graph` so a rewritten model keeps what
the user's file declared.

Memory-mapped weights (:mod:`onnxprune.io.weights`) cross this boundary as stubs both ways: an imported
stub becomes a constant whose values are loaded from the store only when a pass reads them
(:class:`StoredValues`), and on export every constant whose values live in the store — or that a
pass computed and is large — is written as a stub again, so no export copies weights into a proto.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.io import weights
from onnxprune.errors import UnsupportedModelError


class StoredValues(gs.ir.tensor.LazyValues):
    """Lazy values of a weight-store stub.

    Why a ``LazyValues``: graphsurgeon's exporter writes a lazy tensor's proto unchanged, so an
    untouched weight is exported as its (tiny) stub; ``load`` returns the store's read-only view.
    The stub is a private copy: the exporter renames it in place, and it must never rename the
    caller's model.
    """

    def __init__(self, stub: onnx.TensorProto, store: weights.WeightStore, key: str):
        copy = onnx.TensorProto()
        copy.CopyFrom(stub)
        super().__init__(copy)
        self.store, self.key = store, key

    def load(self) -> np.ndarray:
        return self.store.array(self.key)


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """Graph IR of a model (weights stay lazily loaded where graphsurgeon allows; stubs stay in
    their store until a pass reads them)."""
    try:
        graph = gs.import_onnx(model)
    except Exception as err:  # graphsurgeon raises bare Exceptions on malformed graphs
        raise UnsupportedModelError(f"cannot import graph: {err}".splitlines()[0]) from err
    if weights.has_stubs(model):
        for tensor in graph.tensors().values():
            lazy = getattr(tensor, "_values", None)
            if isinstance(lazy, gs.ir.tensor.LazyValues) and not isinstance(lazy, gs.ir.tensor.SparseValues):
                found = weights.stub_entry(lazy.tensor)
                if found is not None:
                    tensor._values = StoredValues(lazy.tensor, *found)
    return graph


def stored_key(constant: gs.Constant) -> tuple[weights.WeightStore, str] | None:
    """(store, key) when a constant's values are a stub or a store array, without loading anything."""
    values = constant._values
    if isinstance(values, StoredValues):
        return values.store, values.key
    return None


def derive_lazily(constant: gs.Constant, shape: tuple[int, ...], compute: Callable[[np.ndarray], np.ndarray]) -> bool:
    """Make ``constant`` hold ``compute(its values)`` without computing it now, when its values are a
    not-yet-loaded stub; False (nothing done) otherwise, and the caller computes eagerly.

    Why: slicing or masking every layer of a model larger than memory must not hold every result at
    once; a derived weight is computed when a block's session, a save or a pass reads it
    (:meth:`onnxprune.io.weights.WeightStore.add_derived`), and the source's pages are dropped after.
    """
    values = constant._values
    if not isinstance(values, StoredValues):
        return False
    store, source = values.store, values.key
    dtype, _ = store.meta(source)

    def derive() -> np.ndarray:
        try:
            return compute(store.transient(source))
        finally:
            store.release(source)

    key = store.add_derived(dtype, shape, derive)
    constant._values = StoredValues(store.new_stub(constant.name, key), store, key)
    return True


def _restub(graph: gs.Graph, store: weights.WeightStore) -> None:
    """Make every constant whose values are in ``store`` (or are large and computed) a stub again.

    Why: graphsurgeon serializes loaded arrays into the proto; a weight a criterion read, or one a
    pass sliced, would otherwise come back as bytes in every exported copy.  Replacing an array by
    a lazy stub of the same values is invisible to the graph.
    """
    for tensor in graph.tensors().values():
        if not isinstance(tensor, gs.Constant):
            continue
        values = tensor._values
        if not isinstance(values, np.ndarray):
            continue
        key = store.key_of(values)
        if key is None and store.storable(values):
            key = store.add_array(values)
        if key is not None:
            tensor._values = StoredValues(store.new_stub(tensor.name, key), store, key)
        else:
            tensor.data_location = None  # small: exported inline, so it must not claim to be external


def export_graph(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export ``graph`` keeping IR version, opsets, producer and metadata of ``like``.

    When ``like`` has memory-mapped weights, the export does too (see :func:`_restub`).
    """
    store = weights.store_of(like)
    if store is not None:
        _restub(graph, store)
    try:
        model = gs.export_onnx(graph, do_type_check=False)
    except Exception as err:  # graphsurgeon fails on some value types (optional, sequence inputs)
        raise UnsupportedModelError(f"cannot export graph: {type(err).__name__}: {err}".splitlines()[0]) from err
    model.ir_version = like.ir_version
    model.producer_name = like.producer_name
    model.producer_version = like.producer_version
    model.domain = like.domain
    model.model_version = like.model_version
    model.doc_string = like.doc_string
    del model.opset_import[:]
    model.opset_import.extend(like.opset_import)
    del model.metadata_props[:]
    model.metadata_props.extend(like.metadata_props)
    del model.functions[:]
    model.functions.extend(like.functions)
    if model.ir_version < 4:
        _list_initializers_as_inputs(model)
    return model


def _list_initializers_as_inputs(model: onnx.ModelProto) -> None:
    """IR < 4 requires every initializer to be a graph input as well (the checker enforces it)."""
    listed = {value.name for value in model.graph.input}
    for init in model.graph.initializer:
        if init.name not in listed:
            model.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))


def default_opset(model: onnx.ModelProto) -> int:
    """Opset of the default ONNX domain (rules depend on it: attributes became inputs over time)."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The bodies of If/Loop/Scan (and any other graph-valued attribute)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _unnamed_constant_values(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            yield from (attr.t for attr in node.attribute if attr.HasField("t") and not attr.t.name)
        for sub in subgraphs(node):
            yield from _unnamed_constant_values(sub)


@contextlib.contextmanager
def caller_model_kept(model: onnx.ModelProto) -> Iterator[None]:
    """Give the caller's ``model`` back as it came, for a library call that imports it.

    Why: graphsurgeon names the unnamed ``value`` tensors of ``Constant`` nodes *in the proto it imports*
    (and its exporter renames lazy tensors in place), so a Python caller's model would come back changed by
    ``onnxprune.prune(model)``.  Only those names change; they are put back on the way out, after every
    import, export and hash of the call (plans keep the hashes they always had).  Not copying the tensors
    matters: some exporters keep all their weights in ``Constant`` nodes.
    """
    unnamed = [(tensor, tensor.HasField("name")) for tensor in _unnamed_constant_values(model.graph)]
    try:
        yield
    finally:
        for tensor, present in unnamed:
            if present:
                tensor.name = ""
            else:
                tensor.ClearField("name")  # absent, not empty: the serialized bytes are the caller's again
