#!/usr/bin/env python3
"""Kill ``onnxprune prune MODEL -o OUT`` with SIGKILL at random moments; OUT must never be half-written.

README promises that an interrupted run leaves either no file or a complete one.  This script checks it
the hard way: it generates a conv net of a few MB (so a run takes about a second), measures how long a
run takes, then starts runs and SIGKILLs each after a seeded random delay — spread over the whole run,
with extra weight on its last part (60 % of kills fall in 0.6–1.3× the measured run time) where the output is written.  Half of the runs start with an *old*
valid model already at OUT.  After each kill, OUT must be one of:

* absent (only when nothing was there before),
* the old model, byte for byte,
* a complete new model: the full ONNX checker passes, onnxruntime loads and runs it.

Temporary files left next to OUT (a SIGKILL gives no chance to clean up) are counted and reported, not
judged.  Usage::

    python scripts/kill_prune.py --runs 200 --seed 0 --jobs 2

Exit status 0 when every run left a valid state, 1 otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_conv_net(path: pathlib.Path, width: int = 128, blocks: int = 6, seed: int = 0) -> pathlib.Path:
    """A plain conv net (3x3 convs of ``width`` channels): about ``blocks * width² * 36`` bytes of weights."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x, cin = "x", 3
    for index in range(blocks):
        cout = width if index < blocks - 1 else width // 2
        w, b = f"conv{index}_W", f"conv{index}_B"
        scale = 1.0 / np.sqrt(cin * 9)
        inits.append(numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * scale).astype(np.float32), w))
        inits.append(numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), b))
        nodes.append(helper.make_node("Conv", [x, w, b], [f"conv{index}"], name=f"conv{index}", kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{index}"], [f"relu{index}"], name=f"relu{index}"))
        x, cin = f"relu{index}", cout
    inits.append(numpy_helper.from_array((rng.standard_normal((10, cin)) / np.sqrt(cin)).astype(np.float32), "fc_W"))
    inits.append(numpy_helper.from_array(np.zeros(10, np.float32), "fc_B"))
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flat", axis=1),
              helper.make_node("Gemm", ["flat", "fc_W", "fc_B"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "kill_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="kill_prune")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def entry_point() -> list[str]:
    # the script installed beside this interpreter first: PATH may point at another environment
    script = os.path.join(os.path.dirname(sys.executable), "onnxprune")
    script = script if os.path.exists(script) else (shutil.which("onnxprune") or script)
    return [script] if os.path.exists(script) else [sys.executable, "-m", "onnxprune.cli"]


def prune_command(model: pathlib.Path, output: pathlib.Path) -> list[str]:
    return [*entry_point(), "prune", str(model), "-o", str(output), "--ratio", "0.5"]


def check_model_file(path: pathlib.Path) -> str | None:
    """None when ``path`` holds a complete model the checker and onnxruntime accept; else why not."""
    try:
        import onnxruntime as ort  # noqa: PLC0415

        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, {"x": np.zeros((1, 3, 16, 16), np.float32)})
    except Exception as err:  # noqa: BLE001 - any failure is the finding
        return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
    return None


def measure(model: pathlib.Path, folder: pathlib.Path, jobs: int = 1, repeats: int = 2) -> float:
    """Median wall time of uninterrupted runs, ``jobs`` at a time (the load the trials will see)."""

    def one(index: int) -> float:
        out = folder / f"measure{index}.onnx"
        start = time.monotonic()
        proc = subprocess.run(prune_command(model, out), capture_output=True, text=True, timeout=300)
        seconds = time.monotonic() - start
        if proc.returncode != 0:
            raise RuntimeError(f"an uninterrupted run failed (exit {proc.returncode}): {proc.stderr.strip()}")
        problem = check_model_file(out)
        if problem:
            raise RuntimeError(f"an uninterrupted run wrote an invalid model: {problem}")
        return seconds

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        times = sorted(pool.map(one, range(jobs * repeats)))
    return times[len(times) // 2]


@dataclass(frozen=True)
class Trial:
    index: int
    delay: float
    preexisting: bool


def plan_trials(runs: int, seed: int, duration: float) -> list[Trial]:
    """Seeded kill moments: 40 % uniform over 0–1.2× the run time, 60 % in 0.6–1.3× (where saving
    happens); some land after the end, so some runs complete and the "new model" state is exercised."""
    rng = random.Random(seed)
    trials = []
    for index in range(runs):
        if rng.random() < 0.4:
            delay = rng.uniform(0.0, 1.2 * duration)
        else:
            delay = rng.uniform(0.6 * duration, 1.3 * duration)
        trials.append(Trial(index, delay, preexisting=rng.random() < 0.5))
    return trials


def run_trial(trial: Trial, model: pathlib.Path, old: bytes, workdir: pathlib.Path) -> dict:
    """One run killed after ``trial.delay`` seconds; returns the state found at the output path."""
    folder = workdir / f"trial{trial.index}"
    folder.mkdir()
    out = folder / "out.onnx"
    if trial.preexisting:
        out.write_bytes(old)
    proc = subprocess.Popen(prune_command(model, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=trial.delay)
        killed = False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)  # only the child this trial started
        proc.wait()
        killed = True
    leftovers = sorted(p.name for p in folder.iterdir() if p.name != "out.onnx")
    if not out.exists():
        state, problem = "absent", None if not trial.preexisting else "the previous output disappeared"
    elif trial.preexisting and out.read_bytes() == old:
        state, problem = "old", None
    else:
        problem = check_model_file(out)
        state = "new" if problem is None else "corrupt"
    result = {"index": trial.index, "delay": round(trial.delay, 3), "preexisting": trial.preexisting,
              "killed": killed, "returncode": proc.returncode, "state": state, "problem": problem,
              "leftover_files": leftovers}
    shutil.rmtree(folder, ignore_errors=True)
    return result


def kill_runs(runs: int, seed: int, jobs: int, workdir: pathlib.Path, width: int = 256, blocks: int = 5) -> dict:
    """Make the model, measure a run, then do ``runs`` killed runs ``jobs`` at a time."""
    start = time.monotonic()
    model = make_conv_net(workdir / "model.onnx", width, blocks, seed)
    duration = measure(model, workdir, jobs)
    old = _old_variant((workdir / "measure0.onnx").read_bytes())
    trials = plan_trials(runs, seed, duration)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda t: run_trial(t, model, old, workdir), trials))
    bad = [r for r in results if r["problem"]]
    return {"runs": runs, "seed": seed, "jobs": jobs, "model_bytes": model.stat().st_size,
            "run_seconds": round(duration, 3), "seconds": round(time.monotonic() - start, 1),
            "states": dict(Counter(r["state"] for r in results)),
            "killed": sum(r["killed"] for r in results),
            "runs_with_leftover_temp_files": sum(bool(r["leftover_files"]) for r in results),
            "bad": bad, "results": results}


def _old_variant(model_bytes: bytes) -> bytes:
    """The pre-existing output: a valid model whose bytes differ from anything a run writes."""
    model = onnx.load_from_string(model_bytes)
    model.doc_string = "previous output (kill_prune)"
    return model.SerializeToString()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SIGKILL `onnxprune prune` at random moments (see docstring).")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--width", type=int, default=256, help="Channels of the generated conv net.")
    parser.add_argument("--blocks", type=int, default=5, help="Conv layers of the generated conv net.")
    parser.add_argument("--json", type=pathlib.Path, help="Write every trial here.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="onnxprune-kill-") as work:
        summary = kill_runs(args.runs, args.seed, args.jobs, pathlib.Path(work), args.width, args.blocks)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("results",)}, indent=1))
    return 1 if summary["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
