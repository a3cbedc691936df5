"""The exporter-pattern models of ``models/`` through the real CLI: ``prune --ratio 0.3 --verify --json``.

For each pattern model (``models/generate_shape_models.py``: Paddle2ONNX Cast chains, YOLOv8 anchors, Swin
Roll/Pad/window partition, tf2onnx LSTM, compute inside ``If``, a Llama-like KV-cache decoder, plus the
trained CTC digit recognizer) one fresh child runs

    python -m onnxprune.cli prune MODEL -o OUT --ratio 0.3 --verify --json [--input-shape ...] [--calib ...]

with ``PYTHONPATH`` = this checkout (the child's ``command[0]`` in the JSON is checked to be this checkout's
``onnxprune/cli/app.py``). Recorded from the JSON report: exit code, params and FLOPs ratios and the shapes
they were counted at (``input_shapes`` / ``counted_at``), the shapes the pruned model was run at
(``runs_at``) and verified at (``verification.input_shapes``), ``verification.ok``, and the child's wall
time. The two Swin blocks also run with ``--round-to 1`` next to the default ``--round-to auto``.

If ``import torch`` works, a Swin-T-sized export (``build_swin_t``: embed 96, depths 2-2-6-2, heads
3-6-12-24, static 224x224, ~113 MB) is built into a temporary directory (removed at the end, also on error,
Ctrl-C or SIGTERM) and pruned the same way; otherwise its row says it was skipped.

The issue's claim: "The Swin-style block and a Swin-T-sized export prune heads and FFN neurons
(params <= x0.85 at 0.3)". Each row says whether it holds.

    python benchmarks/bench_shape_patterns.py [--out benchmarks/results_shape_patterns.md] [--json FILE]
        [--no-swin-t] [--timeout 600]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from repo_paths import HERE, MODELS, ROOT  # noqa: E402,F401 - the onnxprune next to this script, not an installed copy

from bench_core import machine_info  # noqa: E402

RATIO = 0.3
CLAIM = 0.85  # the issue: params <= x0.85 at --ratio 0.3 for the Swin block and the Swin-T-sized export
SWIN_CLAIM = {"swin_block", "swin_block_dynamic", "Swin-T-sized (build_swin_t)"}

# label, file in models/, extra CLI args, also with --round-to 1
CASES: list[tuple[str, str, list[str], bool]] = [
    ("paddle_recognizer", "paddle_recognizer.onnx", [], False),
    ("digit_recognizer", "digit_recognizer.onnx", ["--calib", str(MODELS / "digit_lines_calib.npz")], False),
    ("yolov8_head", "yolov8_head.onnx", ["--input-shape", "images:1,3,320,320"], False),
    ("swin_block", "swin_block.onnx", [], True),
    ("swin_block_dynamic", "swin_block_dynamic.onnx", ["--input-shape", "pixel_values:1,3,56,56"], True),
    ("swin_t_reduced", "swin_t_reduced.onnx", ["--input-shape", "pixel_values:1,3,224,224"], False),
    ("tf2onnx_lstm", "tf2onnx_lstm.onnx", [], False),
    ("if_compute", "if_compute.onnx", [], False),
    ("llama_kv_decoder", "llama_kv_decoder.onnx", [], False),
]


@dataclass
class Row:
    label: str
    args: list[str]
    round_to: str = "auto"
    exit: int | None = None
    wall_s: float = float("nan")
    params: float | None = None
    flops: float | None = None
    counted_at: str = ""
    runs_at: str = ""
    verified_at: str = ""
    verify_ok: bool | None = None
    heads: str = ""
    ffn: str = ""
    error: str = ""
    skipped: str = ""
    report: dict = field(default_factory=dict)


def shapes_text(value) -> str:
    """``{"x": [1, 3, 56, 56]}`` or a list of those, as ``x 1×3×56×56``; repeated entries once each."""
    if value is None:
        return "—"
    items = value if isinstance(value, list) else [value]
    seen: list[str] = []
    for item in items:
        if isinstance(item, dict):
            text = ", ".join((f"{k} {'×'.join(str(d) for d in v)}" if v else f"{k} scalar") if isinstance(v, list) else f"{k} {v}"
                             for k, v in item.items())
        else:
            text = str(item)
        if text not in seen:
            seen.append(text)
    return "; ".join(seen) if seen else "—"


def kind_summary(groups: list[dict], kind: str) -> str:
    """``3→3`` style summary of the kept units of every group of one kind (distinct pairs, with counts)."""
    pairs: dict[str, int] = {}
    for group in groups:
        if group.get("kind") == kind:
            key = f"{group['channels']}→{group['kept']}"
            pairs[key] = pairs.get(key, 0) + 1
    return ", ".join(f"{k}" + (f" (×{n})" if n > 1 else "") for k, n in pairs.items()) or "—"


def run_prune(row: Row, model: Path, scratch: Path, timeout: float) -> None:
    out = scratch / f"{model.stem}-{row.round_to}.onnx"
    cmd = [sys.executable, "-m", "onnxprune.cli", "prune", str(model), "-o", str(out), "--ratio", str(RATIO),
           "--verify", "--json", *row.args]
    if row.round_to != "auto":
        cmd += ["--round-to", row.round_to]
    row.args = cmd[1:]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        row.wall_s = time.perf_counter() - start
        row.error = f"timeout after {timeout:.0f} s"
        return
    row.wall_s = time.perf_counter() - start
    row.exit = proc.returncode
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = {}
    if proc.returncode != 0 or not report:
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["(no message)"])[-1]
        row.error = tail[:200]
    if not report:
        return
    where = (report.get("command") or [""])[0]
    if not str(where).startswith(str(ROOT)):
        raise SystemExit(f"child ran onnxprune from {where}, not from {ROOT}")
    row.report = report
    comparison = report.get("comparison", {})
    row.params = comparison.get("params", {}).get("ratio")
    row.flops = comparison.get("flops", {}).get("ratio")
    counted = report.get("counted_at") or {}
    row.counted_at = shapes_text(counted.get("counted_at") or report.get("input_shapes"))
    if counted.get("per_sample"):
        row.counted_at += " (per sample)"
    row.runs_at = shapes_text(report.get("runs_at"))
    verification = report.get("verification") or {}
    row.verify_ok = verification.get("ok")
    row.verified_at = shapes_text(verification.get("input_shapes"))
    groups = report.get("groups") or []
    row.heads = kind_summary(groups, "head")
    row.ffn = kind_summary(groups, "neuron")


def build_swin_t_model(folder: Path) -> tuple[Path | None, str]:
    try:
        import torch  # noqa: F401
    except Exception as error:  # noqa: BLE001 - any import failure means "no torch here"
        return None, f"skipped: `import torch` failed ({type(error).__name__}: {error})"
    from generate_shape_models import build_swin_t

    start = time.perf_counter()
    path = build_swin_t(folder / "swin_t.onnx")
    return path, f"built by `build_swin_t` in {time.perf_counter() - start:.0f} s, {path.stat().st_size / 1e6:.1f} MB"


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def claim_text(row: Row) -> str:
    if row.label not in SWIN_CLAIM:
        return "n/a"
    if row.skipped:
        return "not measured"
    if row.params is None:
        return "**no** (failed)"
    return "yes" if row.params <= CLAIM else "**no**"


def write_report(rows: list[Row], info: dict[str, str], swin_note: str, elapsed: float, out: Path) -> None:
    lines = [
        "# Exporter-pattern models through `prune --ratio 0.3 --verify`",
        "",
        f"Generated by `python benchmarks/bench_shape_patterns.py` in {elapsed / 60:.1f} min. "
        "Do not edit: rerun the script.",
        "",
        "## Machine",
        "",
        *[f"* {k}: {v}" for k, v in info.items()],
        "",
        "## Method",
        "",
        "Each row is one fresh child, the real CLI with `PYTHONPATH` = this checkout:",
        "",
        "```bash",
        "python -m onnxprune.cli prune MODEL -o OUT --ratio 0.3 --verify --json [--input-shape …] [--calib …] "
        "[--round-to 1]",
        "```",
        "",
        "* *params* / *FLOPs* — `comparison.*.ratio` of the JSON report (pruned / original); *counted at* — "
        "`counted_at` (the shapes the counts were taken at; `input_shapes` when given).",
        "* *runs at* — `runs_at` (the shapes the pruned model was run at by the run check); *verified at* — "
        "`verification.input_shapes` (masked-reference oracle, onnxruntime with and without graph "
        "optimizations); *ok* — `verification.ok`.",
        "* *heads* / *FFN* — `groups` of kind `head` / `neuron` as channels→kept (×n groups alike).",
        "* *wall s* — the child's whole wall time (start-up, prune, verify), single run: the machine has 2 "
        "cores and may be shared, so read it as an order of magnitude.",
        f"* *≤ ×{CLAIM}* — the issue's claim (\"The Swin-style block and a Swin-T-sized export prune heads and "
        "FFN neurons (params ≤ ×0.85 at 0.3)\"), for the Swin rows only.",
        f"* Swin-T-sized: {swin_note}.",
        "",
        "## Results",
        "",
        "| model | round-to | exit | params | FLOPs | counted at | runs at | verified at | ok | heads | FFN | "
        f"wall s | ≤ ×{CLAIM} |",
        "|---|---|---:|---:|---:|---|---|---|---|---|---|---:|---|",
    ]
    for row in rows:
        if row.skipped:
            lines.append(f"| {row.label} | {row.round_to} | — | — | — | — | — | — | — | — | — | — | "
                         f"{claim_text(row)} ({row.skipped}) |")
            continue
        ok = "—" if row.verify_ok is None else ("✓" if row.verify_ok else "**✗**")
        lines.append(f"| {row.label} | {row.round_to} | {row.exit if row.exit is not None else '—'} | "
                     f"{fmt(row.params)} | {fmt(row.flops)} | {row.counted_at or '—'} | {row.runs_at or '—'} | "
                     f"{row.verified_at or '—'} | {ok} | {row.heads or '—'} | {row.ffn or '—'} | "
                     f"{row.wall_s:.1f} | {claim_text(row)} |")
    failures = [r for r in rows if r.error]
    if failures:
        lines += ["", "## Failures", ""]
        for row in failures:
            lines.append(f"* **{row.label}** (round-to {row.round_to}): `{shlex.join(row.args)}` → {row.error}")
    by_key = {(r.label, r.round_to): r for r in rows}
    lines += ["", "## The claim, per model", ""]
    for label in ("swin_block", "swin_block_dynamic", "Swin-T-sized (build_swin_t)"):
        for round_to in ("auto", "1"):
            row = by_key.get((label, round_to))
            if row is None:
                continue
            if row.skipped:
                lines.append(f"* {label}, `--round-to {round_to}`: not measured ({row.skipped}).")
            elif row.params is None:
                lines.append(f"* {label}, `--round-to {round_to}`: failed ({row.error}).")
            else:
                verdict = "holds" if row.params <= CLAIM else "does **not** hold"
                lines.append(f"* {label}, `--round-to {round_to}`: params ×{row.params:.3f} — the claim {verdict}; "
                             f"heads {row.heads}, FFN {row.ffn}.")
    lines += [
        "",
        "## Why the Swin block stays above ×0.85 with the default `--round-to auto`",
        "",
        "`--ratio 0.3` asks to remove *at most* 30 % of each group. Kept counts are rounded **up** (to a whole "
        "head, and to the alignment multiple for neurons), so the cut never exceeds what was asked:",
        "",
        "* **Heads.** The block has 3 heads per attention; 0.7 × 3 = 2.1 heads kept → rounded up to 3. No "
        "head is removed (removing one would cut 33 % > 30 %).",
        "* **FFN neurons.** 0.7 × 192 = 134.4 → with `--round-to auto` (multiples of 16 on the CPU provider, "
        "see `benchmarks/results_round_to.md`) rounded up to 144, i.e. 25 % removed instead of 30 %. With "
        "`--round-to 1` it is 135 (29.7 % removed).",
        "",
        "So on this tiny block (embed 48, 3 heads) no head can go and only the FFN shrinks, by 25 %: params "
        "≈ ×0.87. With `--round-to 1` the FFN loses 57 of 192 neurons (the most 30 % allows) and params reach "
        "≈ ×0.85 — measured just above it (see the table), so even then the block meets the claim only to "
        "two decimals; removing a 58th neuron would exceed the 30 % asked for. The Swin-T-sized export has 3–24 "
        "heads per stage and FFN widths 384–3072: whole heads go in every stage but the first (see its *heads* "
        "column) and rounding up to a multiple of 16 costs little at those widths, so it lands well below ×0.85.",
        "",
    ]
    out.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results_shape_patterns.md")
    parser.add_argument("--json", type=Path, default=None, help="also write every row with its full JSON report")
    parser.add_argument("--no-swin-t", action="store_true", help="skip the Swin-T-sized export (saves ~2.5 min)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per-child timeout in seconds")
    args = parser.parse_args()

    start = time.perf_counter()
    info = machine_info()
    scratch = Path(tempfile.mkdtemp(prefix="onnxprune-patterns-"))

    def cleanup(*_):
        shutil.rmtree(scratch, ignore_errors=True)
        if _:
            raise SystemExit(1)

    signal.signal(signal.SIGTERM, cleanup)
    rows: list[Row] = []
    try:
        for label, name, extra, also_one in CASES:
            for round_to in (("auto", "1") if also_one else ("auto",)):
                row = Row(label, list(extra), round_to)
                run_prune(row, MODELS / name, scratch, args.timeout)
                rows.append(row)
                print(f"  {label:20} round-to {round_to:4}: exit {row.exit}, params {fmt(row.params)}, "
                      f"FLOPs {fmt(row.flops)}, ok {row.verify_ok}, {row.wall_s:.1f} s {row.error}", flush=True)
        swin_label = "Swin-T-sized (build_swin_t)"
        if args.no_swin_t:
            swin_path, swin_note = None, "skipped: `--no-swin-t`"
        else:
            swin_path, swin_note = build_swin_t_model(scratch)
        if swin_path is None:
            rows.append(Row(swin_label, [], skipped=swin_note))
        else:
            row = Row(swin_label, [])
            run_prune(row, swin_path, scratch, args.timeout)
            rows.append(row)
            print(f"  {swin_label}: exit {row.exit}, params {fmt(row.params)}, FLOPs {fmt(row.flops)}, "
                  f"ok {row.verify_ok}, {row.wall_s:.1f} s {row.error}", flush=True)
        print(f"  Swin-T-sized: {swin_note}")
        info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        write_report(rows, info, swin_note, time.perf_counter() - start, args.out)
        if args.json:
            args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=1, default=str))
        print(f"wrote {args.out}")
    finally:
        cleanup()


if __name__ == "__main__":
    main()
