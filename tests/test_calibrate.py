"""Calibration data (loading, matching, batching) and streamed statistics.

Tolerances: statistics against float64 NumPy sums of the same activations, rtol 1e-5, plus an atol
of 1e-6 × the largest channel's value for channels a million times smaller than the rest (and
1e-5 · Σ|x| for signed sums, since a sum near zero has no relative precision).  Counts are exact.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import MODELS
from onnxprune.runtime.calibration import calibration_from_feeds, load_calibration, random_calibration
from onnxprune.errors import InputError
from onnxprune.methods.prepared import prepare
from onnxprune.scoring.statistics import collect_statistics, consumer_slots, stats_model, with_outputs
from onnxprune.runtime.sessions import make_session, run_model
from test_cli import assert_one_line_error, cli

MNIST = onnx.load(MODELS / "mnist_cnn.onnx")


def _numpy_sums(model: onnx.ModelProto, slots, calibration) -> dict:
    """Plain NumPy: fetch every activation, move the channel axis last, sum in float64."""
    tapped = with_outputs(model, [s.tensor for s in slots])
    sums: dict = {}
    for batch in calibration.batches():
        out = run_model(tapped, batch, optimized=True)
        for slot in slots:
            values = out[slot.tensor].astype(np.float64)
            x = np.moveaxis(values, slot.axis, -1).reshape(-1, values.shape[slot.axis])
            acc = sums.setdefault(slot, {"sum": 0.0, "sumsq": 0.0, "sumabs": 0.0, "zeros": 0.0, "count": 0})
            acc["sum"] += x.sum(0)
            acc["sumsq"] += (x * x).sum(0)
            acc["sumabs"] += np.abs(x).sum(0)
            acc["zeros"] += (x == 0).sum(0)
            acc["count"] += x.shape[0]
    return sums


@pytest.mark.parametrize("name", ["mnist_cnn", "mlp_matmul", "resnet_bottleneck", "densenet_concat"])
def test_statistics_equal_numpy(name: str) -> None:
    model = onnx.load(MODELS / f"{name}.onnx")
    prepared = prepare(model)
    slots = consumer_slots(prepared.analysis)
    assert slots
    if name == "mnist_cnn":
        calibration = load_calibration(MODELS / "mnist_calib.npz", model, batch_size=96)
    else:
        calibration = random_calibration(model, 40, seed=3, batch_size=16)
    ranks = {s.tensor: len(prepared.shapes[s.tensor]) for s in slots}
    stats = collect_statistics(prepared.normalized, slots, calibration, ranks)
    expected = _numpy_sums(prepared.normalized, slots, calibration)
    assert stats.samples == calibration.samples and stats.batches == -(-calibration.samples // calibration.batch_size)
    for slot in slots:
        got, want = stats.by_slot[slot], expected[slot]
        assert got.count == want["count"]
        np.testing.assert_array_equal(got.zeros, want["zeros"])
        np.testing.assert_allclose(got.sumsq, want["sumsq"], rtol=1e-5, atol=1e-6 * float(want["sumsq"].max()))
        np.testing.assert_allclose(got.sumabs, want["sumabs"], rtol=1e-5, atol=1e-6 * float(want["sumabs"].max()))
        np.testing.assert_allclose(got.sum, want["sum"], rtol=1e-5, atol=1e-5 * float(want["sumabs"].max()))
        np.testing.assert_allclose(got.mean, want["sum"] / want["count"], rtol=1e-5,
                                   atol=1e-5 * float(want["sumabs"].max()) / want["count"])


def test_only_per_channel_vectors_leave_the_session() -> None:
    """Memory does not grow with the data: every tapped output is [batch, C] or a shape vector."""
    prepared = prepare(MNIST)
    slots = consumer_slots(prepared.analysis)
    tapped, outputs = stats_model(prepared.normalized, slots, {s.tensor: len(prepared.shapes[s.tensor]) for s in slots})
    session = make_session(tapped)
    fetch = [n for names in outputs.values() for n in names.values()]
    values = dict(zip(fetch, session.run(fetch, {"input": np.zeros((5, 1, 28, 28), np.float32)})))
    for slot, names in outputs.items():
        for kind, name in names.items():
            rank = len(prepared.shapes[slot.tensor])
            expected = (rank,) if kind == "shape" else (5, prepared.shapes[slot.tensor][slot.axis])
            assert values[name].shape == expected, (slot, kind)


def test_npz_by_name_single_array_labels_and_batches(tmp_path: pathlib.Path) -> None:
    x = np.load(MODELS / "mnist_calib.npz")["input"][:70]
    np.savez(tmp_path / "unnamed.npz", x)  # arr_0
    np.savez(tmp_path / "other.npz", digits=x, y=np.zeros(70, np.int64))
    for path in ("unnamed.npz", "other.npz"):
        calibration = load_calibration(tmp_path / path, MNIST, batch_size=32)
        shapes = [b["input"].shape[0] for b in calibration.batches()]
        assert shapes == [32, 32, 6] and calibration.samples == 70
    np.savez(tmp_path / "f64.npz", input=x.astype(np.float64))
    batch = next(load_calibration(tmp_path / "f64.npz", MNIST).batches())
    assert batch["input"].dtype == np.float32


def test_folder_of_chunks_and_iterable(tmp_path: pathlib.Path) -> None:
    x = np.load(MODELS / "mnist_calib.npz")["input"][:50]
    folder = tmp_path / "chunks"
    folder.mkdir()
    np.save(folder / "a.npy", x[:20])
    np.savez(folder / "b.npz", input=x[20:45])
    np.save(folder / "c.npy", x[45:])
    calibration = load_calibration(folder, MNIST, batch_size=16)
    assert calibration.source == "folder" and calibration.samples == 50
    joined = np.concatenate([b["input"] for b in calibration.batches()])
    np.testing.assert_array_equal(joined, x)
    assert [b["input"].shape[0] for b in calibration.batches()] == [16, 16, 16, 2]
    feeds = iter([{"input": x[:30]}, {"input": x[30:]}])  # one-shot iterator: kept for several passes
    calibration = calibration_from_feeds(feeds, MNIST, batch_size=25)
    for _ in range(2):
        assert [b["input"].shape[0] for b in calibration.batches()] == [25, 25]


def test_random_calibration_is_seeded_and_labelled() -> None:
    a = random_calibration(MNIST, 10, seed=4, batch_size=4)
    b = random_calibration(MNIST, 10, seed=4, batch_size=4)
    for x, y in zip(a.batches(), b.batches()):
        np.testing.assert_array_equal(x["input"], y["input"])
    info = a.describe()
    assert info["random"] is True and info["source"] == "random" and "random" in " ".join(info["notes"])


def _fixed_batch_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "fixed", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fixed_batch_dimension_wins() -> None:
    data = np.ones((5, 3), np.float32)
    calibration = calibration_from_feeds([{"x": data}], _fixed_batch_model(), batch_size=4)
    assert [b["x"].shape[0] for b in calibration.batches()] == [2, 2]
    assert any("dropped" in note for note in calibration.notes)


@pytest.mark.parametrize("case, needle", [
    ("name", "matches no model input"),
    ("dtype", "dtype int32"),
    ("shape", "axis 2: 27 != 28"),
    ("rank", "rank 3"),
    ("empty", "empty"),
])
def test_mismatched_arrays_raise_one_input_error(tmp_path: pathlib.Path, case: str, needle: str) -> None:
    x = np.zeros((4, 1, 28, 28), np.float32)
    arrays = {"name": {"input": x, "extra": x}, "dtype": {"input": x.astype(np.int32)},
              "shape": {"input": x[:, :, :27]}, "rank": {"input": x[:, 0]}, "empty": {"input": x[:0]}}[case]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=needle) as err:
        load_calibration(tmp_path / "bad.npz", MNIST)
    assert "bad.npz" in str(err.value) and "\n" not in str(err.value)


def test_bad_feeds_raise_input_error() -> None:
    with pytest.raises(InputError, match="no batches"):
        calibration_from_feeds([], MNIST)
    with pytest.raises(InputError, match="matches no model input"):
        calibration_from_feeds([{"input": np.zeros((1, 1, 28, 28), np.float32), "x": np.zeros(1)}], MNIST)


def _write_bad(tmp_path: pathlib.Path, case: str) -> pathlib.Path:
    x = np.zeros((4, 1, 28, 28), np.float32)
    path = tmp_path / f"{case}.npz"
    if case == "corrupt":
        path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    elif case == "name":
        np.savez(path, images=x, pixels=x)
    elif case == "dtype":
        np.savez(path, input=x.astype(np.int64))
    elif case == "shape":
        np.savez(path, input=np.zeros((4, 1, 32, 32), np.float32))
    elif case == "empty":
        np.savez(path, input=x[:0])
    return path


def test_cli_bad_calibration_files_exit_2(tmp_path: pathlib.Path) -> None:
    """Wrong names, dtype, shape, empty, corrupt: one line on stderr, exit code 2, nothing written."""
    needles = {"name": "matches no model input", "dtype": "dtype int64", "shape": "axis 2", "empty": "empty",
               "corrupt": "cannot read calibration file"}
    for case, needle in needles.items():
        path = _write_bad(tmp_path, case)
        out = tmp_path / f"{case}.onnx"
        result = cli("prune", str(MODELS / "mnist_cnn.onnx"), "-o", str(out), "--ratio", "0.5", "--calib", str(path))
        assert_one_line_error(result, 2, needle, path.name)
        assert not out.exists()


def test_cli_random_calibration_is_reported(tmp_path: pathlib.Path) -> None:
    report = tmp_path / "report.json"
    result = cli("prune", str(MODELS / "mlp_gemm.onnx"), "-o", str(tmp_path / "out.onnx"), "--ratio", "0.5",
                 "--calib-random", "64", "--batch-size", "16", "--recover", "bias", "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert "RANDOM inputs" in result.stdout
    data = json.loads(report.read_text())
    assert data["calibration"]["random"] is True and data["calibration"]["samples"] == 64
    assert data["calibration"]["source"] == "random" and data["recovery"]["method"] == "bias"
    both = cli("prune", str(MODELS / "mlp_gemm.onnx"), "-o", str(tmp_path / "x.onnx"), "--calib-random", "4",
               "--calib", str(MODELS / "mnist_calib.npz"))
    assert_one_line_error(both, 2, "not both")
