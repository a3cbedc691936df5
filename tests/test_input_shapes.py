"""``--input-shape``: parsing and checking, counting at stated shapes, defaults, budgets, reports, recipes.

Why these tests: a FLOPs figure of a model with symbolic H/W counted at 1 is off by orders of magnitude,
and a budget bisecting on it optimises nothing real.  Expected MACs are computed by hand from each layer's
definition, and every model is first run by onnxruntime at the shape the hand count assumes, so a
counting rule and a wrong premise cannot agree.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS
from onnxprune.measurement.counting import count_model
from onnxprune.errors import InputError
from onnxprune.runtime.input_shapes import (InputShapes, counted_at, from_calibration, parse_input_shape,
    require_known_shapes, resolve)
from onnxprune.runtime.calibration import load_calibration
from onnxprune.planning.latency import LatencySettings, describe_layers
from onnxprune.methods.prepared import prepare
from onnxprune.ir.shapes import infer_static_shapes
from test_cli import assert_one_line_error, cli

RNG = np.random.default_rng(0)
#: Hand counts are exact; the brief allows 5 % for an independent count, we state it once here.
REL_TOL = 0.05


def _init(name: str, shape: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.1).astype(np.float32), name)


def conv_model(h: str | int = "H", w: str | int = "W") -> onnx.ModelProto:
    """[batch, 3, H, W] → conv 3→16 s2 → conv 16→32 (group 2) → depthwise 32 → conv 1×1 32→24 → GAP → Gemm 24→10.

    The second output (the last conv map) lets the test check the spatial size the hand count assumes.
    """
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=2, name="conv2"),
        helper.make_node("Conv", ["c2", "w3"], ["c3"], pads=[1, 1, 1, 1], group=32, name="dw3"),
        helper.make_node("Conv", ["c3", "w4"], ["c4"], name="conv4"),
        helper.make_node("GlobalAveragePool", ["c4"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1, name="fc"),
    ]
    inits = [_init("w1", [16, 3, 3, 3]), _init("b1", [16]), _init("w2", [32, 8, 3, 3]), _init("b2", [32]),
             _init("w3", [32, 1, 3, 3]), _init("w4", [24, 32, 1, 1]), _init("wg", [10, 24]), _init("bg", [10])]
    graph = helper.make_graph(nodes, "conv_hw", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                               ["batch", 3, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10]),
                               helper.make_tensor_value_info("c4", TensorProto.FLOAT, ["batch", 24, "Ho", "Wo"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def conv_macs_by_hand(n: int, h: int, w: int) -> int:
    """Σ Cout·Cin/g·kh·kw·Hout·Wout over the convs, plus M·N·K of the Gemm."""
    ho, wo = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1  # conv1: stride 2, pad 1, k 3
    spatial = n * ho * wo  # every later conv keeps it
    return (16 * 3 * 9 * spatial + 32 * (16 // 2) * 9 * spatial + 32 * 1 * 9 * spatial + 24 * 32 * spatial
            + n * 10 * 24)


def matmul_model() -> onnx.ModelProto:
    """[N, S, 32] · W[32, 16] → [N, S, 16], symbolic sequence length S."""
    graph = helper.make_graph([helper.make_node("MatMul", ["t", "wm"], ["o"], name="mm")], "mm",
                              [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", "S", 32])],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, ["N", "S", 16])],
                              [_init("wm", [32, 16])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run_shape(model: onnx.ModelProto, shape: tuple[int, ...], output: int) -> tuple[int, ...]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.zeros(shape, np.float32)})[output].shape


@pytest.fixture()
def conv_path(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "conv_hw.onnx"
    onnx.save(conv_model(), path)
    return path


# ------------------------------------------------------------------------------------------------
# Parsing and checking


@pytest.mark.parametrize("text, shape", [("images:1,3,320,320", (1, 3, 320, 320)), ("images:1x3x320x320", (1, 3, 320, 320)),
                                         ("input:0:2, 8", (2, 8))])
def test_parse_forms(text: str, shape: tuple[int, ...]) -> None:
    assert parse_input_shape(text)[1] == shape


@pytest.mark.parametrize("given, needles", [
    ({"y": (1, 3, 8, 8)}, ["no input 'y'", "inputs: x"]),
    ({"x": (1, 3, 8)}, ["input 'x'", "rank 4"]),
    ({"x": (1, 4, 8, 8)}, ["input 'x'", "fixed dim 3 at axis 1"]),
    ({"x": (1, 3, 0, 8)}, ["input 'x'", "non-positive"]),
])
def test_resolve_errors_name_the_input(given: dict, needles: list[str]) -> None:
    with pytest.raises(InputError) as err:
        resolve(conv_model(), given)
    for needle in needles:
        assert needle in str(err.value)


def test_shared_symbols_follow_and_must_agree() -> None:
    bert = onnx.load(MODELS / "bert_encoder_dynamic.onnx")  # input_ids, attention_mask: [N, S]
    at = counted_at(bert, resolve(bert, {"input_ids": (1, 16)}))
    assert at.as_dict() == {"input_ids": (1, 16), "attention_mask": (1, 16)} and not at.symbolic
    with pytest.raises(InputError, match="symbol 'S'"):
        resolve(bert, {"input_ids": (1, 16), "attention_mask": (1, 8)})


@pytest.mark.parametrize("args, needles", [
    (["--input-shape", "nope:1,3,8,8"], ["no input 'nope'"]),
    (["--input-shape", "x:1,3,8"], ["input 'x'", "rank"]),
    (["--input-shape", "x:1,5,8,8"], ["input 'x'", "fixed dim 3"]),
    (["--input-shape", "x:1,3,-2,8"], ["input 'x'", "non-positive"]),
    (["--input-shape", "x:1,3,a,8"], ["input 'x'", "malformed"]),
    (["--input-shape", "x1,3,8,8"], ["malformed", "NAME:D0,D1"]),
    (["--input-shape", "x:1,3,8,8", "--input-shape", "x:1,3,9,9"], ["input 'x'", "twice"]),
])
def test_cli_parse_errors_are_one_line_exit_2(conv_path: pathlib.Path, args: list[str], needles: list[str]) -> None:
    assert_one_line_error(cli("analyze", str(conv_path), *args), 2, *needles)


@pytest.mark.parametrize("command", ["prune", "sensitivity", "bench", "validate"])
def test_every_command_checks_the_shape(conv_path: pathlib.Path, tmp_path: pathlib.Path, command: str) -> None:
    extra = {"prune": [str(conv_path), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5"],
             "sensitivity": [str(conv_path), "-o", str(tmp_path / "s.json"), "--calib-random", "2"],
             "bench": [str(conv_path), "--repeat", "1", "--warmup", "0"],
             "validate": [str(conv_path), str(conv_path)]}[command]
    assert_one_line_error(cli(command, *extra, "--input-shape", "x:1,3,8"), 2, "input 'x'", "rank")


# ------------------------------------------------------------------------------------------------
# Counting at given shapes


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (1, 3, 48, 160), (2, 3, 33, 17)])
def test_conv_macs_match_the_hand_count(shape: tuple[int, ...]) -> None:
    model = conv_model()
    n, _, h, w = shape
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    assert _run_shape(model, shape, 1) == (n, 24, ho, wo)  # the premise of the hand count
    macs = count_model(model, input_shapes=resolve(model, {"x": shape})).macs
    expected = conv_macs_by_hand(n, h, w)
    assert abs(macs - expected) <= REL_TOL * expected, (macs, expected)


def test_matmul_macs_match_the_hand_count_and_scale_with_the_sequence() -> None:
    model = matmul_model()
    assert _run_shape(model, (1, 7, 32), 0) == (1, 7, 16)
    for seq in (7, 14):
        macs = count_model(model, input_shapes=resolve(model, {"t": (1, seq, 32)})).macs
        assert abs(macs - seq * 32 * 16) <= REL_TOL * seq * 32 * 16


def test_doubling_h_and_w_quadruples_the_conv_macs() -> None:
    model = conv_model()
    small = count_model(model, input_shapes=resolve(model, {"x": (1, 3, 64, 64)}))
    large = count_model(model, input_shapes=resolve(model, {"x": (1, 3, 128, 128)}))
    conv = [k for k in small.node_macs if k != "fc"]
    assert sum(large.node_macs[k] for k in conv) == 4 * sum(small.node_macs[k] for k in conv)
    assert large.node_macs["fc"] == small.node_macs["fc"]  # after the global pool: size-independent
    assert large.params == small.params


def test_without_shapes_the_figure_says_what_it_means() -> None:
    symbolic = count_model(conv_model()).counted_at
    assert symbolic.symbolic == ("H", "W") and symbolic.per_sample
    assert "symbolic dims H=1, W=1" in symbolic.label() and "--input-shape" in symbolic.label()
    assert symbolic.to_dict()["input_shapes"] == "symbolic"
    batch_only = count_model(onnx.load(MODELS / "mnist_cnn.onnx")).counted_at
    assert batch_only.label() == "per sample" and batch_only.to_dict()["input_shapes"] == {"input": [1, 1, 28, 28]}
    require_known_shapes(onnx.load(MODELS / "mnist_cnn.onnx"), None, "--target-flops 0.5")  # batch alone is fine


def test_infer_static_shapes_fixes_the_named_inputs_only_with_a_symbol_value() -> None:
    model = conv_model()
    shapes = infer_static_shapes(model, symbol_value=1, input_shapes={"x": (2, 3, 20, 30)})
    assert shapes["c4"] == (2, 24, 10, 15)
    with pytest.raises(ValueError):
        infer_static_shapes(model, symbol_value=None, input_shapes={"x": (2, 3, 20, 30)})


def test_latency_layers_are_described_at_the_given_shapes() -> None:
    model = conv_model()
    settings = LatencySettings(input_shapes=InputShapes.of({"x": (1, 3, 64, 96)}))
    prepared = prepare(model)
    layers = {layer.node: layer for layer in describe_layers(prepared, 1, settings.shapes_of(prepared.normalized))}
    assert layers["conv1"].x_shape == (1, 3, 64, 96) and layers["conv4"].x_shape == (1, 32, 32, 48)


# ------------------------------------------------------------------------------------------------
# Defaults from calibration data, reports, budgets, recipes


def test_calibration_shapes_are_the_default_with_batch_1(conv_path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=RNG.standard_normal((4, 3, 48, 96)).astype(np.float32))
    model = onnx.load(conv_path)
    assert from_calibration(model, load_calibration(calib, model)).as_dict() == {"x": (1, 3, 48, 96)}
    result = cli("prune", str(conv_path), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.25", "--calib", str(calib),
                 "--recover", "none", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["input_shapes"] == {"x": [1, 3, 48, 96]} and report["counted_at"]["source"] == "calibration"
    assert report["comparison"]["macs"]["before"] == conv_macs_by_hand(1, 48, 96)
    after = count_model(onnx.load(tmp_path / "p.onnx"), input_shapes=resolve(model, {"x": (1, 3, 48, 96)})).macs
    assert report["comparison"]["macs"]["after"] == after


def test_target_flops_refused_without_shape_and_met_with_one(conv_path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "p.onnx"
    refused = cli("prune", str(conv_path), "-o", str(out), "--target-flops", "0.6")
    assert_one_line_error(refused, 2, "--target-flops 0.6", "--input-shape", "input 'x'", "H, W")
    assert not out.exists()
    latency = cli("prune", str(conv_path), "-o", str(out), "--target-latency", "0.6")
    assert_one_line_error(latency, 2, "--target-latency 0.6", "--input-shape")
    result = cli("prune", str(conv_path), "-o", str(out), "--target-flops", "0.6", "--input-shape", "x:1,3,48,160",
                 "--round-to", "1", "--verify", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    shapes = resolve(onnx.load(conv_path), {"x": (1, 3, 48, 160)})
    measured = count_model(onnx.load(out), input_shapes=shapes).macs / count_model(onnx.load(conv_path),
                                                                                    input_shapes=shapes).macs
    assert abs(measured - 0.6) <= 0.02, measured
    assert report["input_shapes"] == {"x": [1, 3, 48, 160]}
    assert report["settings"]["input_shapes"] == {"x": [1, 3, 48, 160]}
    assert report["settings"]["budget"]["input_shapes"] == {"x": [1, 3, 48, 160]}


def test_text_summary_prints_the_shapes(conv_path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    result = cli("prune", str(conv_path), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5",
                 "--input-shape", "x:1x3x64x64")
    assert result.returncode == 0, result.stderr
    flops = next(line for line in result.stdout.splitlines() if line.startswith("FLOPs"))
    assert flops.endswith("at x[1,3,64,64]"), flops
    symbolic = cli("analyze", str(conv_path))
    assert "FLOPs per sample with symbolic dims H=1, W=1 (give --input-shape for real figures)" in symbolic.stdout


def test_recipe_key_drives_the_budget(conv_path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'version = 1\nmodel = "{conv_path.as_posix()}"\ninput_shapes = {{x = [1, 3, 64, 64]}}\n'
                      '[[steps]]\ntype = "prune"\noutput = "p.onnx"\ntarget_flops = 0.5\nround_to = 1\n'
                      '[[steps]]\ntype = "bench"\nrepeat = 2\nwarmup = 0\n')
    result = cli("run", str(recipe), "--out-dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)["results"]["steps"]
    assert steps[0]["results"]["input_shapes"] == {"x": [1, 3, 64, 64]}
    shapes = resolve(onnx.load(conv_path), {"x": (1, 3, 64, 64)})
    measured = count_model(onnx.load(tmp_path / "p.onnx"), input_shapes=shapes).macs / conv_macs_by_hand(1, 64, 64)
    assert abs(measured - 0.5) <= 0.02, measured
    assert [row["input_shapes"] for row in steps[1]["results"]["models"]] == [{"x": [1, 3, 64, 64]}] * 2
    assert steps[1]["results"]["models"][0]["macs"] == conv_macs_by_hand(1, 64, 64)


@pytest.mark.parametrize("value, needles", [('{x = [1, 3, 0, 64]}', ["input 'x'", "non-positive"]),
                                            ('["x:1,3,a"]', ["input 'x'", "malformed"]),
                                            ("3", ["'input_shapes'", "a table or a list"])])
def test_recipe_key_is_checked_before_running(conv_path: pathlib.Path, tmp_path: pathlib.Path, value: str,
                                              needles: list[str]) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'version = 1\nmodel = "{conv_path.as_posix()}"\ninput_shapes = {value}\n'
                      '[[steps]]\ntype = "prune"\noutput = "p.onnx"\nratio = 0.5\n')
    assert_one_line_error(cli("run", str(recipe), "--out-dir", str(tmp_path)), 2, *needles)
    assert not (tmp_path / "p.onnx").exists()


def test_bench_and_validate_run_at_the_shape(conv_path: pathlib.Path) -> None:
    bench = cli("bench", str(conv_path), "--repeat", "2", "--warmup", "0", "--input-shape", "x:1,3,40,56", "--json")
    assert bench.returncode == 0, bench.stderr
    row = json.loads(bench.stdout)["results"]["models"][0]
    assert row["input_shapes"] == {"x": [1, 3, 40, 56]} and row["macs"] == conv_macs_by_hand(1, 40, 56)
    validate = cli("validate", str(conv_path), str(conv_path), "--calib-random", "2", "--input-shape", "x:1,3,40,56",
                   "--json")
    assert validate.returncode == 0, validate.stderr
    assert json.loads(validate.stdout)["results"]["data"]["input_shapes"] == {"x": [1, 3, 40, 56]}
