"""Benchmark: calibration statistics and a sensitivity scan, local vs Ray tasks on 1 and 2 workers.

Run from the repository root (needs the ray extra: ``pip install -e ".[ray]"``)::

    python benchmarks/bench_ray.py [--out benchmarks/results_ray.md] [--repeat 3]

Workloads (real models and calibration data from ``models/``):

* **statistics** — ``calibration_statistics(..., "entropy")`` of ``mnist_cnn`` over ``mnist_calib.npz``
  (500 samples, batch 25: 20 batches × 3 passes = 60 tasks);
* **sensitivity** — ``scan`` of ``mnist_cnn`` at 9 ratios (every group × ratio is a task that applies
  the plan, counts it and runs the 500 samples).

For 1 and then 2 workers a fresh Ray instance runs each workload once "cold" (that run also starts the
worker processes), then ``--repeat`` rounds of local and Ray alternately; the fastest of each is reported.  Every Ray result is
checked to be byte-identical to the local one.  Ray with 1 worker against local shows the overhead of
the seam (shipping the model once per map, a task per item, results through the object store); with 2
workers, the speed-up this 2-core machine allows (other processes share it: the load average is
recorded).  The projection for N workers uses the per-task times measured locally:
``T(N) = T_coordinator + max(Σ item / N, longest item) + overhead_per_item × items / N``, where the
per-task overhead is what Ray with 1 worker adds over local, divided by the number of tasks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from typing import Any, Callable

import repo_paths  # noqa: F401  (puts this checkout first on sys.path)

from onnxprune.runtime.calibration import load_calibration
from onnxprune.runtime.executor import LOCAL, RayExecutor
from onnxprune.io.files import load_model
from onnxprune.pipeline import PruneOptions, calibration_statistics, group_scores
from onnxprune.methods.prepared import prepare
from onnxprune.planning.sensitivity import DEFAULT_RATIOS, load_labels, scan

MODEL, CALIB = repo_paths.MODELS / "mnist_cnn.onnx", repo_paths.MODELS / "mnist_calib.npz"
WORKERS = (1, 2)
PROJECTED = (1, 2, 4, 8, 16, 32)


class TimedExecutor:
    """The local executor, timing each task (what the projection is built from)."""

    name, remote = "local", False

    def __init__(self) -> None:
        self.times: list[float] = []

    def workers(self) -> int:
        return 1

    def ship(self, model):
        return LOCAL.ship(model)

    def map(self, fn, items, shared=None, *, what="task", num_cpus=1.0, per_task=1):
        for item in items:
            start = time.perf_counter()
            result = fn(shared, item)
            self.times.append(time.perf_counter() - start)
            yield result


def workloads() -> dict[str, Callable[[Any], bytes]]:
    """Name → run(executor) returning the result's bytes (compared across executors)."""
    model = load_model(MODEL)
    prepared = prepare(model)
    stats_data = load_calibration(CALIB, model, batch_size=25)
    scan_data = load_calibration(CALIB, model, batch_size=100)
    scores = group_scores(prepared, PruneOptions(criterion="l1")).by_group
    labels = load_labels(CALIB)

    def statistics(executor) -> bytes:
        stats = calibration_statistics(prepared, stats_data, "entropy", executor)
        parts = [b"".join(a.tobytes() for a in (s.sum, s.sumsq, s.sumabs, s.zeros)) for s in stats.by_slot.values()]
        parts += [h.counts.tobytes() for h in stats.histograms.values()]
        return b"".join(parts)

    def sensitivity(executor) -> bytes:
        result = scan(prepared, scan_data, scores, "l1", DEFAULT_RATIOS, labels, executor=executor)
        return json.dumps(result.to_dict(), sort_keys=True).encode()

    return {"statistics": statistics, "sensitivity": sensitivity}


def _timed(run: Callable[[Any], bytes], executor: Any) -> tuple[float, bytes]:
    start = time.perf_counter()
    result = run(executor)
    return time.perf_counter() - start, result


def measure(repeat: int) -> dict[str, Any]:
    """Per worker count: a fresh Ray instance, one cold run, then ``repeat`` rounds of local and Ray
    alternately (the machine's load changes by the minute: only interleaved runs compare)."""
    import ray

    # workers started by ray.init inherit the environment: let them import this checkout too
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_paths.ROOT), os.environ.get("PYTHONPATH")) if p)
    jobs = workloads()
    out: dict[str, Any] = {"workloads": {name: {"ray": {}} for name in jobs}}
    for workers in WORKERS:
        started = time.perf_counter()
        executor = RayExecutor(num_cpus=workers)
        init_seconds = time.perf_counter() - started
        for name, run in jobs.items():
            cold, _ = _timed(run, executor)
            rounds = []
            for _ in range(repeat):
                timed = TimedExecutor()
                local, reference = _timed(run, timed)
                remote, result = _timed(run, executor)
                rounds.append((local, remote, timed.times, result == reference))
            local, _, tasks, _ = min(rounds, key=lambda r: r[0])
            out["workloads"][name]["ray"][workers] = {
                "init_seconds": init_seconds, "cold_seconds": cold, "seconds": min(r[1] for r in rounds),
                "local_seconds": local, "tasks": len(tasks), "task_seconds_sum": sum(tasks),
                "task_seconds_max": max(tasks), "identical": all(r[3] for r in rounds)}
        ray.shutdown()
    out["load_average"] = os.getloadavg()
    return out


def projection(entry: dict[str, Any]) -> dict[int, float]:
    """Seconds with N workers from the local per-task times and the measured per-task Ray overhead
    (both from the 1-worker rounds)."""
    one = entry["ray"][1]
    tasks, total, longest = one["tasks"], one["task_seconds_sum"], one["task_seconds_max"]
    coordinator = max(one["local_seconds"] - total, 0.0)
    overhead = max(one["seconds"] - one["local_seconds"], 0.0) / tasks
    return {n: coordinator + max(total / n, longest) + overhead * tasks / n for n in PROJECTED}


def report(data: dict[str, Any], command: str) -> str:
    lines = [
        "# Ray executor: local vs Ray tasks (benchmarks/bench_ray.py)", "",
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores shared with other processes (load average {data['load_average'][0]:.1f} at the end), "
        f"Python {platform.python_version()}.", "",
        f"Reproduce: `{command}`", "",
        "Times are the fastest of the repeats, seconds; *cold* is the first Ray run of a fresh instance (it starts the "
        "worker processes); *init* is `ray.init`. Every Ray result was compared byte for byte with the local one. "
        "*Items* are calibration batches × passes (statistics) or group × ratio candidates (sensitivity); Ray runs "
        "consecutive items in one task (`executor.per_task`: about four tasks per worker, at most 64 items or 16 MiB of batches).", "",
        "| workload | items | workers | local s | Ray s | Ray ÷ local | Ray cold s | identical |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in data["workloads"].items():
        for workers, run in entry["ray"].items():
            lines.append(f"| {name} | {run['tasks']} | {workers} | {run['local_seconds']:.2f} | {run['seconds']:.2f} | "
                         f"{run['seconds'] / run['local_seconds']:.2f}× | {run['cold_seconds']:.2f} | {run['identical']} |")
    lines += ["", f"`ray.init`: {data['workloads']['statistics']['ray'][1]['init_seconds']:.1f} s (1 CPU), "
              f"{data['workloads']['statistics']['ray'][2]['init_seconds']:.1f} s (2 CPUs).", "",
              "## Projection from per-task times", "",
              "`T(N) = T_coordinator + max(Σ item / N, longest item) + overhead_per_item × items / N` (module docstring); "
              "per-task times measured locally in the same run.", "",
              "| workload | Σ item s | longest item s | Ray overhead per item ms | "
              + " | ".join(f"N={n}" for n in PROJECTED) + " |",
              "|---|---|---|---|" + "---|" * len(PROJECTED)]
    for name, entry in data["workloads"].items():
        proj, one = projection(entry), entry["ray"][1]
        overhead = max(one["seconds"] - one["local_seconds"], 0.0) / one["tasks"] * 1000
        lines.append(f"| {name} | {one['task_seconds_sum']:.2f} | {one['task_seconds_max']:.3f} | {overhead:.1f} | "
                     + " | ".join(f"{proj[n]:.2f}" for n in PROJECTED) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="Write the Markdown report here.")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = measure(args.repeat)
    command = "python benchmarks/bench_ray.py" + (f" --out {args.out}" if args.out else "") + \
        (f" --repeat {args.repeat}" if args.repeat != 3 else "")
    text = report(data, command)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
