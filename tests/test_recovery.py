"""Data criteria and recovery passes: the oracle before recovery, closeness to the original after.

Tolerances: oracle 1e-4 relative (DESIGN.md §3); exact recovery identities (im2col rows against
onnxruntime's Conv, the closed-form ridge solution, the preserved mean of a bias-compensated layer)
rtol 1e-4 / 1e-5 with an atol scaled to the values compared.  "Closer" means a strictly smaller
relative L2 output error against the original model on inputs the recovery did not see.
"""

from __future__ import annotations

import functools
import json
import pathlib

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from conftest import MODELS, assert_matches_oracle
from onnxprune.runtime.calibration import load_calibration, random_calibration
from onnxprune.scoring.criteria import DATA_CRITERIA
from onnxprune.pipeline import CALIBRATED_CRITERION, PruneOptions, calibration_statistics, plan_prune, prune
from onnxprune.methods.width import apply_plan
from onnxprune.methods.prepared import prepare
from onnxprune.recovery.layers import RecoveryOptions, output_error
from onnxprune.scoring.statistics import with_outputs
from onnxprune.runtime.sessions import run_model
from test_cli import cli

ORACLE_MODELS = ("mnist_cnn", "resnet_bottleneck", "mobilenetv2", "densenet_concat", "shufflenetv2",
                 "inception_concat", "mlp_matmul", "se_block")
RECOVERY_MODELS = ("mnist_cnn", "resnet_bottleneck", "mobilenetv2", "densenet_concat", "inception_concat",
                   "vgg_chain", "mlp_matmul")


@functools.lru_cache(maxsize=None)
def _prepared(name: str):
    return prepare(onnx.load(MODELS / f"{name}.onnx"))


def _calibration(name: str, seed: int = 0, n: int = 48):
    model = onnx.load(MODELS / f"{name}.onnx")
    if name == "mnist_cnn":
        path = MODELS / ("mnist_calib.npz" if seed == 0 else "mnist_test.npz")
        return load_calibration(path, model, batch_size=100)
    return random_calibration(model, n, seed=seed, batch_size=16)


@pytest.mark.parametrize("name", ORACLE_MODELS)
def test_data_criteria_keep_the_oracle(name: str) -> None:
    """With --recover none a data criterion only chooses channels: the rewrite must match the oracle."""
    prepared = _prepared(name)
    stats = calibration_statistics(prepared, _calibration(name))
    for number, criterion in enumerate(DATA_CRITERIA):
        options = PruneOptions(ratio=0.5 if number % 2 else 0.3, criterion=criterion, global_ranking=bool(number % 2))
        extra = calibration_statistics(prepared, _calibration(name), criterion) \
            if criterion in ("entropy", "reconstruction") else stats  # extra passes (histograms, Gram matrices)
        plan = plan_prune(prepared, options, extra)
        assert plan.settings["criterion"] == criterion
        assert any(g.kept is not None and len(g.kept) < g.channels for g in plan.groups)
        assert_matches_oracle(prepared, plan, apply_plan(prepared, plan), seeds=(number,))


def test_data_criterion_without_data_is_an_input_error() -> None:
    with pytest.raises(Exception, match="needs calibration data"):
        plan_prune(_prepared("mlp_gemm"), PruneOptions(ratio=0.5, criterion="wanda"))


def _errors(name: str, method: str, ratio: float = 0.5):
    """(calibration errors, held-out errors) of the raw recovery (guard off)."""
    model = onnx.load(MODELS / f"{name}.onnx")
    result = prune(model, PruneOptions(ratio=ratio, criterion="l2"), calibration=_calibration(name),
                   recovery=RecoveryOptions(method, guard=False))
    held_out = output_error(model, {"pruned": result.unrecovered, "recovered": result.model}, _calibration(name, 1))
    return result, result.calibration["output_error"], held_out


@pytest.mark.parametrize("method", ["bias", "lsq"])
@pytest.mark.parametrize("name", RECOVERY_MODELS)
def test_recovery_lowers_the_error_on_calibration_and_held_out_inputs(name: str, method: str) -> None:
    result, calib, held = _errors(name, method)
    assert any(layer["status"] == "applied" for layer in result.recovery["layers"])
    assert calib["recovered"]["worst_relative_l2"] <= calib["pruned"]["worst_relative_l2"]
    assert held["recovered"]["worst_relative_l2"] < held["pruned"]["worst_relative_l2"]


def test_guard_keeps_the_unrecovered_model_when_recovery_hurts(monkeypatch) -> None:
    """Whatever a recovery pass does, the default guard never returns a model farther from the original."""
    import onnxprune.pipeline as pipeline

    real = pipeline.recover

    def harmful(*args, **kwargs):
        model, records = real(*args, **kwargs)
        for init in model.graph.initializer:
            if len(init.dims) == 1:  # every bias shifted: clearly farther from the original
                values = onnx.numpy_helper.to_array(init) + 5.0
                init.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), init.name))
        return model, records

    monkeypatch.setattr(pipeline, "recover", harmful)
    model = onnx.load(MODELS / "vgg_chain.onnx")
    result = prune(model, PruneOptions(ratio=0.5), calibration=_calibration("vgg_chain"),
                   recovery=RecoveryOptions("lsq"))
    assert result.recovery["status"] == "rejected" and "raised" in result.recovery["reason"]
    assert result.model is result.unrecovered


def test_mnist_accuracy_with_lsq(mnist_test) -> None:
    """The issue's floor: ratio 0.5 within 4 points of the unpruned CNN, ratio 0.3 within 1 point."""
    model = onnx.load(MODELS / "mnist_cnn.onnx")
    calibration = load_calibration(MODELS / "mnist_calib.npz", model, batch_size=100)
    x, y = mnist_test["input"], mnist_test["y"]

    def accuracy(m: onnx.ModelProto) -> float:
        return float(np.mean(run_model(m, {"input": x})["output"].argmax(1) == y))

    unpruned = accuracy(model)
    for ratio, floor in ((0.5, 0.04), (0.3, 0.01)):
        result = prune(model, PruneOptions(ratio=ratio, criterion=CALIBRATED_CRITERION), calibration=calibration,
                       recovery=RecoveryOptions("lsq"))
        assert result.recovery["status"] == "applied"
        assert accuracy(result.unrecovered) < 0.5, "without recovery this CNN collapses at these ratios"
        assert accuracy(result.model) >= unpruned - floor, (ratio, accuracy(result.model), unpruned)


# --------------------------------------------------------------------------------------------------
# the math of the passes, on small graphs


def _conv_model(attrs: dict, cin: int = 3, cout: int = 4, kernel=(3, 3), size=(9, 8), seed: int = 0):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((cout, cin) + tuple(kernel)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cin, *size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    graph = helper.make_graph([node], "conv", [x], [y], [onnx.numpy_helper.from_array(weight, "w"),
                                                         onnx.numpy_helper.from_array(bias, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), weight, bias


@pytest.mark.parametrize("attrs", [
    {"pads": [1, 1, 1, 1]},
    {"pads": [0, 2, 1, 0], "strides": [2, 1]},
    {"dilations": [2, 1], "strides": [1, 2]},
    {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"auto_pad": "SAME_LOWER"},
    {"auto_pad": "VALID"},
])
def test_conv_rows_reproduce_onnxruntime(attrs: dict) -> None:
    from onnxprune.ir.layers import layer_rows

    model, weight, bias = _conv_model(attrs)
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 8)).astype(np.float32)
    y = run_model(model, {"x": x}, optimized=False)["y"]
    node = gs.import_onnx(model).nodes[0]
    for take in (None, 17):
        rows, targets = layer_rows(node, x, take, np.random.default_rng(0), y)
        predicted = rows @ weight.reshape(weight.shape[0], -1).T + bias
        np.testing.assert_allclose(predicted, targets, rtol=1e-4, atol=1e-4)
        assert len(rows) == (17 if take else y.shape[0] * y.shape[2] * y.shape[3])


def _mlp_first_group_only():
    """mlp_gemm with only the first hidden layer pruned (the second excluded), and its consumer."""
    model = onnx.load(MODELS / "mlp_gemm.onnx")
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    return model, gemms[1], (gemms[1].name,)


def test_bias_compensation_preserves_the_consumer_mean() -> None:
    """Kept inputs unchanged ⇒ E[Y] of the consumer is exactly the original's on the calibration set."""
    model, consumer, exclude = _mlp_first_group_only()
    calibration = random_calibration(model, 64, seed=2, batch_size=16)
    result = prune(model, PruneOptions(ratio=0.5, exclude=exclude), calibration=calibration,
                   recovery=RecoveryOptions("bias", guard=False))
    assert [layer["status"] for layer in result.recovery["layers"]] == ["applied"]
    means = []
    for candidate in (model, result.model, result.unrecovered):
        tapped = with_outputs(candidate, [consumer.output[0]])
        values = np.concatenate([run_model(tapped, b, optimized=False)[consumer.output[0]] for b in calibration.batches()])
        means.append(values.astype(np.float64).mean(axis=0))
    scale = float(np.abs(means[0]).max())
    np.testing.assert_allclose(means[1], means[0], rtol=1e-5, atol=1e-5 * scale)
    assert np.abs(means[2] - means[0]).max() > 1e-3 * scale, "the plain rewrite does shift the mean"


def test_lsq_equals_the_closed_form_ridge_solution() -> None:
    """The streamed normal equations give the same weights as a direct solve on all rows."""
    model, consumer, exclude = _mlp_first_group_only()
    calibration = random_calibration(model, 80, seed=5, batch_size=32)
    ridge = 1e-3
    result = prune(model, PruneOptions(ratio=0.5, exclude=exclude), calibration=calibration,
                   recovery=RecoveryOptions("lsq", ridge=ridge, guard=False))
    record = result.recovery["layers"][0]
    assert record["status"] == "applied" and record["rows"] == 80
    x_name, y_name = consumer.input[0], consumer.output[0]
    feeds = {"input": np.concatenate([b["input"] for b in calibration.batches()])}
    x = run_model(with_outputs(result.unrecovered, [x_name]), feeds)[x_name].astype(np.float64)
    original = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    target = run_model(with_outputs(model, [y_name]), feeds)[y_name] - original[consumer.input[2]]
    lam = ridge * np.trace(x.T @ x) / x.shape[1]
    design = np.hstack([x, np.ones((len(x), 1))])
    theta = np.linalg.solve(design.T @ design + np.diag(np.r_[np.full(x.shape[1], lam), 0.0]), design.T @ target)
    node = next(n for n in result.model.graph.node if n.output[0] == y_name)
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in result.model.graph.initializer}
    w = weights[node.input[1]]
    w = w.T if any(a.name == "transB" and a.i for a in node.attribute) else w
    np.testing.assert_allclose(w, theta[:-1], rtol=1e-4, atol=1e-5 * np.abs(theta).max())
    np.testing.assert_allclose(weights[node.input[2]], original[consumer.input[2]] + theta[-1], rtol=1e-4,
                               atol=1e-5 * np.abs(theta).max())


def _two_pointwise_convs() -> onnx.ModelProto:
    """Conv 1×1 (bias) → Relu → Conv 1×1 *without* bias: bias compensation must add one."""
    rng = np.random.default_rng(7)
    inits = [onnx.numpy_helper.from_array(rng.standard_normal((8, 4, 1, 1)).astype(np.float32), "w1"),
             onnx.numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) + 1.0, "b1"),
             onnx.numpy_helper.from_array(rng.standard_normal((3, 8, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="c1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="c2")]
    graph = helper.make_graph(nodes, "pw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_bias_is_added_to_a_conv_without_one() -> None:
    model = _two_pointwise_convs()
    calibration = random_calibration(model, 32, seed=0, batch_size=8)
    result = prune(model, PruneOptions(ratio=0.5), calibration=calibration, recovery=RecoveryOptions("bias"))
    record = result.recovery["layers"][0]
    assert record["status"] == "applied" and record["edit"] == "bias added"
    conv = next(n for n in result.model.graph.node if n.output[0] == "y")
    assert len(conv.input) == 3
    feeds = {"x": np.concatenate([b["x"] for b in calibration.batches()])}
    original, recovered = run_model(model, feeds)["y"], run_model(result.model, feeds)["y"]
    np.testing.assert_allclose(recovered.mean(axis=(0, 2, 3)), original.mean(axis=(0, 2, 3)), rtol=1e-4,
                               atol=1e-5 * float(np.abs(original).max()))


def test_not_applicable_layers_say_why() -> None:
    model = onnx.load(MODELS / "op_zoo_cnn.onnx")
    result = prune(model, PruneOptions(ratio=0.5), calibration=random_calibration(model, 16, batch_size=8),
                   recovery=RecoveryOptions("lsq"))
    skipped = [layer for layer in result.recovery["layers"] if layer["status"] == "not applicable"]
    assert skipped and all(layer["reason"] for layer in skipped)
    assert any("group" in layer["reason"] for layer in skipped)


# --------------------------------------------------------------------------------------------------
# the CLI


def test_cli_calibration_defaults_verify_and_report(tmp_path: pathlib.Path) -> None:
    """--calib switches the defaults; --verify judges the rewrite before recovery and still passes."""
    out, report, plan = tmp_path / "p.onnx", tmp_path / "r.json", tmp_path / "plan.json"
    result = cli("prune", str(MODELS / "mnist_cnn.onnx"), "-o", str(out), "--ratio", "0.5", "--calib",
                 str(MODELS / "mnist_calib.npz"), "--batch-size", "100", "--verify", "--report", str(report),
                 "--save-plan", str(plan))
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["criterion"] == CALIBRATED_CRITERION and data["recovery"]["method"] == "lsq"
    assert data["verification"]["ok"] is True and "before recovery" in data["verification_scope"]
    assert data["calibration"]["source"] == "file" and data["calibration"]["samples"] == 500
    errors = data["calibration"]["output_error"]
    assert errors["recovered"]["worst_relative_l2"] < 0.5 * errors["pruned"]["worst_relative_l2"]
    recovered_check = cli("verify", str(MODELS / "mnist_cnn.onnx"), str(out), "--plan", str(plan))
    assert recovered_check.returncode == 1 and "recovered with 'lsq'" in recovered_check.stderr
    plain = tmp_path / "plain.onnx"
    result = cli("prune", str(MODELS / "mnist_cnn.onnx"), "-o", str(plain), "--plan", str(plan), "--recover", "none")
    assert result.returncode == 0, result.stderr
    assert cli("verify", str(MODELS / "mnist_cnn.onnx"), str(plain), "--plan", str(plan)).returncode == 0


def test_cli_data_criterion_with_recover_none_passes_the_oracle(tmp_path: pathlib.Path) -> None:
    out, plan = tmp_path / "p.onnx", tmp_path / "plan.json"
    result = cli("prune", str(MODELS / "resnet_basic.onnx"), "-o", str(out), "--ratio", "0.5", "--criterion", "wanda",
                 "--calib-random", "32", "--recover", "none", "--verify", "--save-plan", str(plan), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verification"]["ok"] and data["recovery"]["method"] == "none" and data["calibration"]["random"]
    check = cli("verify", str(MODELS / "resnet_basic.onnx"), str(out), "--plan", str(plan))
    assert check.returncode == 0 and "passed" in check.stdout
