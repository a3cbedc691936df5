"""Benchmark: depth pruning (whole residual blocks) — accuracy of a trained model against blocks removed,
alone and combined with width pruning, and the zero-branch oracle on the residual models in models/.

Run from the repository root::

    python benchmarks/bench_depth.py [--out benchmarks/results_depth.md] [--json FILE]

What it measures:

1. ``models/mnist_resnet.onnx`` (6 identity basic blocks, trained; 1000 held-out test digits), calibrated on the
   500 digits of ``mnist_calib.npz`` (batch 50): test accuracy, MACs and params kept for k = 0..6 blocks
   removed, per criterion (``weight``: no data; ``influence``: ShortGPT; ``output``: SLEB greedy) with and
   without the least-squares repair of the layers after the removed blocks.
2. Depth combined with width: k blocks (SLEB) then a uniform width ratio (fluctuation criterion, lsq recovery
   of both stages — the calibrated defaults), and width alone at a matched FLOPs target.
3. The oracle: for every residual model, all removable blocks removed, max relative error against the
   zero-branch reference under both onnxruntime optimization levels at two or more input shapes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time

import numpy as np
import onnx
import onnxruntime as ort
import repo_paths

from onnxprune.runtime.calibration import load_calibration
from onnxprune.methods.depth import DepthMethod, DepthSettings
from onnxprune.methods.depth.plan import DepthPlan
from onnxprune.pipeline import PruneOptions, compare_to_reference, prune
from onnxprune.methods.prepared import prepare
from onnxprune.recovery.layers import RecoveryOptions
from onnxprune.runtime.sessions import make_session

MODELS = repo_paths.MODELS
TRAINED = MODELS / "mnist_resnet.onnx"
ORACLE_MODELS = ("resnet_basic", "resnet_bottleneck", "mobilenetv2", "mnist_resnet", "gpt_block_dynamic",
                 "gpt_block_static", "llama_kv_decoder", "bert_encoder_dynamic", "vit_classifier_dynamic")
CRITERIA = ("weight", "influence", "output")
BATCH = 50


def accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    logits = make_session(model).run(None, {"input": x})[0]
    return float(np.mean(logits.argmax(1) == y))


def run(model, calibration, depth, ratio=0.0, recovery="lsq", target_flops=None, criterion="fluctuation"):
    options = PruneOptions(ratio=ratio, criterion=criterion, round_to=1, target_flops=target_flops)
    start = time.perf_counter()
    result = prune(model, options, calibration=calibration, recovery=RecoveryOptions(recovery), depth=depth)
    return result, time.perf_counter() - start


def depth_grid(model, calibration, x, y) -> list[dict]:
    rows = []
    blocks = len(DepthMethod().analyze(prepare(model)).blocks)
    for criterion in CRITERIA:
        for repair in ("none", "lsq"):
            for k in range(blocks + 1):
                depth = DepthSettings(count=k, criterion=criterion) if k else None
                result, seconds = run(model, calibration, depth, recovery=repair)
                rows.append(_row({"criterion": criterion, "repair": repair, "blocks_removed": k,
                                  "removed": list(result.depth.plan.removed) if result.depth else [],
                                  "repair_status": (result.depth.repair or {}).get("status") if result.depth else None},
                                 result, seconds, x, y))
    return rows


def combined(model, calibration, x, y) -> list[dict]:
    rows = []
    for k in (0, 1, 2, 3):
        for ratio in (0.0, 0.25, 0.5):
            if not k and not ratio:
                continue
            depth = DepthSettings(count=k, criterion="output") if k else None
            rows.append(_row({"blocks_removed": k, "width_ratio": ratio}, *run(model, calibration, depth, ratio=ratio),
                             x, y))
    for k, target in ((0, 0.5), (2, 0.5), (0, 0.35), (3, 0.35)):
        depth = DepthSettings(count=k, criterion="output") if k else None
        rows.append(_row({"blocks_removed": k, "target_flops": target},
                         *run(model, calibration, depth, target_flops=target), x, y))
    return rows


def _row(keys: dict, result, seconds: float, x: np.ndarray, y: np.ndarray) -> dict:
    row = keys | {"accuracy": accuracy(result.model, x, y), "macs_kept": result.after.macs / result.before.macs,
                  "params_kept": result.after.params / result.before.params, "seconds": round(seconds, 2)}
    print(row, flush=True)
    return row


def oracle_rows() -> list[dict]:
    rows = []
    for name in ORACLE_MODELS:
        prepared = prepare(onnx.load(MODELS / f"{name}.onnx"))
        method = DepthMethod()
        analysis = method.analyze(prepared)
        plan = DepthPlan(prepared.model_sha256, tuple(b.id for b in analysis.blocks), "weight")
        pruned = method.apply(prepared, plan)
        check = compare_to_reference(method.reference(prepared, plan), pruned, tolerance=1e-5)
        before = sum(int(np.prod(i.dims)) for i in prepared.folded.graph.initializer)
        after = sum(int(np.prod(i.dims)) for i in pruned.graph.initializer)
        rows.append({"model": name, "removable": len(analysis.blocks), "not_removable": len(analysis.joins),
                     "ok": check.ok, "max_relative_error": max(d["relative"] for d in check.diffs),
                     "shapes": check.shapes, "initializer_elements_kept": after / before})
        print(rows[-1], flush=True)
    return rows


def markdown(data: dict) -> str:
    lines = ["# Depth pruning (whole residual blocks)", "",
             f"Measured {data['date']} on {data['machine']}, onnxruntime {data['onnxruntime']}, one run of "
             "`python benchmarks/bench_depth.py`.", "",
             "## 1. Trained residual CNN: accuracy against blocks removed", "",
             f"`models/mnist_resnet.onnx` (6 identity basic blocks; unpruned test accuracy "
             f"{data['baseline']:.3f}), 1000 held-out test digits; calibration 500 digits (batch {BATCH}). "
             "`repair lsq` refits the first weighted layers after each removed block (least squares against the "
             "original's outputs of those layers, kept only if the calibration output error drops). No fine-tuning.",
             "", "| criterion | repair | " + " | ".join(f"k={k}" for k in range(7)) + " |",
             "|---|---|" + "---|" * 7]
    for criterion in CRITERIA:
        for repair in ("none", "lsq"):
            cells = [r for r in data["depth"] if r["criterion"] == criterion and r["repair"] == repair]
            lines.append(f"| {criterion} | {repair} | " + " | ".join(f"{r['accuracy']:.3f}" for r in cells) + " |")
    macs = [r for r in data["depth"] if r["criterion"] == "output" and r["repair"] == "none"]
    lines += ["| MACs kept | | " + " | ".join(f"{r['macs_kept']:.3f}" for r in macs) + " |",
              "| params kept | | " + " | ".join(f"{r['params_kept']:.3f}" for r in macs) + " |", "",
              "Blocks chosen (graph order):", ""]
    for criterion in CRITERIA:
        row = next(r for r in data["depth"] if r["criterion"] == criterion and r["blocks_removed"] == 3)
        lines.append(f"- {criterion}, k=3: {', '.join(b.split('/')[2] for b in row['removed'])}")
    lines += ["", "## 2. Depth combined with width", "",
              "k blocks (SLEB) first, then width on the depth-pruned model (fluctuation criterion, lsq recovery of "
              "both stages); with `--target-flops` depth is fixed and width fills the rest.", "",
              "| blocks removed | width | accuracy | MACs kept | params kept | seconds |", "|---|---|---|---|---|---|"]
    for r in data["combined"]:
        width = f"ratio {r['width_ratio']:g}" if "width_ratio" in r else f"target-flops {r['target_flops']:g}"
        lines.append(f"| {r['blocks_removed']} | {width} | {r['accuracy']:.3f} | {r['macs_kept']:.3f} | "
                     f"{r['params_kept']:.3f} | {r['seconds']:.1f} |")
    lines += ["", "## 3. Oracle: every removable block removed vs the zero-branch reference", "",
              "| model | removable | other residual joins (with reasons) | max relative error | input shapes | "
              "weights kept |", "|---|---|---|---|---|---|"]
    for r in data["oracle"]:
        shapes = "; ".join(",".join(f"{k}{v}" for k, v in s.items()) for s in r["shapes"]).replace(" ", "")
        lines.append(f"| {r['model']} | {r['removable']} | {r['not_removable']} | {r['max_relative_error']:.1e} "
                     f"({'ok' if r['ok'] else 'FAILED'}) | {shapes} | {r['initializer_elements_kept']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(repo_paths.HERE / "results_depth.md"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = onnx.load(TRAINED)
    calibration = load_calibration(MODELS / "mnist_calib.npz", model, BATCH)
    test = np.load(MODELS / "mnist_test.npz")
    x, y = test["input"], test["y"]
    data = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "onnxruntime": ort.__version__, "baseline": accuracy(model, x, y)}
    data["depth"] = depth_grid(model, calibration, x, y)
    data["combined"] = combined(model, calibration, x, y)
    data["oracle"] = oracle_rows()
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write(markdown(data))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)


if __name__ == "__main__":
    main()
