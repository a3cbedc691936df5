"""Ray executor (``--ray``): bit-identical results to a local run, retries, and one-line failures.

A local Ray instance with 2 worker CPUs is started once for the module (a few seconds).  Every
comparison is exact (``tobytes`` / file bytes), because the executor's promise is that a Ray run adds
the same float64 numbers in the same order as a local run.  The test without Ray installed runs always.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import MODELS
from test_cli import assert_one_line_error
from onnxprune.runtime.calibration import load_calibration
from onnxprune.cli.app import main
from onnxprune.errors import ExecutorError, InputError
from onnxprune.runtime.executor import LOCAL, RayExecutor
from onnxprune.io.files import load_model, save_model
from onnxprune.planning.latency import LatencySettings, build_latency_model
from onnxprune.workflows.recipe import run_recipe
from onnxprune.recovery.layers import RecoveryOptions
from onnxprune.pipeline import PruneOptions, calibration_statistics, group_scores, prune
from onnxprune.methods.prepared import prepare
from onnxprune.planning.sensitivity import load_labels, scan
from onnxprune.io.weights import has_stubs

MODEL, CALIB = MODELS / "mnist_cnn.onnx", MODELS / "mnist_calib.npz"
ROOT = MODELS.parent


def test_ray_option_without_ray_is_one_line_error(tmp_path) -> None:
    """``import ray`` failing (as without the extra) is one line naming the extra; nothing is written."""
    out = tmp_path / "out.onnx"
    code = "import sys; sys.modules['ray'] = None; from onnxprune.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code, "prune", str(MODEL), "-o", str(out), "--ratio", "0.3",
                             "--ray", "auto"], capture_output=True, text=True, timeout=120,
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert_one_line_error(result, 2, "pip install 'onnxprune[ray]'")
    assert not out.exists()


try:
    import ray
except ImportError:
    ray = None
NO_RAY = "the ray extra is not installed (pip install 'onnxprune[ray]')"


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance with 2 CPUs; workers import this checkout (PYTHONPATH is inherited by them)."""
    if ray is None:
        pytest.skip(NO_RAY)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved) if p)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the failure tasks below
    started = not ray.is_initialized()
    try:
        executor = RayExecutor(num_cpus=2)
        assert executor.workers() >= 2
        yield executor
    finally:
        if started:
            ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _stats_bytes(stats) -> dict[str, bytes]:
    out = {}
    for slot, s in stats.by_slot.items():
        out[str(slot)] = b"".join([np.float64(s.count).tobytes(), s.sum.tobytes(), s.sumsq.tobytes(),
                                   s.sumabs.tobytes(), s.zeros.tobytes()])
    for slot, h in stats.histograms.items():
        out[f"hist {slot}"] = h.lo.tobytes() + h.hi.tobytes() + h.counts.tobytes()
    return out


def test_statistics_and_histograms_bit_identical(cluster) -> None:
    """Memory-mapped weights (stubs) travel as arrays; sums and histograms are byte for byte the same."""
    model = load_model(MODEL, mmap_weights=True)
    assert has_stubs(model)  # the shipping of mapped weights is exercised
    prepared = prepare(model)
    calibration = load_calibration(CALIB, model, batch_size=48)  # 11 batches, the last one smaller
    local = calibration_statistics(prepared, calibration, "entropy")
    remote = calibration_statistics(prepared, calibration, "entropy", cluster)
    assert local.batches == remote.batches == 11 and local.samples == remote.samples == 500
    assert len(local.histograms) == len(local.by_slot) > 0
    assert _stats_bytes(local) == _stats_bytes(remote)


def test_prune_plan_and_file_bit_identical(cluster, tmp_path) -> None:
    """Calibrated prune (fluctuation scores, bias recovery from the statistics): same plan JSON and file bytes."""
    model = load_model(MODEL)
    calibration = load_calibration(CALIB, model)
    options = PruneOptions(ratio=0.4, criterion="fluctuation")
    files = {}
    for name, executor in (("local", None), ("ray", cluster)):
        result = prune(model, options, calibration=calibration, recovery=RecoveryOptions("bias"), executor=executor)
        assert result.recovery["status"] == "applied"
        result.plan.save(tmp_path / f"{name}.json")
        files[name] = save_model(result.model, tmp_path / f"{name}.onnx", source_path=MODEL,
                                 provenance={"settings": result.plan.settings})
    assert (tmp_path / "local.json").read_bytes() == (tmp_path / "ray.json").read_bytes()
    assert open(files["local"], "rb").read() == open(files["ray"], "rb").read()


def test_cli_prune_ray_matches_local(cluster, tmp_path) -> None:
    """``onnxprune prune --ray auto`` joins the running instance; report numbers and file bytes match."""
    runner = CliRunner()
    reports = {}
    for name, extra in (("local", []), ("ray", ["--ray", "auto"])):
        result = runner.invoke(main, ["--no-isolation", "prune", str(MODEL), "-o", str(tmp_path / f"{name}.onnx"),
                                      "--ratio", "0.3", "--calib", str(CALIB), "--criterion", "entropy", "--recover", "bias", "--quiet",
                                      "--save-plan", str(tmp_path / f"{name}.plan.json"), "--json", *extra])
        assert result.exit_code == 0, result.output
        reports[name] = json.loads(result.output)
    assert (tmp_path / "local.onnx").read_bytes() == (tmp_path / "ray.onnx").read_bytes()
    assert (tmp_path / "local.plan.json").read_bytes() == (tmp_path / "ray.plan.json").read_bytes()
    for key in ("comparison", "groups", "recovery"):
        assert reports["local"][key] == reports["ray"][key], key
    assert reports["local"]["calibration"]["output_error"] == reports["ray"]["calibration"]["output_error"]


def test_recipe_ray_key_matches_local(cluster, tmp_path) -> None:
    """A recipe's top-level ``ray`` runs its prune steps on the cluster; the written model is the same."""
    body = (f'version = 1\nmodel = "{MODEL}"\n{{ray}}[calibration]\npath = "{CALIB}"\n\n[[steps]]\ntype = "prune"\n'
            'ratio = 0.3\ncriterion = "entropy"\nrecover = "bias"\noutput = "out.onnx"\n')
    for name, ray_line in (("local", ""), ("ray", 'ray = "auto"\n')):
        (tmp_path / f"{name}.toml").write_text(body.format(ray=ray_line))
        (tmp_path / name).mkdir()
        assert run_recipe(tmp_path / f"{name}.toml", out_dir=tmp_path / name).ok
    assert (tmp_path / "local" / "out.onnx").read_bytes() == (tmp_path / "ray" / "out.onnx").read_bytes()


def test_sensitivity_rows_bit_identical(cluster) -> None:
    model = load_model(MODEL)
    prepared = prepare(model)
    calibration = load_calibration(CALIB, model, batch_size=100)
    scores = group_scores(prepared, PruneOptions(criterion="l1")).by_group
    labels = load_labels(CALIB)
    local = scan(prepared, calibration, scores, "l1", (0.25, 0.5), labels)
    remote = scan(prepared, calibration, scores, "l1", (0.25, 0.5), labels, executor=cluster)
    assert len(local.rows) == 2 * len(scores) > 0
    assert json.dumps(local.to_dict(), sort_keys=True) == json.dumps(remote.to_dict(), sort_keys=True)
    assert all(row["accuracy"] is not None for row in remote.rows)


def test_cli_sensitivity_ray_matches_local(cluster, tmp_path) -> None:
    runner = CliRunner()
    for name, extra in (("local", []), ("ray", ["--ray", "auto"])):
        result = runner.invoke(main, ["--no-isolation", "sensitivity", str(MODEL), "--calib", str(CALIB), "--ratios",
                                      "0.5", "--criterion", "fluctuation", "--quiet", "-o",
                                      str(tmp_path / f"{name}.json"), *extra])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "local.json").read_bytes() == (tmp_path / "ray.json").read_bytes()


def test_sensitivity_refuses_to_ship_mapped_weights(cluster) -> None:
    """A prepared model whose weights are memory-mapped cannot be pickled for workers: refused, not wrong."""
    model = load_model(MODEL, mmap_weights=True)
    prepared = prepare(model)
    scores = group_scores(prepared, PruneOptions(criterion="l1")).by_group
    with pytest.raises(InputError, match="cannot ship memory-mapped weights"):
        scan(prepared, load_calibration(CALIB, model), scores, "l1", (0.5,), executor=cluster)


def test_latency_tables_measured_on_workers_feed_the_cache(cluster, tmp_path) -> None:
    """Tables measured by tasks are written by the coordinator; a local run then reads them all."""
    prepared = prepare(load_model(MODEL))
    settings = LatencySettings(cache=str(tmp_path / "latency.json"))
    remote = build_latency_model(prepared, settings, executor=cluster)
    assert remote.stats["measured"] == remote.stats["signatures"] > 0
    for table in remote.tables.values():
        assert np.all(table.ms >= 0.0) and table.ms.size == np.prod([len(g) for g in table.grid])
    local = build_latency_model(prepared, settings)
    assert local.stats["measured"] == 0 and local.stats["cached"] == remote.stats["signatures"]
    for key, table in remote.tables.items():
        np.testing.assert_array_equal(table.ms, local.tables[key].ms)


# --------------------------------------------------------------------------------------------------
# failures: task functions are module-level (shipped by value, see the fixture)


def _die_once(marker: str, item: int) -> int:
    """Kill the worker process the first time item 1 runs (a crash, not an exception)."""
    if item == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return item * item


def _always_die(_: None, item: int) -> int:
    os._exit(1)


def _bad_input(_: None, item: int) -> int:
    raise InputError(f"calibration batch {item}: bad data")


def test_onnxprune_error_in_task_is_the_same_error(cluster) -> None:
    with pytest.raises(InputError, match="calibration batch 0: bad data"):
        list(cluster.map(_bad_input, range(2), what="item"))


def test_dead_worker_is_retried_and_order_kept(cluster, tmp_path) -> None:
    marker = str(tmp_path / "died")
    results = list(cluster.map(_die_once, range(7), marker, what="item", per_task=2))  # chunks [0, 1] [2, 3] ...
    assert os.path.exists(marker)  # a worker really died
    assert results == [i * i for i in range(7)] == list(LOCAL.map(_die_once, range(7), marker))


def test_task_that_cannot_finish_is_one_error(cluster) -> None:
    executor = RayExecutor(retries=1)  # joins the running instance
    with pytest.raises(ExecutorError, match=r"Ray task for item 0 could not finish after 1 retries") as info:
        list(executor.map(_always_die, range(1), what="item"))
    assert "\n" not in str(info.value)


@pytest.mark.skipif(ray is None, reason=NO_RAY)
def test_unreachable_address_is_one_line_error(tmp_path) -> None:
    """Checked before Ray is asked (Ray retries a dead address for minutes); nothing is written."""
    out = tmp_path / "out.onnx"
    result = subprocess.run([sys.executable, "-m", "onnxprune.cli", "prune", str(MODEL), "-o", str(out), "--ratio",
                             "0.3", "--ray", "127.0.0.1:1"], capture_output=True, text=True, timeout=120,
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert_one_line_error(result, 6, "cannot reach a Ray cluster at '127.0.0.1:1'")
    assert not out.exists()


def test_chunks_close_on_count_or_bytes() -> None:
    """Small batches share a task; a chunk of large batches closes once its arrays reach the byte bound,
    and every item appears once, in order (the merge order that keeps Ray runs bit-identical)."""
    from onnxprune.runtime.executor import _chunks

    small = [(i, {"x": np.zeros(10, np.float32)}) for i in range(10)]
    assert [[i for i, _ in c] for c in _chunks(small, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    big = [(i, {"x": np.zeros(1000, np.float32)}) for i in range(7)]  # 4000 bytes each
    chunks = [[i for i, _ in c] for c in _chunks(big, 64, max_bytes=10_000)]
    assert chunks == [[0, 1, 2], [3, 4, 5], [6]]
