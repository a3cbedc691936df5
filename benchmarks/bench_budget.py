"""Benchmark: FLOPs budgets on the MNIST CNN — sensitivity-guided vs uniform vs global allocation.

Run from the repository root::

    python benchmarks/bench_budget.py [--out benchmarks/results_budget.md] [--json FILE]

What it measures: ``models/mnist_cnn.onnx`` pruned to ``--target-flops`` 0.5 and 0.3 with the
default calibrated criterion (``fluctuation``), with ``lsq`` recovery and without recovery, under three
allocations: ``uniform`` (every group loses the same fraction), ``global`` (mean-normalized score
ranking) and ``guided`` (greedy on the measured sensitivity curves).  Calibration and the sensitivity
scan use the 500 digits of ``models/mnist_calib.npz`` (batch 32, ratios 0.1…0.9); accuracy is measured
on the 1000 held-out digits of ``models/mnist_test.npz``.  Recovery is shown raw (``guard=False``).
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

from onnxprune.runtime.calibration import load_calibration
from onnxprune.measurement.counting import count_model
from onnxprune.pipeline import CALIBRATED_CRITERION, PruneOptions, calibration_statistics, group_scores, prune
from onnxprune.methods.prepared import prepare
from onnxprune.recovery.layers import RecoveryOptions
from onnxprune.planning.sensitivity import load_labels, scan
from onnxprune.runtime.sessions import make_session

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
TARGETS = (0.5, 0.3)
ALLOCATIONS = ("uniform", "global", "guided")
RECOVERIES = ("none", "lsq")


def accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    session = make_session(model, optimized=True)
    logits = np.concatenate([session.run(None, {"input": x[i:i + 250]})[0] for i in range(0, len(x), 250)])
    return float(np.mean(logits.argmax(1) == y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_budget.md"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = onnx.load(MODELS / "mnist_cnn.onnx")
    calib_path = MODELS / "mnist_calib.npz"
    calib = load_calibration(calib_path, model, 32)
    test = np.load(MODELS / "mnist_test.npz")
    x, y = test["input"], test["y"]
    prepared = prepare(model)
    options = PruneOptions(criterion=CALIBRATED_CRITERION)
    start = time.perf_counter()
    scores = group_scores(prepared, options, calibration_statistics(prepared, calib)).by_group
    sensitivity = scan(prepared, calib, scores, CALIBRATED_CRITERION, labels=load_labels(calib_path))
    scan_seconds = time.perf_counter() - start
    rows = []
    for target in TARGETS:
        for allocation in ALLOCATIONS:
            for recovery in RECOVERIES:
                start = time.perf_counter()
                result = prune(model, PruneOptions(criterion=CALIBRATED_CRITERION, target_flops=target,
                                                   allocation=allocation), calibration=calib,
                               recovery=RecoveryOptions(recovery, guard=False), sensitivity=sensitivity)
                budget = result.plan.settings["budget"]
                rows.append({"target": target, "allocation": allocation, "recovery": recovery,
                             "achieved_macs_ratio": count_model(result.model).macs / result.before.macs,
                             "params_ratio": count_model(result.model).params / result.before.params,
                             "accuracy": accuracy(result.model, x, y), "kept": budget["kept"],
                             "seconds": time.perf_counter() - start})
                print(f"{target} {allocation:8s} {recovery:4s} acc {rows[-1]['accuracy']:.3f} "
                      f"macs {rows[-1]['achieved_macs_ratio']:.4f}", file=sys.stderr, flush=True)
    write(args, rows, accuracy(model, x, y), scan_seconds, sensitivity)


def write(args, rows: list[dict], baseline: float, scan_seconds: float, sensitivity) -> None:
    env = (f"onnxruntime {ort.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
           f"{platform.machine()}; `python benchmarks/bench_budget.py`.")
    lines = [f"# MNIST CNN: FLOPs budgets, guided vs uniform vs global allocation ({dt.date.today()})", "", env, "",
             f"Unpruned accuracy {100 * baseline:.1f} % on the 1000 held-out digits of `models/mnist_test.npz`. "
             f"Criterion `{CALIBRATED_CRITERION}`, calibration/sensitivity on the 500 digits of "
             f"`models/mnist_calib.npz` (sensitivity scan: {len(sensitivity.rows)} prunes, {scan_seconds:.1f} s). "
             "Recovery raw (guard off). MAC ratio = measured MACs after / before.", "",
             "| target FLOPs | allocation | recovery | MAC ratio | params ratio | accuracy (%) | kept per group | time (s) |",
             "|---:|---|---|---:|---:|---:|---|---:|"]
    for r in rows:
        kept = " ".join(f"{k}:{v}" for k, v in r["kept"].items())
        lines.append(f"| {r['target']} | {r['allocation']} | {r['recovery']} | {r['achieved_macs_ratio']:.4f} | "
                     f"{r['params_ratio']:.3f} | {100 * r['accuracy']:.1f} | {kept} | {r['seconds']:.1f} |")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
