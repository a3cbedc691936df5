"""Criterion ``reconstruction`` (ThiNet, Luo et al. 2017): remove the units whose loss the consumers feel least.

For a consumer layer Y = X W (X: its input rows over the calibration set — tokens for Gemm/MatMul,
im2col patches for a Conv — W: ``[features, outputs]``), removing the input features S̄ changes the
output by X_S̄ W_S̄, so the squared reconstruction error is

    ‖X_S̄ W_S̄‖² = tr(W_S̄ᵀ G_S̄S̄ W_S̄) = Σ_{i,j ∈ S̄} G_ij (W_i · W_j),  G = XᵀX.

Per consumer, ``M = G ∘ (W Wᵀ)`` summed over the features of each weight index (a Conv input channel
owns k·k features) is stored; per group, those are summed over the group's consumers onto its units
(Q, units × units), and the cost of a removed set is 1ᵀ Q_S̄S̄ 1.  Greedy, one unit at a time: the next
unit is the one with the smallest increase Q_uu + 2 Σ_{v removed} Q_uv.  The score of a unit is its
position in that removal order, divided by the number of units (first removed: lowest score), so the
allocation is unchanged: a uniform ratio removes exactly the greedy prefix.

G is accumulated in float64 over calibration batches from the *original* model's consumer inputs (the
lsq recovery's im2col rows, at most ``max_rows`` sampled positions per Conv layer over the calibration
set), so memory is independent of the number of batches.  Consumers the recovery cannot model (grouped
convolutions, MatMul with a computed weight, other ops) are skipped; a group none of whose consumers is
modelled falls back to ``l2`` and the notes say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.ir.layer_table import row_of
from onnxprune.ir.layers import current_theta, input_features, layer_rows, not_refittable, samples_patches
from onnxprune.runtime.calibration import CalibrationSet
from onnxprune.analysis.groups import Analysis
from onnxprune.ir.graph import import_graph
from onnxprune.scoring.statistics import with_outputs, stream_batches
from onnxprune.runtime.sessions import make_session

MAX_ROWS = 20000


@dataclass
class ConsumerGram:
    """One consumer: ``cost[a, b] = Σ_{f ∈ a, g ∈ b} G_fg (W_f · W_g)`` over weight indices a, b."""

    node: str
    input_index: int
    cost: np.ndarray
    rows: int


def _consumers(graph: gs.Graph, analysis: Analysis) -> list[tuple[gs.Node, int]]:
    """Applicable consumer layers of prunable groups, once per (node, weight input)."""
    prunable = set(analysis.prunable_indices)
    nodes = {node.name: node for node in graph.nodes}
    found: dict[tuple[str, int], gs.Node] = {}
    for param in analysis.params:
        if param.role != "consumer" or (param.node, param.input_index) in found or param.node not in nodes:
            continue
        first, _ = analysis.slots[param.slot]
        if not prunable.intersection(analysis.atom_group[first + param.index].tolist()):
            continue
        node = nodes[param.node]
        row = row_of(node)
        if row is None or param.input_index != row.weight or not isinstance(node.inputs[row.weight], gs.Constant) \
                or not_refittable(node, param.input_index):
            continue
        if input_features(node) != len(param.index):
            continue
        found[(param.node, param.input_index)] = node
    return [(node, key[1]) for key, node in found.items()]


def collect_grams(model: onnx.ModelProto, analysis: Analysis, calibration: CalibrationSet,
                  max_rows: int = MAX_ROWS, seed: int = 0) -> dict[tuple[str, int], ConsumerGram]:
    """Input Gram matrices of every modelled consumer, streamed; returns the per-index cost matrices."""
    graph = import_graph(model)
    consumers = _consumers(graph, analysis)
    if not consumers:
        return {}
    inputs = sorted({node.inputs[0].name for node, _ in consumers})
    session = make_session(with_outputs(model, inputs), optimized=True)
    samples = max(calibration.used_samples(), 1)
    grams: dict[int, np.ndarray] = {}
    rows = [0] * len(consumers)
    for index, (_, got) in enumerate(stream_batches(session, inputs, calibration.batches())):
        values = dict(zip(inputs, got))
        for number, (node, _) in enumerate(consumers):
            x = np.asarray(values[node.inputs[0].name], dtype=np.float64)
            take = max(1, math.ceil(max_rows * x.shape[0] / samples)) if samples_patches(node) else None
            r = layer_rows(node, x, take, np.random.default_rng([seed, number, index]))[0]
            grams[number] = grams.get(number, 0.0) + r.T @ r
            rows[number] += r.shape[0]
    result = {}
    for number, (node, input_index) in enumerate(consumers):
        if number not in grams:
            continue
        w = current_theta(node)[:-1]  # [features, outputs]
        per_feature = grams[number] * (w @ w.T)
        width = per_feature.shape[0] // (input_features(node) or 1)
        n = per_feature.shape[0] // width
        cost = per_feature.reshape(n, width, n, width).sum(axis=(1, 3))
        result[(node.name, input_index)] = ConsumerGram(node.name, input_index, cost, rows[number])
    return result


def unit_cost(analysis: Analysis, group: int, grams: dict[tuple[str, int], ConsumerGram]) -> np.ndarray | None:
    """Q (units × units) of ``group``, summed over its modelled consumers; None if it has none."""
    units = analysis.groups[group].units
    total, found = np.zeros((units, units)), False
    for param in analysis.groups[group].params:
        entry = grams.get((param.node, param.input_index)) if param.role == "consumer" else None
        if entry is None or entry.cost.shape[0] != len(param.index):
            continue
        first, _ = analysis.slots[param.slot]
        atoms = first + np.asarray(param.index)
        mine = analysis.atom_group[atoms] == group
        if analysis.atom_block is not None:
            mine &= analysis.atom_block[atoms] < 0  # block atoms (KV heads) have no unit of their own
        if not mine.any():
            continue
        onehot = np.zeros((int(mine.sum()), units))
        onehot[np.arange(onehot.shape[0]), analysis.atom_unit[atoms][mine]] = 1.0
        total += onehot.T @ entry.cost[np.ix_(mine, mine)] @ onehot
        found = True
    return total if found else None


def greedy_order(cost: np.ndarray) -> list[int]:
    """Units in the order greedy removal takes them: each step adds the least to 1ᵀ Q_S̄S̄ 1."""
    units = cost.shape[0]
    removed = np.zeros(units, dtype=bool)
    cross = np.zeros(units)
    diag = np.diag(cost).copy()
    order = []
    for _ in range(units):
        increase = np.where(removed, np.inf, diag + 2.0 * cross)
        unit = int(np.argmin(increase))
        order.append(unit)
        removed[unit] = True
        cross += cost[:, unit]
    return order


def order_scores(order: list[int]) -> np.ndarray:
    """Position in the removal order → score in (0, 1]: removed first = least important."""
    scores = np.zeros(len(order))
    scores[np.asarray(order, dtype=np.int64)] = (np.arange(len(order)) + 1.0) / max(len(order), 1)
    return scores
