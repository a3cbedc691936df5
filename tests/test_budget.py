"""Budgets (--target-flops / --target-params) and the sensitivity scan."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import MODELS, assert_matches_oracle
from onnxprune.runtime.calibration import load_calibration, random_calibration
from onnxprune.cli.app import main
from onnxprune.measurement.counting import count_model
from onnxprune.errors import InputError
from onnxprune.io.files import load_model
from onnxprune.pipeline import PruneOptions, group_scores, plan_prune
from onnxprune.methods.width import apply_plan
from onnxprune.methods.prepared import model_stats, prepare
from onnxprune.planning.sensitivity import load_labels, load_sensitivity, output_change, scan

BUDGET_MODELS = ("resnet_basic", "mobilenetv2", "vgg_chain", "mnist_cnn", "bert_encoder_static")
TOLERANCE = 0.02


def _prepared(name: str, exclude: tuple[str, ...] = ()):
    return prepare(load_model(MODELS / f"{name}.onnx"), exclude)


def _measured(prepared, plan, metric: str) -> float:
    attr = "macs" if metric == "flops" else "params"
    return getattr(count_model(apply_plan(prepared, plan)), attr) / getattr(model_stats(prepared), attr)


@pytest.mark.parametrize("name", BUDGET_MODELS)
@pytest.mark.parametrize("metric", ["flops", "params"])
def test_target_met_within_two_percent(name: str, metric: str) -> None:
    prepared = _prepared(name)
    plan = plan_prune(prepared, PruneOptions(**{f"target_{metric}": 0.5}))
    achieved = _measured(prepared, plan, metric)
    assert 0.5 - TOLERANCE <= achieved <= 0.5 + TOLERANCE
    budget = plan.settings["budget"]
    assert budget["achieved"] == pytest.approx(achieved, abs=1e-6)
    assert budget["target"] == 0.5 and budget["metric"] == metric
    kept = {g.id: len(g.kept) for g in plan.groups if g.kept is not None}
    assert budget["kept"] == kept


@pytest.mark.parametrize("name", ["resnet_basic", "mobilenetv2", "bert_encoder_static"])
def test_target_plan_matches_oracle(name: str) -> None:
    prepared = _prepared(name)
    for options in (PruneOptions(target_flops=0.5), PruneOptions(target_params=0.4, allocation="uniform")):
        plan = plan_prune(prepared, options)
        assert_matches_oracle(prepared, plan, apply_plan(prepared, plan))


def test_floors_max_ratio_and_round_to_honoured() -> None:
    prepared = _prepared("mnist_cnn")
    plan = plan_prune(prepared, PruneOptions(target_flops=0.5, min_keep=0.6))
    for group in plan.groups:
        if group.kept is not None:
            assert len(group.kept) >= math.ceil(0.6 * group.channels)
    plan = plan_prune(prepared, PruneOptions(target_params=0.5, max_ratio=0.4))
    for group in plan.groups:
        if group.kept is not None:
            assert group.channels - len(group.kept) <= math.floor(0.4 * group.channels)
    plan = plan_prune(prepared, PruneOptions(target_flops=0.5, round_to=4))
    assert 0.48 <= _measured(prepared, plan, "flops") <= 0.52
    assert all(len(g.kept) % 4 == 0 or len(g.kept) == g.channels for g in plan.groups if g.kept is not None)


def test_exclude_honoured() -> None:
    first = _prepared("resnet_basic")
    excluded_id = first.analysis.prunable[0]
    name = excluded_id.params[0].node
    prepared = _prepared("resnet_basic", (name,))
    plan = plan_prune(prepared, PruneOptions(target_flops=0.6, exclude=(name,)))
    touched = [g for g in plan.groups if g.label == excluded_id.label]
    assert touched and all(g.frozen and (g.kept is None or len(g.kept) == g.channels) for g in touched)
    assert excluded_id.id not in plan.settings["budget"]["kept"]
    assert 0.58 <= _measured(prepared, plan, "flops") <= 0.62


def test_plan_deterministic_for_fixed_seed() -> None:
    prepared = _prepared("mobilenetv2")
    options = PruneOptions(target_flops=0.45, criterion="random", seed=3)
    first, second = plan_prune(prepared, options), plan_prune(_prepared("mobilenetv2"), options)
    assert first.to_dict() == second.to_dict()


def test_unreachable_target_is_input_error() -> None:
    prepared = _prepared("mnist_cnn")
    with pytest.raises(InputError, match="unreachable.*smallest reachable flops ratio is 0"):
        plan_prune(prepared, PruneOptions(target_flops=0.2, min_keep=0.9))
    with pytest.raises(InputError, match="only one target"):
        plan_prune(prepared, PruneOptions(target_flops=0.5, target_params=0.5))
    with pytest.raises(InputError, match="drop --ratio"):
        plan_prune(prepared, PruneOptions(ratio=0.3, target_flops=0.5))


def test_cli_target_and_unreachable(tmp_path) -> None:
    runner = CliRunner()
    model = str(MODELS / "vgg_chain.onnx")
    out = tmp_path / "out.onnx"
    result = runner.invoke(main, ["prune", model, "-o", str(out), "--target-flops", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert 0.48 <= report["comparison"]["flops"]["ratio"] <= 0.52
    assert report["settings"]["budget"]["target"] == 0.5
    result = runner.invoke(main, ["prune", model, "-o", str(tmp_path / "x.onnx"), "--target-flops", "0.1",
                                  "--min-keep", "0.9"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0] and "smallest reachable" in lines[0]
    assert not (tmp_path / "x.onnx").exists()


def test_sensitivity_ratio_zero_is_exactly_no_change() -> None:
    prepared = _prepared("mnist_cnn")
    calibration = load_calibration(MODELS / "mnist_calib.npz", prepared.original, 64)
    scores = group_scores(prepared, PruneOptions(criterion="l2")).by_group
    result = scan(prepared, calibration, scores, "l2", (0.0, 0.5), load_labels(MODELS / "mnist_calib.npz"))
    zero = [r for r in result.rows if r["ratio"] == 0.0]
    assert len(zero) == len(scores)
    for row in zero:
        assert row["cosine"] == 1.0 and row["rel_mse"] == 0.0 and row["top1_agreement"] == 1.0
        assert row["accuracy"] == result.baseline_accuracy and row["macs_ratio"] == 1.0
    half = [r for r in result.rows if r["ratio"] == 0.5]
    assert all(r["rel_mse"] > 0 and r["cosine"] < 1 and r["macs_ratio"] < 1 for r in half)


def test_output_change_metrics() -> None:
    a = {"y": np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)}
    b = {"y": np.array([[0.0, 1.0], [0.0, 2.0]], dtype=np.float32)}
    change = output_change(a, b, labels=np.array([0, 1]))
    assert change["cosine"] == pytest.approx(0.5, abs=1e-12)
    assert change["rel_mse"] == pytest.approx(2.0 / 5.0, abs=1e-12)
    assert change["top1_agreement"] == 0.5 and change["accuracy"] == 0.5


def test_guided_target_via_cli(tmp_path) -> None:
    runner = CliRunner()
    model = str(MODELS / "mnist_cnn.onnx")
    sens, table = tmp_path / "sens.json", tmp_path / "sens.csv"
    result = runner.invoke(main, ["sensitivity", model, "--calib-random", "16", "--ratios", "0,0.25,0.5,0.75",
                                  "--criterion", "l2", "-o", str(sens), "--csv", str(table), "--quiet"])
    assert result.exit_code == 0, result.output
    data = load_sensitivity(sens)
    assert len(data.rows) == 4 * 5 and table.read_text().startswith("group,label,units,ratio")
    out = tmp_path / "guided.onnx"
    result = runner.invoke(main, ["prune", model, "-o", str(out), "--target-flops", "0.5", "--sensitivity", str(sens),
                                  "--criterion", "l2", "--json", "--verify"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["settings"]["budget"]["allocation"] == "guided"
    assert 0.48 <= report["comparison"]["flops"]["ratio"] <= 0.52
    assert report["verification"]["ok"]


def test_guided_on_the_fly_and_needs_data() -> None:
    model = load_model(MODELS / "resnet_basic.onnx")
    prepared = prepare(model)
    calibration = random_calibration(model, 8, 0, 8)
    options = PruneOptions(target_flops=0.5, allocation="guided")
    with pytest.raises(InputError, match="sensitivity"):
        plan_prune(prepared, options)
    scores = group_scores(prepared, options).by_group
    sensitivity = scan(prepared, calibration, scores, "l2", (0.25, 0.5, 0.75))
    plan = plan_prune(prepared, options, sensitivity=sensitivity)
    assert 0.48 <= _measured(prepared, plan, "flops") <= 0.52
    assert_matches_oracle(prepared, plan, apply_plan(prepared, plan))
