"""Turn a rewritten graph into the model a method returns: cleaned, exported, shapes refreshed, interface kept.

Why shared: every method (width, depth, sparsity) and every recovery pass ends with the same steps, and
a stale ``value_info`` or a renamed symbolic dim on a graph input would mislead runtimes the same way
whichever method made the graph.
"""

from __future__ import annotations

import onnx

from onnxprune.ir.graph import export_graph
from onnxprune.passes import cleanup


def finish_model(graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Cleanup, export and refresh intermediate shapes (stale value_info would mislead runtimes)."""
    model = export_graph(cleanup.run(graph).graph, like=like)
    del model.graph.value_info[:]
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is an aid here; the verifier runs the strict checks
        pass
    keep_interface(model, like)
    return model


def keep_interface(model: onnx.ModelProto, like: onnx.ModelProto) -> None:
    """Graph inputs and outputs never change shape (they are frozen boundaries): keep the source's
    declarations verbatim, so anonymous or symbolic dims are not renamed by shape inference."""
    weights = {init.name for init in model.graph.initializer}  # IR < 4 lists (sliced) weights as inputs
    source = {v.name: v for v in list(like.graph.input) + list(like.graph.output) if v.name not in weights}
    for field in (model.graph.input, model.graph.output):
        for index, value in enumerate(field):
            if value.name in source:
                field[index].CopyFrom(source[value.name])
