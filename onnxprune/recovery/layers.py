"""Shared vocabulary of the recovery passes: which layers read removed channels, and how to edit them.

Why a module: ``recover_bias`` and ``recover_lsq`` (in ``passes/``) both walk the *consumer layers*
of a plan — Conv / Gemm / MatMul nodes whose input loses channels — in topological order, both need the
original weights, the kept input and output indices of each layer, and both change what a layer adds
to its output.  Layers they cannot handle are recorded as "not applicable" with the reason, never
silently skipped.

The recovered model is judged against the original, not against the masked reference: the output
error on calibration inputs must shrink (:func:`output_error`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.runtime.calibration import CalibrationSet
from onnxprune.ir.layer_table import GEMM, has_input, row_of
from onnxprune.ir.layers import not_refittable, output_axis
from onnxprune.errors import InputError
from onnxprune.analysis.groups import Analysis
from onnxprune.analysis.kept_channels import KeptChannels
from onnxprune.passes.apply_plan import slice_masks
from onnxprune.analysis.rules import ParamSlice
from onnxprune.runtime.sessions import make_session
from onnxprune.scoring.statistics import ActivationStats, stream_batches
from onnxprune.io.weights import release

RECOVERY_METHODS = ("none", "bias", "lsq")


@dataclass(frozen=True)
class RecoveryOptions:
    """``ridge``: λ = ridge · trace(XᵀX) / features; ``max_rows``: im2col rows sampled per k×k conv layer;
    ``guard``: keep the unrecovered model when recovery raises the calibration output error."""

    method: str = "none"
    ridge: float = 1e-3
    max_rows: int = 20000
    seed: int = 0
    guard: bool = True

    def validate(self) -> None:
        if self.method not in RECOVERY_METHODS:
            raise InputError(f"unknown recovery '{self.method}' (choose from {', '.join(RECOVERY_METHODS)})")
        if self.ridge < 0 or self.max_rows < 1:
            raise InputError(f"recovery needs ridge >= 0 and max_rows >= 1, got {self.ridge}, {self.max_rows}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "ridge": self.ridge, "max_rows": self.max_rows, "seed": self.seed,
                "guard": self.guard}


@dataclass
class ConsumerLayer:
    """A layer reading removed channels: weight indices (original numbering) along both of its axes."""

    node: str
    output: str  # name of the node's output tensor: identifies the node in the pruned graph
    op: str
    param: ParamSlice
    drop: np.ndarray  # removed indices along param.axis
    keep: np.ndarray  # kept indices along param.axis
    out_keep: np.ndarray  # kept output features / channels
    reason: str | None = None  # why recovery does not apply, or None

    def record(self, method: str, status: str, **extra: Any) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "method": method, "status": status,
                "removed_inputs": int(len(self.drop)), "kept_inputs": int(len(self.keep))} | extra


@dataclass
class RecoveryContext:
    """Everything a recovery pass reads; passes append one record per layer to ``records``."""

    original: onnx.ModelProto  # the normalized original model
    original_graph: gs.Graph
    analysis: Analysis
    layers: list[ConsumerLayer]
    stats: ActivationStats | None
    calibration: CalibrationSet | None
    options: RecoveryOptions
    records: list[dict[str, Any]] = field(default_factory=list)

    def weight(self, layer: ConsumerLayer) -> np.ndarray:
        """Original weight of ``layer`` (float64, C order: the products below round by layout, and the graph
        ``prepare`` analysed may hold a computed weight transposed where a re-imported one would not)."""
        node = _node_by_output(self.original_graph, layer.output)
        values = node.inputs[layer.param.input_index].values
        weight = np.ascontiguousarray(values, dtype=np.float64)
        release(values)  # a memory-mapped original: its pages would otherwise stay resident for every layer
        return weight


def _node_by_output(graph: gs.Graph, output: str) -> gs.Node:
    for node in graph.nodes:
        if node.outputs and node.outputs[0].name == output:
            return node
    raise KeyError(output)


def layer_node(graph: gs.Graph, layer: ConsumerLayer) -> gs.Node | None:
    """The layer's node in a (pruned) graph, found by its output tensor."""
    try:
        return _node_by_output(graph, layer.output)
    except KeyError:
        return None


def consumer_layers(graph: gs.Graph, analysis: Analysis, removed: Mapping[int, np.ndarray]) -> list[ConsumerLayer]:
    """Consumer layers of the plan that lose input channels, in the graph's (topological) order."""
    view = KeptChannels(analysis, dict(removed))
    masks = slice_masks(analysis, view)
    by_node: dict[str, list[ParamSlice]] = {}
    for param in analysis.params:
        if param.role == "consumer":
            by_node.setdefault(param.node, []).append(param)
    layers = []
    for node in graph.nodes:
        for param in by_node.get(node.name, []):
            dropped = view.removed_mask(param.slot)[param.index]
            if not dropped.any():
                continue
            weight = node.inputs[param.input_index]
            reason = not_refittable(node, param.input_index)
            out_axis = output_axis(node) if reason is None else None
            out_keep = masks.get((weight.name, out_axis), np.arange(weight.shape[out_axis])) \
                if reason is None else np.zeros(0, dtype=np.int64)
            layers.append(ConsumerLayer(node.name, node.outputs[0].name, node.op, param, np.flatnonzero(dropped),
                                        np.flatnonzero(~dropped), np.asarray(out_keep), reason))
    return layers


# --------------------------------------------------------------------------------------------------
# editing a pruned graph


def _unique(graph: gs.Graph, base: str) -> str:
    names = graph.tensors()
    name, k = f"{base}_recovered", 0
    while name in names:
        k += 1
        name = f"{base}_recovered{k}"
    return name


def new_constant(graph: gs.Graph, base: str, values: np.ndarray) -> gs.Constant:
    """A fresh constant (never an in-place write: a retied constant may be shared)."""
    return gs.Constant(_unique(graph, base), np.ascontiguousarray(values))


def add_to_output(graph: gs.Graph, node: gs.Node, delta: np.ndarray) -> str:
    """Make ``node`` add ``delta`` (one value per output channel/feature) to its output.

    Conv: bias += δ (a bias input is created if missing).  Gemm: C += δ/β (created, or β set to 1
    when C was absent or ignored).  MatMul: the constant of a following Add that is the output's only
    reader absorbs δ; otherwise an ``Add`` node is inserted.  Returns what was edited.
    """
    row = row_of(node)
    dtype = np.dtype(node.inputs[row.weight].dtype)  # not .values: that would compute (and keep) a sliced weight of a large model
    if row.bias is None:
        return _add_matmul_bias(graph, node, delta.astype(dtype))
    if row.layout is GEMM:
        return _add_gemm_bias(graph, node, row.bias, delta, dtype)
    return _add_conv_bias(graph, node, row.bias, delta.astype(dtype))


def _add_conv_bias(graph: gs.Graph, node: gs.Node, index: int, delta: np.ndarray) -> str:
    if has_input(node, index):
        old = node.inputs[index]
        node.inputs[index] = new_constant(graph, old.name, np.asarray(old.values) + delta)
        return "bias updated"
    bias = new_constant(graph, f"{node.name or node.outputs[0].name}_bias", delta)
    if len(node.inputs) > index:
        node.inputs[index] = bias  # an empty optional-input name
    else:
        node.inputs.append(bias)
    return "bias added"


def _add_gemm_bias(graph: gs.Graph, node: gs.Node, index: int, delta: np.ndarray, dtype: np.dtype) -> str:
    beta = GEMM.bias_scale(node.attrs)
    present = has_input(node, index)
    if not present or beta == 0.0:
        node.attrs["beta"] = 1.0
        bias = new_constant(graph, f"{node.name or node.outputs[0].name}_bias", delta.astype(dtype))
        if present:
            node.inputs[index] = bias
        else:
            node.inputs.append(bias)
        return "bias added"
    old = np.asarray(node.inputs[index].values)
    shape = old.shape[:-1] + (len(delta),) if old.ndim else (len(delta),)
    values = np.broadcast_to(old, shape) + (delta / beta).astype(dtype)
    node.inputs[index] = new_constant(graph, node.inputs[index].name, values.astype(dtype))
    return "bias updated"


def _add_matmul_bias(graph: gs.Graph, node: gs.Node, delta: np.ndarray) -> str:
    out = node.outputs[0]
    readers = list(out.outputs)
    if len(readers) == 1 and readers[0].op == "Add" and out not in graph.outputs:
        add = readers[0]
        other = 1 if add.inputs[0] is out else 0
        const = add.inputs[other]
        fits = isinstance(const, gs.Constant) and (not const.shape or const.shape[-1] in (1, len(delta)))
        if fits and add.inputs[1 - other] is out:
            old = np.asarray(const.values)
            shape = old.shape[:-1] + (len(delta),) if old.ndim else (len(delta),)
            add.inputs[other] = new_constant(graph, const.name, np.broadcast_to(old, shape) + delta)
            return "following Add updated"
    pre = gs.Variable(_unique(graph, f"{out.name}_prebias"), dtype=out.dtype, shape=out.shape)
    node.outputs[0] = pre
    bias = new_constant(graph, f"{node.name or out.name}_bias", delta)
    graph.nodes.append(gs.Node("Add", name=_unique(graph, f"{node.name}_bias_add"), inputs=[pre, bias],
                               outputs=[out]))
    return "Add inserted"


# --------------------------------------------------------------------------------------------------
# judging: distance to the original on calibration inputs


def output_error(reference: onnx.ModelProto, candidates: Mapping[str, onnx.ModelProto],
                 calibration: CalibrationSet) -> dict[str, dict[str, Any]]:
    """Per candidate: relative L2 error ‖y − y₀‖/‖y₀‖ and max |y − y₀| per float output, streamed.

    ``worst`` is the largest relative error over outputs (the number to compare).
    """
    ref_session = make_session(reference, optimized=True)
    names = [o.name for o in ref_session.get_outputs()]
    sessions = {key: make_session(model, optimized=True) for key, model in candidates.items()}
    sums = {key: {n: [0.0, 0.0, 0.0, 0, 0] for n in names} for key in candidates}
    # one pass over the data feeds every model (tee keeps them in step; block by block, each runs all batches)
    copies = itertools.tee(calibration.batches(), 1 + len(sessions))
    streams = [stream_batches(s, names, b) for s, b in zip([ref_session, *sessions.values()], copies)]
    for (_, reference_values), *candidate_values in zip(*streams):
        expected = dict(zip(names, reference_values))
        for key, (_, values) in zip(sessions, candidate_values):
            got = dict(zip(names, values))
            for name in names:
                _accumulate_error(sums[key][name], expected[name], got[name])
    return {key: _summarize(per_output) for key, per_output in sums.items()}


def _accumulate_error(acc: list, expected: np.ndarray, got: np.ndarray) -> None:
    if not np.issubdtype(expected.dtype, np.floating):
        acc[3] += int(np.count_nonzero(expected != got))
        acc[4] += expected.size
        return
    diff = got.astype(np.float64) - expected.astype(np.float64)
    acc[0] += float(np.sum(diff * diff))
    acc[1] += float(np.sum(expected.astype(np.float64) ** 2))
    acc[2] = max(acc[2], float(np.max(np.abs(diff))) if diff.size else 0.0)
    if expected.ndim == 2 and expected.shape[1] > 1:  # classifier-like: top-1 agreement
        acc[3] += int(np.count_nonzero(expected.argmax(1) != got.argmax(1)))
        acc[4] += expected.shape[0]


def _summarize(per_output: dict[str, list]) -> dict[str, Any]:
    outputs = {}
    for name, (sq, ref, max_abs, mismatched, total) in per_output.items():
        entry: dict[str, Any] = {}
        if ref > 0 or sq > 0:
            entry["relative_l2"] = float(np.sqrt(sq / ref)) if ref > 0 else float("inf")
            entry["max_abs"] = max_abs
        if total:
            entry["agreement"] = 1.0 - mismatched / total
        outputs[name] = entry
    worst = max((e["relative_l2"] for e in outputs.values() if "relative_l2" in e), default=0.0)
    return {"worst_relative_l2": worst, "outputs": outputs}
