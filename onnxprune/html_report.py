"""Self-contained HTML reports for people: tables always, plots when matplotlib is installed.

Why a renderer over the JSON report: the page a person reads and the JSON a pipeline parses come from
the same dict, so they cannot disagree.  Plots are optional (``pip install "onnxprune[plot]"``); without
matplotlib the page has the same tables and says so.  Everything is escaped, images are embedded as
base64 PNG, and no external resource is referenced.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import pathlib
from typing import Any

from onnxprune.io import write_json, write_text

STYLE = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
         "th{background:#f2f2f2}td.l,th.l{text-align:left}pre{background:#f7f7f7;padding:.8em;overflow-x:auto}"
         ".ok{color:#17692b}.bad{color:#a40000}")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th class='l'>{html.escape(str(h))}</th>" if i == 0 else f"<th>{html.escape(str(h))}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td class='l'>{html.escape(_fmt(c))}</td>" if i == 0 else
                                    f"<td>{html.escape(_fmt(c))}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _pyplot():
    """matplotlib's pyplot on a file-only backend, or None when the plot extra is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _png(plt, figure) -> bytes:
    """Render and close ``figure``."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _bar_chart(labels: list[str], values: list[float], title: str) -> str | None:
    """A horizontal bar chart as an <img>, or None when matplotlib is not installed."""
    plt = _pyplot()
    if plt is None:
        return None
    figure, axes = plt.subplots(figsize=(7, 0.28 * len(labels) + 1.2))
    axes.barh(range(len(labels)), values, color="#4a7ab5")
    axes.set_yticks(range(len(labels)), labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_title(title)
    png = _png(plt, figure)
    return f"<img alt='{html.escape(title)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def sensitivity_png(rows: list[dict]) -> bytes | None:
    """Cosine similarity vs ratio, one curve per group, as PNG bytes (None without matplotlib)."""
    plt = _pyplot()
    if plt is None:
        return None
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        curves.setdefault(f"{row.get('group')} {str(row.get('label'))[:30]}", []).append(
            (float(row.get("ratio", 0.0)), float(row.get("cosine", float("nan")))))
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for label, points in curves.items():
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=label)
    axes.set_xlabel("ratio removed (this group alone)")
    axes.set_ylabel("cosine similarity to the original")
    if len(curves) <= 12:
        axes.legend(fontsize=6)
    return _png(plt, figure)


def _sensitivity(report: dict, plots: bool) -> str:
    rows = (report.get("sensitivity") or {}).get("rows") or []
    if not rows:
        return ""
    png = sensitivity_png(rows) if plots else None
    image = f"<img alt='sensitivity' src='data:image/png;base64,{base64.b64encode(png).decode()}'>" if png else ""
    table = _table(["group", "label", "ratio", "cosine", "rel_mse", "top1_agreement"],
                   [[r.get("group"), r.get("label"), r.get("ratio"), r.get("cosine"), r.get("rel_mse"),
                     r.get("top1_agreement")] for r in rows])
    return "<h2>Sensitivity (each group pruned alone)</h2>" + image + table


def _comparison(report: dict) -> str:
    comparison = report.get("comparison")
    if not comparison:
        return ""
    rows = [[metric, v.get("before"), v.get("after"), v.get("ratio")] for metric, v in comparison.items()]
    label = (report.get("counted_at") or {}).get("label")
    shapes = f"<p>MACs and FLOPs {html.escape(label)}</p>" if label else ""
    return "<h2>Before → after</h2>" + shapes + _table(["metric", "before", "after", "ratio"], rows)


def _groups(report: dict, plots: bool) -> str:
    """Per group: units, kept, kept ratio; sensitivity and the saving it contributed when the report has them."""
    groups = report.get("groups") or []
    if not groups or not isinstance(groups[0], dict) or "kept" not in groups[0]:
        return ""
    header = ["group", "label", "channels", "kept", "kept ratio"]
    sensitive = any(g.get("sensitivity") for g in groups)
    contributed = any(g.get("contribution") for g in groups)
    header += ["sensitivity (rel. MSE alone)", "cosine alone"] if sensitive else []
    header += ["MACs saved", "share of MACs saved", "params saved", "share of params saved"] if contributed else []
    rows = []
    for g in groups:
        row = [g.get("id"), g.get("label"), g.get("channels"), g.get("kept"),
               g["kept"] / g["channels"] if g.get("channels") else None]
        if sensitive:
            sens = g.get("sensitivity") or {}
            row += [sens.get("rel_mse"), sens.get("cosine")]
        if contributed:
            part = g.get("contribution") or {}
            row += [part.get("macs"), part.get("macs_share"), part.get("params"), part.get("params_share")]
        rows.append(row)
    labels = [f"{g.get('id')} {str(g.get('label'))[:40]}" for g in groups]
    charts = []
    if plots:
        charts.append(_bar_chart(labels, [r[4] or 0.0 for r in rows], "kept ratio per group"))
        if contributed:
            charts.append(_bar_chart(labels, [(g.get("contribution") or {}).get("macs_share", 0.0) for g in groups],
                                     "share of the MACs saving per group"))
    images = "".join(c for c in charts if c)
    note = "" if images or not plots else "<p><em>Plots need matplotlib (pip install \"onnxprune[plot]\").</em></p>"
    summary = ""
    totals = report.get("contributions")
    if totals:
        summary = (f"<p>Saving per group: {html.escape(str(totals.get('method')))}; the groups' MACs saved add up to "
                   f"{totals.get('macs_saved')} and their params saved to {totals.get('params_saved')}.</p>")
    return "<h2>Kept channels per group</h2>" + (images or note) + summary + _table(header, rows)


def _verification(report: dict) -> str:
    result = report.get("verification")
    if not result:
        return ""
    worst = max((d.get("relative", 0.0) for d in result.get("diffs", [])), default=0.0)
    status = "<span class='ok'>passed</span>" if result.get("ok") else "<span class='bad'>FAILED</span>"
    return (f"<h2>Verification</h2><p>masked-reference oracle {status}: max relative error {worst:.3g} "
            f"(tolerance {result.get('tolerance')}).</p>")


def _section(report: dict, plots: bool) -> str:
    parts = [_comparison(report), _groups(report, plots), _sensitivity(report, plots), _verification(report)]
    for key in ("calibration", "recovery", "budget", "results"):
        if report.get(key):
            parts.append(f"<h2>{key}</h2><pre>{html.escape(json.dumps(report[key], indent=1, default=str))}</pre>")
    return "".join(parts)


def render_html(report: dict, title: str = "onnxprune report", plots: bool = True) -> str:
    """One self-contained page for a prune, validate, bench, quantize or recipe report."""
    command = report.get("command")
    command_text = " ".join(command) if isinstance(command, list) else str(command or "")
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>command: <code>{html.escape(command_text)}</code></p>" if command_text else "",
            f"<h2>Settings</h2><pre>{html.escape(json.dumps(report.get('settings', {}), indent=1, default=str))}</pre>",
            _section(report, plots)]
    for index, step in enumerate(report.get("steps") or []):
        if isinstance(step, dict):
            body.append(f"<h2>Step {index + 1}: {html.escape(str(step.get('type', '')))}</h2>"
                        + _section(step.get("report", step), plots))
    body.append("<details><summary>Full JSON report</summary><pre>"
                + html.escape(json.dumps(report, indent=1, default=str)) + "</pre></details>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(path: str | os.PathLike, report: dict, title: str = "onnxprune report") -> pathlib.Path:
    """``.html`` → a page for people; anything else → the JSON report."""
    if pathlib.Path(path).suffix.lower() in (".html", ".htm"):
        return write_text(path, render_html(report, title))
    return write_json(path, report)
