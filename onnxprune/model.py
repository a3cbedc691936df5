"""Conversion between ``onnx.ModelProto`` and the onnx-graphsurgeon ``Graph`` the passes work on.

Why a module: graphsurgeon's export drops model-level fields (IR version, metadata, model doc string,
extra opset domains).  Every export goes through :func:`export_graph` so a rewritten model keeps what
the user's file declared.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from onnxprune.errors import UnsupportedModelError


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """Graph IR of a model (weights stay lazily loaded where graphsurgeon allows)."""
    try:
        return gs.import_onnx(model)
    except Exception as err:  # graphsurgeon raises bare Exceptions on malformed graphs
        raise UnsupportedModelError(f"cannot import graph: {err}".splitlines()[0]) from err


def export_graph(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export ``graph`` keeping IR version, opsets, producer and metadata of ``like``."""
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
