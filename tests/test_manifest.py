"""models/ is a contract: every manifest entry exists, is a valid model, runs, and the folder stays small."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import MODELS, manifest
from onnxprune.ir.checker import check_model
from onnxprune.runtime.feeds import random_feeds
from onnxprune.runtime.sessions import run_model


def test_models_folder_under_20_mb() -> None:
    total = sum(p.stat().st_size for p in MODELS.iterdir() if p.is_file())
    assert total < 20 * 1024 * 1024


@pytest.mark.parametrize("entry", manifest(), ids=lambda e: e["name"])
def test_manifest_entry_is_a_valid_runnable_model(entry: dict) -> None:
    for key in ("name", "file", "source", "exporter", "opset", "exercises", "inputs"):
        assert key in entry, key
    model = onnx.load(MODELS / entry["file"])
    check_model(model)
    assert {v.name for v in model.graph.input} >= set(entry["inputs"])
    outputs = run_model(model, random_feeds(model, batch=2, seed=0))
    assert all(np.all(np.isfinite(v)) for v in outputs.values() if np.issubdtype(v.dtype, np.floating))
