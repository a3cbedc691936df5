"""The memory budget (issue 18): running out of memory is a one-line error and exit 2, never a kill.

A 256 MiB weight stored inside the ``.onnx`` file has to be parsed into memory, so a 0.4 GiB budget
cannot hold it; the same command with the default budget (90 % of available memory) succeeds.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_cli import assert_one_line_error, cli


@pytest.fixture(scope="module")
def inline_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    weight = numpy_helper.from_array(np.ones((4096, 16384), np.float32), "w")  # 256 MiB, inside the file
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="r")],
        "inline", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4096])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16384])], [weight])
    path = tmp_path_factory.mktemp("budget") / "inline.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("command", [["analyze"], ["prune", "--ratio", "0.3", "-o", "{out}"]])
def test_a_budget_too_small_is_one_line_and_exit_2(inline_model: pathlib.Path, command: list[str]) -> None:
    out = inline_model.parent / "out.onnx"
    args = [a.format(out=out) for a in command]
    result = cli("--memory-limit", "0.4", args[0], str(inline_model), *args[1:])
    assert_one_line_error(result, 2, "out of memory", "0.4 GiB", "--memory-limit")
    assert not out.exists()  # nothing half-written


def test_the_default_budget_lets_the_same_command_run(inline_model: pathlib.Path) -> None:
    result = cli("analyze", str(inline_model))
    assert result.returncode == 0, result.stderr
    assert "groups" in result.stdout
