"""Budgeted prune reports: per group original/kept units, sensitivity, and the saving each group contributed."""

from __future__ import annotations

import json
import pathlib

import pytest

from conftest import MODELS
from test_cli import cli
from onnxprune.runtime.calibration import load_calibration
from onnxprune.io.files import load_model
from onnxprune.pipeline import CALIBRATED_CRITERION, PruneOptions, prune
from onnxprune.reports.prune_report import group_contributions, prune_report


def _saved(report: dict, key: str) -> int:
    """Total saving from the report's own before/after counts (FLOPs = 2·MACs)."""
    entry = report["comparison"]["flops" if key == "macs" else "params"]
    return (entry["before"] - entry["after"]) // (2 if key == "macs" else 1)


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet_basic", "bert_encoder_static"])
def test_contributions_add_up_to_the_total_saving(tmp_path: pathlib.Path, name: str) -> None:
    report_path = tmp_path / "r.json"
    result = cli("prune", str(MODELS / f"{name}.onnx"), "-o", str(tmp_path / "out.onnx"), "--target-flops", "0.5",
                 "--report", str(report_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    groups = report["groups"]
    assert groups and all({"id", "label", "channels", "kept", "kept_ratio", "contribution"} <= set(g) for g in groups)
    for key in ("macs", "params"):
        total = _saved(report, key)
        assert total > 0
        parts = [g["contribution"][key] for g in groups]
        assert all(part >= 0 for part in parts), "removing units never adds MACs or params"
        assert sum(parts) == pytest.approx(total, rel=0.01)
        assert report["contributions"][f"{key}_saved"] == pytest.approx(total, rel=0.01)
        assert sum(g["contribution"][f"{key}_share"] for g in groups) == pytest.approx(1.0, abs=0.01)
    for g in groups:
        assert g["kept_ratio"] == pytest.approx(g["kept"] / g["channels"], abs=1e-6)
        if g["kept"] == g["channels"]:
            assert g["contribution"]["macs"] == 0 and g["contribution"]["params"] == 0
    assert {g["id"]: g["kept"] for g in groups} == {k: v for k, v in report["settings"]["budget"]["kept"].items()}


def test_no_contributions_unless_asked() -> None:
    result = prune(load_model(MODELS / "resnet_basic.onnx"), PruneOptions(target_flops=0.5))
    report = prune_report(result, None)
    assert "contributions" not in report and all("contribution" not in g for g in report["groups"])


def test_single_group_gets_the_whole_saving() -> None:
    result = prune(load_model(MODELS / "vgg_chain.onnx"), PruneOptions(ratio=0.5))
    saving = group_contributions(result)
    pruned = [g for g in result.plan.groups if g.kept is not None and len(g.kept) < g.channels]
    assert len(saving["groups"]) == len(pruned)
    before, after = result.before, result.after
    assert saving["macs_saved"] == before.macs - after.macs
    assert saving["params_saved"] == before.params - after.params


def test_guided_prune_reports_each_groups_sensitivity() -> None:
    model = load_model(MODELS / "mnist_cnn.onnx")
    calibration = load_calibration(MODELS / "mnist_calib.npz", model, 100)
    result = prune(model, PruneOptions(criterion=CALIBRATED_CRITERION, target_flops=0.5, allocation="guided"),
                   calibration=calibration)
    assert result.sensitivity is not None
    report = prune_report(result, None, contributions=True)
    assert report["sensitivity"]["rows"] == result.sensitivity.rows
    for group in report["groups"]:
        sens = group["sensitivity"]
        assert sens is not None
        assert sens["removed_fraction"] == pytest.approx(1 - group["kept"] / group["channels"], abs=1e-6)
        assert sens["rel_mse"] >= 0.0 and -1.0 <= sens["cosine"] <= 1.0 + 1e-9
        if group["kept"] == group["channels"]:
            assert sens["rel_mse"] == 0.0 and sens["cosine"] == 1.0
    rows = [r for r in result.sensitivity.rows if r["group"] == report["groups"][0]["id"]]
    exact = next((r for r in rows if r["removed"] == report["groups"][0]["channels"] - report["groups"][0]["kept"]),
                 None)
    if exact is not None:  # at a scanned point the interpolation is the measurement itself
        assert report["groups"][0]["sensitivity"]["rel_mse"] == pytest.approx(exact["rel_mse"], rel=1e-9, abs=1e-12)
