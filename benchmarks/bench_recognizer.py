"""Benchmark: does a text recognizer pruned to ``--target-flops 0.7`` with calibration keep its task metric?

Run from the repository root::

    python benchmarks/bench_recognizer.py [--out benchmarks/results_recognizer.md] [--json FILE] [--keep DIR]

The model is ``models/digit_recognizer.onnx`` (a CTC text-line recognizer, PaddleOCR rec layout: input
``x`` [N,3,32,W] with batch and width dynamic, output ``probs`` [N,T,11], blank 0; its attention Reshape
targets are written the way Paddle2ONNX writes them, through Cast int64->int32->int64 chains; see
``models/train_digit_recognizer.py``).  The task metric is **exact match**: the greedy CTC decoding of a
line equals its whole digit string.  **Character accuracy** is ``1 - edit distance / reference length``
summed over all lines.  Both are measured on the 500 held-out lines of ``models/digit_lines_test.npz``
(digits disjoint from training and calibration) twice:

* **W = 160**: every line padded on the right with background to the stored width 160 (one batch shape),
* **tight W**: every line cut to its own width rounded up to a multiple of 16 (48 ... 160), run in one
  batch per width -- so the model has to work at widths other than the calibration width.

Variants, each made by the real CLI in a fresh child (``python -m onnxprune.cli prune ...``):

1. the issue's command: ``--target-flops 0.7 --calib models/digit_lines_calib.npz`` (64 lines, W = 160),
   with the calibrated default criterion (``fluctuation``) and with ``--criterion reconstruction``;
2. uniform ``--ratio`` 0.1 / 0.2 / 0.3 with the same calibration, for comparison;
3. uniform ``--ratio`` 0.0 and 0.3 without calibration (l2 weight criterion), which separates a failure of the
   calibration pass from a failure of the written model (0.0 must reproduce the original).

With ``--calib`` the CLI counts FLOPs at the calibration data's shape (one [1, 3, 32, 160] line); without
it every symbolic dim is 1 (**W = 1**).  The report gives the FLOPs ratio both as the CLI measures it and at
one line of the calibration shape.

A variant whose prune fails, or whose model fails to run, is reported with its command and error; the
script itself does not fail.  ``evaluate()`` is importable without torch (numpy + onnxruntime only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
MODEL = MODELS / "digit_recognizer.onnx"
CALIB = MODELS / "digit_lines_calib.npz"
TEST = MODELS / "digit_lines_test.npz"
INPUT, OUTPUT = "x", "probs"
BLANK = 0
LINE_SHAPE = (1, 3, 32, 160)
WIDTH_STEP = 16
RATIOS = (0.1, 0.2, 0.3)
RATIOS_NO_CALIB = (0.0, 0.3)  # weight criterion (l2), no statistics: separates "calibration fails" from "model fails"
TARGET_FLOPS = 0.7
CLAIM_POINTS = 2.0


# ------------------------------------------------------------------------------------------- metric


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """uint8 [n, 32, W] -> float32 [n, 3, 32, W] in [-1, 1] (as ``models/train_digit_recognizer.py``)."""
    x = (pixels.astype(np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(np.repeat(x[:, None], 3, axis=1))


def ctc_greedy(probs: np.ndarray) -> list[list[int]]:
    """Greedy CTC decoding of [N, T, 11]: argmax per step, merge repeats, drop blanks, class c = digit c - 1."""
    best = probs.argmax(-1)
    out = []
    for row in best:
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        out.append([int(c) - 1 for c in row[keep] if c != BLANK])
    return out


def edit_distance(a: list[int], b: list[int]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def scores(decoded: list[list[int]], truth: list[list[int]]) -> dict:
    """Exact match and character accuracy (1 - total edit distance / total reference characters)."""
    edits = sum(edit_distance(d, t) for d, t in zip(decoded, truth))
    chars = sum(len(t) for t in truth)
    return {"exact_match": float(np.mean([d == t for d, t in zip(decoded, truth)])),
            "char_accuracy": 1.0 - edits / chars}


def _session(model_path: str | Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, pixels: np.ndarray, batch: int) -> np.ndarray:
    outs = [session.run([OUTPUT], {INPUT: preprocess(pixels[i:i + batch])})[0] for i in range(0, len(pixels), batch)]
    return np.concatenate(outs)


def evaluate(model_path: str | Path, test_npz: str | Path = TEST, *, tight: bool = True, batch: int = 100,
             threads: int = 1) -> dict:
    """Exact match and character accuracy of a recognizer on a ``digit_lines_test.npz``-style file.

    Returns ``{"lines", "exact_match", "char_accuracy", "width"}`` for the lines padded to the stored
    width and, with ``tight``, ``"tight": {"exact_match", "char_accuracy", "widths"}`` for the lines cut
    to their own width rounded up to a multiple of 16 (one run per width).  Needs numpy + onnxruntime.
    """
    data = np.load(test_npz)
    pixels, labels, lengths = data["pixels"], data["labels"], data["lengths"]
    truth = [row[:n] for row, n in zip(labels.tolist(), lengths.tolist())]
    session = _session(model_path, threads)
    result = {"lines": int(len(pixels)), "width": int(pixels.shape[-1]),
              **scores(ctc_greedy(_run(session, pixels, batch)), truth)}
    if tight:
        full = pixels.shape[-1]
        cut = np.minimum(-(-data["widths"] // WIDTH_STEP) * WIDTH_STEP, full)
        decoded: list[list[int] | None] = [None] * len(pixels)
        for width in sorted(set(cut.tolist())):
            rows = np.flatnonzero(cut == width)
            for row, line in zip(rows, ctc_greedy(_run(session, pixels[rows, :, :width], batch))):
                decoded[row] = line
        result["tight"] = {**scores(decoded, truth), "widths": sorted(set(cut.tolist()))}
    return result


# ---------------------------------------------------------------------------------------- variants


def static_copy(model: onnx.ModelProto, shape: tuple[int, ...]) -> onnx.ModelProto:
    """The model with its input fixed to ``shape`` (intermediate shapes cleared), for counting."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, shape):
        dim.Clear()
        dim.dim_value = value
    del fixed.graph.value_info[:]
    for out in fixed.graph.output:
        out.type.tensor_type.ClearField("shape")
    return fixed


def counts(path: Path) -> dict:
    from onnxprune.measurement.counting import count_model

    model = onnx.load(path)
    cli = count_model(model)
    line = count_model(static_copy(model, LINE_SHAPE))
    return {"params": cli.params, "flops_cli": 2 * cli.macs, "flops_line": 2 * line.macs}


def prune_cli(args: list[str], out: Path) -> dict:
    """``onnxprune prune MODEL -o OUT ARGS`` in a fresh child; the command, exit code, seconds and output."""
    cmd = [sys.executable, "-m", "onnxprune.cli", "prune", str(MODEL), "-o", str(out), *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    shown = "onnxprune prune " + " ".join(_short(a, out.parent) for a in cmd[4:])
    return {"command": shown, "exit": proc.returncode, "seconds": time.perf_counter() - start,
            "stderr": proc.stderr.strip(), "stdout": proc.stdout.strip()}


def _short(arg: str, scratch: Path) -> str:
    """Scratch paths as $OUT/..., repository paths relative, so the report shows reproducible commands."""
    if arg.startswith(str(scratch)):
        return "$OUT/" + arg[len(str(scratch)):].lstrip("/")
    if arg.startswith(str(ROOT)):
        return arg[len(str(ROOT)):].lstrip("/")
    return shlex.quote(arg)


def reshape_targets(path: Path) -> list[str]:
    """Each Reshape's target spelled out, e.g. ``Concat(init [0], Cast(Slice(Cast(Shape(...)), ...)), const [96])``."""
    model = onnx.load(path)
    producer = {out: node for node in model.graph.node for out in node.output}
    inits = {init.name: init for init in model.graph.initializer}

    def spell(name: str, depth: int = 0) -> str:
        if name in inits:
            return f"init {onnx.numpy_helper.to_array(inits[name]).tolist()}"
        node = producer.get(name)
        if node is None:
            return "input"
        if node.op_type == "Constant":
            return f"const {onnx.numpy_helper.to_array(node.attribute[0].t).tolist()}"
        if node.op_type == "Shape" or depth > 4:
            return node.op_type
        return f"{node.op_type}(" + ", ".join(spell(i, depth + 1) for i in node.input if i) + ")"

    return [spell(node.input[1]) for node in model.graph.node if node.op_type == "Reshape"]


def variant(label: str, args: list[str], scratch: Path) -> dict:
    slug = "".join(c if c.isalnum() or c == "." else "_" for c in label).strip("_")
    out = scratch / f"{'_'.join(filter(None, slug.split('_')))}.onnx"
    row: dict = {"label": label, **prune_cli(args, out)}
    if row["exit"] != 0 or not out.exists():
        row["error"] = _last_line(row["stderr"]) or f"exit {row['exit']}, no model written"
        return row
    row["reshape_targets"] = sorted(set(reshape_targets(out)))
    try:
        row.update(counts(out))
    except Exception as err:  # counting is informative only
        row["count_error"] = f"{type(err).__name__}: {err}".splitlines()[0]
    try:
        row["metrics"] = evaluate(out, TEST)
    except Exception as err:  # onnxruntime raises its own exception types
        row["error"] = f"pruned model does not run: {type(err).__name__}: {err}".splitlines()[0]
        try:  # which widths still run?
            row["metrics"] = evaluate(out, TEST, tight=False)
            row["error"] += " (the W = 160 evaluation ran)"
        except Exception:
            pass
    return row


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------------------------ report


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _delta(x: float | None, base: float) -> str:
    return "—" if x is None else f"{100 * (x - base):+.1f}"


def report(base: dict, rows: list[dict], total_s: float) -> list[str]:
    m0 = base["metrics"]
    lines = [f"# Text recognizer: task metric after pruning ({dt.date.today().isoformat()})", "",
             f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}, "
             f"Python {platform.python_version()}, {platform.machine()}; "
             f"`python benchmarks/bench_recognizer.py` ({total_s:.0f} s).", "",
             "Model `models/digit_recognizer.onnx` (CTC digit-line recognizer, input `x` [N,3,32,W], batch and width "
             "dynamic, Paddle2ONNX-style Cast-chain Reshape targets). Test: "
             f"{m0['lines']} held-out lines of `models/digit_lines_test.npz`; calibration: "
             "`models/digit_lines_calib.npz` (64 lines, W = 160). Exact match = whole line correct after greedy "
             "CTC decoding; char acc = 1 − edit distance / reference characters. **W = 160**: lines padded to "
             f"160; **tight W**: lines cut to their width rounded up to {WIDTH_STEP} "
             f"({', '.join(map(str, m0['tight']['widths']))}). FLOPs (CLI) = as `onnxprune` measures "
             "them (at the calibration shape with --calib, else every symbolic dim = 1); FLOPs (line) = one "
             "[1,3,32,160] line.", "",
             f"Claim (issue): `--target-flops {TARGET_FLOPS}` with calibration keeps exact match within "
             f"{CLAIM_POINTS:g} points.", ""]
    for issue in rows[:2]:
        lines.append(f"**Verdict ({issue['label']}): {verdict(issue, m0)}**")
        lines.append("")
    lines += ["", "| variant | params × | FLOPs (CLI) × | FLOPs (line) × | exact W=160 | Δ | char acc | "
              "exact tight W | Δ | char acc tight | prune s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    t0 = m0["tight"]
    lines.append(f"| original | 1 | 1 | 1 | {_pct(m0['exact_match'])} | | {_pct(m0['char_accuracy'])} | "
                 f"{_pct(t0['exact_match'])} | | {_pct(t0['char_accuracy'])} | |")
    for row in rows:
        m = row.get("metrics", {})
        t = m.get("tight", {})
        ratio = lambda key: f"{row[key] / base[key]:.3f}" if key in row else "—"  # noqa: E731
        lines.append(f"| {row['label']} | {ratio('params')} | {ratio('flops_cli')} | {ratio('flops_line')} | "
                     f"{_pct(m.get('exact_match'))} | {_delta(m.get('exact_match'), m0['exact_match'])} | "
                     f"{_pct(m.get('char_accuracy'))} | {_pct(t.get('exact_match'))} | "
                     f"{_delta(t.get('exact_match'), t0['exact_match'])} | {_pct(t.get('char_accuracy'))} | "
                     f"{row['seconds']:.1f} |")
    lines += ["", "FLOPs are counted from the written file; the Reshape targets listed below show that the sequence "
              "length stays computed at run time (no probe value is baked in).", "",
              "Reshape targets of the original: " + "; ".join(f"`{t}`" for t in sorted(set(base["reshape_targets"])))
              + ".", "",
              f"Original: {base['params']:,} params, {base['flops_line'] / 1e6:.2f} MFLOPs per 160-wide line "
              f"({base['flops_cli'] / 1e6:.3f} MFLOPs at W = 1).", "", "## Commands and outcomes", ""]
    for row in rows:
        lines.append(f"* **{row['label']}**: `{row['command']}` → exit {row['exit']}")
        if row.get("error"):
            lines.append(f"  * error: `{row['error']}`")
        if row.get("count_error"):
            lines.append(f"  * counting error: `{row['count_error']}`")
        summary = [ln for ln in (row.get("stdout", "") + "\n" + row.get("stderr", "")).splitlines()
                   if ln.strip() and ln.strip() != row.get("error")]
        if summary:
            lines.append("  * CLI output (last lines): " + " / ".join(f"`{s.strip()}`" for s in summary[-4:]))
        for target in row.get("reshape_targets", []):
            lines.append(f"  * Reshape target in the written model: `{target}`")
    lines += ["", "Reproduce: `python benchmarks/bench_recognizer.py` from the repository root "
              "(needs onnxprune installed or `PYTHONPATH=.`; no torch)."]
    return lines


def verdict(issue: dict, m0: dict) -> str:
    if "metrics" not in issue or issue.get("error"):
        return f"not met — the issue's command did not give a working model ({issue.get('error', 'no metrics')})"
    drops = [100 * (m0["exact_match"] - issue["metrics"]["exact_match"]),
             100 * (m0["tight"]["exact_match"] - issue["metrics"]["tight"]["exact_match"])]
    ok = max(drops) <= CLAIM_POINTS
    return (("met" if ok else "not met") + f" — exact match drops {drops[0]:.1f} points at W = 160 and "
            f"{drops[1]:.1f} at tight widths (limit {CLAIM_POINTS:g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_recognizer.md"))
    parser.add_argument("--json", default=None)
    parser.add_argument("--keep", default=None, help="write the pruned models to this folder ($OUT in the report)")
    args = parser.parse_args()
    ort.set_default_logger_severity(4)  # failures are reported in the table, not as onnxruntime log lines
    start = time.perf_counter()
    base = {"label": "original", **counts(MODEL), "metrics": evaluate(MODEL, TEST), "reshape_targets": reshape_targets(MODEL)}
    calib = ["--calib", str(CALIB)]
    specs = [(f"target-flops {TARGET_FLOPS} + calib", ["--target-flops", str(TARGET_FLOPS), *calib]),
             (f"target-flops {TARGET_FLOPS} + calib, reconstruction",
              ["--target-flops", str(TARGET_FLOPS), *calib, "--criterion", "reconstruction"])]
    specs += [(f"ratio {r} + calib", ["--ratio", str(r), *calib]) for r in RATIOS]
    specs += [(f"ratio {r}, no calib", ["--ratio", str(r)]) for r in RATIOS_NO_CALIB]
    with tempfile.TemporaryDirectory(prefix="bench_recognizer_") as tmp:
        scratch = Path(args.keep) if args.keep else Path(tmp)
        scratch.mkdir(parents=True, exist_ok=True)
        rows = []
        for label, cli_args in specs:
            rows.append(variant(label, cli_args, scratch))
            r = rows[-1]
            print(f"{label:26s} exit {r['exit']} {r.get('error', '')} "
                  f"{r.get('metrics', {}).get('exact_match', '')}", file=sys.stderr, flush=True)
    lines = report(base, rows, time.perf_counter() - start)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps({"original": base, "variants": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
