"""Benchmark: accuracy of the pruned MNIST CNN by criterion × recovery × ratio, and calibration overhead.

Run from the repository root::

    python benchmarks/bench_mnist_recovery.py [--out benchmarks/results_mnist_recovery.md] [--json FILE]

What it measures:

1. **Accuracy** on the 1000 held-out digits of ``models/mnist_test.npz`` of ``models/mnist_cnn.onnx``
   pruned with a uniform ratio (0.3 / 0.5 / 0.7) under every criterion (weight: l1, l2, random; data:
   activation, apoz, wanda, fluctuation, entropy, reconstruction) and every recovery (none, bias, lsq), calibrated on the 500
   digits of ``models/mnist_calib.npz`` (batch 32).  The raw effect of each recovery is shown
   (``guard=False``); a ``†`` marks cells where the default guard would have kept the unrecovered model
   because recovery raised the calibration output error.  MACs per sample after pruning, the relative
   L2 output error against the original on the calibration set and the wall time of the prune are
   recorded too.
2. **Calibration overhead**: streaming the per-channel statistics (extra reduction nodes inside the
   onnxruntime session) over 512 digits versus plain onnxruntime inference of the unmodified model
   over the same 512 digits, same batch size, one thread, measured in one run (best of 5 each).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.runtime.calibration import calibration_from_feeds, load_calibration
from onnxprune.measurement.counting import count_model
from onnxprune.pipeline import PruneOptions, calibration_statistics, prune
from onnxprune.methods.prepared import prepare
from onnxprune.recovery.layers import RecoveryOptions
from onnxprune.runtime.sessions import make_session

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
CRITERIA = ("l1", "l2", "random", "activation", "apoz", "wanda", "fluctuation", "entropy", "reconstruction")
RECOVERIES = ("none", "bias", "lsq")
RATIOS = (0.3, 0.5, 0.7)
BATCH = 32


def accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    session = make_session(model, optimized=True)
    logits = np.concatenate([session.run(None, {"input": x[i:i + 250]})[0] for i in range(0, len(x), 250)])
    return float(np.mean(logits.argmax(1) == y))


def grid(model: onnx.ModelProto, calib, x: np.ndarray, y: np.ndarray) -> list[dict]:
    rows = []
    for criterion in CRITERIA:
        for recovery in RECOVERIES:
            for ratio in RATIOS:
                start = time.perf_counter()
                result = prune(model, PruneOptions(ratio=ratio, criterion=criterion), calibration=calib,
                               recovery=RecoveryOptions(recovery, guard=False))
                seconds = time.perf_counter() - start
                errors = result.calibration["output_error"]
                final = errors.get("recovered", errors["pruned"])["worst_relative_l2"]
                rows.append({"criterion": criterion, "recovery": recovery, "ratio": ratio,
                             "accuracy": accuracy(result.model, x, y), "macs": count_model(result.model).macs,
                             "calib_error": final, "calib_error_pruned": errors["pruned"]["worst_relative_l2"],
                             "guard_rejects": final > errors["pruned"]["worst_relative_l2"],
                             "seconds": seconds})
                print(f"{criterion:12s} {recovery:5s} {ratio:.1f} acc {rows[-1]['accuracy']:.3f} "
                      f"err {final:.4f} {seconds:.1f}s", file=sys.stderr, flush=True)
    return rows


def overhead(model: onnx.ModelProto, digits: np.ndarray, repeats: int = 5) -> dict:
    """Statistics streaming vs plain inference over the same inputs (best of ``repeats`` each)."""
    prepared = prepare(model)
    feeds = [{"input": digits[i:i + BATCH]} for i in range(0, len(digits), BATCH)]
    calib = calibration_from_feeds(feeds, model, BATCH)
    plain, plain_total, stream, total = [], [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        session = make_session(model, optimized=True)
        running = time.perf_counter()
        for feed in feeds:
            session.run(None, feed)
        plain.append(time.perf_counter() - running)
        plain_total.append(time.perf_counter() - start)
        stats = calibration_statistics(prepared, calib)
        stream.append(stats.stream_seconds)
        total.append(stats.seconds)
    return {"inputs": int(len(digits)), "batch": BATCH, "plain_seconds": min(plain),
            "plain_with_session_seconds": min(plain_total), "statistics_stream_seconds": min(stream),
            "statistics_total_seconds": min(total), "ratio": min(stream) / min(plain),
            "ratio_with_session": min(total) / min(plain_total), "tapped_slots": len(stats.by_slot)}


def table(rows: list[dict], unpruned: float, base_macs: int) -> list[str]:
    lines = ["| criterion | recovery | " + " | ".join(f"acc @ {r}" for r in RATIOS) + " |",
             "|---|---|" + "---:|" * len(RATIOS)]
    for criterion in CRITERIA:
        for recovery in RECOVERIES:
            cells = []
            for ratio in RATIOS:
                row = next(r for r in rows if (r["criterion"], r["recovery"], r["ratio"]) == (criterion, recovery, ratio))
                cells.append(f"{100 * row['accuracy']:.1f}" + (" †" if row["guard_rejects"] and recovery != "none" else ""))
            lines.append(f"| {criterion} | {recovery} | " + " | ".join(cells) + " |")
    lines += ["", f"Unpruned: {100 * unpruned:.1f} %, {base_macs / 1e6:.2f} M MACs per digit.", "",
              "| ratio | MACs per digit | × of unpruned |", "|---:|---:|---:|"]
    for ratio in RATIOS:
        macs = next(r["macs"] for r in rows if r["ratio"] == ratio and r["recovery"] == "none")
        lines.append(f"| {ratio} | {macs / 1e6:.2f} M | {macs / base_macs:.3f} |")
    return lines


def error_table(rows: list[dict]) -> list[str]:
    lines = ["| criterion | recovery | " + " | ".join(f"err @ {r}" for r in RATIOS) + " | seconds (max) |",
             "|---|---|" + "---:|" * (len(RATIOS) + 1)]
    for criterion in CRITERIA:
        for recovery in RECOVERIES:
            mine = [next(r for r in rows if (r["criterion"], r["recovery"], r["ratio"]) == (criterion, recovery, q))
                    for q in RATIOS]
            lines.append(f"| {criterion} | {recovery} | " + " | ".join(f"{r['calib_error']:.3f}" for r in mine)
                         + f" | {max(r['seconds'] for r in mine):.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_mnist_recovery.md"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = onnx.load(MODELS / "mnist_cnn.onnx")
    test = np.load(MODELS / "mnist_test.npz")
    x, y = test["input"], test["y"]
    calib = load_calibration(MODELS / "mnist_calib.npz", model, BATCH)
    unpruned = accuracy(model, x, y)
    rows = grid(model, calib, x, y)
    cost = overhead(model, x[:512])
    base_macs = count_model(model).macs
    lines = [f"# MNIST CNN: criterion × recovery × ratio ({dt.date.today().isoformat()})", "",
             f"onnxruntime {ort.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
             f"{platform.machine()}; `python benchmarks/bench_mnist_recovery.py`.", "",
             f"Calibration: {calib.samples} digits of `models/mnist_calib.npz`, batch {BATCH}. "
             f"Accuracy on the {len(y)} held-out digits of `models/mnist_test.npz`. Uniform ratio per group. "
             "Recovery shown raw (guard off); † = the default guard would keep the unrecovered model "
             "(recovery raised the calibration output error).", "",
             "## Top-1 accuracy (%)", ""]
    lines += table(rows, unpruned, base_macs)
    lines += ["", "## Output error vs the original on the calibration set (relative L2 of the logits)", ""]
    lines += error_table(rows)
    lines += ["", "## Calibration overhead", "",
              f"Per-channel statistics of {cost['tapped_slots']} tapped slots over the first {cost['inputs']} digits "
              "of `models/mnist_test.npz` "
              f"(batch {cost['batch']}, one thread, best of 5, measured in one run):", "",
              "| | plain onnxruntime inference | statistics (tapped model) | ratio |", "|---|---:|---:|---:|",
              f"| running the batches | {cost['plain_seconds'] * 1e3:.1f} ms | "
              f"{cost['statistics_stream_seconds'] * 1e3:.1f} ms | **{cost['ratio']:.2f}×** |",
              f"| incl. building the session | {cost['plain_with_session_seconds'] * 1e3:.1f} ms | "
              f"{cost['statistics_total_seconds'] * 1e3:.1f} ms | {cost['ratio_with_session']:.2f}× |"]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps({"unpruned": unpruned, "rows": rows, "overhead": cost}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
