"""The summary card and readable sections of the HTML report, from real CLI runs (no browser needed)."""

from __future__ import annotations

import html
import json
import pathlib
import re

from conftest import MODELS
from test_cli import cli
from onnxprune.reports.html import render_html


def text_of(page: str) -> str:
    """What a reader sees (tags dropped, entities decoded); collapsed ``<details>`` content included."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def summary_of(page: str) -> str:
    return text_of(page[page.index("<section class='card summary'>"):page.index("</section>")])


def test_latency_target_page_shows_measured_latency_and_estimate_vs_measured(tmp_path: pathlib.Path) -> None:
    page = tmp_path / "r.html"
    result = cli("prune", str(MODELS / "mnist_cnn.onnx"), "-o", str(tmp_path / "out.onnx"), "--target-latency", "0.6",
                 "--latency-cache", str(tmp_path / "latency.json"), "--report", str(page), "--json")
    assert result.returncode == 0, result.stderr
    report, markup = json.loads(result.stdout), page.read_text()
    budget = report["settings"]["budget"]
    chosen = min(budget["rounds"], key=lambda r: abs(r["measured"] - budget["measured"]))
    summary = summary_of(markup)
    assert f"latency (measured) {chosen['original_ms']:.3f} → {chosen['pruned_ms']:.3f} ms" in summary
    assert f"{100 * budget['measured']:.1f}% of the original time" in summary
    rounds = text_of(markup[markup.index("Latency ratio estimated"):])
    for number, entry in enumerate(budget["rounds"], 1):
        assert (f"{number} {entry['searched_for']:.4g} {100 * entry['estimated']:.1f}% "
                f"{100 * entry['measured']:.1f}% {entry['original_ms']:.4g} {entry['pruned_ms']:.4g}") in rounds
    assert "<pre>" not in markup.split("<details>")[0], "raw JSON only inside collapsed <details>"
    assert markup.count("<details>") >= 3 and "<details open" not in markup


def test_summary_names_removed_heads_warnings_and_agreement() -> None:
    report = {"command": ["/usr/bin/onnxprune", "prune", "vit.onnx", "--calib-random", "8"],
              "comparison": {"params": {"before": 2_000_000, "after": 1_500_000, "ratio": 0.75}},
              "groups": [{"id": "g0", "label": "attn", "kind": "head", "channels": 12, "kept": 9},
                         {"id": "g1", "label": "ffn", "kind": "neuron", "channels": 3072, "kept": 3072}],
              "settings": {"notes": ["bn: 1 group(s) have no BatchNormalization scale; used l2 instead"]},
              "calibration": {"random": True, "notes": [], "output_error": {"pruned": {
                  "worst_relative_l2": 0.25, "outputs": {"logits": {"relative_l2": 0.25, "agreement": 0.875,
                                                                    "cosine": 0.97}}}}},
              "recovery": {"method": "lsq", "status": "rejected", "reason": "error grew", "layers": []}}
    summary = summary_of(render_html(report))
    assert "command: onnxprune prune vit.onnx --calib-random 8" in summary
    assert "2.00M → 1.50M" in summary and "75.0% kept" in summary
    assert "removed 3 of 12 heads in 1 of 1 groups; 0 of 3072 neurons in 0 of 1 groups" in summary
    assert "87.5% top-1" in summary and "relative L2 0.2500 · cosine 0.9700 · pruned" in summary
    for warning in ("bn: 1 group(s) have no BatchNormalization scale", "calibration used random inputs, not real data",
                    "recovery 'lsq' rejected: error grew"):
        assert f"⚠ {warning}" in summary


def test_recipe_page_has_one_section_per_step(tmp_path: pathlib.Path) -> None:
    page = tmp_path / "report.html"
    result = cli("run", str(pathlib.Path(MODELS).parent / "recipes" / "mnist_prune_quantize.toml"), "--out-dir",
                 str(tmp_path), "--report", str(page))
    assert result.returncode == 0, result.stderr
    text = text_of(page.read_text())
    for number, (kind, name) in enumerate((("prune", "prune-lsq"), ("quantize", "quantize-dynamic"),
                                           ("validate", "validate-vs-original")), 1):
        assert f"Step {number}: {kind} {name}" in text
        assert f"step {number}: {kind} {name} ok" in summary_of(page.read_text())
    assert "Recovery: lsq" in text and "Kept channels per group" in text and "Results" in text
    raw = page.read_text().split("<summary>Full JSON report</summary><pre>")[1].split("</pre>")[0]
    report = json.loads(html.unescape(raw))  # the page's own JSON: the figures must match it
    validate = report["results"]["steps"][2]["results"]["outputs"][0]
    assert f"output yes {validate['elements']} " in text, "validate's per-output metrics as a table"
    assert f"{validate['top1_agreement']:.4g}" in text and f"{validate['cosine']:.4g}" in text
