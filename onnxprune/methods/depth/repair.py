"""Least-squares repair after depth pruning: refit the layers that read the stream a removed block fed.

Why: without block ``k`` the stream downstream carries ``x`` instead of ``x + f(x)``; the weighted
layers that read it next (the following block's input projection, or the classifier after the last
block) can absorb much of that shift.  Each such layer is refitted so that, on the calibration inputs
the *depth-pruned* model feeds it, it reproduces the *original* model's output of the same layer —
exactly :mod:`onnxprune.passes.recover_lsq` (ridge normal equations streamed in float64, a fit kept only
when it lowers the layer's error, k×k convs on sampled im2col rows); only the choice of layers differs.

Which layers: walking forward from each removed block's output through unweighted ops, the first
weighted layers reached (Conv with group 1, Gemm, MatMul x·W; stopping there), in graph order, once
each.  Layers that are not applicable are recorded with the reason.  Like any recovery, this changes
weights on purpose: the oracle judges the rewrite before it, and the caller keeps the repaired model
only when its output error against the original on the calibration data does not grow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.runtime.calibration import CalibrationSet
from onnxprune.methods.depth.analysis import WEIGHTED_OPS, Block
from onnxprune.ir.graph import import_graph
from onnxprune.recovery import lsq as recover_lsq
from onnxprune.recovery.layers import ConsumerLayer, RecoveryContext, RecoveryOptions
from onnxprune.ir.layers import not_refittable
from onnxprune.analysis.rules.base import ParamSlice, Slot

if TYPE_CHECKING:
    from onnxprune.methods.prepared import Prepared


def next_layers(graph: gs.Graph, blocks: list[Block]) -> list[ConsumerLayer]:
    """The first weighted layers downstream of each removed block's output (in ``graph``, the original)."""
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    tensors = graph.tensors()
    found: dict[int, gs.Node] = {}
    for block in blocks:
        stack, seen = [tensors[block.output]], set()
        while stack:
            tensor = stack.pop()
            for reader in tensor.outputs:
                if id(reader) in seen or id(reader) not in order:
                    continue
                seen.add(id(reader))
                if reader.op in WEIGHTED_OPS and any(isinstance(t, gs.Constant) for t in reader.inputs[1:2]):
                    found[id(reader)] = reader
                else:
                    stack.extend(reader.outputs)
    removed_nodes = {name for block in blocks for name in block.nodes}
    layers = []
    for node in sorted(found.values(), key=lambda n: order[id(n)]):
        if node.name in removed_nodes:
            continue  # inside another removed block's branch: gone
        layers.append(_layer(node))
    return layers


def _layer(node: gs.Node) -> ConsumerLayer:
    """A ConsumerLayer over every input and output channel of ``node`` (nothing of it was pruned)."""
    weight = node.inputs[1]
    shape = tuple(weight.shape)
    in_axis = {"Conv": 1, "Gemm": 1 if int(node.attrs.get("transB", 0)) else 0}.get(node.op, 0)
    out_axis = {"Conv": 0, "Gemm": 0 if int(node.attrs.get("transB", 0)) else 1}.get(node.op, 1)
    inputs = shape[in_axis] if len(shape) > in_axis else 0
    param = ParamSlice(weight.name, in_axis, Slot(node.inputs[0].name, 1), np.arange(inputs), "consumer", node.name, 1)
    reason = not_refittable(node, param)
    if node.op == "ConvTranspose":
        reason = "ConvTranspose layers are not refitted"
    outputs = np.arange(shape[out_axis]) if reason is None and len(shape) > out_axis else np.zeros(0, dtype=np.int64)
    return ConsumerLayer(node.name, node.outputs[0].name, node.op, param, np.zeros(0, dtype=np.int64),
                         np.arange(inputs), outputs, reason)


def repair(prepared: Prepared, blocks: list[Block], pruned: onnx.ModelProto, calibration: CalibrationSet,
           options: RecoveryOptions) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """``pruned`` with the layers after the removed blocks refitted; returns the model and per-layer records."""
    from onnxprune.methods.finish import finish_model

    original_graph = import_graph(prepared.normalized)
    layers = next_layers(original_graph, blocks)
    context = RecoveryContext(prepared.normalized, original_graph, prepared.analysis, layers, None, calibration,
                              options)
    graph = recover_lsq.run(import_graph(pruned), context)
    return finish_model(graph, prepared.original), context.records
