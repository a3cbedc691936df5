"""Prune + quantize pipeline on the MNIST CNN: size, latency and accuracy of four variants, one recipe run.

Variants: the original, pruned (ratio 0.3, fluctuation criterion, lsq recovery on models/mnist_calib.npz),
quantized (dynamic int8, onnxruntime), pruned + quantized; plus static (QDQ) int8 of both for reference.
Everything comes from ONE ``onnxprune run`` of a recipe written to a temporary folder (removed at the end):
accuracy by ``validate`` steps on the 1,000 held-out digits of models/mnist_test.npz, latency by ``bench``
steps (interleaved round robin, thread-pool spinning off, 1 thread) at batch 1 and batch 32.

    python benchmarks/bench_pipeline.py [--repeat 200] [--out benchmarks/results_pipeline.md] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import tempfile

import onnxruntime

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"

VARIANTS = [("original", None), ("pruned (lsq)", "pruned.onnx"), ("int8 dynamic", "int8.onnx"),
            ("pruned + int8 dynamic", "pruned_int8.onnx"), ("int8 static (QDQ)", "int8_static.onnx"),
            ("pruned + int8 static (QDQ)", "pruned_int8_static.onnx")]


def recipe_text(repeat: int) -> str:
    model, calib, test = (MODELS / "mnist_cnn.onnx").as_posix(), (MODELS / "mnist_calib.npz").as_posix(), \
        (MODELS / "mnist_test.npz").as_posix()
    steps = [
        '[[steps]]\ntype = "prune"\nratio = 0.3\ncriterion = "fluctuation"\nrecover = "lsq"\noutput = "pruned.onnx"',
        f'[[steps]]\ntype = "quantize"\ninput = "{model}"\nmode = "dynamic"\noutput = "int8.onnx"',
        '[[steps]]\ntype = "quantize"\ninput = "pruned.onnx"\nmode = "dynamic"\noutput = "pruned_int8.onnx"',
        f'[[steps]]\ntype = "quantize"\ninput = "{model}"\nmode = "static"\noutput = "int8_static.onnx"',
        '[[steps]]\ntype = "quantize"\ninput = "pruned.onnx"\nmode = "static"\noutput = "pruned_int8_static.onnx"',
    ]
    candidates = [model] + [file for _, file in VARIANTS[1:]]
    for candidate in candidates:
        steps.append(f'[[steps]]\ntype = "validate"\ncandidate = "{candidate}"\ncalib = "{test}"\n'
                     'max_accuracy_drop = 0.02')
    models = ", ".join(f'"{m}"' for m in candidates)
    for batch in (1, 32):
        steps.append(f'[[steps]]\ntype = "bench"\nmodels = [{models}]\nbatch = {batch}\nthreads = 1\n'
                     f'warmup = 20\nrepeat = {repeat}')
    return (f'version = 1\nname = "bench_pipeline"\nmodel = "{model}"\n\n[calibration]\npath = "{calib}"\n\n'
            + "\n\n".join(steps) + "\n")


def table(report: dict) -> str:
    steps = report["results"]["steps"]
    validations = [s["results"] for s in steps if s["type"] == "validate"]
    benches = [s["results"] for s in steps if s["type"] == "bench"]
    lines = ["| variant | params | size (KiB) | size × | test accuracy | top-1 agreement | cosine | "
             "latency b=1 (ms, median [p10–p90]) | × | latency b=32 (ms) | × |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for index, (label, _) in enumerate(VARIANTS):
        out = validations[index]["outputs"][0]
        b1, b32 = benches[0]["models"][index], benches[1]["models"][index]
        lines.append(f"| {label} | {b1['params']:,} | {b1['size_bytes'] / 1024:.1f} | {b1['ratio']['size_bytes']:.3f} "
                     f"| {out['accuracy_candidate'] * 100:.1f} % | {out['top1_agreement'] * 100:.1f} % "
                     f"| {out['cosine']:.4f} | {b1['median_ms']:.3f} [{b1['p10_ms']:.3f}–{b1['p90_ms']:.3f}] "
                     f"| {b1['ratio']['latency']:.2f} | {b32['median_ms']:.3f} [{b32['p10_ms']:.3f}–{b32['p90_ms']:.3f}] "
                     f"| {b32['ratio']['latency']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results_pipeline.md")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the run's JSON report")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onnxprune-bench-pipeline-") as work:
        folder = pathlib.Path(work)
        recipe = folder / "bench_pipeline.toml"
        recipe.write_text(recipe_text(args.repeat))
        report_path = folder / "report.json"
        command = [sys.executable, "-m", "onnxprune.cli", "run", str(recipe), "--out-dir", str(folder),
                   "--report", str(report_path)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode not in (0, 1) or not report_path.exists():
            sys.stderr.write(done.stderr)
            return done.returncode or 1
        report = json.loads(report_path.read_text())
        recipe_source = recipe.read_text()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    text = [
        "# Prune + quantize pipeline on the MNIST CNN",
        "",
        "Generated by `python benchmarks/bench_pipeline.py` — rerun it instead of editing this file.",
        f"onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{platform.processor() or 'cpu'}; one `onnxprune run` of the recipe below (status: "
        f"{'all validate steps passed' if report['ok'] else 'a validate step FAILED'}).",
        "",
        "Accuracy on the 1,000 held-out digits of `models/mnist_test.npz` (agreement and cosine vs the original "
        "on the same inputs). Latency: 1 intra-op thread, thread-pool spinning off, all six models measured "
        f"interleaved (round robin), {args.repeat} repeats after 20 warm-ups; × = ratio to the original.",
        "",
        table(report),
        "",
        "## Recipe",
        "",
        "```toml",
        recipe_source.replace(MODELS.as_posix(), "models").rstrip(),
        "```",
        "",
    ]
    args.out.write_text("\n".join(text))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
