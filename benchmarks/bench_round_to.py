"""Benchmark: which channel alignment (``--round-to``) onnxruntime's CPU kernels reward on this machine.

Run from the repository root::

    python benchmarks/bench_round_to.py [--out benchmarks/results_round_to.md] [--threads 1] [--quick]

It produces the evidence behind the ``auto`` row of :mod:`onnxprune.planning.alignment`:

1. **Layers.**  Small chains at pruned-looking widths ``w`` (37, 45, 53, 61, 75, 99, 123), each
   rounded *up* to 1/4/8/16/32: two 3x3 Convs ``w → w`` at 28x28, two 1x1 Convs ``w → w`` at 56x56, a
   MobileNet block (depthwise 3x3 over ``w`` channels at 56x56, then 1x1 ``w → w``), and two Gemms
   ``w → w`` on 64 rows.  A chain, not a single op: the layout onnxruntime picks (NCHWc blocks) depends
   on the widths on both sides of a layer, and its reorders are paid between layers.
2. **Whole models.**  The MobileNetV2-sized and ResNet-50-sized generated models pruned with
   ``--target-flops 0.5`` at every ``--round-to`` (and ``auto``), original included.

All variants of one comparison run interleaved (``onnxprune.measurement.bench.interleaved_ms``, one call each per
round, sessions from ``onnxprune.measurement.bench.timing_session``: fixed intra-op threads, spinning off, default
graph optimizations), medians reported.  A rounded width has more MACs than the raw one, so two
ratios matter: *latency* vs round-to 1 (what the user sees) and *ms per MAC* vs round-to 1 (how much
better the kernels use each MAC).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxprune.measurement.bench import interleaved_ms, run_once, timing_session
from onnxprune.measurement.counting import count_model
from onnxprune.pipeline import PruneOptions, prune
from onnxprune.runtime.feeds import random_feeds

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_core import machine_info  # noqa: E402
from mobilenetv2 import build_mobilenetv2  # noqa: E402
from resnet50 import build_resnet50  # noqa: E402

MULTIPLES = (1, 4, 8, 16, 32)
RAW_WIDTHS = (37, 45, 53, 61, 75, 99, 123)
KINDS = ("conv3x3", "conv1x1", "dw-block", "gemm")


def _rounded(width: int, multiple: int) -> int:
    return math.ceil(width / multiple) * multiple


def layer_chain(kind: str, w: int, seed: int = 0) -> onnx.ModelProto:
    """The small chain of one layer kind at width ``w`` (module docstring)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def weight(name: str, shape: tuple[int, ...]) -> str:
        fan_in = int(np.prod(shape[1:])) if kind != "gemm" else shape[0]
        inits.append(numpy_helper.from_array(rng.standard_normal(shape, dtype=np.float32)
                                             * np.float32(np.sqrt(2.0 / fan_in)), name))
        return name

    def conv(x: str, name: str, k: int, group: int = 1) -> str:
        nodes.append(helper.make_node("Conv", [x, weight(f"{name}.w", (w, w // group, k, k)),
                                               weight(f"{name}.b", (w,))], [f"{name}.y"], name=name,
                                      kernel_shape=[k, k], pads=[k // 2] * 4, group=group))
        nodes.append(helper.make_node("Relu", [f"{name}.y"], [f"{name}.r"]))
        return f"{name}.r"

    if kind == "gemm":
        x = "x"
        for i in range(2):
            nodes.append(helper.make_node("Gemm", [x, weight(f"g{i}.w", (w, w)), weight(f"g{i}.b", (w,))],
                                          [f"g{i}.y"], transB=1))
            nodes.append(helper.make_node("Relu", [f"g{i}.y"], [f"g{i}.r"]))
            x = f"g{i}.r"
        shape = [64, w]
    else:
        hw, k = {"conv3x3": (28, 3), "conv1x1": (56, 1), "dw-block": (56, 3)}[kind]
        if kind == "dw-block":
            x = conv(conv("x", "dw", 3, group=w), "pw", 1)
        else:
            x = conv(conv("x", "c0", k), "c1", k)
        shape = [1, w, hw, hw]
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(nodes, f"{kind}_{w}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def time_models(models: list[onnx.ModelProto], threads: int, batch: int, warmup: int, repeat: int) -> list[float]:
    """Median ms of each model, all interleaved, each fed its own seeded input of the same batch."""
    calls = []
    for index, model in enumerate(models):
        session = timing_session(model, threads, f"model {index}")
        calls.append(functools.partial(run_once, session, random_feeds(model, batch=batch, seed=0), f"model {index}"))
    return [float(np.median(samples)) for samples in interleaved_ms(calls, warmup, repeat)]


def layer_rows(threads: int, repeat: int) -> list[dict]:
    """One row per (kind, raw width): ms and MACs at every multiple."""
    rows = []
    for kind in KINDS:
        for raw in RAW_WIDTHS:
            widths = sorted({_rounded(raw, m) for m in MULTIPLES})
            models = [layer_chain(kind, w) for w in widths]
            ms = dict(zip(widths, time_models(models, threads, 1, 20, repeat)))
            macs = {w: count_model(m).macs for w, m in zip(widths, models)}
            rows.append({"kind": kind, "raw": raw,
                         "cells": {m: {"width": _rounded(raw, m), "ms": ms[_rounded(raw, m)],
                                       "macs": macs[_rounded(raw, m)]} for m in MULTIPLES}})
            print(f"{kind:8s} {raw:4d} " + " ".join(f"{c['width']}:{c['ms']:.3f}" for c in rows[-1]["cells"].values()),
                  flush=True)
    return rows


def model_rows(threads: int, repeats: dict[str, int]) -> list[dict]:
    """Whole generated models pruned to --target-flops 0.5 at every multiple, timed interleaved."""
    rows = []
    for name, build in (("MobileNetV2-sized", build_mobilenetv2), ("ResNet-50-sized", build_resnet50)):
        original = build()
        base = count_model(original).macs
        variants: dict[str, onnx.ModelProto] = {"original": original}
        seconds = {}
        for round_to in (*MULTIPLES, "auto"):
            start = time.perf_counter()
            variants[f"round-to {round_to}"] = prune(original, PruneOptions(target_flops=0.5, round_to=round_to)).model
            seconds[f"round-to {round_to}"] = time.perf_counter() - start
            print(f"{name}: pruned round-to {round_to} in {seconds[f'round-to {round_to}']:.1f} s", flush=True)
        ms = time_models(list(variants.values()), threads, 1, 3, repeats[name])
        for (label, model), median in zip(variants.items(), ms):
            macs = count_model(model).macs
            rows.append({"model": name, "variant": label, "macs_ratio": macs / base, "ms": median,
                         "speedup": ms[0] / median, "of_ideal": (ms[0] / median) * (macs / base),
                         "prune_s": seconds.get(label)})
    return rows


def render(layers: list[dict], models: list[dict], args: argparse.Namespace, total_s: float) -> str:
    info = machine_info()
    lines = ["# Benchmark: which `--round-to` onnxruntime's CPU kernels reward", "",
             "Generated by `benchmarks/bench_round_to.py`; every number below comes from one run of:", "",
             f"```bash\npython benchmarks/bench_round_to.py --threads {args.threads}{' --quick' if args.quick else ''}\n```",
             "", f"{info['date']}, {info['cpu']}, {info['cores']}, onnxruntime {ort.__version__}, "
             f"Python {platform.python_version()}; CPU execution provider, {args.threads} intra-op thread(s), "
             f"default graph optimizations, spinning off; load average at start {info['load average at start']}. "
             f"Total {total_s:.0f} s.", "",
             "## 1. Layer chains at rounded widths", "",
             "Each cell: the width after rounding up, median ms, and in brackets latency / latency at round-to 1 "
             "and ms-per-MAC / ms-per-MAC at round-to 1 (below 1.00 = the kernels use each MAC better). Batch 1 "
             "(Gemm: 64 rows). All widths of one row run interleaved.", "",
             "| layers | raw width | " + " | ".join(f"round-to {m}" for m in MULTIPLES) + " |",
             "|---|---:|" + "---:|" * len(MULTIPLES)]
    summary: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for row in layers:
        one = row["cells"][1]
        cells = []
        for m in MULTIPLES:
            c = row["cells"][m]
            lat, eff = c["ms"] / one["ms"], (c["ms"] / c["macs"]) / (one["ms"] / one["macs"])
            summary.setdefault(row["kind"], {}).setdefault(m, []).append((lat, eff))
            cells.append(f"{c['width']}: {c['ms']:.3f} ({lat:.2f} / {eff:.2f})")
        lines.append(f"| {row['kind']} | {row['raw']} | " + " | ".join(cells) + " |")
    lines += ["", "Geometric means over the raw widths (latency ratio / ms-per-MAC ratio, vs round-to 1):", "",
              "| layers | " + " | ".join(f"round-to {m}" for m in MULTIPLES) + " |", "|---|" + "---:|" * len(MULTIPLES)]
    for kind, by_m in summary.items():
        cells = [f"{_gmean([p[0] for p in by_m[m]]):.2f} / {_gmean([p[1] for p in by_m[m]]):.2f}" for m in MULTIPLES]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += ["", "## 2. Whole models pruned to `--target-flops 0.5`", "",
              "`prune(model, PruneOptions(target_flops=0.5, round_to=N))` (global allocation, l2), batch 1, all "
              "variants of a model interleaved. Speedup = median(original) / median(pruned); *of ideal* = speedup × "
              "MAC ratio (1.00 = latency falls exactly as fast as MACs).", "",
              "| model | variant | MAC ratio | median ms | speedup | of ideal | prune s |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in models:
        original = r["variant"] == "original"
        lines.append(f"| {r['model']} | {r['variant']} | {r['macs_ratio']:.3f} | {r['ms']:.2f} | "
                     + ("—" if original else f"{r['speedup']:.2f}×") + " | " + ("—" if original else f"{r['of_ideal']:.2f}")
                     + " | " + (f"{r['prune_s']:.1f}" if r["prune_s"] else "") + " |")
    lines += ["", f"Load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.", ""]
    return "\n".join(lines)


def _gmean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results_round_to.md"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="Few repeats: a smoke test, not numbers to quote.")
    args = parser.parse_args()
    start = time.perf_counter()
    layers = layer_rows(args.threads, 20 if args.quick else 150)
    models = model_rows(args.threads, {"MobileNetV2-sized": 10 if args.quick else 150,
                                       "ResNet-50-sized": 3 if args.quick else 30})
    text = render(layers, models, args, time.perf_counter() - start)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
