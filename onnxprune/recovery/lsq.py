"""Least-squares refit of every consumer layer that lost input channels (training-free recovery step 2).

Assumes: ``graph`` is the pruned model of ``context``'s plan; ``context.calibration`` holds inputs.
Guarantees: each applicable layer (Conv with group 1, Gemm, MatMul x·W), in topological order, gets
new kept weights and bias that best reproduce the *original* layer's output from the inputs the
*pruned, already-recovered* model feeds it — so each layer also absorbs the error of the layers
before it.  A fit is kept only when it lowers the layer's error on the rows it was fitted on;
otherwise, or when the layer is not applicable (grouped convs: an output reads only its group),
the record says why.  Not idempotent (a second run refits again, to the same target).

Math, per layer: with X̃ the kept input channels as rows (tokens for Gemm/MatMul, im2col patches for
a Conv), Y the original layer output before its bias, θ = [W′; δ]:
``θ = argmin ‖[X̃ 1] θ − Y‖² + λ‖W′‖²``, solved from ``G = [X̃ 1]ᵀ[X̃ 1]`` and ``H = [X̃ 1]ᵀ Y``
accumulated in float64 over calibration batches: ``(G + λ·diag(1,…,1,0)) θ = H`` with
``λ = ridge · trace(X̃ᵀX̃) / features`` — or, while there are fewer rows than features (LLM calibration),
from the stored rows in the exact dual form (:mod:`onnxprune.recovery.ridge`).  The intercept δ is added to the layer's bias (Conv bias,
Gemm C, or the Add after a MatMul).  Gemm/MatMul/1×1 Conv use every row (exact least squares);
a k×k Conv uses at most ``max_rows`` seeded im2col samples per layer.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.ir.layer_table import layout_of, row_of
from onnxprune.ir.layers import bias_term, current_theta, from_matrix, kernel_of, layer_rows, samples_patches
from onnxprune.errors import InputError
from onnxprune.ir.graph import export_graph
from onnxprune.recovery.ridge import RidgeSystem
from onnxprune.recovery.layers import ConsumerLayer, RecoveryContext, add_to_output, layer_node, new_constant
from onnxprune.scoring.statistics import with_outputs, stream_batches
from onnxprune.runtime.sessions import make_session


# --------------------------------------------------------------------------------------------------
# rows of X̃ and Y


def _pre_bias(original: gs.Node, y: np.ndarray) -> np.ndarray:
    """The original layer output without its bias term."""
    term = bias_term(original, y.ndim)
    return y if term is None else y - term


def _rows(layer: ConsumerLayer, node: gs.Node, original: gs.Node, x: np.ndarray, y: np.ndarray, take: int | None,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = _pre_bias(original, y.astype(np.float64))
    axis = layout_of(node).output_feature_axis
    kept = y[(Ellipsis, layer.out_keep) if axis < 0 else (slice(None),) * axis + (layer.out_keep,)]
    return layer_rows(node, x, take, rng, kept)


# --------------------------------------------------------------------------------------------------
# current parameters and writing the fit back


def _write(graph: gs.Graph, node: gs.Node, theta: np.ndarray) -> str:
    index = row_of(node).weight
    old = node.inputs[index]
    shape, dtype = np.asarray(old.values).shape, np.asarray(old.values).dtype
    node.inputs[index] = new_constant(graph, old.name, from_matrix(node, theta[:-1], shape).astype(dtype))
    return add_to_output(graph, node, theta[-1])


def _current_model(graph: gs.Graph, context: RecoveryContext, tensor: str) -> onnx.ModelProto:
    graph.toposort()
    return with_outputs(export_graph(graph, like=context.original), [tensor])


def _quota(layer: ConsumerLayer, node: gs.Node, context: RecoveryContext, batch_samples: int) -> int | None:
    """Rows to sample from one batch: k×k convs share ``max_rows`` over the calibration set."""
    if not samples_patches(node) or all(k == 1 for k in kernel_of(node)):
        return None
    samples = max(context.calibration.used_samples(), 1)
    return max(1, math.ceil(context.options.max_rows * batch_samples / samples))


def refit(graph: gs.Graph, context: RecoveryContext, layer: ConsumerLayer, number: int,
          original_session) -> dict:
    """Accumulate, solve and (if it helps) write one layer; returns its record."""
    node = layer_node(graph, layer)
    if node is None:
        return layer.record("lsq", "skipped", reason="node not in the pruned graph")
    original = layer_node(context.original_graph, layer)
    x_name = node.inputs[0].name
    session = make_session(_current_model(graph, context, x_name), optimized=True)
    normal = None
    # one pass over the data feeds both models (tee keeps them in step; block by block, each runs all batches)
    pruned_batches, original_batches = itertools.tee(context.calibration.batches())
    pairs = zip(stream_batches(session, [x_name], pruned_batches),
                stream_batches(original_session, [layer.output], original_batches))
    for index, ((_, (x,)), (_, (y,))) in enumerate(pairs):
        rng = np.random.default_rng([context.options.seed, number, index])
        rows_x, rows_y = _rows(layer, node, original, x, y, _quota(layer, node, context, x.shape[0]), rng)
        if normal is None:
            normal = RidgeSystem(rows_x.shape[1], rows_y.shape[1])
        normal.add(rows_x, rows_y)
    if normal is None or normal.yy == 0.0:
        return layer.record("lsq", "skipped", reason="the layer's output is zero on the calibration set")
    return _solve_and_write(graph, node, layer, normal, context)


def _solve_and_write(graph: gs.Graph, node: gs.Node, layer: ConsumerLayer, normal: RidgeSystem,
                     context: RecoveryContext) -> dict:
    current = current_theta(node)
    try:
        theta, lam = normal.solve(context.options.ridge)
    except np.linalg.LinAlgError as err:
        return layer.record("lsq", "skipped", reason=f"singular normal equations ({err})")
    before, after = normal.error(current), normal.error(theta)
    facts = {"rows": normal.rows, "features": normal.features, "form": normal.form,
             "lambda": lam,
             "relative_error_before": math.sqrt(max(before, 0.0) / normal.yy),
             "relative_error_after": math.sqrt(max(after, 0.0) / normal.yy)}
    if not np.all(np.isfinite(theta)) or after > before:
        return layer.record("lsq", "rejected", reason="the fit does not lower the layer's error", **facts)
    edit = _write(graph, node, theta)
    return layer.record("lsq", "applied", edit=edit, **facts)


def run(graph: gs.Graph, context: RecoveryContext) -> gs.Graph:
    if context.calibration is None:
        raise InputError("recovery 'lsq' needs calibration data (--calib PATH or --calib-random N)")
    targets = [layer.output for layer in context.layers if layer.reason is None]
    original_session = make_session(with_outputs(context.original, targets), optimized=True)
    for number, layer in enumerate(context.layers):
        if layer.reason is not None:
            context.records.append(layer.record("lsq", "not applicable", reason=layer.reason))
            continue
        context.records.append(refit(graph, context, layer, number, original_session))
    return graph
