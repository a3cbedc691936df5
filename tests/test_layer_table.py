"""The layer table's rows against onnxruntime: what the table says a weight axis means is what the op does.

Every check builds a one-node model, runs it in a real onnxruntime session (no graph optimization) and
compares with the table's view: zeroing index j of the weight's ``inputs`` axis must equal zeroing input
channel j, zeroing index j of its ``outputs`` axis must change output channel j only; the effective matrix
of a refittable layer times its input rows, plus its bias term, must reproduce the op's output; the
inverse write-back must give the weight back; a constant input channel must add ``channel_matrix`` per
output.  Tolerances: float32 products of ≤ 100 terms, rtol 1e-5 / atol 1e-5 (atol 1e-4 for sums of
kernel taps).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from onnxprune.analysis.groups import KIND_OF_PRODUCER
from onnxprune.ir.layer_table import LAYER_TABLE, attributes, row_of, weight_axes
from onnxprune.ir.layers import (bias_term, channel_matrix, current_theta, from_matrix, input_features, layer_rows,
    matrix, not_refittable, weight_scale)
from onnxprune.measurement.counting import _MAC_FORMULAS, count_model
from onnxprune.methods.prepared import WEIGHT_OPS
from onnxprune.planning.latency import LAYER_RULES
from onnxprune.runtime.sessions import run_model

RNG = np.random.default_rng(0)


def _model(op: str, x_shape: list[int], weights: dict[str, np.ndarray], inputs: list[str], **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, inputs, ["y"], **attrs)
    graph = helper.make_graph([node], op.lower(), [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return run_model(model, {"x": x}, optimized=False)["y"]


def _with(model: onnx.ModelProto, name: str, values: np.ndarray) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for index, init in enumerate(copy.graph.initializer):
        if init.name == name:
            copy.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(values, name))
    return copy


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# one case per weighted op the rules prune: (model, input, weight name, input channel axis of x, output axis of y)
def _cases() -> dict[str, tuple[onnx.ModelProto, np.ndarray, str, int, int]]:
    x4 = _f32(2, 4, 7, 6)
    return {
        "Conv": (_model("Conv", [2, 4, 7, 6], {"w": _f32(6, 4, 3, 3), "b": _f32(6)}, ["x", "w", "b"],
                        pads=[1, 0, 1, 2], strides=[2, 1]), x4, "w", 1, 1),
        "Conv group=2": (_model("Conv", [2, 4, 7, 6], {"w": _f32(6, 2, 3, 3)}, ["x", "w"], group=2), x4, "w", 1, 1),
        "ConvTranspose": (_model("ConvTranspose", [2, 4, 7, 6], {"w": _f32(4, 5, 3, 2), "b": _f32(5)},
                                 ["x", "w", "b"], strides=[2, 1]), x4, "w", 1, 1),
        "ConvTranspose group=2": (_model("ConvTranspose", [2, 4, 7, 6], {"w": _f32(4, 3, 3, 3)}, ["x", "w"],
                                         group=2), x4, "w", 1, 1),
        "Gemm": (_model("Gemm", [5, 4], {"w": _f32(4, 3), "c": _f32(3)}, ["x", "w", "c"], alpha=0.7, beta=1.3),
                 _f32(5, 4), "w", 1, 1),
        "Gemm transB": (_model("Gemm", [5, 4], {"w": _f32(3, 4), "c": _f32(1, 3)}, ["x", "w", "c"], transB=1,
                               alpha=1.5), _f32(5, 4), "w", 1, 1),
        "Gemm transA transB": (_model("Gemm", [4, 5], {"w": _f32(3, 4)}, ["x", "w"], transA=1, transB=1,
                                      alpha=0.25), _f32(4, 5), "w", 0, 1),
        "MatMul x·W": (_model("MatMul", [2, 5, 4], {"w": _f32(4, 3)}, ["x", "w"]), _f32(2, 5, 4), "w", 2, 2),
        "MatMul W·x": (_model("MatMul", [2, 4, 5], {"w": _f32(3, 4)}, ["w", "x"]), _f32(2, 4, 5), "w", 1, 1),
    }


CASES = _cases()


def _node(model: onnx.ModelProto) -> gs.Node:
    return gs.import_onnx(model).nodes[0]


@pytest.mark.parametrize("case", list(CASES))
def test_weight_axes_are_the_ops_input_and_output_channels(case: str) -> None:
    """Zeroing weight index j on ``inputs`` ≡ zeroing input channel j; on ``outputs`` it moves output j only."""
    model, x, name, x_axis, y_axis = CASES[case]
    node = _node(model)
    weight = next(t.values for t in node.inputs if t.name == name)
    index = [t.name for t in node.inputs].index(name)
    axes = weight_axes(node, weight.ndim, index)
    layout = row_of(node).layout
    groups = layout.group(attributes(node))
    y0 = _run(model, x)
    # the grouped axis holds one group's share: index j there is channel j of every group
    share = x.shape[x_axis] // groups if axes.inputs == axes.grouped else x.shape[x_axis]
    j = share - 1
    zeroed = weight.copy()
    zeroed[(slice(None),) * axes.inputs + (j,)] = 0
    x_cut = x.copy()
    channels = [g * share + j for g in range(groups)] if axes.inputs == axes.grouped else [j]
    for c in channels:
        x_cut[(slice(None),) * x_axis + (c,)] = 0
    np.testing.assert_allclose(_run(_with(model, name, zeroed), x), _run(model, x_cut), rtol=1e-5, atol=1e-5)
    zeroed = weight.copy()
    zeroed[(slice(None),) * axes.outputs + (0,)] = 0
    changed = np.any(_run(_with(model, name, zeroed), x) != y0, axis=tuple(a for a in range(y0.ndim) if a != y_axis))
    out_share = y0.shape[y_axis] // groups if axes.outputs == axes.grouped else y0.shape[y_axis]
    expected = [g * out_share for g in range(groups)] if axes.outputs == axes.grouped else [0]
    assert np.flatnonzero(changed).tolist() == expected


REFITTABLE = ["Conv", "Gemm", "Gemm transB", "Gemm transA transB", "MatMul x·W"]


@pytest.mark.parametrize("case", REFITTABLE)
def test_effective_matrix_reproduces_the_op(case: str) -> None:
    """rows(x) · matrix + bias term = the op's output (Gemm: alpha, beta, transA/transB folded in)."""
    model, x, _, _, _ = CASES[case]
    node = _node(model)
    assert not_refittable(node, 1) is None
    y = _run(model, x).astype(np.float64)
    weight = np.asarray(node.inputs[1].values, dtype=np.float64)
    w = matrix(node, weight)
    assert w.shape[0] % input_features(node) == 0 and np.array_equal(current_theta(node)[:-1], w)
    term = bias_term(node, y.ndim)
    target = y if term is None else y - term
    rows, targets = layer_rows(node, x.astype(np.float64), None, np.random.default_rng(0), target)
    np.testing.assert_allclose(rows @ w, targets, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(from_matrix(node, w, weight.shape), weight, rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", REFITTABLE)
def test_channel_matrix_is_what_a_constant_input_channel_adds(case: str) -> None:
    """x = e_c everywhere (no padding reaches the sampled outputs) adds scale · channel_matrix[c] per output."""
    model, x, _, x_axis, y_axis = CASES[case]
    if case == "Conv":
        model = _model("Conv", [1, 4, 5, 5], {"w": _f32(6, 4, 3, 3)}, ["x", "w"])
        x, x_axis = np.zeros((1, 4, 5, 5), np.float32), 1
    node = _node(model)
    ones = np.zeros_like(x)
    c = 2
    ones[(slice(None),) * x_axis + (c,)] = 1.0
    bias = bias_term(node, x.ndim)
    y = _run(model, ones).astype(np.float64) - (0.0 if bias is None else bias)
    expected = weight_scale(node) * channel_matrix(node, np.asarray(node.inputs[1].values, np.float64))[c]
    per_output = np.moveaxis(y, y_axis, -1).reshape(-1, y.shape[y_axis])
    np.testing.assert_allclose(per_output, np.broadcast_to(expected, per_output.shape), rtol=1e-5, atol=1e-4)


def test_rows_are_consistent_with_every_stage() -> None:
    """The derived views (group kinds, finite-weight check, MAC formulas, latency kinds) only name what exists."""
    assert KIND_OF_PRODUCER["Gemm"] == "neuron" and KIND_OF_PRODUCER["LSTM"] == "hidden"
    assert WEIGHT_OPS["Gemm"] == (0, 1, 2) and "FusedConv" not in WEIGHT_OPS
    for row in LAYER_TABLE.values():
        assert row.macs is None or row.macs in _MAC_FORMULAS, row
        assert row.latency is None or row.latency in LAYER_RULES, row
        assert not row.refit or (row.layout is not None and row.weight is not None and row.latency), row


@pytest.mark.parametrize("case", ["Conv", "ConvTranspose", "Gemm transA transB", "MatMul x·W"])
def test_mac_counts_follow_the_rows(case: str) -> None:
    """MACs from the row's formula: Conv/Gemm/MatMul = outputs × features per output; ConvTranspose = inputs ×
    what each input scatters to."""
    model, x, _, _, _ = CASES[case]
    node = _node(model)
    weight = node.inputs[1].values
    y = _run(model, x)
    if case == "ConvTranspose":
        expected = x.size * int(np.prod(weight.shape[1:]))
    else:
        expected = y.size * matrix(node, weight).shape[0]  # every output element reads every feature once
    assert count_model(model).macs == expected
