"""Criteria ``entropy`` (streamed per-channel histograms) and ``reconstruction`` (ThiNet, from Gram matrices).

Tolerances: histogram counts against ``np.histogram`` on the same activations may differ only for values
within float32 rounding of a bin edge (≤ 0.1 % of the elements per slot); against the same binning
done in float32 NumPy arithmetic ≤ 0.01 % (the tapped session is optimized, the reference
session is not: activations may differ in the last bit) and entropies 2e-2 nats (one
of the 500 values of a flattened feature changing bin moves its entropy by ~1e-2).  The
reconstruction cost of a removed set, from the accumulated Gram matrix, must equal ‖X_S̄ W_S̄‖² computed
directly with rtol 1e-6 (float64 both ways; all rows of a small model).
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS, assert_matches_oracle
from onnxprune.runtime.calibration import load_calibration, random_calibration
from onnxprune.scoring.criteria import DATA_CRITERIA
from onnxprune.pipeline import PruneOptions, calibration_statistics, plan_prune
from onnxprune.methods.width import apply_plan
from onnxprune.methods.prepared import prepare
from onnxprune.scoring.reconstruction import greedy_order, unit_cost
from onnxprune.scoring.statistics import ChannelHistogram, HISTOGRAM_BINS, consumer_slots, with_outputs
from onnxprune.runtime.sessions import make_session
from test_cli import assert_one_line_error, cli

NEW = ("entropy", "reconstruction")


@functools.lru_cache(maxsize=None)
def _prepared(name: str):
    return prepare(onnx.load(MODELS / f"{name}.onnx"))


def _calibration(name: str):
    model = onnx.load(MODELS / f"{name}.onnx")
    if name == "mnist_cnn":
        return load_calibration(MODELS / "mnist_calib.npz", model, batch_size=100)
    return random_calibration(model, 48, seed=0, batch_size=16)


def test_both_are_data_criteria() -> None:
    assert set(NEW) <= set(DATA_CRITERIA)


def test_histograms_match_numpy_on_the_same_activations() -> None:
    prepared = _prepared("mnist_cnn")
    calibration = _calibration("mnist_cnn")
    stats = calibration_statistics(prepared, calibration, criterion="entropy")
    slots = consumer_slots(prepared.analysis)
    assert set(stats.histograms) == set(slots)
    session = make_session(with_outputs(prepared.normalized, [s.tensor for s in slots]), optimized=False)
    values = {s: [] for s in slots}
    for batch in calibration.batches():
        for slot, x in zip(slots, session.run([s.tensor for s in slots], batch)):
            values[slot].append(np.moveaxis(x, slot.axis, 0).reshape(x.shape[slot.axis], -1))
    for slot in slots:
        x = np.concatenate(values[slot], axis=1).astype(np.float64)
        hist: ChannelHistogram = stats.histograms[slot]
        np.testing.assert_allclose(hist.lo, x.min(axis=1), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(hist.hi, x.max(axis=1), rtol=1e-6, atol=1e-6)
        assert hist.counts.shape == (x.shape[0], HISTOGRAM_BINS)
        assert np.all(hist.counts.sum(axis=1) == x.shape[1])
        expected = np.stack([np.histogram(row, bins=HISTOGRAM_BINS, range=(lo, hi) if hi > lo else (lo, lo + 1))[0]
                             for row, lo, hi in zip(x, hist.lo, hist.hi)])
        assert np.abs(hist.counts - expected).sum() <= 1e-3 * x.size, slot
        # the same binning in float32 NumPy arithmetic: identical counts
        lo32, hi32 = hist.lo.astype(np.float32)[:, None], hist.hi.astype(np.float32)[:, None]
        width = np.where(hi32 > lo32, (hist.hi - hist.lo)[:, None] / HISTOGRAM_BINS, 1.0).astype(np.float32)
        bins = np.clip(np.floor((x.astype(np.float32) - lo32) / width), 0, HISTOGRAM_BINS - 1).astype(np.int64)
        same = np.stack([np.bincount(row, minlength=HISTOGRAM_BINS) for row in bins])
        assert np.abs(hist.counts - same).sum() <= 1e-4 * x.size, slot
        p = same / same.sum(axis=1, keepdims=True)
        entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0.0), axis=1)
        np.testing.assert_allclose(hist.entropy, entropy, atol=2e-2)  # one of 500 values moving bin: ~1e-2


@pytest.mark.parametrize("name", ["mnist_cnn", "resnet_bottleneck", "mobilenetv2", "densenet_concat", "mlp_matmul"])
def test_new_criteria_keep_the_oracle(name: str) -> None:
    """--recover none: the criterion only chooses channels, the rewrite must match the masked reference."""
    prepared = _prepared(name)
    for number, criterion in enumerate(NEW):
        stats = calibration_statistics(prepared, _calibration(name), criterion=criterion)
        plan = plan_prune(prepared, PruneOptions(ratio=0.5 if number else 0.3, criterion=criterion), stats)
        assert plan.settings["criterion"] == criterion
        assert any(g.kept is not None and len(g.kept) < g.channels for g in plan.groups)
        assert_matches_oracle(prepared, plan, apply_plan(prepared, plan), seeds=(number,))


def test_without_calibration_data_is_an_input_error() -> None:
    for criterion in NEW:
        with pytest.raises(Exception, match="needs calibration data"):
            plan_prune(_prepared("mnist_cnn"), PruneOptions(ratio=0.5, criterion=criterion))


# --------------------------------------------------------------------------------------------------
# a constructed two-conv model: Conv A (4 channels) → Relu → 1×1 Conv B


def _two_convs(zero_read: int | None = None, dead: int | None = None) -> onnx.ModelProto:
    """Channel ``zero_read`` of A is the strongest but B reads it with zero weights; ``dead`` never fires."""
    rng = np.random.default_rng(0)
    wa = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    ba = np.full(4, 0.1, dtype=np.float32)
    wb = rng.normal(size=(2, 4, 1, 1)).astype(np.float32)
    if zero_read is not None:
        wa[zero_read] *= 10.0
        wb[:, zero_read] = 0.0
    if dead is not None:
        ba[dead] = -1e4
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], pads=[1, 1, 1, 1], name="A"),
         helper.make_node("Relu", ["a"], ["r"], name="R"),
         helper.make_node("Conv", ["r", "wb"], ["y"], name="B")],
        "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [numpy_helper.from_array(wa, "wa"), numpy_helper.from_array(ba, "ba"), numpy_helper.from_array(wb, "wb")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _removed(model: onnx.ModelProto, criterion: str) -> list[int]:
    prepared = prepare(model)
    stats = calibration_statistics(prepared, random_calibration(model, 32, seed=0, batch_size=8), criterion=criterion)
    plan = plan_prune(prepared, PruneOptions(ratio=0.25, criterion=criterion), stats)
    (group,) = [g for g in plan.groups if g.kept is not None and len(g.kept) < g.channels]
    return sorted(set(range(group.channels)) - set(group.kept))


def test_reconstruction_removes_the_channel_its_consumer_ignores() -> None:
    model = _two_convs(zero_read=2)
    assert _removed(model, "reconstruction") == [2]
    assert _removed(model, "l2") != [2]  # the strongest filter: a weight norm keeps it


def test_entropy_removes_the_dead_channel() -> None:
    assert _removed(_two_convs(dead=1), "entropy") == [1]


def test_reconstruction_cost_equals_the_direct_error() -> None:
    """1ᵀ Q_S̄S̄ 1 from the streamed Gram matrix = ‖X_S̄ W_S̄‖² on the same activations."""
    model = _two_convs()
    prepared = prepare(model)
    calibration = random_calibration(model, 16, seed=1, batch_size=8)
    stats = calibration_statistics(prepared, calibration, criterion="reconstruction")
    (index,) = [prepared.analysis.groups.index(g) for g in prepared.analysis.prunable]
    cost = unit_cost(prepared.analysis, index, stats.grams)
    session = make_session(with_outputs(model, ["r"]), optimized=False)
    r = np.concatenate([session.run(["r"], batch)[0] for batch in calibration.batches()]).astype(np.float64)
    wb = numpy_helper.to_array(model.graph.initializer[2]).astype(np.float64)[:, :, 0, 0]  # [out, in]
    for removed in ([0], [1, 3], [0, 2, 3]):
        direct = np.einsum("nchw,oc->nohw", r[:, removed], wb[:, removed])
        expected = float(np.sum(direct ** 2))
        assert np.isclose(cost[np.ix_(removed, removed)].sum(), expected, rtol=1e-6)
    order = greedy_order(cost)
    assert sorted(order) == [0, 1, 2, 3] and order[0] == int(np.argmin(np.diag(cost)))


def test_greedy_order_takes_the_pair_into_account() -> None:
    """Two units that cancel each other are cheap to remove together: greedy takes the second next."""
    cost = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.2]])
    assert greedy_order(cost)[:2] in ([0, 1], [1, 0])


def test_cli_needs_calibration_data(tmp_path) -> None:
    out = tmp_path / "out.onnx"
    for criterion in NEW:
        result = cli("prune", str(MODELS / "mnist_cnn.onnx"), "-o", str(out), "--ratio", "0.5",
                     "--criterion", criterion)
        assert_one_line_error(result, 2, "needs calibration data")
    result = cli("prune", str(MODELS / "mnist_cnn.onnx"), "-o", str(out), "--ratio", "0.5", "--criterion",
                 "reconstruction", "--calib", str(MODELS / "mnist_calib.npz"), "--recover", "none", "--verify")
    assert result.returncode == 0, result.stderr
    assert out.exists()
