"""Shared test fixtures: the shipped models and an oracle assertion used across test files."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import onnx
import pytest

from onnxprune.methods.prepared import Prepared
from onnxprune.methods.width import masked_reference
from onnxprune.methods.plan import Plan
from onnxprune.runtime.sessions import Runner
from onnxprune.ir.checker import check_model
from onnxprune.measurement.agreement import compare_outputs
from onnxprune.runtime.feeds import random_feeds, shapes_of, trial_runs

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def manifest() -> list[dict]:
    return json.loads((MODELS / "manifest.json").read_text())


def model_names() -> list[str]:
    return sorted(entry["name"] for entry in manifest())


def assert_matches_oracle(prepared: Prepared, plan: Plan, pruned: onnx.ModelProto, tolerance: float = 1e-4,
                          seeds: tuple[int, ...] = (0, 7), batch: int = 3) -> None:
    """Checker + onnxruntime under both optimization levels + masked reference within ``tolerance``.

    ``tolerance`` is relative: max |pruned - reference| / max |reference| per output.  The first batch
    has ``batch`` samples; each further seed runs at another assignment of the symbolic dims the model
    accepts (DESIGN §3: a rewrite right only at the probe's shapes is a wrong model).
    """
    check_model(pruned)
    reference = masked_reference(prepared, plan)
    first = [random_feeds(prepared.original, batch=batch, seed=seeds[0])]
    candidate = Runner(pruned)
    runs = list(trial_runs(reference, len(seeds), seed=seeds[-1], given=first))
    assert len(runs) == len(seeds)
    for feeds, expected in runs:
        for optimized in (False, True):
            diffs = compare_outputs(expected, candidate.run(feeds, optimized=optimized), tolerance)
            bad = [d for d in diffs if not d.ok]
            assert not bad, f"inputs {shapes_of(feeds)} optimized={optimized}: {bad}"


@pytest.fixture(scope="session")
def mnist_test() -> dict[str, np.ndarray]:
    data = np.load(MODELS / "mnist_test.npz")
    return {"input": data["input"], "y": data["y"]}
