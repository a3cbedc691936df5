"""ONNX's own node tests (~1,900 one-operator models with expected outputs) through the whole pipeline.

Why: the shipped models exercise the ops onnxprune has rules for; the node tests exercise *every* op
ONNX defines, in every attribute variant, including control flow, sequences, optionals, functions
expanded into subgraphs and opsets newer than any exporter writes.  At ``ratio=0`` nothing is removed,
so the pipeline (normalize → analyze → plan → rewrite → cleanup) must hand back a model that computes
what the original computes — or refuse with an ``OnnxPruneError``.

Each case is classified once per run:

* ``ok`` — the original passes in onnxruntime and so does the pruned model;
* ``ort_fails_original`` — onnxruntime already fails or differs on the original (not onnxprune's
  business; onnxprune must still not raise anything but an ``OnnxPruneError`` on it);
* ``refused`` — onnxprune raised an ``OnnxPruneError`` (a clear refusal is a legal answer);
* ``regressed`` — the original is ok but the pruned model differs, or fails to load or run;
* ``internal_error`` — onnxprune raised something other than an ``OnnxPruneError`` (a bug).

The outcome of every case is recorded in ``tests/data/node_test_baseline.json``; the test fails when a
case is *worse* than its record (rank: ok = ort_fails_original < refused < regressed < internal_error)
or when a case is missing.  Improvements pass; record them with::

    python tests/test_node_tests.py --update-baseline

Settings: onnxruntime with ``ORT_DISABLE_ALL`` and one thread, the first data set of each case, the
case's own ``rtol``/``atol`` (ONNX defaults 1e-3 / 1e-7) with the comparison rules of ONNX's backend
runner (same shape, same dtype, ``assert_allclose``; strings compared exactly; sequences element-wise).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxprune.errors import OnnxPruneError
from onnxprune.pipeline import PruneOptions, prune

BASELINE = pathlib.Path(__file__).resolve().parent / "data" / "node_test_baseline.json"
RANK = {"ok": 0, "ort_fails_original": 0, "refused": 1, "regressed": 2, "internal_error": 3}
DETAIL_CHARS = 200


@functools.lru_cache(maxsize=1)
def node_cases() -> tuple[Any, ...]:
    """The node test cases of the installed onnx (generated in memory by onnx's case modules)."""
    from onnx.backend.test.loader import load_model_tests  # noqa: PLC0415 - slow import, load lazily

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        cases = load_model_tests(kind="node")
    return tuple(sorted(cases, key=lambda case: case.name))


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _to_python(value: Any) -> Any:
    """Expected values may be TensorProto / SequenceProto / OptionalProto; make them NumPy values."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, onnx.SequenceProto):
        return numpy_helper.to_list(value)
    if isinstance(value, onnx.OptionalProto):
        return numpy_helper.to_optional(value)
    if isinstance(value, np.generic):  # onnxruntime takes arrays, not NumPy scalars
        return np.asarray(value)
    return value


def assert_close(expected: Any, actual: Any, rtol: float, atol: float) -> None:
    """The comparison of ONNX's backend runner (``assert_similar_outputs``)."""
    if isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)), f"expected a sequence, got {type(actual).__name__}"
        assert len(actual) == len(expected), f"sequence length {len(actual)} != {len(expected)}"
        for exp, act in zip(expected, actual):
            assert_close(exp, act, rtol, atol)
        return
    if expected is None:
        assert actual is None, "expected an empty optional"
        return
    expected, actual = np.asarray(expected), np.asarray(actual)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    if expected.dtype == object:
        np.testing.assert_array_equal(actual, expected)
        return
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


@dataclass(frozen=True)
class Run:
    """How to feed a case and read its outputs, fixed by the *original* model's session."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def run_and_compare(model: onnx.ModelProto, case: Any, run: Run | None = None) -> Run:
    """Run ``model`` on the case's first data set and compare with its expected outputs."""
    inputs, expected = case.data_sets[0]
    session = _session(model)
    if run is None:
        run = Run(tuple(i.name for i in session.get_inputs()), tuple(o.name for o in session.get_outputs()))
    assert len(run.inputs) == len(inputs), f"{len(inputs)} inputs for {len(run.inputs)} model inputs"
    assert len(run.outputs) == len(expected), f"{len(expected)} outputs for {len(run.outputs)} model outputs"
    feeds = {name: _to_python(value) for name, value in zip(run.inputs, inputs)}
    actual = session.run(list(run.outputs), feeds)
    for exp, act in zip(expected, actual):
        assert_close(_to_python(exp), act, case.rtol, case.atol)
    return run


def _short(err: BaseException) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text[:DETAIL_CHARS]


def classify(case: Any) -> tuple[str, str]:
    """(status, detail) of one case; see the module docstring."""
    try:
        run: Run | None = run_and_compare(case.model, case)
    except Exception as err:  # onnxruntime cannot run or does not match the original
        run, original_error = None, _short(err)
    try:
        pruned = prune(case.model, PruneOptions(ratio=0.0)).model
    except OnnxPruneError as err:
        return "refused", _short(err)
    except Exception as err:  # noqa: BLE001 - exactly what this suite hunts for
        return "internal_error", _short(err)
    if run is None:
        return "ort_fails_original", original_error
    try:
        run_and_compare(pruned, case, run)
    except Exception as err:
        return "regressed", _short(err)
    return "ok", ""


@functools.lru_cache(maxsize=1)
def run_suite() -> tuple[dict[str, dict[str, str]], float]:
    """Outcome of every case (cached: the tests below share one run) and the wall time."""
    start = time.monotonic()
    outcomes: dict[str, dict[str, str]] = {}
    for case in node_cases():
        status, detail = classify(case)
        assert case.name not in outcomes, f"duplicate node test name {case.name}"
        outcomes[case.name] = {"status": status, "detail": detail} if detail else {"status": status}
    return outcomes, time.monotonic() - start


def load_baseline() -> dict[str, Any]:
    return json.loads(BASELINE.read_text())


def write_baseline() -> dict[str, int]:
    outcomes, seconds = run_suite()
    counts = _counts(outcomes)
    data = {
        "about": "Outcome of every ONNX node test at ratio 0 (tests/test_node_tests.py); regenerate with "
                 "`python tests/test_node_tests.py --update-baseline`.",
        "onnx": onnx.__version__, "onnxruntime": ort.__version__, "cases": len(outcomes),
        "counts": counts, "seconds": round(seconds, 1), "outcomes": outcomes,
    }
    BASELINE.parent.mkdir(exist_ok=True)
    BASELINE.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    return counts


def _counts(outcomes: dict[str, dict[str, str]]) -> dict[str, int]:
    counts = {status: 0 for status in RANK}
    for outcome in outcomes.values():
        counts[outcome["status"]] += 1
    return counts


def _listing(names: list[str], outcomes: dict[str, dict[str, str]], limit: int = 25) -> str:
    lines = [f"  {name}: {outcomes[name]['status']} {outcomes[name].get('detail', '')}" for name in names[:limit]]
    more = f"\n  ... and {len(names) - limit} more" if len(names) > limit else ""
    return "\n".join(lines) + more


# --------------------------------------------------------------------------------------------------
# tests


def test_node_tests_are_loaded() -> None:
    """The whole suite is there: an onnx without node tests must not make the suite pass vacuously."""
    assert len(node_cases()) >= 1500
    assert all(case.data_sets for case in node_cases()), "every node test carries at least one data set"


def test_no_case_worse_than_baseline() -> None:
    outcomes, seconds = run_suite()
    baseline = load_baseline()
    recorded = baseline["outcomes"]
    assert len(outcomes) == len(node_cases()), "every case got an outcome (nothing skipped)"
    worse = [name for name, outcome in outcomes.items()
             if name in recorded and RANK[outcome["status"]] > RANK[recorded[name]["status"]]]
    new_bad = [name for name, outcome in outcomes.items()
               if name not in recorded and RANK[outcome["status"]] >= RANK["regressed"]]
    missing = sorted(set(recorded) - set(outcomes)) if baseline["onnx"] == onnx.__version__ else []
    message = []
    if worse:
        message.append(f"{len(worse)} cases are worse than tests/data/node_test_baseline.json:\n"
                       + _listing(worse, outcomes))
    if new_bad:
        message.append(f"{len(new_bad)} cases absent from the baseline fail:\n" + _listing(new_bad, outcomes))
    if missing:
        message.append(f"{len(missing)} recorded cases were not run (same onnx {onnx.__version__}): {missing[:10]}")
    assert not message, "\n".join(message) + f"\n(counts now: {_counts(outcomes)}, {seconds:.0f} s)"


def test_no_internal_errors() -> None:
    """Every case ends in an outcome onnxprune chose: no exception but OnnxPruneError escapes."""
    outcomes, _ = run_suite()
    crashed = sorted(name for name, outcome in outcomes.items() if outcome["status"] == "internal_error")
    assert not crashed, f"{len(crashed)} cases raise a non-OnnxPruneError:\n" + _listing(crashed, outcomes)


def test_no_regressions() -> None:
    """At ratio 0 no case that onnxruntime runs may come back different (was 139 before 31894c4)."""
    outcomes, _ = run_suite()
    regressed = sorted(name for name, outcome in outcomes.items() if outcome["status"] == "regressed")
    assert not regressed, f"{len(regressed)} cases regress at ratio 0:\n" + _listing(regressed, outcomes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-baseline", action="store_true", help="Rewrite tests/data/node_test_baseline.json.")
    args = parser.parse_args(argv)
    if args.update_baseline:
        print(json.dumps(write_baseline()), f"-> {BASELINE}")
        return 0
    outcomes, seconds = run_suite()
    print(json.dumps(_counts(outcomes)), f"{seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
