"""One graph per run (issue 14): the shortcuts that avoid repeated work must give exactly what the work gave.

- ``importance._index_norms`` converts and moves the axis in one copy; its per-index sums must be
  bit-identical to the two-step expression it replaced (plans are compared bit for bit across versions);
- ``model_stats`` counts the folded model once per input shapes and takes the size without re-counting;
- ``verify`` runs the reference first and the candidate one optimization level at a time; its diffs keep
  the order (batch, then unoptimized before optimized) reports and plans were written with.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import MODELS

from onnxprune.measurement.counting import count_model, model_size
from onnxprune.methods.prepared import model_stats, prepare
from onnxprune.methods.registry import method_of
from onnxprune.pipeline import PruneOptions, plan_prune, verify
from onnxprune.scoring.importance import Scratch, _index_norms


def _two_step(values: np.ndarray, axis: int, p: int, chunk: int = 1 << 21) -> np.ndarray:
    """The norms as computed before: cast the block, then move its axis (a second copy), then |w| or w²."""
    count = values.shape[axis]
    step = max(1, chunk // max(values.size // count if count else 0, 1))
    out = np.empty(count)
    for start in range(0, count, step):
        block = np.asarray(values[(slice(None),) * axis + (slice(start, min(count, start + step)),)], np.float64)
        moved = np.moveaxis(block, axis, 0).reshape(block.shape[axis], -1)
        out[start:start + len(moved)] = np.abs(moved).sum(axis=1) if p == 1 else (moved ** 2).sum(axis=1)
    return out


@pytest.mark.parametrize("shape", [(64, 32, 3, 3), (96, 40, 1, 1), (300, 129), (17,), (5, 7, 3), (3, 2100, 700)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_index_norms_bit_identical_to_the_two_step_sums(shape: tuple[int, ...], dtype: type) -> None:
    values = np.random.default_rng(len(shape)).standard_normal(shape).astype(dtype)
    layouts = [values, np.asfortranarray(values)] + ([values.T, values[:, ::2]] if values.ndim > 1 else [])
    scratch = Scratch()  # reused by every call below, as NormCache reuses it: leftovers must not matter
    scratch.empty(0, (1 << 21,))[...] = np.nan
    scratch.empty(1, (1 << 21,))[...] = np.nan
    for source in layouts:
        for axis in range(source.ndim):
            for p in (1, 2):
                want = _two_step(source, axis, p).tobytes()
                assert _index_norms(source, axis, p).tobytes() == want, (shape, dtype, source.strides, axis, p)
                assert _index_norms(source, axis, p, scratch).tobytes() == want, (shape, dtype, source.strides, axis, p)


def test_model_stats_counts_once_and_matches_a_fresh_count() -> None:
    path = MODELS / "mnist_cnn.onnx"
    prepared = prepare(onnx.load(str(path)))
    first = model_stats(prepared, str(path))
    again = model_stats(prepared)
    assert len(prepared.counts) == 1  # one count of the folded model for both calls
    fresh = count_model(prepared.folded)
    for stats in (first, again):
        assert (stats.params, stats.macs, stats.node_macs) == (fresh.params, fresh.macs, fresh.node_macs)
    assert first.size_bytes == path.stat().st_size == model_size(prepared.original, path)
    assert again.size_bytes == model_size(prepared.original) == count_model(prepared.original).size_bytes


def test_verify_keeps_the_batch_then_level_order() -> None:
    prepared = prepare(onnx.load(str(MODELS / "mnist_cnn.onnx")))
    plan = plan_prune(prepared, PruneOptions(ratio=0.3, round_to=1))
    pruned = method_of(plan).apply(prepared, plan)
    result = verify(prepared, plan, pruned)
    assert result.ok and len(result.shapes) == 2
    order = [(d["batch"], d["optimized"]) for d in result.diffs]
    outputs = len(pruned.graph.output)
    assert order == [(b, o) for b in range(2) for o in (False, True) for _ in range(outputs)]
    assert max(d["relative"] for d in result.diffs) < 1e-5
