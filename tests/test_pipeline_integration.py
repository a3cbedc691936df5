"""validate / bench / quantize / run: thresholds and exit codes, report schema, the example recipe.

Through the console entry point (a real subprocess) like tests/test_cli.py, plus the Python API.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import onnx
import pytest

import onnxprune
from conftest import MODELS, ROOT
from onnxprune.workflows.steps import REPORT_KEYS
from test_cli import assert_one_line_error, cli

MNIST = MODELS / "mnist_cnn.onnx"
TEST_DATA = MODELS / "mnist_test.npz"
RECIPE = ROOT / "recipes" / "mnist_prune_quantize.toml"


def _schema(path: pathlib.Path, command: str) -> dict:
    data = json.loads(path.read_text())
    assert set(REPORT_KEYS) <= set(data), data.keys()
    assert data["report_version"] == 1 and data["command"] == command
    return data


def _perturbed(tmp_path: pathlib.Path) -> pathlib.Path:
    """MNIST CNN with output channel 0 of its first Conv scaled by -3 (one channel's weights changed)."""
    model = onnx.load(MNIST)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(i for i in model.graph.initializer if i.name == conv.input[1])
    values = onnx.numpy_helper.to_array(weight).copy()
    values[0] *= -3.0
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    path = tmp_path / "perturbed.onnx"
    onnx.save(model, path)
    return path


def test_validate_against_itself_passes_every_threshold(tmp_path: pathlib.Path) -> None:
    report = tmp_path / "validate.json"
    result = cli("validate", str(MNIST), str(MNIST), "--calib", str(TEST_DATA), "--atol", "0", "--rtol", "0",
                 "--min-cosine", "1.0", "--min-top1", "1.0", "--max-accuracy-drop", "0", "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert "validate passed" in result.stdout
    data = _schema(report, "validate")
    assert data["ok"] is True and data["settings"]["min_cosine"] == 1.0
    (out,) = data["results"]["outputs"]
    assert out["name"] == "output" and out["max_abs"] == 0.0 and out["top1_agreement"] == 1.0
    assert out["accuracy_original"] == out["accuracy_candidate"] > 0.97  # manifest: 98.2 % on these 1,000 digits
    assert data["results"]["ort_disable_all"]["ok"] is True
    assert data["results"]["data"]["samples"] == 1000 and data["results"]["data"]["labels"] is True


def test_validate_perturbed_channel_fails_min_cosine(tmp_path: pathlib.Path) -> None:
    perturbed = _perturbed(tmp_path)
    result = cli("validate", str(MNIST), str(perturbed), "--min-cosine", "0.9999", "--json")
    assert result.returncode == 1, result.stderr
    assert "output 'output'" in result.stderr and "--min-cosine 0.9999" in result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["results"]["outputs"][0]["cosine"] < 0.9999
    assert data["results"]["data"]["random"] is True and data["results"]["data"]["samples"] == 8
    # The same pair with no threshold given passes: only given thresholds decide.
    api = onnxprune.validate(MNIST, perturbed)
    assert api.ok and api.to_dict()["outputs"][0]["max_abs"] > 0


def test_validate_bad_inputs_exit_2(tmp_path: pathlib.Path) -> None:
    assert_one_line_error(cli("validate", str(MODELS / "mlp_gemm.onnx"), str(MODELS / "sklearn_mlp.onnx")), 2,
                          "output names differ", "label", "probabilities")
    assert_one_line_error(cli("validate", str(MNIST), str(MODELS / "mlp_gemm.onnx")), 2, "input 'input' differs")
    assert_one_line_error(cli("validate", str(MNIST), str(MNIST), "--max-accuracy-drop", "0.01"), 2,
                          "--max-accuracy-drop", "labels")
    assert_one_line_error(cli("validate", str(MNIST), str(MNIST), "--calib", str(TEST_DATA), "--calib-random", "4"),
                          2, "either")
    assert_one_line_error(cli("validate", str(MNIST), str(tmp_path / "missing.onnx")), 2, "missing.onnx")


def test_bench_and_quantize_reports(tmp_path: pathlib.Path) -> None:
    quantized, q_report, b_report = tmp_path / "int8.onnx", tmp_path / "q.json", tmp_path / "b.json"
    result = cli("quantize", str(MNIST), "-o", str(quantized), "--report", str(q_report))
    assert result.returncode == 0, result.stderr
    q = _schema(q_report, "quantize")
    assert q["results"]["mode"] == "dynamic" and q["results"]["size_ratio"] < 0.5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left behind
    check = onnxprune.validate(MNIST, quantized, calib=TEST_DATA, min_top1=0.97, max_accuracy_drop=0.01)
    assert check.ok, check.failures
    result = cli("bench", str(MNIST), str(quantized), "--repeat", "3", "--warmup", "1", "--report", str(b_report))
    assert result.returncode == 0, result.stderr
    b = _schema(b_report, "bench")
    rows = b["results"]["models"]
    assert [r["path"] for r in rows] == [str(MNIST), str(quantized)]
    assert rows[0]["ratio"]["latency"] == 1.0 and rows[0]["params"] == 70122
    assert all(r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] for r in rows)
    assert "ratio" in result.stdout


def test_quantize_static_needs_calibration(tmp_path: pathlib.Path) -> None:
    assert_one_line_error(cli("quantize", str(MNIST), "-o", str(tmp_path / "q.onnx"), "--mode", "static"), 2,
                          "calibration")
    assert not (tmp_path / "q.onnx").exists()
    result = onnxprune.quantize(MNIST, tmp_path / "q.onnx", "static", calib=MODELS / "mnist_calib.npz")
    assert result.to_dict()["after"]["size_bytes"] < result.to_dict()["before"]["size_bytes"]
    assert onnxprune.validate(MNIST, tmp_path / "q.onnx", calib=TEST_DATA, min_top1=0.95).ok


def test_example_recipe_end_to_end(tmp_path: pathlib.Path) -> None:
    report = tmp_path / "run.json"
    result = cli("run", str(RECIPE), "--out-dir", str(tmp_path), "--report", str(report))
    assert result.returncode == 0, result.stderr
    data = _schema(report, "run")
    steps = data["results"]["steps"]
    assert [s["type"] for s in steps] == ["prune", "quantize", "validate"]
    assert all(s["ok"] for s in steps) and data["ok"] is True
    prune, quantize, validate = (s["results"] for s in steps)
    assert prune["recovery"]["method"] == "lsq" and prune["recovery"]["status"] == "applied"
    assert prune["calibration"]["source"] == "file"
    assert quantize["after"]["size_bytes"] < prune["comparison"]["size_bytes"]["after"]
    out = validate["outputs"][0]
    assert out["accuracy_drop"] <= 0.02 and out["top1_agreement"] >= 0.95
    assert steps[2]["candidate"] == str(tmp_path / "mnist_cnn_pruned_int8.onnx")
    assert (tmp_path / "mnist_cnn_pruned.onnx").exists() and (tmp_path / "mnist_cnn_pruned_int8.onnx").exists()
    assert data["settings"]["recipe_contents"]["version"] == 1


def _write_recipe(tmp_path: pathlib.Path, steps: str) -> pathlib.Path:
    path = tmp_path / "recipe.toml"
    path.write_text(f'version = 1\nmodel = "{MNIST.as_posix()}"\n{steps}')
    return path


@pytest.mark.parametrize("steps, needle", [
    ('[[steps]]\ntype = "distill"\n', "'distill'"),
    ('[[steps]]\ntype = "prune"\noutput = "p.onnx"\nratoi = 0.3\n', "'ratoi'"),
    ('[[steps]]\ntype = "prune"\noutput = "p.onnx"\n[[steps]]\ntype = "validate"\nmin_cosin = 0.9\n', "'min_cosin'"),
    ('[[steps]]\ntype = "prune"\noutput = "p.onnx"\nratio = "half"\n', "'ratio'"),
    ('colour = "blue"\n[[steps]]\ntype = "bench"\n', "'colour'"),
])
def test_recipe_with_unknown_step_or_option_is_refused(tmp_path: pathlib.Path, steps: str, needle: str) -> None:
    recipe = _write_recipe(tmp_path, steps)
    assert_one_line_error(cli("run", str(recipe), "--out-dir", str(tmp_path)), 2, needle)
    assert not (tmp_path / "p.onnx").exists()  # checked before anything runs


def test_recipe_validate_failure_exits_1_with_one_report(tmp_path: pathlib.Path) -> None:
    recipe = _write_recipe(tmp_path, '[[steps]]\ntype = "quantize"\noutput = "q.onnx"\n'
                                     '[[steps]]\ntype = "validate"\natol = 0.0\n'
                                     '[[steps]]\ntype = "bench"\nrepeat = 2\nwarmup = 0\n')
    report = tmp_path / "run.json"
    result = cli("run", str(recipe), "--out-dir", str(tmp_path), "--report", str(report))
    assert result.returncode == 1, result.stderr
    assert "step 1 (validate)" in result.stderr and "--atol" in result.stderr
    data = _schema(report, "run")
    assert data["ok"] is False and [s["ok"] for s in data["results"]["steps"]] == [True, False, True]
    bench_paths = [m["path"] for m in data["results"]["steps"][2]["results"]["models"]]
    assert bench_paths == [str(MNIST), str(tmp_path / "q.onnx")]
    api = onnxprune.run_recipe(recipe, tmp_path)
    assert not api.ok and api.to_dict()["steps"][1]["results"]["failures"]
    assert np.isfinite(api.to_dict()["steps"][2]["results"]["models"][1]["median_ms"])
