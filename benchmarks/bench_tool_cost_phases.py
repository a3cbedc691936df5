"""Issue 14, where the time of (a) and (b) goes: wall time per phase of one CLI run, before and after, side by
side in one run (the ratios themselves: ``bench_tool_cost.py``).

Run from the repository root::

    python benchmarks/bench_tool_cost_phases.py [--before dc60560] [--repeats 4] [--out benchmarks/results_tool_cost_phases.md]

Each run is a fresh child that imports the code under test, wraps the pipeline's top-level steps with
timers (nested steps print indented; a step's time includes the ones inside it), and runs the command as
``bench_tool_cost.py`` does: (a) ``prune --ratio 0.3`` of the ResNet-50-sized file, (b) ``analyze`` of the
MiniLM-sized encoder.  The codes alternate; each cell is the median over the repeats.  *CPU* is this
process's user+system time and the isolation child's (``RUSAGE_CHILDREN``); time a step spends waiting
for the isolation child shows in no step (the run total minus the steps).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from repo_paths import ROOT, run_json_child, worktree_at
from resnet50 import build_resnet50

#: (label, module, attribute) of the steps timed; nested calls of a timed step are timed too.
STEPS = (
    ("isolation: validate, start the child, wait (guard_files)", "onnxprune.cli.guard", "guard_files"),
    ("isolation: waiting for the child", "onnxprune.io.isolation", "RunningProbe.wait"),
    ("start hashing the weights (a thread)", "onnxprune.workflows.steps", "start_hashing"),
    ("norms while the child runs", "onnxprune.workflows.steps", "warm_norms"),
    ("prepare", "onnxprune.methods.prepared", "prepare"),
    ("  check_input (finite weights, checker)", "onnxprune.methods.prepared", "check_input"),
    ("  shape probes", "onnxprune.ir.shapes", "infer_static_shapes"),
    ("  analyze_graph", "onnxprune.analysis.groups", "analyze_graph"),
    ("  model hash", "onnxprune.methods.prepared", "model_sha256"),
    ("plan (weight norms)", "onnxprune.pipeline", "plan_prune"),
    ("apply plan", "onnxprune.methods.width", "apply_plan"),
    ("count", "onnxprune.methods.prepared", "model_stats"),
    ("run check (onnxruntime, 2 shapes)", "onnxprune.methods.oracle", "check_runs"),
    ("save", "onnxprune.io.files", "save_model"),
)

_CHILD = r"""
import functools, importlib, json, resource, sys, time
out, steps, args = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
import onnxprune
from onnxprune.cli.app import main
times = {label: 0.0 for label, _, _ in steps}
for label, module_name, attr in steps:
    owner = importlib.import_module(module_name)
    if "." in attr:  # Class.method
        owner, attr = getattr(owner, attr.split(".")[0], None), attr.split(".")[1]
    original = getattr(owner, attr, None)
    if original is None:
        continue
    def timed(*a, __original=original, __label=label, **k):
        start = time.perf_counter()
        try:
            return __original(*a, **k)
        finally:
            times[__label] += time.perf_counter() - start
    functools.update_wrapper(timed, original)
    if isinstance(owner, type):
        setattr(owner, attr, timed)
        continue
    for loaded in list(sys.modules.values()):  # also where it was imported by name
        if getattr(loaded, "__name__", "").startswith(("onnxprune", "passes")):
            for name, value in list(vars(loaded).items()):
                if value is original:
                    setattr(loaded, name, timed)
def cpu():
    own, child = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, child.ru_utime + child.ru_stime
c0, t0 = cpu(), time.perf_counter()
code = 0
try:
    main(args=args, prog_name="onnxprune", standalone_mode=True)
except SystemExit as stop:
    code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
total, c1 = time.perf_counter() - t0, cpu()
with open(out, "w") as handle:
    json.dump({"times": times, "total": total, "cpu": c1[0] - c0[0], "child_cpu": c1[1] - c0[1], "exit": code,
               "where": onnxprune.__file__}, handle)
"""


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="dc60560", help="git revision to compare with (temporary worktree)")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--out", default=str(HERE / "results_tool_cost_phases.md"))
    options = parser.parse_args()
    command = "python benchmarks/bench_tool_cost_phases.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    os.environ.pop("ONNXPRUNE_NO_ISOLATION", None)
    from onnx_builders import build_bert_encoder

    with tempfile.TemporaryDirectory(prefix="bench_phases_") as tmp:
        scratch = Path(tmp)
        resnet = scratch / "resnet50.onnx"
        onnx.save(build_resnet50(), str(resnet))
        minilm = build_bert_encoder(scratch / "minilm_90mb.onnx", 90)
        cases = {"(a) prune --ratio 0.3, resnet50": ["prune", str(resnet), "-o", str(scratch / "p.onnx"), "--ratio",
                                                     "0.3", "--quiet"],
                 "(b) analyze, minilm": ["analyze", str(minilm)]}
        runs: dict[tuple[str, str], list[dict]] = {}
        with worktree_at(options.before, scratch / "before") as worktree:
            codes = {"before": worktree, "after": ROOT}
            for _ in range(options.repeats):
                for case, args in cases.items():
                    for code, path in codes.items():
                        _, data = run_json_child(_CHILD, scratch / "phases.json",
                                                 [json.dumps(STEPS), *args], path, scratch, 600)
                        if data is None or data["exit"] != 0:
                            raise SystemExit(f"{code} {case}: the run failed")
                        runs.setdefault((case, code), []).append(data)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    intro = (f"Generated by `{command}` on {now} ({platform.machine()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}); medians of {options.repeats} alternating runs, seconds.  \"before\" = "
             f"`{options.before}`, \"after\" = this checkout.  A step's time includes the steps indented under it; "
             "a step absent in a code shows 0.  The machine is shared: compare the columns of one run only.")
    lines = ["# Tool cost (issue 14): wall time per phase of (a) and (b), before and after", "", intro, ""]
    for case in cases:
        lines += [f"## {case}", "", "| phase | before | after |", "|---|---|---|"]
        def median(code: str, key: str, step: bool = False, case: str = case) -> float:
            return statistics.median(r["times"][key] if step else r[key] for r in runs[(case, code)])

        for label, _, _ in STEPS:
            values = [median(c, label, step=True) for c in ("before", "after")]
            if any(v >= 0.0005 for v in values):
                lines.append(f"| {label} | {values[0]:.3f} | {values[1]:.3f} |")
        for key, label in (("total", "**run total**"), ("cpu", "CPU, this process"),
                           ("child_cpu", "CPU, isolation child")):
            lines.append(f"| {label} | {median('before', key):.3f} | {median('after', key):.3f} |")
        lines.append("")
    text = "\n".join(lines)
    Path(options.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
