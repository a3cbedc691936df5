"""The first contact with a model file runs in a child process (onnxprune/io/isolation.py).

Real children, real onnxruntime: a child that really dies by a signal (a genuine segfault through the
same parent-side mechanism, and a real model whose onnxruntime run is stopped by the CPU-time limit,
SIGXCPU), a real model that runs "forever" (a Loop of 2^62 iterations) against a timeout, and the CLI
answering each with one ``onnxprune: error:`` line, exit 5, no output file and the input untouched.
"""

from __future__ import annotations

import os
import pathlib
import resource
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS
from test_cli import assert_one_line_error
from onnxprune.errors import IsolationError
from onnxprune.io.isolation import ProbeReport, probe, run_child

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="signals and rlimits are POSIX")


def entry_point() -> list[str]:
    """The console script installed beside this interpreter (PATH may point at another environment)."""
    script = os.path.join(os.path.dirname(sys.executable), "onnxprune")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "onnxprune.cli"]


def cli(*args: str, env: dict[str, str] | None = None, cpu_seconds: int | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ONNXPRUNE_")} | (env or {})

    def limit() -> None:  # in the CLI process; its isolation child inherits the limit
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 60))

    return subprocess.run([*entry_point(), *args], capture_output=True, text=True, timeout=timeout,
                          env=environment, preexec_fn=limit)


def endless_loop_model() -> onnx.ModelProto:
    """y = x + 2^62 (one Add per Loop iteration): valid, checker-clean, and onnxruntime never finishes it."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones((1, 4), np.float32), "one")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "keep_going", "x"], ["y"], body=body, name="endless")],
        "endless", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(2**62, np.int64), "trips"),
         numpy_helper.from_array(np.array(True), "keep_going")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture
def endless(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "endless.onnx"
    onnx.save(endless_loop_model(), str(path))
    return path


def test_healthy_models_pass_every_stage(tmp_path: pathlib.Path) -> None:
    names = [str(MODELS / "resnet_basic.onnx"), str(MODELS / "vgg_chain.onnx")]
    report = probe(names, onnxruntime=True, timeout=120)
    assert isinstance(report, ProbeReport)
    assert [(r.model, r.stage, r.status) for r in report.results] == [
        (name, stage, "ok") for name in names for stage in ("checker", "session", "run")]
    checker_only = probe(names[:1], timeout=120)
    assert [(r.stage, r.status) for r in checker_only.results] == [("checker", "ok")]


def test_errors_the_stages_raise_are_answers_not_crashes(tmp_path: pathlib.Path) -> None:
    """A model the checker rejects and onnxruntime cannot run: the child survives and says so; the CLI
    then refuses it in-process exactly as without isolation (exit 2, the checker's reason)."""
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 3], name="bad_perm"),
         helper.make_node("Relu", ["t"], ["y"], name="relu")],
        "bad_perm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    source, out = tmp_path / "bad.onnx", tmp_path / "out.onnx"
    onnx.save(model, str(source))
    report = probe([source], onnxruntime=True, timeout=120)
    statuses = {r.stage: r.status for r in report.results}
    assert statuses["checker"] == "error" and "perm" in report.failures()[0].message, report
    assert statuses["session"] == "error" and "run" not in statuses, report
    before = source.read_bytes()
    line = assert_one_line_error(cli("prune", str(source), "-o", str(out), "--ratio", "0.3", "--verify"), 2)
    assert "invalid model" in line, line
    assert not out.exists() and source.read_bytes() == before


def test_a_child_killed_by_a_signal_is_one_clear_error(tmp_path: pathlib.Path) -> None:
    """The parent side (spawn, protocol, signal, message) with a child script that really segfaults
    while "creating a session" (no onnx/onnxruntime crash is known for the pinned versions)."""
    script = tmp_path / "segfaulting_child.py"
    script.write_text(
        "import ctypes, json, resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
        "spec = json.loads(sys.argv[1])\n"
        "print('@@onnxprune-isolation ' + json.dumps({'model': 0, 'stage': 'checker', 'status': 'start'}))\n"
        "print('@@onnxprune-isolation ' + json.dumps({'model': 0, 'stage': 'checker', 'status': 'ok'}))\n"
        "print('@@onnxprune-isolation ' + json.dumps({'model': 0, 'stage': 'session', 'status': 'start'}), "
        "flush=True)\n"
        "ctypes.string_at(0)  # a real invalid read: SIGSEGV\n")
    with pytest.raises(IsolationError) as caught:
        run_child({"models": ["m.onnx"]}, ["my model.onnx"], timeout=120, script=script)
    err = caught.value
    assert (err.model, err.stage, err.cause, err.exit_code) == ("my model.onnx", "session", "SIGSEGV", 5)
    assert str(err).startswith("my model.onnx: onnxruntime crashed while creating a session (SIGSEGV)"), str(err)
    assert "\n" not in str(err)


def test_a_model_that_runs_forever_times_out(endless: pathlib.Path) -> None:
    with pytest.raises(IsolationError) as caught:
        probe([endless], onnxruntime=True, timeout=3)
    err = caught.value
    assert (err.model, err.stage, err.cause) == (str(endless), "run", "timeout"), str(err)
    assert "running the model in onnxruntime did not finish within 3 s" in str(err)
    assert probe([endless], timeout=120).results[0].status == "ok", "the checker alone is fine with it"


def test_cli_runtime_killed_by_a_signal_is_one_line_and_writes_nothing(endless: pathlib.Path,
                                                                     tmp_path: pathlib.Path) -> None:
    """A real model, a real onnxruntime run and a real signal: the CPU-time limit (inherited by the
    isolation child) stops the endless Loop with SIGXCPU, which would have killed onnxprune itself."""
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    before = endless.read_bytes()
    result = cli("prune", str(endless), "-o", str(out), "--ratio", "0.3", "--verify", "--report", str(report),
                 cpu_seconds=3)
    line = assert_one_line_error(result, 5)
    assert str(endless) in line and "SIGXCPU" in line and "running the model" in line, line
    assert not out.exists() and not report.exists(), "nothing is written"
    assert endless.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["endless.onnx"], "no temporary files either"


def test_cli_timeout_is_one_line_exit_5(endless: pathlib.Path, tmp_path: pathlib.Path) -> None:
    report = tmp_path / "bench.json"
    result = cli("--isolation-timeout", "2", "bench", str(endless), "--repeat", "1", "--report", str(report))
    line = assert_one_line_error(result, 5)
    assert str(endless) in line and "did not finish within 2 s" in line, line
    assert not report.exists()


def test_isolation_can_be_turned_off(tmp_path: pathlib.Path) -> None:
    """No interpreter starts in a microsecond: with isolation the limit is hit, without it no child runs."""
    source = tmp_path / "model.onnx"
    shutil.copy(MODELS / "resnet_basic.onnx", source)
    line = assert_one_line_error(cli("--isolation-timeout", "0.000001", "analyze", str(source)), 5)
    assert "did not finish within 1e-06 s" in line, line
    for args, env in ((("--no-isolation",), None), ((), {"ONNXPRUNE_NO_ISOLATION": "1"})):
        result = cli(*args, "--isolation-timeout", "0.000001", "analyze", str(source), env=env)
        assert result.returncode == 0 and "prunable" in result.stdout, result.stderr
    env_timeout = cli("analyze", str(source), env={"ONNXPRUNE_ISOLATION_TIMEOUT": "0.000001"})
    assert assert_one_line_error(env_timeout, 5)


def test_unreadable_files_keep_their_load_error(tmp_path: pathlib.Path) -> None:
    """The parent validates the file (and its external data) before any child opens it."""
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model at all")
    line = assert_one_line_error(cli("prune", str(junk), "-o", str(tmp_path / "out.onnx"), "--verify"), 2)
    assert "not a valid ONNX protobuf" in line or "not an ONNX model" in line, line
