"""The CLI end to end through its console entry point (a real subprocess): outputs, exit codes, errors.

Every error must be one line on stderr with a non-zero exit code and no traceback.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from conftest import MODELS
from onnxprune.runtime.feeds import random_feeds
from onnxprune.runtime.sessions import run_model


def _entry_point() -> list[str]:
    """The installed console script (what users run); falls back to the module."""
    # the script installed beside this interpreter first: PATH may point at another environment
    script = os.path.join(os.path.dirname(sys.executable), "onnxprune")
    script = script if os.path.exists(script) else (shutil.which("onnxprune") or script)
    return [script] if os.path.exists(script) else [sys.executable, "-m", "onnxprune.cli"]


def cli(*args: str, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*_entry_point(), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one ``onnxprune: error:`` line on stderr (holding every needle), no traceback;
    returns that line."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_analyze_text_and_json() -> None:
    text = cli("analyze", str(MODELS / "shufflenetv2.onnx"))
    assert text.returncode == 0, text.stderr
    assert "prunable" in text.stdout and "frozen at" in text.stdout
    data = json.loads(cli("analyze", str(MODELS / "resnet_basic.onnx"), "--json").stdout)
    assert data["totals"]["prunable"] >= 5
    frozen = [g for g in data["groups"] if g["status"] == "frozen"]
    assert frozen and all(g["reasons"] for g in frozen)
    assert all(0.0 <= g["macs_share"] <= 1.0 for g in data["groups"])


def test_prune_verify_plan_roundtrip(tmp_path: pathlib.Path) -> None:
    source = MODELS / "resnet_bottleneck.onnx"
    out, plan, report = tmp_path / "pruned.onnx", tmp_path / "plan.json", tmp_path / "report.json"
    result = cli("prune", str(source), "-o", str(out), "--ratio", "0.5", "--verify", "--save-plan", str(plan),
                 "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert "→" in result.stdout and "passed" in result.stdout
    data = json.loads(report.read_text())
    assert data["comparison"]["flops"]["ratio"] <= 0.5
    assert data["verification"]["ok"] is True
    model = onnx.load(out)
    meta = {p.key: p.value for p in model.metadata_props}
    assert "onnxprune.version" in meta and "ratio" in meta["onnxprune.settings"]
    check = cli("verify", str(source), str(out), "--plan", str(plan))
    assert check.returncode == 0 and "passed" in check.stdout, check.stderr
    replay = tmp_path / "replay.onnx"
    assert cli("prune", str(source), "-o", str(replay), "--plan", str(plan)).returncode == 0
    feeds = random_feeds(model, batch=2, seed=1)
    np.testing.assert_array_equal(run_model(onnx.load(replay), feeds)["output"], run_model(model, feeds)["output"])


def test_verify_detects_a_wrong_model(tmp_path: pathlib.Path) -> None:
    source = MODELS / "vgg_chain.onnx"
    out, plan = tmp_path / "pruned.onnx", tmp_path / "plan.json"
    assert cli("prune", str(source), "-o", str(out), "--ratio", "0.5", "--save-plan", str(plan)).returncode == 0
    model = onnx.load(out)
    bias = next(i for i in model.graph.initializer if len(i.dims) == 1)
    values = onnx.numpy_helper.to_array(bias).copy()
    values[0] += 1.0
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, tampered)
    result = cli("verify", str(source), str(tampered), "--plan", str(plan))
    assert result.returncode == 1 and "FAILED" in result.stdout


def test_plan_for_another_model_is_refused(tmp_path: pathlib.Path) -> None:
    plan = tmp_path / "plan.json"
    assert cli("prune", str(MODELS / "vgg_chain.onnx"), "-o", str(tmp_path / "a.onnx"), "--ratio", "0.3",
               "--save-plan", str(plan)).returncode == 0
    result = cli("prune", str(MODELS / "resnet_basic.onnx"), "-o", str(tmp_path / "b.onnx"), "--plan", str(plan))
    assert_one_line_error(result, 2, "another model")
    assert not (tmp_path / "b.onnx").exists()


def test_tampered_plan_is_refused(tmp_path: pathlib.Path) -> None:
    plan = tmp_path / "plan.json"
    source = MODELS / "vgg_chain.onnx"
    assert cli("prune", str(source), "-o", str(tmp_path / "a.onnx"), "--ratio", "0.3",
               "--save-plan", str(plan)).returncode == 0
    data = json.loads(plan.read_text())
    target = next(g for g in data["groups"] if g["kept"] and not g["frozen"])
    target["kept"] = []
    plan.write_text(json.dumps(data))
    assert_one_line_error(cli("prune", str(source), "-o", str(tmp_path / "b.onnx"), "--plan", str(plan)), 2,
                          "invalid kept")
    plan.write_text("{not json")
    assert_one_line_error(cli("prune", str(source), "-o", str(tmp_path / "b.onnx"), "--plan", str(plan)), 2, "plan")


@pytest.mark.parametrize("content", [b"", b"garbage bytes \x00\x01", None])
def test_bad_model_files(tmp_path: pathlib.Path, content: bytes | None) -> None:
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    for args in (("analyze", str(path)), ("prune", str(path), "-o", str(tmp_path / "out.onnx"), "--ratio", "0.5")):
        assert_one_line_error(cli(*args), 2, str(path.name))
    assert not (tmp_path / "out.onnx").exists()


def test_refuses_to_overwrite_input_without_inplace(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes((MODELS / "mlp_gemm.onnx").read_bytes())
    before = source.read_bytes()
    assert_one_line_error(cli("prune", str(source), "-o", str(source), "--ratio", "0.5"), 2, "overwrite")
    assert source.read_bytes() == before
    assert cli("prune", str(source), "-o", str(source), "--ratio", "0.5", "--inplace").returncode == 0
    assert len(source.read_bytes()) < len(before)


def test_usage_errors_exit_2(tmp_path: pathlib.Path) -> None:
    result = cli("prune", str(MODELS / "mlp_gemm.onnx"), "-o", str(tmp_path / "x.onnx"), "--ratio", "1.5")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = cli("prune", str(MODELS / "mlp_gemm.onnx"), "--ratio", "0.5")
    assert result.returncode == 2 and "Traceback" not in result.stderr
