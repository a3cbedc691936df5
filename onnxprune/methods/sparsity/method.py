"""The sparsity method: analyze → (statistics) → plan → apply, and the masked reference its oracle runs.

Criteria (per weight, on the ``[rows, cols]`` matrix view):

* ``magnitude``: |W|, per layer or (``scope=global``) one ranking over every layer;
* ``wanda`` (Sun et al. 2023): |W_ij| · ‖X_j‖₂ with ‖X_j‖ the calibration norm of input channel j;
* ``sparsegpt`` (Frantar & Alistarh 2023): masks and an OBS update of the kept weights from the layer's
  input Gram matrix XᵀX, column block by column block (:mod:`onnxprune.methods.sparsity.obs`).

Unstructured patterns zero ``sparsity`` of each layer's weights; N:M keeps N of every M consecutive input
channels per output and kernel position (a layer whose channel count does not divide by M stays dense,
and the plan says so).  ``apply`` writes new weight arrays — never into the loaded ones, which may be
read-only memory-mapped stubs — into a copy of the normalized graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.runtime.calibration import CalibrationSet
from onnxprune.errors import InputError, PlanError
from onnxprune.methods.sparsity import masks
from onnxprune.methods.sparsity.layers import (SparseLayer, SparsityAnalysis, Skipped, analyze_layers, from_matrix,
    to_matrix)
from onnxprune.methods.sparsity.obs import sparsegpt
from onnxprune.methods.sparsity.plan import LayerMask, SparsityPlan, SparsitySettings
from onnxprune.methods.sparsity.stats import MAX_ROWS, channel_norms, gram_matrices
from onnxprune.ir.graph import export_graph, import_graph


@dataclass
class SparsityStats:
    """Calibration statistics of the sparsifiable layers, keyed by node name."""

    norms: dict[str, np.ndarray] = field(default_factory=dict)  # ‖X_c‖ per input channel (Wanda)
    grams: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)  # (XᵀX, rows) (SparseGPT)
    calibration: dict[str, Any] | None = None  # what the report says about the data
    source: CalibrationSet | None = None  # SparseGPT collects its Gram matrices while planning
    max_rows: int = MAX_ROWS


def _weights(graph: gs.Graph) -> dict[str, gs.Node]:
    return {node.name: node for node in graph.nodes}


def _matrix(node: gs.Node, layer: SparseLayer) -> np.ndarray:
    return to_matrix(np.asarray(node.inputs[1].values), layer)


def _wanda_scores(matrix: np.ndarray, layer: SparseLayer, norms: np.ndarray) -> np.ndarray:
    """|W| · ‖X_c‖ with c the input channel each entry reads (a grouped Conv's outputs read their group)."""
    channels = layer.shape[1] if layer.op == "Conv" else layer.cols
    per_group = layer.rows // layer.group
    kernel = layer.cols // channels
    group_of_row = np.arange(layer.rows) // per_group
    channel = group_of_row[:, None] * channels + np.tile(np.arange(channels), kernel)[None, :]
    return np.abs(matrix.astype(np.float64)) * norms[channel]


class SparsityMethod:
    """Element sparsity (unstructured or N:M) of Conv / Gemm / MatMul weights."""

    name = "sparsity"

    def analyze(self, prepared: Any, exclude: tuple[str, ...] = ()) -> SparsityAnalysis:
        """Sparsifiable layers of ``prepared.normalized``; skipped ones carry node + reason."""
        return analyze_layers(import_graph(prepared.normalized), exclude)

    def statistics(self, prepared: Any, analysis: SparsityAnalysis, settings: SparsitySettings,
                   calibration: CalibrationSet | None, max_rows: int = MAX_ROWS) -> SparsityStats | None:
        """What ``settings.criterion`` reads from calibration data (None for magnitude).

        SparseGPT's Gram matrices are collected during :meth:`plan`, layer after layer, from the model
        with the earlier layers already sparsified and updated (as the published method does), so the
        statistics carry the calibration set itself.
        """
        if not settings.needs_calibration:
            return None
        if calibration is None:
            raise InputError(f"criterion '{settings.criterion}' needs calibration data (--calib PATH or --calib-random N)")
        stats = SparsityStats(calibration=calibration.describe(), source=calibration, max_rows=max_rows)
        if settings.criterion == "wanda":  # a layer whose input rank the probe did not learn keeps magnitude
            known = tuple(layer for layer in analysis.layers if prepared.shapes.get(layer.input) is not None)
            ranks = {layer.input: len(prepared.shapes[layer.input]) for layer in known}
            stats.norms = channel_norms(prepared.normalized, known, calibration, ranks) if known else {}
        return stats

    def plan(self, prepared: Any, analysis: SparsityAnalysis, settings: SparsitySettings,
             stats: SparsityStats | None = None) -> SparsityPlan:
        """Masks (and SparseGPT's updates) of every layer the pattern fits; the rest are skipped with the reason."""
        if settings.needs_calibration and stats is None:
            raise InputError(f"criterion '{settings.criterion}' needs calibration statistics (--calib PATH)")
        pattern = settings.parsed
        graph = import_graph(prepared.normalized)
        nodes = _weights(graph)
        fitting, skipped = [], list(analysis.skipped)
        for layer in analysis.layers:
            if pattern.structured and layer.channels % pattern.m:
                skipped.append(Skipped(layer.node, layer.op, f"{layer.channels} input channels per output are not "
                                       f"divisible by M = {pattern.m} (pattern {pattern.name}): left dense"))
            else:
                fitting.append(layer)
        matrices = {layer.node: _matrix(nodes[layer.node], layer) for layer in fitting}
        ratios = [settings.target] * len(fitting)
        if settings.scope == "global":
            magnitudes = [np.abs(matrices[layer.node].astype(np.float64)) for layer in fitting]
            ratios = masks.global_ratios(magnitudes, settings.target)
        updates: dict[str, np.ndarray] = {}
        records = []
        for number, (layer, ratio) in enumerate(zip(fitting, ratios)):
            keep, criterion, note = self._layer_mask(layer, matrices[layer.node], ratio, settings, stats, updates,
                                                     (graph, prepared, number))
            records.append(LayerMask(layer, criterion, masks.pack(keep), int(keep.size - keep.sum()), note))
        return SparsityPlan(prepared.model_sha256, settings.to_dict(), tuple(records), tuple(skipped), bool(updates),
                            updates)

    def _layer_mask(self, layer: SparseLayer, matrix: np.ndarray, ratio: float, settings: SparsitySettings,
                    stats: SparsityStats | None, updates: dict[str, np.ndarray], where: tuple) -> tuple:
        """(keep mask, criterion used, note) of one layer at sparsity ``ratio``; SparseGPT also records its update."""
        pattern, criterion, note = settings.parsed, settings.criterion, None
        if criterion == "sparsegpt":
            if layer.group == 1:
                gram = self._sequential_gram(layer, stats, *where)
                updated, keep = sparsegpt(matrix, gram, pattern, ratio, settings.block, settings.damp)
                updates[layer.node] = from_matrix(updated.astype(matrix.dtype), layer)
                self._write(where[0], layer, updates[layer.node])  # later layers see this layer's output
                return keep, criterion, None
            criterion, note = "magnitude", "grouped Conv: one Gram matrix does not describe it; magnitude mask, no update"
        if criterion == "wanda" and layer.node not in stats.norms:
            criterion, note = "magnitude", "the input's rank is unknown, so no per-channel norms: magnitude mask"
        if criterion == "wanda":
            scores = _wanda_scores(matrix, layer, stats.norms[layer.node])
            keep = masks.n_of_m(scores, pattern) if pattern.structured else masks.per_row(scores, ratio)
            return keep, criterion, note
        scores = np.abs(matrix.astype(np.float64))
        keep = masks.n_of_m(scores, pattern) if pattern.structured else masks.unstructured(scores, ratio)
        return keep, criterion, note

    @staticmethod
    def _sequential_gram(layer: SparseLayer, stats: SparsityStats, graph: gs.Graph, prepared: Any,
                         number: int) -> np.ndarray:
        """XᵀX of ``layer``'s input in the model as sparsified so far (the graph holds the earlier updates)."""
        current = export_graph(graph, like=prepared.normalized)
        found = gram_matrices(current, (layer,), stats.source, stats.max_rows, seed=number)
        return found[layer.node][0]

    @staticmethod
    def _write(graph: gs.Graph, layer: SparseLayer, values: np.ndarray) -> None:
        node = _weights(graph)[layer.node]
        node.inputs[1] = gs.Constant(layer.weight, np.ascontiguousarray(values))

    def apply(self, prepared: Any, plan: SparsityPlan) -> onnx.ModelProto:
        """The normalized model with every planned weight zeroed (and SparseGPT's updated weights written)."""
        self._check(prepared, plan)
        if plan.updated and not plan.updates:
            raise PlanError("this sparsity plan changed kept weights (sparsegpt) and was read from JSON without them; "
                            "re-run sparsify with the calibration data instead of replaying the plan")
        graph = import_graph(prepared.normalized)
        nodes = _weights(graph)
        for record in plan.layers:
            node, layer = self._node(nodes, record), record.layer
            if layer.node in plan.updates:
                values = np.asarray(plan.updates[layer.node])
            else:
                matrix = _matrix(node, layer)
                keep = masks.unpack(record.mask, matrix.shape)
                values = from_matrix(np.where(keep, matrix, np.zeros((), dtype=matrix.dtype)), layer)
            self._write(graph, layer, values)
        return export_graph(graph, like=prepared.normalized)

    def reference(self, prepared: Any, plan: SparsityPlan) -> onnx.ModelProto:
        """The masked original: each planned weight multiplied by its 0/1 mask by a ``Mul`` node at run time.

        Why a graph node and not a written array: the reference then shares no code path with ``apply``'s
        writing of weights — onnxruntime computes W ⊙ M from the untouched original weight.
        """
        self._check(prepared, plan)
        graph = import_graph(prepared.normalized)
        nodes = _weights(graph)
        for record in plan.layers:
            node, layer = self._node(nodes, record), record.layer
            weight = node.inputs[1]
            dtype = np.asarray(weight.values).dtype
            keep = masks.unpack(record.mask, (layer.rows, layer.cols))
            mask = gs.Constant(f"{layer.weight}_onnxprune_mask", from_matrix(keep.astype(dtype), layer))
            masked = gs.Variable(f"{layer.weight}_onnxprune_masked", dtype=dtype, shape=list(layer.shape))
            graph.nodes.append(gs.Node("Mul", f"{layer.node}_onnxprune_mask", inputs=[weight, mask], outputs=[masked]))
            node.inputs[1] = masked
        graph.toposort()
        return export_graph(graph, like=prepared.normalized)

    def plan_from_dict(self, data: dict[str, Any], where: str = "plan") -> SparsityPlan:
        """A sparsity plan read back from JSON (SparseGPT's updated weights are not in it: ``apply`` says so)."""
        try:
            return SparsityPlan.from_dict(data)
        except (KeyError, TypeError, ValueError, InputError) as err:
            raise PlanError(f"{where}: malformed sparsity plan ({err})") from err

    def check(self, plan: SparsityPlan, prepared: Any, where: str = "plan") -> None:
        """Refuse a plan made for another model."""
        if plan.model_sha256 != prepared.model_sha256:
            raise PlanError(f"{where} was made for another model (sha256 {plan.model_sha256[:12]}…)")

    @staticmethod
    def _check(prepared: Any, plan: SparsityPlan) -> None:
        if plan.model_sha256 != prepared.model_sha256:
            raise PlanError("the sparsity plan was made for a different model (SHA-256 differs)")

    @staticmethod
    def _node(nodes: dict[str, gs.Node], record: LayerMask) -> gs.Node:
        node = nodes.get(record.layer.node)
        if node is None or len(node.inputs) < 2 or node.inputs[1].name != record.layer.weight:
            raise PlanError(f"sparsity plan: node '{record.layer.node}' with weight '{record.layer.weight}' is not "
                            "in the model")
        if tuple(np.shape(node.inputs[1].values)) != record.layer.shape:
            raise PlanError(f"sparsity plan: weight '{record.layer.weight}' of node '{record.layer.node}' has shape "
                            f"{list(np.shape(node.inputs[1].values))}, the plan says {list(record.layer.shape)}")
        return node
