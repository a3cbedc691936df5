"""Calibration statistics the sparsity criteria read: per-input-channel norms (Wanda) and input Gram
matrices (SparseGPT), both streamed batch by batch.

Why two collectors: Wanda needs only ‖X_c‖ per input channel, which reduction nodes inside the
onnxruntime session compute (:func:`onnxprune.scoring.statistics.collect_statistics`: only ``[batch, C]``
vectors cross into Python).  SparseGPT needs XᵀX over the layer's reduction axis; those are
accumulated in float64 over batches (each batch's product in float32, which halves the cost of the
largest step and loses nothing a 1 % damping would notice) from the layer inputs, im2col rows for a Conv (at most ``max_rows`` sampled
positions per layer over the calibration set, seeded, as the least-squares recovery does), permuted
into the matrix view's column order (input channels fastest).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.runtime.calibration import CalibrationSet
from onnxprune.methods.sparsity.layers import SparseLayer
from onnxprune.ir.graph import import_graph
from onnxprune.ir.layers import conv_patches
from onnxprune.analysis.rules import Slot
from onnxprune.scoring.statistics import collect_statistics, with_outputs
from onnxprune.runtime.sessions import fetch_outputs
from onnxprune.runtime.sessions import make_session

MAX_ROWS = 20000


def _channel_axis(layer: SparseLayer, node: gs.Node, rank: int) -> int:
    if layer.op == "Conv":
        return 1
    if layer.op == "Gemm":
        return 0 if int(node.attrs.get("transA", 0)) else 1
    return rank - 1


def channel_norms(model: onnx.ModelProto, layers: tuple[SparseLayer, ...], calibration: CalibrationSet,
                  ranks: dict[str, int]) -> dict[str, np.ndarray]:
    """‖X_c‖₂ over the calibration set of every input channel each layer reads, keyed by node name."""
    nodes = {node.name: node for node in import_graph(model).nodes}
    slots = {layer.node: Slot(layer.input, _channel_axis(layer, nodes[layer.node], ranks[layer.input]))
             for layer in layers}
    stats = collect_statistics(model, list(dict.fromkeys(slots.values())), calibration,
                               {slot.tensor: ranks[slot.tensor] for slot in slots.values()})
    return {node: np.sqrt(stats.by_slot[slot].sumsq) for node, slot in slots.items()}


def conv_column_order(layer: SparseLayer) -> np.ndarray:
    """For each matrix column ``(k..., c)``, its index in im2col's channel-major ``(c, k...)`` order."""
    channels, kernel = layer.shape[1], layer.shape[2:]
    return np.arange(channels * int(np.prod(kernel, dtype=np.int64))).reshape(channels, -1).T.ravel()


def _rows(layer: SparseLayer, node: gs.Node, x: np.ndarray, take: int | None, rng: np.random.Generator) -> np.ndarray:
    if layer.op == "Conv":
        patches = conv_patches(node, x, tuple(layer.shape[2:]), take, rng)[0]
        return patches[:, conv_column_order(layer)]
    if layer.op == "Gemm":
        return x.T if int(node.attrs.get("transA", 0)) else x
    return x.reshape(-1, x.shape[-1])


def gram_matrices(model: onnx.ModelProto, layers: tuple[SparseLayer, ...], calibration: CalibrationSet,
                  max_rows: int = MAX_ROWS, seed: int = 0) -> dict[str, tuple[np.ndarray, int]]:
    """(XᵀX in the matrix view's column order, rows) of every group-1 layer, keyed by node name.

    Grouped convolutions are left out: each group has its own input, so one Gram does not describe them.
    """
    nodes = {node.name: node for node in import_graph(model).nodes}
    wanted = [layer for layer in layers if layer.group == 1]
    if not wanted:
        return {}
    inputs = sorted({layer.input for layer in wanted})
    session = make_session(with_outputs(model, inputs), optimized=True)
    samples = max(calibration.used_samples(), 1)
    grams: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {}
    for index, batch in enumerate(calibration.batches()):
        values = dict(zip(inputs, fetch_outputs(session, inputs, batch, f"calibration batch {index}")))
        for number, layer in enumerate(wanted):
            x = np.asarray(values[layer.input], dtype=np.float32)
            take = max(1, math.ceil(max_rows * x.shape[0] / samples)) if layer.op == "Conv" else None
            r = np.ascontiguousarray(_rows(layer, nodes[layer.node], x, take, np.random.default_rng([seed, number, index])))
            grams[layer.node] = grams.get(layer.node, 0.0) + (r.T @ r).astype(np.float64)
            rows[layer.node] = rows.get(layer.node, 0) + r.shape[0]
    return {name: (gram, rows[name]) for name, gram in grams.items()}
