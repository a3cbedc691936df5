"""The memory budget (issue 18): running out of memory is a one-line error and exit 2, never a kill.

Parsing weights that cannot be mapped from the file (here ``float_data`` rather than ``raw_data``) needs
memory in proportion to the model: a 0.4 GiB budget cannot hold 192 MiB of them, the default budget
(90 % of available memory) can.  Writing a single-file model no longer does (``io/single_file.py`` streams
the weights into the file), so the same budget suffices to write 256 MiB of them.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_cli import assert_one_line_error, cli


def _model(weight: onnx.TensorProto, rows: int, cols: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="r")],
        "budget", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", cols])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def raw_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """256 MiB of ``raw_data`` inside the file: mapped when read, copied back when written."""
    path = tmp_path_factory.mktemp("budget") / "raw.onnx"
    onnx.save(_model(numpy_helper.from_array(np.ones((4096, 16384), np.float32), "w"), 4096, 16384), path)
    return path


@pytest.fixture(scope="module")
def packed_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """192 MiB of packed ``float_data``: protobuf must parse it into memory."""
    values = np.ones(4096 * 12288, np.float32).tobytes()
    weight = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4096, 12288])
    weight.MergeFromString(b"\x22" + _varint(len(values)) + values)  # field 4 (float_data), packed
    path = tmp_path_factory.mktemp("budget") / "packed.onnx"
    onnx.save(_model(weight, 4096, 12288), path)
    return path


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def test_parsing_beyond_the_budget_is_one_line_and_exit_2(packed_model: pathlib.Path) -> None:
    result = cli("--memory-limit", "0.4", "analyze", str(packed_model))
    assert_one_line_error(result, 2, "out of memory", "0.4 GiB", "--memory-limit")


def test_writing_a_single_file_model_streams_its_weights_within_the_budget(raw_model: pathlib.Path) -> None:
    out = raw_model.parent / "out.onnx"
    result = cli("--memory-limit", "0.4", "prune", str(raw_model), "--ratio", "0.3", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert not list(raw_model.parent.glob("out.onnx.*"))  # one file, like its source
    written = onnx.load(out)
    assert np.array_equal(numpy_helper.to_array(written.graph.initializer[0]), np.ones((4096, 16384), np.float32))


def test_the_default_budget_lets_the_same_commands_run(raw_model: pathlib.Path, packed_model: pathlib.Path) -> None:
    assert cli("analyze", str(packed_model)).returncode == 0
    out = raw_model.parent / "default_out.onnx"
    result = cli("prune", str(raw_model), "--ratio", "0.3", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert list(onnx.load(out).graph.initializer[0].dims) == [4096, 16384]  # its one group is the output's
    assert not list(raw_model.parent.glob("default_out.onnx.*"))  # written as one file, like its source
