"""Recipes: budget targets in prune steps (checked before any step runs) and isolation of the input models.

Through the console entry point (a real subprocess), like tests/test_pipeline_integration.py.  No
assertion depends on how fast anything ran: the latency step accepts either outcome the CLI gives.
"""

from __future__ import annotations

import json
import pathlib

import onnx
import pytest

from conftest import MODELS
from onnxprune.measurement.counting import count_model
from onnxprune.workflows.recipe import load_recipe
from test_cli import assert_one_line_error, cli
from test_isolation import cli as limited_cli
from test_isolation import endless_loop_model

RESNET = MODELS / "resnet_basic.onnx"
VGG = MODELS / "vgg_chain.onnx"


def _recipe(folder: pathlib.Path, model: pathlib.Path, steps: str, head: str = "") -> pathlib.Path:
    path = folder / "recipe.toml"
    path.write_text(f'version = 1\nmodel = "{model.as_posix()}"\n{head}{steps}')
    return path


def _prune(options: str, output: str = "p.onnx") -> str:
    return f'[[steps]]\ntype = "prune"\noutput = "{output}"\n{options}\n'


def test_target_flops_step_meets_the_target(tmp_path: pathlib.Path) -> None:
    recipe = _recipe(tmp_path, RESNET, _prune('target_flops = 0.5\nallocation = "uniform"\nverify = true'))
    report = tmp_path / "run.json"
    result = cli("run", str(recipe), "--out-dir", str(tmp_path), "--report", str(report))
    assert result.returncode == 0, result.stderr
    measured = count_model(onnx.load(tmp_path / "p.onnx")).macs / count_model(onnx.load(RESNET)).macs
    assert abs(measured - 0.5) <= 0.02, measured
    step = json.loads(report.read_text())["results"]["steps"][0]["results"]
    budget = step["settings"]["budget"]
    assert (budget["metric"], budget["target"], budget["allocation"]) == ("flops", 0.5, "uniform")
    assert step["verification"]["ok"]


@pytest.mark.parametrize("options, needles", [
    ("target_flops = 1.5", ["'target_flops'", "1.5"]),
    ("target_flops = 0.5\ntarget_params = 0.5", ["only one target", "'target_flops'", "'target_params'"]),
    ("target_flops = 0.5\nratio = 0.3", ["chooses the ratios itself", "'ratio'"]),
    ('allocation = "uniform"', ["'allocation'", "need"]),
    ("max_ratio = 0.5\nlatency_batch = 4\ntarget_params = 0.5", ["'latency_batch' needs 'target_latency'"]),
    ("target_latency = 0.5\nlatency_threads = 0", ["'latency_threads'", "0"]),
    ('target_latency = 0.5\nlatency_provider = "NoSuchExecutionProvider"', ["'latency_provider'", "not available"]),
    ("target_flops = 0.5\nmax_ratio = 2", ["'max_ratio'", "2"]),
    ('target_flops = 0.5\nallocation = "best"', ["'allocation'", "'best'"]),
    ('target_flops = 0.5\nallocation = "guided"', ["guided allocation needs 'sensitivity'", "calibration"]),
    ('target_flops = 0.5\nsensitivity = "s.json"\nallocation = "uniform"', ["conflict with 'allocation' uniform"]),
    ('target_flops = 0.5\nsensitivity = "missing.json"', ["cannot read sensitivity file", "missing.json"]),
    ("target_flops = 0.5\nguided = true", ["guided allocation needs"]),
])
def test_bad_budget_options_refused_before_any_step(tmp_path: pathlib.Path, options: str,
                                                    needles: list[str]) -> None:
    """The bad step is the second one: the first (valid) step must not have run either."""
    recipe = _recipe(tmp_path, RESNET, _prune("ratio = 0.25", "first.onnx") + _prune(options))
    report = tmp_path / "run.json"
    result = cli("run", str(recipe), "--out-dir", str(tmp_path), "--report", str(report))
    assert_one_line_error(result, 2, "steps[1] (prune)", *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.toml"], "nothing written"


def test_guided_allocation_is_accepted_with_calibration_data(tmp_path: pathlib.Path) -> None:
    """As the CLI: guided allocation scans sensitivity on calibration data when no file is given."""
    steps = _prune('target_flops = 0.5\nallocation = "guided"')
    assert load_recipe(_recipe(tmp_path, RESNET, steps, "[calibration]\nrandom = 4\n"))
    assert load_recipe(_recipe(tmp_path, RESNET, _prune("target_flops = 0.5\nguided = true\ncalib_random = 4")))


def test_target_latency_step_reaches_the_target_or_is_refused_cleanly(tmp_path: pathlib.Path) -> None:
    cache = tmp_path / "latency.json"
    recipe = _recipe(tmp_path, VGG, _prune(f'target_latency = 0.7\nlatency_batch = 8\nround_to = 2\n'
                                           f'latency_cache = "{cache.as_posix()}"\nverify = true', "fast.onnx"))
    report = tmp_path / "run.json"
    result = cli("run", str(recipe), "--out-dir", str(tmp_path), "--report", str(report))
    if result.returncode == 0:
        budget = json.loads(report.read_text())["results"]["steps"][0]["results"]["settings"]["budget"]
        assert budget["metric"] == "latency" and budget["latency"]["batch"] == 8, budget
        assert budget["measured"] < 1.0 and budget["tables"]["cache"] == str(cache)
        assert (tmp_path / "fast.onnx").exists()
    else:  # what `onnxprune prune --target-latency` gives when no measured plan is faster
        assert_one_line_error(result, 1, "faster")
        assert not (tmp_path / "fast.onnx").exists() and not report.exists()


def test_target_latency_that_keeps_everything_is_refused_like_the_cli(tmp_path: pathlib.Path) -> None:
    cache = tmp_path / "latency.json"
    recipe = _recipe(tmp_path, VGG, _prune(f'target_latency = 1.0\nlatency_cache = "{cache.as_posix()}"', "same.onnx"))
    assert_one_line_error(cli("run", str(recipe), "--out-dir", str(tmp_path)), 1, "could not be faster")
    assert not (tmp_path / "same.onnx").exists()


def test_input_models_are_the_files_before_the_run(tmp_path: pathlib.Path) -> None:
    """Outputs of earlier steps are onnxprune's own writes; only pre-existing models are isolated."""
    steps = (_prune("ratio = 0.25") + '[[steps]]\ntype = "validate"\ncandidate = "p.onnx"\n'
             f'[[steps]]\ntype = "bench"\nmodels = ["p.onnx", "{VGG.as_posix()}"]\n')
    recipe = load_recipe(_recipe(tmp_path, RESNET, steps))
    assert recipe.input_models(tmp_path) == [str(RESNET), str(VGG)]
    assert recipe.runs_onnxruntime()
    plain = load_recipe(_recipe(tmp_path, RESNET, _prune("ratio = 0.25")))
    assert plain.input_models(tmp_path) == [str(RESNET)] and not plain.runs_onnxruntime()
    calibrated = load_recipe(_recipe(tmp_path, RESNET, _prune("ratio = 0.25"), "[calibration]\nrandom = 4\n"))
    assert calibrated.runs_onnxruntime()


def test_recipe_input_that_hangs_onnxruntime_exits_5_and_writes_nothing(tmp_path: pathlib.Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    endless = models / "endless.onnx"
    onnx.save(endless_loop_model(), str(endless))
    before = endless.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    recipe = _recipe(tmp_path, endless, _prune("ratio = 0.3") + '[[steps]]\ntype = "bench"\nrepeat = 1\n')
    report = tmp_path / "run.json"
    result = limited_cli("--isolation-timeout", "2", "run", str(recipe), "--out-dir", str(out),
                         "--report", str(report))
    line = assert_one_line_error(result, 5)
    assert str(endless) in line and "did not finish within 2 s" in line, line
    assert not any(out.iterdir()) and not report.exists(), "nothing is written"
    assert sorted(p.name for p in models.iterdir()) == ["endless.onnx"] and endless.read_bytes() == before
