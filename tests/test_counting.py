"""Tests of :mod:`onnxprune.measurement.counting`: exact params/MACs on small real models, formatting, size.

Why these models: each expected number is computed by hand in the test from the layer's definition,
and each model is first proven real — it passes the full ONNX checker and onnxruntime runs it with
the output shape the hand computation assumes — so a counting rule cannot agree with a wrong premise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.measurement.counting import ModelStats, compare_stats, count_model, format_bytes, format_count

OPSET = 17
RNG_SEED = 0


def _init(name: str, shape: Sequence[int], dtype: type = np.float32) -> onnx.TensorProto:
    """A seeded random initializer, so the models are deterministic."""
    rng = np.random.default_rng(RNG_SEED)
    return numpy_helper.from_array((rng.standard_normal(shape) * 10).astype(dtype), name)


def _vi(name: str, shape: Sequence[int | str], elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
    *,
    extra_opsets: Sequence[tuple[str, int]] = (),
    check: bool = True,
) -> onnx.ModelProto:
    """Build a model; ``check`` runs the full checker (needs only standard-domain ops)."""
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8  # what onnxruntime and torch exports commonly carry
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def _ort_shapes(model: onnx.ModelProto, feeds: dict[str, tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Output shapes onnxruntime actually produces for seeded random inputs of the given shapes."""
    rng = np.random.default_rng(RNG_SEED)
    data = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in feeds.items()}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [tuple(out.shape) for out in session.run(None, data)]


# ---------------------------------------------------------------------------------------------
# MACs and params
# ---------------------------------------------------------------------------------------------


def test_grouped_and_depthwise_conv() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "wg", "bg"], ["g"], name="gconv", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["g", "wd"], ["y"], name="dw", group=16, strides=[2, 2], pads=[1, 1, 1, 1]),
    ]
    model = _model(
        nodes,
        [_vi("x", ["N", 8, 10, 10])],
        [_vi("y", ["N", 16, 5, 5])],
        [_init("wg", (16, 4, 3, 3)), _init("bg", (16,)), _init("wd", (16, 1, 3, 3))],
    )
    assert _ort_shapes(model, {"x": (2, 8, 10, 10)}) == [(2, 16, 5, 5)]
    stats = count_model(model)
    # grouped: 16*10*10 outputs per sample, each reads Cin/group=4 channels x 3x3 taps
    assert stats.node_macs == {"gconv": 16 * 10 * 10 * 4 * 9, "dw": 16 * 5 * 5 * 1 * 9}
    assert stats.macs == 57_600 + 3_600
    assert stats.node_params == {"gconv": 16 * 4 * 9 + 16, "dw": 16 * 9}
    assert stats.params == 736
    assert stats.flops == 2 * 61_200
    assert stats.uncounted_ops == ()


def test_conv_transpose_counts_from_input() -> None:
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", group=2, strides=[2, 2])
    model = _model([node], [_vi("x", [1, 4, 5, 5])], [_vi("y", [1, 6, 10, 10])], [_init("w", (4, 3, 2, 2))])
    assert _ort_shapes(model, {"x": (1, 4, 5, 5)}) == [(1, 6, 10, 10)]
    stats = count_model(model)
    # each of the 100 input elements scatters into Cout/group=3 channels x 2x2 taps; cross-check:
    # 600 outputs x Cin/group=2 x 4 taps / stride^2=4 contributions each gives the same 1200
    assert stats.macs == 4 * 5 * 5 * 3 * 2 * 2 == 600 * 2 * 4 // 4
    assert stats.params == 48


def test_gemm_trans_b_and_trans_a_are_per_sample_with_dynamic_batch() -> None:
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc", transB=1),
        helper.make_node("Transpose", ["h"], ["ht"], name="t", perm=[1, 0]),
        helper.make_node("Gemm", ["ht", "w2"], ["y"], name="fc2", transA=1),
    ]
    model = _model(
        nodes,
        [_vi("x", ["batch", 20])],
        [_vi("y", ["batch", 7])],
        [_init("w", (30, 20)), _init("b", (30,)), _init("w2", (30, 7))],
    )
    assert _ort_shapes(model, {"x": (5, 20)}) == [(5, 7)]
    stats = count_model(model)
    assert stats.node_macs == {"fc": 1 * 30 * 20, "t": 0, "fc2": 1 * 7 * 30}
    assert stats.macs == 810
    assert stats.params == 600 + 30 + 210


def test_static_batch_is_counted_whole_and_consistently() -> None:
    """A fixed batch of 4 is not guessed away: every op is counted for the run the model describes."""
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)]
    model = _model(nodes, [_vi("x", [4, 20])], [_vi("y", [4, 30])], [_init("w", (30, 20))])
    assert count_model(model).macs == 4 * 30 * 20


def test_matmul_constant_weight_on_3d_input() -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
    model = _model(nodes, [_vi("x", ["N", 7, 16])], [_vi("y", ["N", 7, 24])], [_init("w", (16, 24))])
    assert _ort_shapes(model, {"x": (2, 7, 16)}) == [(2, 7, 24)]
    stats = count_model(model)
    assert stats.macs == 7 * 16 * 24 == 2_688
    assert stats.params == 384


def test_matmul_variable_operands_broadcast_and_vectors() -> None:
    nodes = [
        helper.make_node("MatMul", ["q", "k"], ["s"], name="qk"),  # (N,4,7,8) @ (N,4,8,7)
        helper.make_node("MatMul", ["a", "b"], ["c"], name="bcast"),  # (3,1,5,6) @ (4,6,2)
        helper.make_node("MatMul", ["v", "m"], ["r"], name="vec"),  # (6,) @ (6,2)
    ]
    model = _model(
        nodes,
        [_vi("q", ["N", 4, 7, 8]), _vi("k", ["N", 4, 8, 7]), _vi("a", [3, 1, 5, 6]), _vi("b", [4, 6, 2])]
        + [_vi("v", [6]), _vi("m", [6, 2])],
        [_vi("s", ["N", 4, 7, 7]), _vi("c", [3, 4, 5, 2]), _vi("r", [2])],
    )
    feeds = {"q": (2, 4, 7, 8), "k": (2, 4, 8, 7), "a": (3, 1, 5, 6), "b": (4, 6, 2), "v": (6,), "m": (6, 2)}
    assert _ort_shapes(model, feeds) == [(2, 4, 7, 7), (3, 4, 5, 2), (2,)]
    stats = count_model(model)
    assert stats.node_macs == {"qk": 4 * 7 * 7 * 8, "bcast": 3 * 4 * 5 * 2 * 6, "vec": 6 * 2}
    assert stats.params == 0


def test_constant_node_weights_are_params_of_their_consumer() -> None:
    weight = numpy_helper.from_array(np.ones((16, 24), np.float32), "cw")
    shape = numpy_helper.from_array(np.array([-1, 24], np.int64), "shape")
    nodes = [
        helper.make_node("Constant", [], ["w"], name="wconst", value=weight),
        helper.make_node("Constant", [], ["s"], name="sconst", value=shape),
        helper.make_node("Constant", [], ["k"], name="kconst", value_float=0.5),
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("Mul", ["h", "k"], ["hk"], name="scale"),
        helper.make_node("Reshape", ["hk", "s"], ["y"], name="flat"),
    ]
    model = _model(nodes, [_vi("x", ["N", 7, 16])], [_vi("y", ["M", 24])])
    assert _ort_shapes(model, {"x": (2, 7, 16)}) == [(14, 24)]
    stats = count_model(model)
    # the float weight belongs to its consumer; the int64 shape constant is not a parameter
    assert stats.node_params == {"wconst": 0, "sconst": 0, "kconst": 0, "proj": 384, "scale": 1, "flat": 0}
    assert stats.params == 385
    assert stats.macs == 7 * 16 * 24


def test_shared_initializer_counted_once_and_unused_not_at_all() -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="first"),
        helper.make_node("Relu", ["h"], ["r"], name="act"),
        helper.make_node("MatMul", ["r", "w"], ["y"], name="second"),
    ]
    model = _model(
        nodes, [_vi("x", ["N", 16])], [_vi("y", ["N", 16])], [_init("w", (16, 16)), _init("dead", (100,))]
    )
    stats = count_model(model)
    assert stats.node_params == {"first": 256, "act": 0, "second": 0}
    assert stats.params == 256
    assert stats.node_macs == {"first": 256, "act": 0, "second": 256}


def test_quantized_integer_weights_are_params() -> None:
    zero = numpy_helper.from_array(np.array(0, np.int8), "zp")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "sc")
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "sc", "zp"], ["w"], name="dq"),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="proj"),
    ]
    model = _model(
        nodes, [_vi("x", ["N", 16])], [_vi("y", ["N", 24])], [_init("wq", (16, 24), np.int8), scale, zero]
    )
    assert _ort_shapes(model, {"x": (2, 16)}) == [(2, 24)]
    stats = count_model(model)
    # int8 weight (384) + float scale (1); the int8 zero point is not a weight slot
    assert stats.node_params == {"dq": 385, "proj": 0}
    assert stats.macs == 16 * 24


def test_recurrent_layers() -> None:
    nodes = [
        helper.make_node(
            "LSTM", ["x", "W", "R", "B"], ["ys", "", ""], name="lstm", hidden_size=20, direction="bidirectional"
        ),
        helper.make_node("GRU", ["x", "Wg", "Rg"], ["yg", ""], name="gru", hidden_size=20),
    ]
    model = _model(
        nodes,
        [_vi("x", [5, "N", 10])],
        [_vi("ys", [5, 2, "N", 20]), _vi("yg", [5, 1, "N", 20])],
        [_init("W", (2, 80, 10)), _init("R", (2, 80, 20)), _init("B", (2, 160))]
        + [_init("Wg", (1, 60, 10)), _init("Rg", (1, 60, 20))],
    )
    assert _ort_shapes(model, {"x": (5, 3, 10)}) == [(5, 2, 3, 20), (5, 1, 3, 20)]
    stats = count_model(model)
    # seq 5 x batch 1 x directions x 4 gates*20 hidden x (10 input + 20 hidden)
    assert stats.node_macs == {"lstm": 5 * 2 * 80 * 30, "gru": 5 * 1 * 60 * 30}
    assert stats.node_params == {"lstm": 1600 + 3200 + 320, "gru": 600 + 1200}


def test_einsum_two_operands_counted_three_listed() -> None:
    nodes = [
        helper.make_node("Einsum", ["a", "b"], ["c"], name="bmm", equation="bij,bjk->bik"),
        helper.make_node("Einsum", ["a", "w"], ["d"], name="ell", equation="...ij,jk->...ik"),
        helper.make_node("Einsum", ["a", "b", "w2"], ["e"], name="three", equation="bij,bjk,kl->bil"),
    ]
    model = _model(
        nodes,
        [_vi("a", ["N", 3, 4]), _vi("b", ["N", 4, 5])],
        [_vi("c", ["N", 3, 5]), _vi("d", ["N", 3, 5]), _vi("e", ["N", 3, 2])],
        [_init("w", (4, 5)), _init("w2", (5, 2))],
    )
    assert _ort_shapes(model, {"a": (2, 3, 4), "b": (2, 4, 5)}) == [(2, 3, 5), (2, 3, 5), (2, 3, 2)]
    stats = count_model(model)
    assert stats.node_macs == {"bmm": 3 * 4 * 5, "ell": 3 * 4 * 5, "three": 0}
    assert stats.uncounted_ops == ("Einsum",)


def test_subgraphs_custom_ops_and_unknown_shapes_are_listed() -> None:
    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wb"], ["t"], name="inner")], "then", [], [_vi("t", ["N", 4])]
    )
    else_graph = helper.make_graph([helper.make_node("Identity", ["x2"], ["e"])], "else", [], [_vi("e", ["N", 4])])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["x2"], name="pre"),
        helper.make_node("If", ["cond"], ["branch"], name="if", then_branch=then_graph, else_branch=else_graph),
        helper.make_node("Foo", ["branch"], ["f"], name="custom", domain="com.example"),
        helper.make_node("Conv", ["f", "wc"], ["y"], name="blind"),
        helper.make_node("Relu", ["y"], ["z"], name="cheap"),
    ]
    model = _model(
        nodes,
        [_vi("x", ["N", 4]), _vi("cond", [], TensorProto.BOOL)],
        [_vi("z", ["N", 2, 1, 1])],
        [_init("w", (4, 4)), _init("wb", (4, 4)), _init("wc", (2, 4, 1, 1))],
        extra_opsets=[("com.example", 1)],
        check=False,
    )
    stats = count_model(model)
    # the Conv reads the custom op's output, whose shape nobody knows: its MACs are missing, so listed
    assert stats.uncounted_ops == ("Conv", "If", "com.example.Foo")
    assert stats.node_macs == {"pre": 16, "if": 0, "custom": 0, "blind": 0, "cheap": 0}
    # the branch's outer-scope weight is charged to the If node that reads it
    assert stats.node_params == {"pre": 16, "if": 16, "custom": 0, "blind": 8, "cheap": 0}


def test_model_local_functions_are_counted() -> None:
    body = [helper.make_node("MatMul", ["i", "p"], ["o"])]
    function = helper.make_function("local", "Linear", ["i", "p"], ["o"], body, [helper.make_opsetid("", OPSET)])
    nodes = [helper.make_node("Linear", ["x", "w"], ["y"], name="fn", domain="local")]
    model = _model(
        nodes, [_vi("x", ["N", 16])], [_vi("y", ["N", 24])], [_init("w", (16, 24))],
        extra_opsets=[("local", 1)], check=False,
    )
    model.functions.append(function)
    onnx.checker.check_model(model, full_check=True)
    stats = count_model(model)
    assert stats.macs == 16 * 24
    assert stats.params == 384
    assert stats.uncounted_ops == ()


def test_unnamed_nodes_get_stable_unique_keys() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"], name="Relu_0"),  # a real name equal to a generated key
        helper.make_node("Relu", ["b"], ["c"], name="dup"),
        helper.make_node("Relu", ["c"], ["y"], name="dup"),
    ]
    model = _model(nodes, [_vi("x", [1, 2])], [_vi("y", [1, 2])])
    keys = list(count_model(model).node_macs)
    assert keys == ["Relu_0#0", "Relu_0", "dup", "dup#3"]
    assert keys == list(count_model(model).node_params)


def test_to_dict_is_json_and_sums_match() -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
    model = _model(nodes, [_vi("x", ["N", 16])], [_vi("y", ["N", 24])], [_init("w", (16, 24))])
    stats = count_model(model)
    data = json.loads(json.dumps(stats.to_dict()))
    assert data == {
        "params": 384,
        "macs": 384,
        "flops": 768,
        "size_bytes": model.ByteSize(),
        "node_macs": {"proj": 384},
        "node_params": {"proj": 384},
        "uncounted_ops": [],
    }


# ---------------------------------------------------------------------------------------------
# Size
# ---------------------------------------------------------------------------------------------


def _linear_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="a"),
        helper.make_node("Add", ["h", "b"], ["y"], name="b"),
    ]
    return _model(nodes, [_vi("x", ["N", 64])], [_vi("y", ["N", 32])], [_init("w", (64, 32)), _init("b", (32,))])


def test_size_is_file_size_with_path_and_proto_size_without(tmp_path: Path) -> None:
    model = _linear_model()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert count_model(model, path=path).size_bytes == os.path.getsize(path)
    assert count_model(model, path=str(path)).size_bytes == os.path.getsize(path)
    assert count_model(model).size_bytes == model.ByteSize()


def test_size_includes_external_data(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_linear_model(), path, save_as_external_data=True, location="w.bin", size_threshold=0)
    on_disk = os.path.getsize(path) + os.path.getsize(tmp_path / "w.bin")
    payload = (64 * 32 + 32) * 4
    header_only = onnx.load(path, load_external_data=False)
    assert count_model(header_only, path=path).size_bytes == on_disk
    # data loaded into memory: the references are gone from the proto but still on disk
    assert count_model(onnx.load(path), path=path).size_bytes == on_disk
    assert count_model(header_only).size_bytes == header_only.ByteSize() + payload


def test_missing_path_is_a_typed_error(tmp_path: Path) -> None:
    from onnxprune.errors import InputError

    with pytest.raises(InputError, match="nope.onnx"):
        count_model(_linear_model(), path=tmp_path / "nope.onnx")


# ---------------------------------------------------------------------------------------------
# Formatting and comparison
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1234, "1.23K"),
        (2.5e6, "2.50M"),
        (3e9, "3.00G"),
        (999_999, "1.00M"),
        (-1500, "-1.50K"),
        (12.5, "12.50"),
        (np.int64(4_200_000_000_000), "4.20T"),
    ],
)
def test_format_count(value: float, text: str) -> None:
    assert format_count(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (int(12.3 * 1024), "12.3 KiB"),
        (123_456, "121 KiB"),
        (4 * 1024**2, "4.00 MiB"),
        (1024**2 - 1, "1.00 MiB"),
        (10 * 1024 - 1, "10.0 KiB"),
        (3 * 1024**3 // 2, "1.50 GiB"),
    ],
)
def test_format_bytes(value: int, text: str) -> None:
    assert format_bytes(value) == text


def _stats(params: int, macs: int, size: int) -> ModelStats:
    return ModelStats(params=params, macs=macs, size_bytes=size, node_macs={}, node_params={}, uncounted_ops=())


def test_compare_stats_ratios() -> None:
    result = compare_stats(_stats(1000, 400, 8000), _stats(250, 100, 2000))
    assert result == {
        "params": {"before": 1000, "after": 250, "ratio": 0.25},
        "macs": {"before": 400, "after": 100, "ratio": 0.25},
        "flops": {"before": 800, "after": 200, "ratio": 0.25},
        "size_bytes": {"before": 8000, "after": 2000, "ratio": 0.25},
    }
    empty = compare_stats(_stats(0, 0, 10), _stats(5, 0, 10))
    assert empty["params"]["ratio"] is None
    assert empty["macs"]["ratio"] == 1.0
    assert json.loads(json.dumps(empty)) == empty


def test_count_on_pruned_model_compares() -> None:
    """The use every command makes: count, shrink a layer, count again, compare."""
    def linear(hidden: int) -> onnx.ModelProto:
        nodes = [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["r"], name="act"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        ]
        inits = [_init("w1", (32, hidden)), _init("w2", (hidden, 8))]
        return _model(nodes, [_vi("x", ["N", 32])], [_vi("y", ["N", 8])], inits)

    result = compare_stats(count_model(linear(64)), count_model(linear(16)))
    assert result["params"] == {"before": 32 * 64 + 64 * 8, "after": 32 * 16 + 16 * 8, "ratio": 0.25}
    assert result["macs"]["ratio"] == 0.25
