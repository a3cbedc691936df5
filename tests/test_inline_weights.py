"""Single-file models read by a wire scan (onnxprune.io.inline_weights): the same model, weights mapped.

Why: the scan decides which bytes of the file are a weight; a wrong offset would silently change every
number downstream (the oracle compares against the same wrong weights), so each shipped model is
compared with ``onnx.load`` value by value and field by field.
"""

from __future__ import annotations

import mmap

import numpy as np
import onnx
import pytest

from conftest import MODELS, model_names
from onnxprune.errors import ModelLoadError
from onnxprune.io import inline_weights, files as oio, weights


def _scan(path, min_bytes: int) -> onnx.ModelProto | None:
    with open(path, "rb") as handle:
        return inline_weights.scan(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ), min_bytes)


@pytest.mark.parametrize("name", model_names())
def test_the_scan_gives_the_parsed_model(name: str) -> None:
    path = MODELS / f"{name}.onnx"
    scanned, parsed = _scan(path, min_bytes=64), onnx.load(path)
    if scanned is None:
        assert not any(len(i.raw_data) >= 64 for i in parsed.graph.initializer)
        return
    assert [i.name for i in scanned.graph.initializer] == [i.name for i in parsed.graph.initializer]
    mapped = 0
    for got, want in zip(scanned.graph.initializer, parsed.graph.initializer):
        mapped += weights.is_stub(got)
        a, b = weights.to_array(got), onnx.numpy_helper.to_array(want)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True), got.name
    assert mapped > 0
    rest_a, rest_b = onnx.ModelProto(), onnx.ModelProto()
    rest_a.CopyFrom(scanned)
    rest_b.CopyFrom(parsed)
    del rest_a.graph.initializer[:], rest_b.graph.initializer[:]
    assert rest_a.SerializeToString() == rest_b.SerializeToString()


def test_a_mapped_single_file_model_hashes_and_saves_as_the_original(tmp_path) -> None:
    path = MODELS / "swin_t_reduced.onnx"  # 1.6 MB, initializers above the 64 KiB threshold
    mapped = oio.load_model(path, mmap_weights=True)
    assert weights.has_stubs(mapped)
    assert oio.model_sha256(mapped) == oio.model_sha256(oio.load_model(path))
    written = oio.save_model(mapped, tmp_path / "copy.onnx")
    assert not list(tmp_path.glob("*.data"))  # a single file stays a single file
    again = onnx.load(written)
    for got, want in zip(again.graph.initializer, onnx.load(path).graph.initializer):
        assert np.array_equal(onnx.numpy_helper.to_array(got), onnx.numpy_helper.to_array(want))


def test_a_truncated_file_falls_back_to_the_ordinary_parse_error(tmp_path) -> None:
    data = (MODELS / "swin_t_reduced.onnx").read_bytes()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not a valid ONNX protobuf"):
        oio.load_model(broken, mmap_weights=True)


def test_a_mapped_single_file_model_counts_its_file_once() -> None:
    from onnxprune.measurement.counting import count_model

    path = MODELS / "mnist_cnn.onnx"  # 277 KiB, weights above 64 KiB mapped from the file
    mapped = oio.load_model(path, mmap_weights=True)
    assert weights.has_stubs(mapped)
    assert count_model(mapped, path=path).size_bytes == path.stat().st_size
