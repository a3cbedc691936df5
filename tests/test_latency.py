"""Latency targets (--target-latency): per-layer tables, their cache, the search and the "never slower" guard.

Real onnxruntime measurements throughout, but no assertion depends on how fast anything ran: counts of
measurements, monotonicity (which the model enforces), the *estimated* ratio (deterministic once the
tables exist), that a confirmation was recorded, the oracle, and error paths that are deterministic.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from conftest import MODELS, assert_matches_oracle
from test_cli import assert_one_line_error, cli
from onnxprune.planning import latency
from onnxprune.measurement.bench import nodes_by_provider, timing_session
from onnxprune.planning.budget import _closest, _refuse_slower, corrected_target
from onnxprune.cli.app import main
from onnxprune.errors import InputError, VerificationError
from onnxprune.io.files import load_model
from onnxprune.planning.latency import LatencySettings, Table, build_latency_model, grid_widths, monotone
from onnxprune.pipeline import PruneOptions, plan_prune
from onnxprune.methods.width import apply_plan
from onnxprune.methods.prepared import prepare

MODEL = "vgg_chain"  # plain convs + Gemm: every table kind but depthwise, and quick to time
ESTIMATE_BAND = 0.02  # BudgetSettings.tolerance: the search's band on the estimated ratio


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One table cache for the module, so each layer signature is timed once."""
    return str(tmp_path_factory.mktemp("latency") / "latency.json")


def _prepared(name: str = MODEL):
    return prepare(load_model(MODELS / f"{name}.onnx"))


def test_grid_widths_aligned_and_full() -> None:
    assert grid_widths(64, True, latency.FRACTIONS_2D) == (16, 32, 48, 64)
    assert grid_widths(24, True, latency.FRACTIONS_2D) == (8, 16, 24)  # 16..31 channels: multiples of 8
    assert grid_widths(6, True, latency.FRACTIONS_2D) == (2, 3, 5, 6)
    assert grid_widths(100, True, latency.FRACTIONS_2D) == (32, 64, 80, 96, 100)
    assert grid_widths(64, False, latency.FRACTIONS_2D) == (64,)


def test_monotone_tables_and_estimates() -> None:
    rng = np.random.default_rng(0)
    noisy = rng.random((4, 5)) + np.add.outer(np.arange(4), np.arange(5))
    fixed = monotone(noisy)
    assert np.all(np.diff(fixed, axis=0) >= 0) and np.all(np.diff(fixed, axis=1) >= 0)
    assert np.all(fixed <= noisy)  # from above: interference only ever adds time
    table = Table(((8, 16, 24, 32), (4, 8, 12, 16, 20)), fixed)
    values = [[table.estimate((a, b)) for b in range(0, 21)] for a in range(0, 33)]
    assert np.all(np.diff(values, axis=0) >= -1e-12) and np.all(np.diff(values, axis=1) >= -1e-12)
    assert table.estimate((32, 20)) == pytest.approx(fixed[-1, -1])
    assert table.estimate((16, 8)) == pytest.approx(fixed[1, 1])
    assert table.estimate((0, 0)) == 0.0


def test_cache_round_trip_measures_nothing_new(tmp_path, monkeypatch) -> None:
    prepared = _prepared()
    settings = LatencySettings(cache=str(tmp_path / "sub" / "latency.json"))
    timed: list[str] = []
    measure = latency._measure_table
    monkeypatch.setattr(latency, "_measure_table", lambda layer, *a: timed.append(layer.node) or measure(layer, *a))
    first = build_latency_model(prepared, settings)
    assert first.stats["measured"] == first.stats["signatures"] == len(timed) > 0
    assert set(first.sources.values()) == {"measured"}
    timed.clear()
    second = build_latency_model(prepared, settings)
    assert timed == [] and second.stats["measured"] == 0 and second.stats["points_measured"] == 0
    assert second.stats["cached"] == second.stats["signatures"] and set(second.sources.values()) == {"cached"}
    assert second.stats["layers_now_ms"] > 0 and second.remainder_ms >= 0  # the original is timed on every run
    for key, table in first.tables.items():
        np.testing.assert_array_equal(table.ms, second.tables[key].ms)
    # another measuring environment is another key
    other = build_latency_model(prepared, LatencySettings(threads=2, cache=settings.cache))
    assert other.stats["measured"] == other.stats["signatures"]


def test_unreadable_cache_is_rebuilt_and_folder_refused(tmp_path) -> None:
    prepared = _prepared("mnist_cnn")
    path = tmp_path / "latency.json"
    path.write_text("{not json")
    model = build_latency_model(prepared, LatencySettings(cache=str(path)))
    assert model.stats["measured"] > 0 and json.loads(path.read_text())["entries"]
    with pytest.raises(InputError, match="is a folder"):
        build_latency_model(prepared, LatencySettings(cache=str(tmp_path)))


def test_estimates_monotone_in_width_and_pruning(cache: str) -> None:
    prepared = _prepared()
    model = build_latency_model(prepared, LatencySettings(cache=cache))
    for layer in model.layers:
        table = model.tables[model.keys[layer.node]]
        axes = [range(1, full + 1, max(1, full // 12)) for full in layer.full]
        grid = np.array([table.estimate(w) for w in itertools.product(*axes)]).reshape([len(a) for a in axes])
        for axis in range(grid.ndim):
            assert np.all(np.diff(grid, axis=axis) >= -1e-12), layer.node
    full = model.estimate(prepared.normalized)
    plans = [plan_prune(prepared, PruneOptions(ratio=r)) for r in (0.25, 0.5, 0.75)]
    estimates = [model.estimate(apply_plan(prepared, plan)) for plan in plans]
    assert full >= estimates[0] >= estimates[1] >= estimates[2] > 0


def test_target_latency_plan_estimate_confirmation_and_oracle(cache: str) -> None:
    prepared = _prepared()
    plan = plan_prune(prepared, PruneOptions(target_latency=0.7, latency_batch=8, latency_cache=cache, round_to=1))
    budget = plan.settings["budget"]
    assert budget["metric"] == "latency" and budget["target"] == 0.7
    assert budget["rounds"], "the chosen plan must be confirmed by measurement"
    first = budget["rounds"][0]  # the first round searches the target itself: its estimate is in the band
    assert first["searched_for"] == 0.7 and abs(first["estimated"] - 0.7) <= ESTIMATE_BAND + 1e-9
    for entry in budget["rounds"]:  # corrected rounds: never above the band (below only at the fastest plan)
        assert entry["estimated"] <= entry["searched_for"] + ESTIMATE_BAND + 1e-9
        assert entry["original_ms"] > 0 and entry["pruned_ms"] > 0 and entry["runs"] >= latency.CONFIRM_ROUNDS[0]
        assert entry["measured"] == pytest.approx(entry["pruned_ms"] / entry["original_ms"], rel=1e-3)
    chosen = [r for r in budget["rounds"] if r["measured"] == budget["measured"]]
    assert chosen and budget["achieved"] == budget["measured"] < 1.0
    assert budget["estimated"] == chosen[0]["estimated"]
    assert budget["tables"]["signatures"] > 0 and set(budget["tables"]["source"].values()) <= {"cached", "measured"}
    assert budget["latency"]["provider"] == "CPUExecutionProvider" and budget["latency"]["threads"] == 1
    assert set(budget["tables"]["nodes_by_provider"]) == {"CPUExecutionProvider"}  # what really ran the original
    kept = {g.id: len(g.kept) for g in plan.groups if g.kept is not None}
    assert budget["kept"] == kept
    assert_matches_oracle(prepared, plan, apply_plan(prepared, plan))


def test_cli_target_latency_verify_and_report(tmp_path, cache: str) -> None:
    out, report_path = tmp_path / "fast.onnx", tmp_path / "report.json"
    result = CliRunner(env={"ONNXPRUNE_LATENCY_CACHE": cache}).invoke(main, [
        "prune", str(MODELS / f"{MODEL}.onnx"), "-o", str(out), "--target-latency", "0.7", "--round-to", "2",
        "--verify", "--report", str(report_path), "--latency-batch", "8"])
    assert result.exit_code == 0, result.output
    assert "latency estimated" in result.stdout and "measured" in result.stdout
    report = json.loads(report_path.read_text())
    budget = report["settings"]["budget"]
    assert report["verification"]["ok"] and budget["latency"]["batch"] == 8 and budget["tables"]["cache"] == cache
    assert all(entry["kept"] % 2 == 0 or entry["kept"] == entry["channels"] for entry in report["groups"])
    assert out.exists()


@pytest.mark.parametrize("args, message", [
    (["--target-latency", "0.5", "--latency-provider", "NoSuchExecutionProvider"], "not available"),
    (["--target-flops", "0.5", "--latency-threads", "2"], "--latency-threads needs --target-latency"),
    (["--target-latency", "0.5", "--target-flops", "0.5"], "only one target"),
    (["--target-latency", "0.5", "--ratio", "0.3"], "drop --ratio"),
])
def test_invalid_options_are_one_line_errors(tmp_path, args: list[str], message: str) -> None:
    out = tmp_path / "x.onnx"
    result = CliRunner().invoke(main, ["prune", str(MODELS / "mnist_cnn.onnx"), "-o", str(out),
                                       "--latency-cache", str(tmp_path / "c.json"), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("onnxprune: error:")
    assert not out.exists()


def test_never_slower_guard(tmp_path, cache: str) -> None:
    # target 1.0 keeps every unit: the result could not be faster than the input, so nothing is written
    out = tmp_path / "same.onnx"
    result = CliRunner().invoke(main, ["prune", str(MODELS / f"{MODEL}.onnx"), "-o", str(out), "--target-latency",
                                       "1.0", "--latency-cache", cache])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not be faster" in lines[0] and not out.exists()
    # a measured plan that is not faster is refused by the same guard the search ends with
    with pytest.raises(VerificationError, match=r"measured 1\.020× .*not faster"):
        _refuse_slower({"measured": 1.02, "estimated": 0.6, "removed_units": 5}, 0.6)
    _refuse_slower({"measured": 0.97, "estimated": 0.6, "removed_units": 5}, 0.6)
    # the closest plan to the target is chosen among the faster ones only
    tried = {(0,): {"measured": 1.01, "removed_units": 1}, (0, 1, 2): {"measured": 0.8, "removed_units": 3}}
    assert _closest(tried, 0.95)[0] == (0, 1, 2)


def test_corrected_target_interpolates_and_extrapolates() -> None:
    assert corrected_target([(0.6, 0.5)], 0.6) == pytest.approx(0.68)  # between (0.6, 0.5) and (1, 1)
    assert corrected_target([(0.6, 0.8)], 0.6) == pytest.approx(0.45)  # all slower: scale through (0, 0)
    assert corrected_target([(0.6, 0.8), (0.45, 0.55)], 0.6) == pytest.approx(0.48)
    assert corrected_target([(0.6, 0.8)], 1.0) == 1.0


# ---------------------------------------------------------------------------------------------------
# The provider asked for must be the one that runs: real providers of this onnxruntime, no mocks.
# ---------------------------------------------------------------------------------------------------

#: Listed by get_available_providers() in the CPU wheels, but runs only its own remote-inference ops:
#: onnxruntime silently gives every standard node to the CPU provider.
NOT_RUNNING = "AzureExecutionProvider"
needs_not_running = pytest.mark.skipif(NOT_RUNNING not in ort.get_available_providers(),
                                       reason=f"{NOT_RUNNING} is not in this onnxruntime build")


def _relu_model():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_cpu_sessions_pass_the_provider_check() -> None:
    session = timing_session(_relu_model(), 1, "relu")
    assert nodes_by_provider(session) == {"CPUExecutionProvider": 1}


@needs_not_running
def test_provider_that_runs_no_node_is_refused(tmp_path) -> None:
    # the trap: onnxruntime registers the provider and lists it first, yet the CPU runs the node
    with pytest.raises(InputError, match=f"'{NOT_RUNNING}' runs none of the model's nodes.*CPUExecutionProvider"):
        timing_session(_relu_model(), 1, "relu", NOT_RUNNING)
    # through the latency model: refused before any table is stored under the provider's name
    path = tmp_path / "latency.json"
    with pytest.raises(InputError, match="runs none of the model's nodes"):
        build_latency_model(_prepared("mnist_cnn"), LatencySettings(provider=NOT_RUNNING, cache=str(path)))
    assert latency.load_cache(path) == {}


@needs_not_running
def test_cli_refuses_a_provider_that_runs_nothing(tmp_path) -> None:
    out = tmp_path / "x.onnx"
    result = cli("prune", str(MODELS / "mnist_cnn.onnx"), "-o", str(out), "--target-latency", "0.5",
                 "--latency-provider", NOT_RUNNING, "--round-to", "1", "--latency-cache", str(tmp_path / "c.json"))
    assert_one_line_error(result, 2, NOT_RUNNING, "runs none of the model's nodes")
    assert not out.exists()


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_provider_that_does_not_load_is_refused() -> None:
    """onnxruntime warns and falls back to the CPU for a provider it cannot load (here: not built in)."""
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"), \
            pytest.raises(InputError, match="'CUDAExecutionProvider' did not load.*fell back to CPUExecutionProvider"):
        timing_session(_relu_model(), 1, "relu", "CUDAExecutionProvider")
