"""Bias compensation for removed input channels (FLAP's bias fix; training-free recovery step 1).

Assumes: ``graph`` is the pruned model of ``context``'s plan (kept weights already sliced); the
context's statistics hold E[x] of every consumer input slot, measured on the *original* model.
Guarantees: for every consumer layer reading removed channels (Conv with group 1, Gemm, MatMul x·W),
the layer's output gains the constant the removed channels contributed on average; every other
layer is listed in ``context.records`` with the reason it was not changed.  Not idempotent (each run
adds the correction again).

Math, for a consumer ``Y = X W + b`` that loses input channels R:
``b ← b + Σ_{j∈R} E[x_j] · W_j`` — exact when each removed channel is constant, and in general
it keeps E[Y] unchanged when the kept inputs are.  Gemm adds the term to C (divided by β, times α);
MatMul adds it to the following bias Add or inserts an ``Add``; a Conv without a bias gets one.

For a Conv with a k×k kernel the term is ``Σ_{j∈R} E[x_j] · Σ_{k} W[o, j, k]`` where E[x_j] is the mean
over batch *and* spatial positions (the DC term).  This is exact only without zero-padding effects:
at borders padded positions contribute 0 rather than E[x_j], so border outputs are over-corrected by
the missing taps.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.recovery.layers import ConsumerLayer, RecoveryContext, add_to_output, layer_node
from onnxprune.ir.layers import channel_matrix, weight_scale


def output_delta(context: RecoveryContext, layer: ConsumerLayer) -> np.ndarray | None:
    """Σ_{j removed} E[x_j] · W_j, per kept output (None without statistics for the layer's input)."""
    stats = context.stats.get(layer.param.slot) if context.stats is not None else None
    if stats is None:
        return None
    mean = stats.mean[layer.param.index[layer.drop]]
    weight = context.weight(layer)
    node = layer_node(context.original_graph, layer)
    rows = channel_matrix(node, weight)  # [input channels, outputs]; a Conv's kernel taps summed
    delta = weight_scale(node) * (mean @ rows[layer.drop, :])
    return delta[layer.out_keep]


def compensate(graph: gs.Graph, context: RecoveryContext, layer: ConsumerLayer, method: str = "bias") -> dict:
    """Apply the correction to one layer; returns its record."""
    if layer.reason is not None:
        return layer.record(method, "not applicable", reason=layer.reason)
    node = layer_node(graph, layer)
    delta = output_delta(context, layer)
    if node is None or delta is None:
        why = "node not in the pruned graph" if node is None else "no statistics for its input"
        return layer.record(method, "skipped", reason=why)
    if not np.all(np.isfinite(delta)):
        return layer.record(method, "skipped", reason="non-finite statistics")
    edit = add_to_output(graph, node, delta)
    return layer.record(method, "applied", edit=edit, max_abs_delta=float(np.max(np.abs(delta), initial=0.0)))


def run(graph: gs.Graph, context: RecoveryContext) -> gs.Graph:
    for layer in context.layers:
        context.records.append(compensate(graph, context, layer))
    return graph
