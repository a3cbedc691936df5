"""Benchmark: element sparsity of the MNIST CNN — accuracy by criterion × scope × pattern, SparseGPT's
held-out promise, what zeros are worth on disk, and CPU latency (unchanged).

Run from the repository root::

    python benchmarks/bench_sparsity.py [--out benchmarks/results_sparsity.md] [--json FILE]

What it measures (no fine-tuning anywhere):

1. **Accuracy** on the 1000 held-out digits of ``models/mnist_test.npz`` of ``models/mnist_cnn.onnx`` made
   sparse with every criterion (magnitude, wanda, sparsegpt), scope (layer: every layer gets S; global:
   per-layer sparsity from one |W| ranking) and pattern (unstructured 50 % / 70 %, 2:4, 4:8; global scope
   is unstructured only), calibrated on the 500 digits of ``models/mnist_calib.npz`` (batch 32, default
   20 000 im2col rows per Conv layer).  The achieved sparsity over the sparsified weights and the wall time
   of analyze + statistics + plan + apply are recorded.
2. **SparseGPT's promise** per layer on the held-out digits: ‖W X − Ŵ X‖² / ‖W X − (W⊙M) X‖² (< 1: the
   OBS update did better than masking alone), X = the layer's inputs in the written model.
3. **Storage**: file size, gzip -6 size, and the size with ``--sparse-format`` (ONNX sparse_initializer).
4. **CPU latency**: ``onnxprune bench`` of the original and sparse models, interleaved in one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import repo_paths  # noqa: F401  (puts the checkout first on sys.path)

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.measurement.bench import BenchOptions, bench_models
from onnxprune.runtime.calibration import calibration_from_feeds, load_calibration
from onnxprune.io.files import load_model, save_model
from onnxprune.methods.sparsity.method import SparsityMethod
from onnxprune.methods.sparsity.oracle import verify_sparsity
from onnxprune.methods.sparsity.plan import SparsitySettings
from onnxprune.methods.sparsity.storage import gzip_size, to_sparse_initializers
from onnxprune.methods.prepared import prepare
from onnxprune.runtime.sessions import make_session

ROOT = repo_paths.ROOT
MODELS = repo_paths.MODELS
CRITERIA = ("magnitude", "wanda", "sparsegpt")
CASES = (("unstructured", 0.5), ("unstructured", 0.7), ("2:4", None), ("4:8", None))
BATCH = 32
COMMAND = "python benchmarks/bench_sparsity.py"


def accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    session = make_session(model, optimized=True)
    logits = np.concatenate([session.run(None, {"input": x[i:i + 250]})[0] for i in range(0, len(x), 250)])
    return float(np.mean(logits.argmax(1) == y))


def sparsify(prepared, settings: SparsitySettings, calib):
    method = SparsityMethod()
    start = time.perf_counter()
    analysis = method.analyze(prepared)
    plan = method.plan(prepared, analysis, settings, method.statistics(prepared, analysis, settings, calib))
    model = method.apply(prepared, plan)
    return method, plan, model, time.perf_counter() - start


def grid(prepared, calib, x: np.ndarray, y: np.ndarray) -> list[dict]:
    rows = []
    for scope in ("layer", "global"):
        for pattern, sparsity in CASES:
            if scope == "global" and pattern != "unstructured":
                continue
            for criterion in CRITERIA:
                settings = SparsitySettings(sparsity, pattern, criterion, scope)
                _, plan, model, seconds = sparsify(prepared, settings, calib)
                rows.append({"scope": scope, "pattern": pattern, "target": settings.target, "criterion": criterion,
                             "accuracy": accuracy(model, x, y), "sparsity": plan.summary()["sparsity"],
                             "dense_layers": [s.node for s in plan.skipped], "seconds": seconds})
                print(f"{scope:6s} {pattern:12s} {settings.target:.2f} {criterion:9s} acc {rows[-1]['accuracy']:.3f} "
                      f"{seconds:.1f}s", file=sys.stderr, flush=True)
    return rows


def promise(prepared, calib, heldout) -> list[dict]:
    rows = []
    for settings in (SparsitySettings(None, "2:4", "sparsegpt"), SparsitySettings(0.5, criterion="sparsegpt"),
                     SparsitySettings(0.7, criterion="sparsegpt", scope="global")):
        method, plan, model, _ = sparsify(prepared, settings, calib)
        check = verify_sparsity(method, prepared, plan, model, heldout=heldout)
        for row in check.reconstruction:
            rows.append({"settings": f"{settings.pattern} {settings.target:g} {settings.scope}", **row})
    return rows


def storage(prepared, folder: Path) -> tuple[list[dict], dict[str, Path]]:
    rows, paths = [], {}
    original = MODELS / "mnist_cnn.onnx"
    rows.append({"model": "original", "bytes": original.stat().st_size, "gzip": gzip_size([original]),
                 "sparse_bytes": None})
    for name, settings in (("unstructured 50 % (global)", SparsitySettings(0.5, scope="global")),
                           ("unstructured 70 % (global)", SparsitySettings(0.7, scope="global")),
                           ("unstructured 90 % (layer)", SparsitySettings(0.9)),
                           ("2:4", SparsitySettings(None, "2:4"))):
        _, plan, model, _ = sparsify(prepared, settings, None)
        dense = save_model(model, folder / f"{len(paths)}.onnx", source_path=original)
        sparse, _ = to_sparse_initializers(model, [m.layer.weight for m in plan.layers])
        sparse_path = save_model(sparse, folder / f"{len(paths)}_sparse.onnx", source_path=original)
        paths[name] = dense
        rows.append({"model": name, "bytes": dense.stat().st_size, "gzip": gzip_size([dense]),
                     "sparse_bytes": sparse_path.stat().st_size})
    return rows, paths


def latency(paths: dict[str, Path]) -> dict:
    models = [str(MODELS / "mnist_cnn.onnx")] + [str(p) for p in paths.values()]
    result = bench_models(models, BenchOptions(threads=1, batch=32, warmup=10, repeat=200)).to_dict()
    names = ["original", *paths]
    base_p10 = result["models"][0]["p10_ms"]
    return {"options": result["options"], "load_average": os.getloadavg(),
            "rows": [{"model": n, "median_ms": r["median_ms"], "p10_ms": r["p10_ms"], "p90_ms": r["p90_ms"],
                      "ratio": r["ratio"]["latency"], "ratio_p10": r["p10_ms"] / base_p10}
                     for n, r in zip(names, result["models"])]}


def report(rows, dense_acc, promised, sizes, timing) -> list[str]:
    lines = [f"# Element sparsity on the MNIST CNN ({dt.date.today()})", "",
             f"Reproduce: `{COMMAND}` (CPU: {platform.processor() or platform.machine()}, onnxruntime "
             f"{ort.__version__}).  No fine-tuning.  Dense accuracy: **{100 * dense_acc:.1f} %** on the 1000 "
             "test digits; calibration: the 500 digits of `mnist_calib.npz`.", "",
             "## Accuracy (%) by criterion, scope and pattern", "",
             "| scope | pattern | sparsity | " + " | ".join(CRITERIA) + " | dense layers |",
             "|---|---|---:|" + "---:|" * len(CRITERIA) + "---|"]
    keys = sorted({(r["scope"], r["pattern"], r["target"]) for r in rows}, key=lambda k: (k[0] != "layer", k[1], k[2]))
    for scope, pattern, target in keys:
        mine = {r["criterion"]: r for r in rows if (r["scope"], r["pattern"], r["target"]) == (scope, pattern, target)}
        dense = ", ".join(next(iter(mine.values()))["dense_layers"]) or "—"
        lines.append(f"| {scope} | {pattern} | {100 * next(iter(mine.values()))['sparsity']:.1f} % | "
                     + " | ".join(f"{100 * mine[c]['accuracy']:.1f}" for c in CRITERIA) + f" | {dense} |")
    slowest = {c: max(r["seconds"] for r in rows if r["criterion"] == c) for c in CRITERIA}
    lines += ["", "Sparsity is over the sparsified weights (a layer left dense is not counted).  Wall time of "
              "analyze + statistics + plan + apply, slowest cell: "
              + ", ".join(f"{c} {s:.1f} s" for c, s in slowest.items()) + ".", "",
              "## SparseGPT's promise on held-out digits", "",
              "‖W X − Ŵ X‖² (OBS update) over ‖W X − (W⊙M) X‖² (mask only) per layer, X = the layer's inputs in the "
              "written model on 500 test digits (not used for calibration).  < 1 means the update kept its promise.", "",
              "| settings | layer | ratio |", "|---|---|---:|"]
    lines += [f"| {r['settings']} | {r['node']} | {r['ratio']:.3f} |" for r in promised]
    lines += ["", "## Storage", "", "| model | file | gzip -6 | with --sparse-format |", "|---|---:|---:|---:|"]
    for r in sizes:
        sparse = f"{r['sparse_bytes'] / 1024:.1f} KiB" if r["sparse_bytes"] else "—"
        lines.append(f"| {r['model']} | {r['bytes'] / 1024:.1f} KiB | {r['gzip'] / 1024:.1f} KiB | {sparse} |")
    lines += ["", "A dense file with zeros is as large as before; gzip finds the zeros.  `sparse_initializer` stores "
              "int64 positions (8 bytes per nonzero), so it pays only above 2/3 sparsity; weights that would grow "
              "stay dense.", "", "## CPU latency (onnxruntime, interleaved in one run)", "",
              f"Batch {timing['options']['batch']}, 1 thread, {timing['options']['repeat']} repeats; load average "
              f"during the run {timing['load_average'][0]:.1f} (a shared machine: the p10 is the figure least "
              "disturbed by other processes).", "",
              "| model | median ms | p10 | p90 | × original (median) | × original (p10) |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['median_ms']:.3f} | {r['p10_ms']:.3f} | {r['p90_ms']:.3f} | {r['ratio']:.3f} | "
              f"{r['ratio_p10']:.3f} |" for r in timing["rows"]]
    lines += ["", "onnxruntime's CPU kernels do dense arithmetic on zeros: no speed-up is expected or claimed.  2:4 "
              "models run faster only on sparse tensor cores (NVIDIA Ampere or newer), e.g. "
              "`trtexec --onnx=model.onnx --sparsity=enable`.", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_sparsity.md"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = load_model(MODELS / "mnist_cnn.onnx")
    prepared = prepare(model)
    test = np.load(MODELS / "mnist_test.npz")
    x, y = test["input"], test["y"]
    calib = load_calibration(MODELS / "mnist_calib.npz", model, BATCH)
    heldout = calibration_from_feeds([{"input": x[:500]}], model, BATCH)
    dense_acc = accuracy(prepared.normalized, x, y)
    rows = grid(prepared, calib, x, y)
    promised = promise(prepared, calib, heldout)
    with tempfile.TemporaryDirectory() as folder:
        sizes, paths = storage(prepared, Path(folder))
        timing = latency(paths)
    Path(args.out).write_text("\n".join(report(rows, dense_acc, promised, sizes, timing)))
    if args.json:
        Path(args.json).write_text(json.dumps({"dense_accuracy": dense_acc, "grid": rows, "promise": promised,
                                               "storage": sizes, "latency": timing}, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
