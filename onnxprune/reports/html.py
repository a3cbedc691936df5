"""Self-contained HTML reports for people: a summary card first, then readable tables and inline charts.

Why a renderer over the JSON report: the page a person reads and the JSON a pipeline parses come from
the same dict, so they cannot disagree.  Charts are inline SVG and HTML/CSS bars, so the page needs no
network, no JavaScript and no matplotlib (which stays optional, for ``onnxprune sensitivity --png``).
The raw JSON of every section is one click away in a collapsed ``<details>``, never the main content.
Everything taken from the report is escaped.
"""

from __future__ import annotations

import html
import io
import json
import os
import pathlib
from typing import Any, Iterable

from onnxprune.measurement.counting import format_bytes, format_count
from onnxprune.io.files import write_json, write_text

STYLE = """
:root{--ink:#1f2933;--muted:#5f6b7a;--line:#d9dee5;--soft:#f4f6f9;--bar:#3f6fb5;--save:#d9822b;--ok:#17692b;--bad:#a40000}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:72em;margin:1.5em auto;padding:0 1em;color:var(--ink);line-height:1.4;overflow-wrap:anywhere}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:1.6em 0 .5em;border-bottom:1px solid var(--line);padding-bottom:.2em}
code{background:var(--soft);padding:.05em .3em;border-radius:3px;word-break:break-all}
.card{border:1px solid var(--line);border-radius:8px;padding:1em 1.2em;background:#fff;box-shadow:0 1px 3px rgba(0,0,0,.06)}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(13em,1fr));gap:.8em;margin:1em 0}
.tile{background:var(--soft);border-radius:6px;padding:.6em .8em;min-width:0}
.tile .k{color:var(--muted);font-size:.85em}.tile .v{font-size:1.25em;font-weight:600}.tile .s{font-size:.85em;color:var(--muted)}
.facts{margin:.4em 0;padding-left:1.2em}.facts li{margin:.15em 0}
.warn{background:#fff6e5;border-left:4px solid var(--save);padding:.4em .8em;margin:.6em 0}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border-bottom:1px solid var(--line);padding:.25em .6em;text-align:right;vertical-align:top}
th{background:var(--soft);font-weight:600}td.l,th.l{text-align:left}
.bar{display:inline-block;width:5em;height:.75em;background:var(--soft);border:1px solid var(--line);vertical-align:middle;margin-right:.4em}
.bar>span{display:block;height:100%;background:var(--bar)}.bar.save>span{background:var(--save)}
.nw{white-space:nowrap}.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:600}
details{margin:.4em 0}summary{cursor:pointer;color:var(--muted)}
pre{background:var(--soft);padding:.8em;overflow-x:auto;font-size:.85em}
svg.chart{width:100%;max-width:720px;height:auto;font-size:11px}
.legend{columns:2 16em;font-size:.85em;padding-left:0;list-style:none}.legend i{display:inline-block;width:1em;height:.6em;margin-right:.4em}
@media (max-width:40em){body{margin:.5em auto;padding:0 .5em}.tiles{grid-template-columns:1fr 1fr}.bar{width:3em}td,th{padding:.2em .3em}}
@media print{body{max-width:none;margin:0;font-size:10pt}.card{box-shadow:none}details{display:none}
 .bar>span,.tile,th,.warn{-webkit-print-color-adjust:exact;print-color-adjust:exact}h2{break-after:avoid}
 table,.tile,svg{break-inside:avoid}}
"""

PALETTE = ("#3f6fb5", "#d9822b", "#2e8b57", "#b03a48", "#7b5ea7", "#1f9aa8", "#8c6d1f", "#c05fa0", "#4d4d4d", "#6a9f2a")


def _esc(value: Any) -> str:
    return html.escape(_fmt(value))


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(_fmt(v) for v in value) or "—"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


def _cell(value: Any, left: bool) -> str:
    """A table cell; a ``("html", markup)`` tuple is trusted markup built here (bars, status)."""
    text = value[1] if isinstance(value, tuple) and value[:1] == ("html",) else _esc(value)
    return f"<td class='l'>{text}</td>" if left else f"<td>{text}</td>"


def _is_text(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, (list, dict)) and not isinstance(value, tuple))


def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    """Names and text left-aligned (the first column always), numbers and bars right-aligned."""
    rows = list(rows)
    left = [i == 0 or any(_is_text(row[i]) for row in rows if i < len(row)) for i in range(len(header))]
    head = "".join(f"<th class='l'>{_esc(h)}</th>" if left[i] else f"<th>{_esc(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(_cell(c, i == 0 or (i < len(left) and left[i])) for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


def _bar(fraction: float | None, kind: str = "") -> tuple[str, str]:
    """An HTML/CSS bar (0..1) followed by the percentage, as trusted cell markup."""
    if fraction is None:
        return ("html", "")
    width = max(0.0, min(1.0, float(fraction))) * 100
    return ("html", f"<span class='nw'><span class='bar {kind}'><span style='width:{width:.1f}%'></span></span>"
                    f"{100 * fraction:.1f}%</span>")


def _raw(value: Any, label: str = "raw JSON") -> str:
    return (f"<details><summary>{html.escape(label)}</summary><pre>"
            f"{html.escape(json.dumps(value, indent=1, default=str))}</pre></details>")


def _flatten(value: Any, prefix: str = "") -> list[list[Any]]:
    """Nested dicts as ``a.b`` → value rows; lists of records stay whole (they get their own tables)."""
    if isinstance(value, dict):
        rows: list[list[Any]] = []
        for key, item in value.items():
            rows += _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [[prefix, value]]


def _key_values(title: str, value: dict, skip: tuple[str, ...] = ()) -> str:
    """A readable setting → value table with the raw JSON collapsed under it."""
    rows = [row for row in _flatten({k: v for k, v in value.items() if k not in skip})
            if not (isinstance(row[1], list) and row[1] and isinstance(row[1][0], dict))]
    return f"<h2>{html.escape(title)}</h2>" + _table(["setting", "value"], rows) + _raw(value)


def shapes_text(shapes: dict[str, Any] | None) -> str:
    """``input[1,1,28,28]`` for one feed's shapes (several inputs separated by a space)."""
    if not isinstance(shapes, dict):
        return str(shapes or "")
    return " ".join(f"{name}[{','.join(map(str, dims))}]" for name, dims in shapes.items())


def _distinct_shapes(batches: list[dict] | None) -> list[str]:
    return list(dict.fromkeys(shapes_text(b) for b in batches or []))


# -- the summary card -----------------------------------------------------------------------------------------

def _tile(key: str, value: str, sub: str = "", bar: float | None = None) -> str:
    markup = _bar(bar)[1] if bar is not None else ""
    return (f"<div class='tile'><div class='k'>{html.escape(key)}</div><div class='v'>{value}</div>"
            f"<div class='s'>{markup}{' ' if markup else ''}{sub}</div></div>")


def _size_tiles(report: dict) -> list[str]:
    """Params, FLOPs (at the stated shapes) and file size before → after, with the kept fraction."""
    comparison = report.get("comparison") or {}
    label = (report.get("counted_at") or {}).get("label") or ""
    tiles = []
    for key, name, fmt in (("params", "parameters", format_count), ("flops", "FLOPs", format_count),
                           ("size_bytes", "file size", format_bytes)):
        entry = comparison.get(key)
        if not entry:
            continue
        ratio = entry.get("ratio")
        sub = "kept" + (f" · {html.escape(label)}" if key == "flops" and label else "")
        tiles.append(_tile(name, f"{html.escape(fmt(entry['before']))} → {html.escape(fmt(entry['after']))}",
                           sub, ratio))
    return tiles


def _latency_tile(report: dict) -> list[str]:
    """Measured latency before → after when a latency target timed both models."""
    budget = (report.get("settings") or {}).get("budget") or {}
    if budget.get("metric") != "latency" or not budget.get("rounds"):
        return []
    chosen = min(budget["rounds"], key=lambda r: abs(r["measured"] - budget["measured"]))
    where = budget.get("latency") or {}
    return [_tile("latency (measured)", f"{chosen['original_ms']:.3f} → {chosen['pruned_ms']:.3f} ms",
                  html.escape(f"of the original time · median of {chosen['runs']} interleaved runs, "
                              f"{where.get('provider', '')}"),
                  budget["measured"])]


def _agreement_tile(report: dict) -> list[str]:
    """Output agreement with the original on the calibration inputs (the model as written)."""
    errors = (report.get("calibration") or {}).get("output_error") or {}
    final = errors.get("recovered") or errors.get("pruned")
    if not final:
        return []
    outputs = final.get("outputs") or {}
    top1 = [o["agreement"] for o in outputs.values() if o.get("agreement") is not None]
    cosine = [o["cosine"] for o in outputs.values() if o.get("cosine") is not None]
    parts = [f"relative L2 {final['worst_relative_l2']:.4f}"] + ([f"cosine {min(cosine):.4f}"] if cosine else [])
    value = f"{100 * min(top1):.1f}% top-1" if top1 else html.escape(parts.pop(0))
    stage = "after recovery" if "recovered" in errors else "pruned"
    return [_tile("agreement with the original", value,
                  html.escape(" · ".join(parts + [f"{stage}, on calibration data"])))]


def _verification_tile(report: dict) -> list[str]:
    result = report.get("verification")
    if not result:
        return []
    worst = max((d.get("relative", 0.0) for d in result.get("diffs", [])), default=0.0)
    status = "<span class='ok'>passed</span>" if result.get("ok") else "<span class='bad'>FAILED</span>"
    shapes = _distinct_shapes(result.get("input_shapes"))
    return [_tile("verification (masked-reference oracle)", status,
                  html.escape(f"max relative error {worst:.2e} (tolerance {result.get('tolerance')})"
                              + (f" at {'; '.join(shapes)}" if shapes else "")))]


def _removed_text(report: dict) -> str:
    """``40 of 96 channels removed in 4 of 4 groups`` (units named by kind: heads, neurons, ...)."""
    groups = [g for g in report.get("groups") or [] if isinstance(g, dict) and "kept" in g and g.get("channels")]
    if not groups:
        return ""
    by_kind: dict[str, list[int]] = {}
    for g in groups:
        totals = by_kind.setdefault(str(g.get("kind") or "channel"), [0, 0, 0])
        totals[0] += g["channels"] - g["kept"]
        totals[1] += g["channels"]
        totals[2] += g["kept"] < g["channels"]
    parts = [f"{removed} of {units} {kind}s in {touched} of {sum(1 for g in groups if (g.get('kind') or 'channel') == kind)}"
             f" groups" for kind, (removed, units, touched) in sorted(by_kind.items())]
    return "removed " + "; ".join(parts)


def _warnings(report: dict) -> list[str]:
    """Everything a reader should not miss: notes, random calibration, rejected recovery, missed targets."""
    settings, calibration = report.get("settings") or {}, report.get("calibration") or {}
    notes = list(settings.get("notes") or []) + list(calibration.get("notes") or [])
    if calibration.get("random") and not any("random" in n for n in notes):
        notes.append("calibration used random inputs, not real data")
    recovery = report.get("recovery") or {}
    if recovery.get("status") == "rejected":
        notes.append(f"recovery '{recovery.get('method')}' rejected: {recovery.get('reason', '')}")
    budget = settings.get("budget") or {}
    if budget and not budget.get("within_tolerance", True):
        notes.append(f"measured {budget.get('metric')} ratio {budget.get('measured')} misses the target "
                     f"{budget.get('target')} by more than ±{budget.get('measure_tolerance')}")
    if report.get("verification") and report.get("verification_scope"):
        notes.append(f"verification checked {report['verification_scope']}")
    if report.get("ok") is False:
        notes.append("a threshold failed (ok: false)")
    return notes


def _command_text(command: Any) -> str:
    """The command as typed: ``onnxprune prune ...`` whether it ran as the script, ``python -m`` or cli.py."""
    if not isinstance(command, list):
        return str(command or "")
    program = pathlib.Path(str(command[0])).name if command else ""
    program = "onnxprune" if program in ("cli.py", "__main__.py", "onnxprune") else str(command[0] if command else "")
    return " ".join([program] + [str(part) for part in command[1:]])


def _steps(report: dict) -> list:
    """A recipe's steps (``results.steps``; ``steps`` in older reports)."""
    results = report.get("results") if isinstance(report.get("results"), dict) else {}
    return [step for step in report.get("steps") or results.get("steps") or [] if isinstance(step, dict)]


def _sparsity_text(results: Any) -> str:
    """One line for a ``sparsify`` result: pattern, achieved sparsity, compressed size (empty for anything else)."""
    if not isinstance(results, dict) or results.get("method") != "sparsity":
        return ""
    size = results.get("size") or {}
    text = (f"sparsity {results.get('sparsity', 0.0):.1%} ({results.get('pattern')}, {results.get('criterion')}): "
            f"{results.get('zeros', 0):,} of {results.get('weights', 0):,} weights zero in "
            f"{len(results.get('layers') or [])} layers")
    if size.get("gzip_before"):
        text += f"; gzip {format_bytes(size['gzip_before'])} → {format_bytes(size['gzip_after'])}"
    return text


def _step_facts(report: dict) -> list[str]:
    """One line per recipe step: what ran, whether it passed, what it wrote."""
    facts = []
    for number, step in enumerate(_steps(report), 1):
        status = "<span class='ok'>ok</span>" if step.get("ok", True) else "<span class='bad'>FAILED</span>"
        written = f" → <code>{_esc(step['output'])}</code>" if step.get("output") else ""
        sparsity = _sparsity_text(step.get("results"))
        facts.append(f"step {number}: {_esc(step.get('type'))} {_esc(step.get('name', ''))} {status}{written}"
                     + (f" · {html.escape(sparsity)}" if sparsity else ""))
    return facts


def _summary(report: dict, title: str) -> str:
    """The card a reader sees first: what was done to which model and what it cost."""
    command_text = _command_text(report.get("command"))
    facts = []
    if report.get("output"):
        facts.append(f"written to <code>{_esc(report['output'])}</code>")
    removed = _removed_text(report)
    if removed:
        facts.append(html.escape(removed) + (f" (criterion {_esc(report.get('criterion'))})"
                                              if report.get("criterion") else ""))
    if _sparsity_text(report.get("results")):
        facts.append(html.escape(_sparsity_text(report["results"])))
    runs = _distinct_shapes(report.get("runs_at"))
    if runs:
        facts.append("runs like the original at " + html.escape("; ".join(runs)))
    facts += _step_facts(report)
    if report.get("input_shapes") and not report.get("comparison"):
        facts.append("counted at " + html.escape(shapes_text(report["input_shapes"])))
    tiles = (_size_tiles(report) + _latency_tile(report) + _agreement_tile(report) + _verification_tile(report))
    warnings = "".join(f"<div class='warn'>⚠ {_esc(n)}</div>" for n in _warnings(report))
    return (f"<section class='card summary'><h1>{html.escape(title)}</h1>"
            + (f"<div>command: <code>{html.escape(command_text)}</code></div>" if command_text else "")
            + (f"<div class='tiles'>{''.join(tiles)}</div>" if tiles else "")
            + (f"<ul class='facts'>{''.join(f'<li>{f}</li>' for f in facts)}</ul>" if facts else "")
            + warnings + "</section>")


# -- sections ---------------------------------------------------------------------------------------------

def _comparison(report: dict) -> str:
    comparison = report.get("comparison")
    if not comparison:
        return ""
    rows = [[metric, v.get("before"), v.get("after"), v.get("ratio"), _bar(v.get("ratio"))]
            for metric, v in comparison.items()]
    label = (report.get("counted_at") or {}).get("label")
    shapes = f"<p>MACs and FLOPs {html.escape(label)}</p>" if label else ""
    return "<h2>Before → after</h2>" + shapes + _table(["metric", "before", "after", "ratio", "kept"], rows)


def _groups(report: dict) -> str:
    """Per group: units, kept (bar); sensitivity and the share of savings it contributed when present."""
    groups = report.get("groups") or []
    if not groups or not isinstance(groups[0], dict) or "kept" not in groups[0]:
        return ""
    sensitive = any(g.get("sensitivity") for g in groups)
    contributed = any(g.get("contribution") for g in groups)
    header = ["group", "label", "channels", "kept", "kept ratio"]
    header += ["sensitivity (rel. MSE alone)", "cosine alone"] if sensitive else []
    header += ["MACs saved", "share of MACs saved", "params saved", "share of params saved"] if contributed else []
    rows = []
    for g in groups:
        ratio = g["kept"] / g["channels"] if g.get("channels") else None
        row = [g.get("id"), g.get("label"), g.get("channels"), g.get("kept"), _bar(ratio)]
        if sensitive:
            sens = g.get("sensitivity") or {}
            row += [sens.get("rel_mse"), sens.get("cosine")]
        if contributed:
            part = g.get("contribution") or {}
            row += [part.get("macs"), _bar(part.get("macs_share"), "save"), part.get("params"),
                    _bar(part.get("params_share"), "save")]
        rows.append(row)
    totals = report.get("contributions")
    summary = "" if not totals else (
        f"<p>Saving per group: {_esc(totals.get('method'))}; the groups' MACs saved add up to "
        f"{_esc(totals.get('macs_saved'))} and their params saved to {_esc(totals.get('params_saved'))}.</p>")
    return "<h2>Kept channels per group</h2>" + summary + _table(header, rows)


def sensitivity_svg(rows: list[dict]) -> str:
    """Cosine similarity vs fraction removed, one polyline per group, as inline SVG (no matplotlib)."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row.get("cosine") is not None:
            curves.setdefault(f"{row.get('group')} {str(row.get('label'))[:40]}", []).append(
                (float(row.get("ratio", 0.0)), float(row["cosine"])))
    if not curves:
        return ""
    xmax = 1.0  # the fraction of a group removed: the whole range, so curves of two reports compare
    ymin = min(0.0, min(y for points in curves.values() for _, y in points))
    left, top, width, height = 56, 10, 520, 220

    def at(x: float, y: float) -> str:
        return f"{left + width * x / xmax:.1f},{top + height * (1 - (y - ymin) / (1 - ymin or 1)):.1f}"

    grid = "".join(f"<line x1='{left}' x2='{left + width}' y1='{top + height * i / 4:.1f}' "
                   f"y2='{top + height * i / 4:.1f}' stroke='#e3e7ec'/><text x='{left - 6}' "
                   f"y='{top + height * i / 4 + 4:.1f}' text-anchor='end'>{1 - (1 - ymin) * i / 4:.2f}</text>"
                   for i in range(5))
    ticks = "".join(f"<text x='{left + width * i / 4:.1f}' y='{top + height + 16}' text-anchor='middle'>"
                    f"{xmax * i / 4:.2f}</text>" for i in range(5))
    lines, legend = [], []
    for index, (label, points) in enumerate(curves.items()):
        colour = PALETTE[index % len(PALETTE)]
        points.sort()
        lines.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.6' "
                     f"points='{' '.join(at(x, y) for x, y in [(0.0, 1.0)] + points)}'/>")
        legend.append(f"<li><i style='background:{colour}'></i>{html.escape(label)}</li>")
    return (f"<svg class='chart' viewBox='0 0 {left + width + 20} {top + height + 36}' role='img' "
            f"aria-label='sensitivity curves'>{grid}{ticks}{''.join(lines)}"
            f"<text transform='translate(12 {top + height / 2}) rotate(-90)' text-anchor='middle'>cosine</text>"
            f"<text x='{left + width / 2}' y='{top + height + 32}' text-anchor='middle'>fraction of the group removed "
            f"(alone)</text></svg><ul class='legend'>{''.join(legend)}</ul>")


def _sensitivity(report: dict, charts: bool) -> str:
    rows = (report.get("sensitivity") or {}).get("rows") or []
    if not rows:
        return ""
    table = _table(["group", "label", "ratio", "cosine", "rel_mse", "top1_agreement"],
                   [[r.get("group"), r.get("label"), r.get("ratio"), r.get("cosine"), r.get("rel_mse"),
                     r.get("top1_agreement")] for r in rows])
    chart = ("<p>Cosine similarity of the outputs to the original when each group alone is pruned:</p>"
             + sensitivity_svg(rows)) if charts else ""
    return ("<h2>Sensitivity (each group pruned alone)</h2>" + chart
            + f"<details><summary>all {len(rows)} measurements</summary>{table}</details>")


def _budget(report: dict) -> str:
    """The target, what was achieved, and for latency every estimated vs measured round."""
    budget = (report.get("settings") or {}).get("budget")
    if not budget:
        return ""
    fields = [[k, v] for k, v in budget.items() if not isinstance(v, (list, dict))]  # nested: in the raw JSON
    part = f"<h2>Budget: {_esc(budget.get('metric'))} target {_esc(budget.get('target'))}</h2>"
    part += _table(["", "value"], fields)
    if budget.get("rounds"):
        part += "<p>Latency ratio estimated from the per-layer tables vs measured (pruned / original):</p>"
        part += _table(["round", "searched for", "estimated", "measured", "original ms", "pruned ms", "runs"],
                       [[i + 1, r.get("searched_for"), _bar(r.get("estimated")), _bar(r.get("measured"), "save"),
                         r.get("original_ms"), r.get("pruned_ms"), r.get("runs")]
                        for i, r in enumerate(budget["rounds"])])
    return part + _raw(budget)


def _calibration(report: dict) -> str:
    calibration = report.get("calibration")
    if not calibration:
        return ""
    facts = {k: v for k, v in calibration.items() if k != "output_error"}
    rows = []
    for stage, result in (calibration.get("output_error") or {}).items():
        for name, metrics in (result.get("outputs") or {}).items():
            rows.append([stage, name, metrics.get("relative_l2"), metrics.get("cosine"),
                         _bar(metrics.get("agreement")) if metrics.get("agreement") is not None else None,
                         metrics.get("max_abs")])
    errors = ("<p>Outputs compared with the original model on the calibration inputs:</p>"
              + _table(["model", "output", "relative L2", "cosine", "top-1 agreement", "max abs"], rows)) if rows else ""
    return "<h2>Calibration</h2>" + _table(["", "value"], _flatten(facts)) + errors + _raw(calibration)


def _recovery(report: dict) -> str:
    recovery = report.get("recovery")
    if not recovery or recovery.get("method") == "none":
        return ""
    layers = recovery.get("layers") or []
    facts = {k: v for k, v in recovery.items() if k != "layers"}
    table = _table(["layer", "op", "status", "edit", "rel. error before", "rel. error after"],
                   [[layer.get("node"), layer.get("op"), layer.get("status"), layer.get("edit") or layer.get("reason"),
                     layer.get("relative_error_before"), layer.get("relative_error_after")] for layer in layers])
    return (f"<h2>Recovery: {_esc(recovery.get('method'))}</h2>" + _table(["", "value"], _flatten(facts))
            + (table if layers else "") + _raw(recovery))


def _verification(report: dict) -> str:
    result = report.get("verification")
    if not result:
        return ""
    worst = max((d.get("relative", 0.0) for d in result.get("diffs", [])), default=0.0)
    status = "<span class='ok'>passed</span>" if result.get("ok") else "<span class='bad'>FAILED</span>"
    rows = [[d.get("name"), d.get("batch"), "default" if d.get("optimized") else "ORT_DISABLE_ALL",
             d.get("max_abs"), d.get("relative"), ("html", "<span class='ok'>ok</span>" if d.get("ok")
                                                    else "<span class='bad'>differs</span>")]
            for d in result.get("diffs", [])]
    return (f"<h2>Verification</h2><p>masked-reference oracle {status}: max relative error {worst:.3g} "
            f"(tolerance {_esc(result.get('tolerance'))}).</p>"
            + f"<details><summary>{len(rows)} comparisons</summary>"
            + _table(["output", "batch", "optimization", "max abs", "relative", ""], rows) + "</details>")


def _results(report: dict) -> str:
    """validate / bench / quantize results: a table per list of records (outputs, models), the scalars as
    setting → value rows, the JSON collapsed.  A recipe's steps get their own sections instead."""
    results = report.get("results")
    if not isinstance(results, dict) or not results:
        return ""
    part = "<h2>Results</h2>"
    for key, value in results.items():
        if key != "steps" and isinstance(value, list) and value and isinstance(value[0], dict):
            columns = [k for k in value[0] if not isinstance(value[0][k], (dict, list))]
            part += f"<p>{_esc(key)}:</p>" + _table(columns, [[record.get(k) for k in columns] for record in value])
    scalars = [row for row in _flatten({k: v for k, v in results.items() if k not in ("steps", "recipe")})
               if not (isinstance(row[1], list) and row[1] and isinstance(row[1][0], dict))]
    return part + _table(["", "value"], scalars) + _raw({k: v for k, v in results.items() if k != "steps"})


def _section(report: dict, charts: bool) -> str:
    parts = [_comparison(report), _groups(report), _sensitivity(report, charts), _budget(report),
             _calibration(report), _recovery(report), _verification(report), _results(report)]
    if report.get("settings"):
        parts.append(_key_values("Settings", report["settings"], skip=("budget",)))
    return "".join(parts)


def render_html(report: dict, title: str = "onnxprune report", plots: bool = True) -> str:
    """One self-contained page for a prune, validate, bench, quantize or recipe report (``plots``: charts)."""
    body = [_summary(report, title), _section(report, plots)]
    for index, step in enumerate(_steps(report)):
        if isinstance(step, dict):
            inner = step.get("report") or step.get("results") or {}
            inner = inner if "comparison" in inner or "groups" in inner else {"results": inner}  # prune: a report
            body.append(f"<h2>Step {index + 1}: {_esc(step.get('type', ''))} {_esc(step.get('name', ''))}</h2>"
                        + _section(inner, plots))
    body.append(_raw(report, "Full JSON report"))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(path: str | os.PathLike, report: dict, title: str = "onnxprune report") -> pathlib.Path:
    """``.html`` → a page for people; anything else → the JSON report."""
    if pathlib.Path(path).suffix.lower() in (".html", ".htm"):
        return write_text(path, render_html(report, title))
    return write_json(path, report)


def sensitivity_png(rows: list[dict]) -> bytes | None:
    """Cosine similarity vs ratio, one curve per group, as PNG bytes (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
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
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
