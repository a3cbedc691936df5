"""Issue 14, the tool's own cost: onnxprune's wall time and memory against ``onnx.load`` + ``onnx.save`` of the
same file, before and after "one graph per run", measured side by side in one run.

Run from the repository root::

    python benchmarks/bench_tool_cost.py [--before f18a723] [--repeats 3] [--out benchmarks/results_tool_cost.md]
    python benchmarks/bench_tool_cost.py --cases c   # only the (c) rows, merged into --out (results_merge.py)

What it measures, each command in a fresh ``python -c`` child (its own ``VmHWM``), the codes and the
baseline interleaved in a rotating order so background load hits all of them alike:

(a) a ResNet-50-sized single-file export (``benchmarks/resnet50.py``, ~102 MB): ``prune --ratio 0.3``.
    Targets: run time ≤ 2× load+save; peak RSS above the interpreter's after ``import onnxprune.cli.app``
    ≤ 2× the file.
(b) a MiniLM-sized encoder (``models/onnx_builders.build_bert_encoder(path, 90)``, ~91 MB): ``analyze``.
    Target: run time ≤ 2× load+save.
(c) ``prune --ratio 0.3 --verify`` on both models saved with external data.  Target: peak RSS within 2× the
    model size (the files on disk).
    The baseline ``load+save`` is ``onnx.load(path)`` then ``onnx.save(model, tmp)`` in a child that
    imported ``onnx`` first (its time excludes that import, as the CLI's run time excludes importing
    onnxprune).

"before" is the code at ``--before`` (a temporary ``git worktree``, removed at the end), "after" this
checkout; each child gets its code by ``PYTHONPATH`` and reports where ``onnxprune`` came from.

Then one ``prune --ratio 0.3`` of ``models/mnist_cnn.onnx`` per code with counters wrapped around graph
imports/exports (graphsurgeon), shape inference (``onnx.shape_inference``, ``infer_static_shapes``,
``infer_shapes_at``), onnxruntime sessions and ``count_model`` -- plain, with ``--verify``, and with
``--calib-random 8 --verify`` (the isolation child is a separate process and is not counted).

Generated models live in a temporary directory removed at exit (also on error, Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shlex
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from repo_paths import (  # puts models/ on sys.path
    MODELS,
    ROOT,
    run_json_child,
    worktree_at,
)
from resnet50 import build_resnet50
from results_merge import merge

DEFAULT_BEFORE = "f18a723"

_CHILD = r"""
import json, sys, time
out, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]

def status(key):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(key + ":"))

code, where = 0, ""
if mode == "loadsave":
    import onnx
    rss = status("VmRSS")
    t1 = time.perf_counter()
    model = onnx.load(args[0])
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    onnx.save(model, args[1], save_as_external_data=external, all_tensors_to_one_file=True,
              location=args[1].rsplit("/", 1)[-1] + ".data")
else:
    import onnxprune
    from onnxprune.cli.app import main
    where = onnxprune.__file__
    rss = status("VmRSS")
    t1 = time.perf_counter()
    try:
        main(args=args, prog_name="onnxprune", standalone_mode=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
t2 = time.perf_counter()
with open(out, "w") as handle:
    json.dump({"run_s": t2 - t1, "import_rss_kib": rss, "vmhwm_kib": status("VmHWM"), "exit": code,
               "where": where}, handle)
"""

#: Counters around the functions issue 14 counts, for one CLI run in this (child) process.
_COUNTER = r"""
import collections, functools, importlib, json, sys
import onnx, onnx.shape_inference, onnx_graphsurgeon as gs, onnxruntime as ort
counts = collections.Counter()

def wrap(owner, attr, key):
    original = getattr(owner, attr)
    @functools.wraps(original)
    def counted(*a, **k):
        counts[key] += 1
        return original(*a, **k)
    setattr(owner, attr, counted)
    return original, counted

wrap(gs, "import_onnx", "graph imports (graphsurgeon)")
wrap(gs, "export_onnx", "graph exports (graphsurgeon)")
wrap(onnx.shape_inference, "infer_shapes", "onnx shape inference calls")

class Session(ort.InferenceSession):
    def __init__(self, *a, **k):
        counts["onnxruntime sessions"] += 1
        super().__init__(*a, **k)
ort.InferenceSession = Session

from onnxprune.cli.app import main
for module, attr, key in (("onnxprune.ir.shapes", "infer_static_shapes", "static shape probes (infer_static_shapes)"),
                          ("onnxprune.ir.shapes", "infer_shapes_at", "shape inference at input shapes (infer_shapes_at)"),
                          ("onnxprune.measurement.counting", "count_model", "model counts (count_model)")):
    original, counted = wrap(importlib.import_module(module), attr, key)
    for loaded in list(sys.modules.values()):  # also where it was imported by name
        if getattr(loaded, "__name__", "").startswith("onnxprune"):
            for name, value in list(vars(loaded).items()):
                if value is original:
                    setattr(loaded, name, counted)
code = 0
try:
    main(args=sys.argv[2:], prog_name="onnxprune", standalone_mode=True)
except SystemExit as stop:
    code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
with open(sys.argv[1], "w") as handle:
    json.dump(dict(counts, exit=code), handle)
"""


@dataclass
class Cell:
    """Samples of one (code, case) command, one fresh child each."""

    run_s: list[float] = field(default_factory=list)
    import_kib: list[int] = field(default_factory=list)
    peak_kib: list[int] = field(default_factory=list)
    failure: str = ""

    def run(self) -> float:
        """The fastest run: on a shared machine other processes only ever add time, so the minimum is the
        closest to the command's own cost (the median is shown next to it)."""
        return min(self.run_s) if self.run_s else float("nan")

    def median(self) -> float:
        return statistics.median(self.run_s) if self.run_s else float("nan")

    def peak_mib(self) -> float:
        return max(self.peak_kib) / 1024 if self.peak_kib else float("nan")

    def above_import_mib(self) -> float:
        return max(p - i for p, i in zip(self.peak_kib, self.import_kib)) / 1024 if self.peak_kib else float("nan")


def run_child(cell: Cell, mode: str, args: list[str], code: Path | None, scratch: Path, timeout: float) -> None:
    """One fresh child; appends its sample or records why it failed."""
    if cell.failure:
        return
    proc, data = run_json_child(_CHILD, scratch / "child.json", [mode, *args], code or ROOT, scratch, timeout)
    if proc is None:
        cell.failure = f"timeout after {timeout:.0f} s"
        return
    if proc.returncode != 0 or data is None or data["exit"] != 0:
        cell.failure = f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ['?'])[-1][:160]}"
        return
    if code is not None and not data["where"].startswith(str(code)):
        raise SystemExit(f"child imported onnxprune from {data['where']}, not from {code}")
    cell.run_s.append(data["run_s"])
    cell.import_kib.append(data["import_rss_kib"])
    cell.peak_kib.append(data["vmhwm_kib"])


def build_models(folder: Path) -> dict[str, Path]:
    """ResNet-50-sized and MiniLM-sized models, one file each and with external data."""
    from onnx_builders import build_bert_encoder

    resnet = folder / "resnet50.onnx"
    onnx.save(build_resnet50(), str(resnet))
    minilm = build_bert_encoder(folder / "minilm_90mb.onnx", 90)
    models = {"resnet50": resnet, "minilm": minilm}
    for label, path in list(models.items()):
        ext = folder / "ext" / path.name
        ext.parent.mkdir(exist_ok=True)
        onnx.save(onnx.load(str(path)), str(ext), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)
        models[label + " (external data)"] = ext
    return models


def file_size(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


#: (case, model label, onnxprune arguments before the model path is filled in)
CASES = (
    ("(a) prune --ratio 0.3", "resnet50", ["prune", "{model}", "-o", "{out}", "--ratio", "0.3", "--quiet"]),
    ("(b) analyze", "minilm", ["analyze", "{model}"]),
    ("(c) prune --ratio 0.3 --verify", "resnet50 (external data)",
     ["prune", "{model}", "-o", "{out}", "--ratio", "0.3", "--verify", "--quiet"]),
    ("(c) prune --ratio 0.3 --verify", "minilm (external data)",
     ["prune", "{model}", "-o", "{out}", "--ratio", "0.3", "--verify", "--quiet"]),
)


def measure(models: dict[str, Path], codes: dict[str, Path], repeats: int, scratch: Path, timeout: float
            ) -> tuple[dict, dict]:
    """Every case per code and the load+save baseline per model, ``repeats`` times in a rotating order."""
    cells = {(code, case, label): Cell() for code in codes for case, label, _ in CASES}
    baselines = {label: Cell() for _, label, _ in CASES}
    jobs = [("baseline", label) for label in baselines] + sorted(cells)
    for r in range(repeats):
        shift = r % len(jobs)
        for job in jobs[shift:] + jobs[:shift]:
            if job[0] == "baseline":
                label = job[1]
                out = scratch / "out" / "saved.onnx"
                run_child(baselines[label], "loadsave", [str(models[label]), str(out)], None, scratch, timeout)
                cell, shown = baselines[label], f"load+save {label}"
            else:
                code, case, label = job
                args = next(a for c, m, a in CASES if c == case and m == label)
                args = [a.format(model=models[label], out=scratch / "out" / "pruned.onnx") for a in args]
                cell, shown = cells[job], f"{code:6} {case} {label}"
                run_child(cell, "cli", args, codes[code], scratch, timeout)
            print(f"  [{r + 1}] {shown}: " + (cell.failure or f"{cell.run_s[-1]:.2f} s, "
                                               f"{cell.peak_kib[-1] / 1024:.0f} MiB"), flush=True)
    return cells, baselines


COUNT_RUNS = (("prune --ratio 0.3", []), ("+ --verify", ["--verify"]),
              ("+ --calib-random 8 --verify", ["--calib-random", "8", "--verify"]))


def count_calls(codes: dict[str, Path], scratch: Path, timeout: float) -> dict[tuple[str, str], dict]:
    """The counters of one MNIST CNN prune per code and option set."""
    found = {}
    for code, path in codes.items():
        for label, extra in COUNT_RUNS:
            args = ["prune", str(MODELS / "mnist_cnn.onnx"), "-o", str(scratch / "out" / "mnist.onnx"),
                    "--ratio", "0.3", "--quiet", *extra]
            _, data = run_json_child(_COUNTER, scratch / "counts.json", args, path, scratch, timeout)
            found[(code, label)] = data or {"exit": "no report"}
    return found


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}×" if base > 0 and not math.isnan(value) else "–"  # NaN > 0 is False


def verdict(models: dict[str, Path], cells: dict, baselines: dict, code: str) -> list[str]:
    """One line per target of issue 14: the measured ratio of ``code`` and whether it is within the target."""
    lines = []

    def line(text: str, value: float) -> None:
        met = "met" if value <= 2.0 else "**not met**"
        lines.append(f"- {text}: {value:.2f}× (target ≤ 2×) — {met}")

    for case, label, _ in CASES:
        cell, base, size = cells[(code, case, label)], baselines[label], file_size(models[label])
        if cell.failure or base.failure:
            lines.append(f"- {case} {label}: not measured ({cell.failure or base.failure})")
            continue
        if case.startswith("(c)"):
            line(f"{case}, {label}: peak RSS ÷ model size ({cell.above_import_mib() * 2**20 / size:.2f}× above "
                 "import)", cell.peak_mib() * 2**20 / size)
            continue
        line(f"{case}, {label}: run time ÷ load+save", cell.run() / base.run())
        if case.startswith("(a)"):
            line(f"{case}, {label}: peak RSS above import ÷ file", cell.above_import_mib() * 2**20 / size)
    return lines


def render(models: dict[str, Path], codes: dict[str, Path], cells: dict, baselines: dict, counts: dict,
           command: str, repeats: int, before: str | None, seconds: float) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Tool cost (issue 14): onnxprune against onnx.load + onnx.save, before and after one graph per run",
        "",
        (f"Generated by `{command}` on {now} ({platform.machine()}, {os.cpu_count()} CPUs, Python "
         f"{platform.python_version()}, onnx {onnx.__version__}); {repeats} run(s) per cell: run time the fastest "
         f"(median in brackets; ratios use the fastest), peak RSS the largest; {seconds / 60:.1f} min.  \"before\" = `{before}` (temporary worktree), \"after\" = this "
         "checkout.  Each command runs in a fresh child; *run* excludes importing onnxprune (resp. onnx), *above "
         "import* is `VmHWM` minus `VmRSS` right after the import.  The machine is shared and loaded: only ratios "
         "measured in this one run mean anything.  Peak RSS of a memory-mapped input also depends on how the "
         "file's pages sit in the page cache (the same ResNet-50 bytes peaked at 244, 263 and 294 MiB as a copied, an "
         "often-read and a just-written file), so compare codes on the same file, as each row pair here does."),
        "",
        ("| case | model (size) | code | run s | ÷ load+save | peak MiB | above import MiB | above import ÷ file | "
         "peak ÷ model |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case, label, _ in CASES:
        size = file_size(models[label])
        base = baselines[label]
        lines.append(f"| load+save | {label} ({size / 1e6:.0f} MB) | – | {base.run():.2f} ({base.median():.2f}) | 1.00× | "
                     f"{base.peak_mib():.0f} | {base.above_import_mib():.0f} | – | – |")
        for code in codes:
            cell = cells[(code, case, label)]
            if cell.failure:
                lines.append(f"| {case} | {label} | {code} | {cell.failure} | | | | | |")
                continue
            lines.append(f"| {case} | {label} | {code} | {cell.run():.2f} ({cell.median():.2f}) | "
                         f"{_ratio(cell.run(), base.run())} | "
                         f"{cell.peak_mib():.0f} | {cell.above_import_mib():.0f} | "
                         f"{_ratio(cell.above_import_mib() * 2**20, size)} | {_ratio(cell.peak_mib() * 2**20, size)} |")
    lines += ["", "## Targets (after)", ""] + verdict(models, cells, baselines, "after" if "after" in codes else "")
    lines += ["", "## One MNIST CNN prune: how often the graph is imported, exported, inferred, run and counted", "",
              ("`prune models/mnist_cnn.onnx --ratio 0.3` in one process with counters around the functions (the "
               "isolation child is a separate process and not counted)."), ""]
    keys = sorted({k for found in counts.values() for k in found if k != "exit"})
    header = [f"{code}: {label}" for label, _ in COUNT_RUNS for code in codes]
    lines += ["| counted | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for key in keys + ["exit"]:
        row = [str(counts[(code, label)].get(key, 0)) for label, _ in COUNT_RUNS for code in codes]
        lines.append(f"| {key} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git revision to compare with (temporary worktree)")
    parser.add_argument("--no-before", action="store_true", help="measure this checkout only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child")
    parser.add_argument("--out", default=str(HERE / "results_tool_cost.md"))
    parser.add_argument("--cases", default="", help="comma-separated case letters to run (e.g. c): their rows "
                        "replace the same rows of --out, every other row is kept; no MNIST call counts")
    args = parser.parse_args()
    global CASES
    letters = [f"({letter.strip()})" for letter in args.cases.split(",") if letter.strip()]
    CASES = tuple(case for case in CASES if not letters or case[0].split()[0] in letters)
    if not CASES:
        parser.error(f"--cases {args.cases}: no such case")
    command = "python benchmarks/bench_tool_cost.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.pop("ONNXPRUNE_NO_ISOLATION", None)  # the CLI as users run it: isolation on
    before = None if args.no_before else args.before
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_tool_cost_") as tmp:
        scratch = Path(tmp)
        (scratch / "out").mkdir()
        models = build_models(scratch)
        with worktree_at(before, scratch / "before") as worktree:
            codes = ({"before": worktree} if worktree else {}) | {"after": ROOT}
            cells, baselines = measure(models, codes, args.repeats, scratch, args.timeout)
            counts = {} if letters else count_calls(codes, scratch, args.timeout)
            counts = counts or {(code, label): {} for code in codes for label, _ in COUNT_RUNS}
            text = render(models, codes, cells, baselines, counts, command, args.repeats, before,
                          time.perf_counter() - start)
    if letters:
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        text = merge(Path(args.out).read_text(), text,
                     f"Rows {', '.join(letters)} (with their load+save baselines and targets) re-run on {now} by "
                     f"`{command}` ({args.repeats} run(s) per cell, before = `{before}`); the other rows are from "
                     "the run above.")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
