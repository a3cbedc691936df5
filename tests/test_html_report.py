"""HTML reports: one self-contained page from the same dict as the JSON report."""

from __future__ import annotations

import json
import pathlib

from conftest import MODELS
from test_cli import cli
from onnxprune.reports.html import render_html


def test_prune_writes_a_self_contained_html_page(tmp_path: pathlib.Path) -> None:
    page, data = tmp_path / "report.html", tmp_path / "report.json"
    for report in (page, data):
        result = cli("prune", str(MODELS / "resnet_basic.onnx"), "-o", str(tmp_path / "out.onnx"), "--ratio", "0.5",
                     "--verify", "--report", str(report))
        assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "Kept channels per group" in text and "Before → after" in text
    assert "masked-reference oracle" in text and "--ratio" in text
    assert "src='http" not in text and "href=" not in text, "no external resources"
    summary = json.loads(data.read_text())
    for group in summary["groups"]:
        assert f"<td class='l'>{group['id']}</td>" in text


def test_html_without_plots_has_tables_and_escapes_names() -> None:
    report = {"command": ["onnxprune", "prune", "<m>.onnx"], "settings": {"ratio": 0.5},
              "comparison": {"params": {"before": 10, "after": 5, "ratio": 0.5}},
              "groups": [{"id": "g0", "label": "<script>", "channels": 8, "kept": 4}]}
    text = render_html(report, plots=False)
    assert "<img" not in text and "&lt;script&gt;" in text and "<script>" not in text
    assert "<td>0.5</td>" in text


def test_budgeted_prune_page_shows_sensitivity_and_contributions(tmp_path: pathlib.Path) -> None:
    sensitivity = tmp_path / "s.json"
    model = str(MODELS / "mnist_cnn.onnx")
    result = cli("sensitivity", model, "--calib", str(MODELS / "mnist_calib.npz"), "-o", str(sensitivity))
    assert result.returncode == 0, result.stderr
    page, data = tmp_path / "r.html", tmp_path / "r.json"
    for report in (page, data):
        result = cli("prune", model, "-o", str(tmp_path / "out.onnx"), "--target-flops", "0.5", "--sensitivity",
                     str(sensitivity), "--report", str(report))
        assert result.returncode == 0, result.stderr
    text, summary = page.read_text(), json.loads(data.read_text())
    for header in ("kept ratio", "sensitivity (rel. MSE alone)", "MACs saved", "share of MACs saved", "params saved"):
        assert f">{header}</th>" in text
    for group in summary["groups"]:
        assert group["sensitivity"] is not None and group["contribution"]["macs"] >= 0
        assert f"<td>{group['contribution']['macs']}</td>" in text
    assert "Plots need matplotlib" not in text and "<img" not in text, "charts are inline SVG, no matplotlib"
    curves = {row["group"] for row in summary["sensitivity"]["rows"]}
    assert text.count("<polyline") == len(curves) >= 1, "one sensitivity curve per scanned group"
