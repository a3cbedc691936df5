"""Tests of onnxprune.io.files against real files, real onnx and real onnxruntime.

The path-safety tests prove a negative ("the file outside the model folder was never opened") with a
Python audit hook, which sees every ``open()``/``os.open()`` the process makes, instead of trusting
the error message alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxprune.io import files as oio
from onnxprune.io import loading, saving
from onnxprune.io import weights
from onnxprune.version import __version__
from onnxprune.errors import InputError, ModelLoadError, OnnxPruneError

# --------------------------------------------------------------------------------------------------
# audit hook: record every file the process opens while a test is listening

_OPEN_LOG: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if event != "open" or _OPEN_LOG is None or not args:
        return
    if isinstance(args[0], (str, bytes, os.PathLike)):  # not file descriptors
        _OPEN_LOG.append(os.path.realpath(os.fsdecode(args[0])))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it is inert while _OPEN_LOG is None


@pytest.fixture
def opened() -> list[str]:
    """Real paths of files opened during the test."""
    global _OPEN_LOG
    _OPEN_LOG = []
    try:
        yield _OPEN_LOG
    finally:
        _OPEN_LOG = None


# --------------------------------------------------------------------------------------------------
# model builders

RNG_SEED = 1234


def _mlp(seed: int = RNG_SEED) -> onnx.ModelProto:
    """x[1,64] @ W[64,32] + B[32]: W (8 KiB) goes external, B (128 B) stays inline."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            helper.make_node("Add", ["h", "B"], ["y"], name="add"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [weight, bias],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 3)],
        producer_name="unit-exporter",
        producer_version="4.5.6",
        doc_string="a model for io tests",
    )
    model.ir_version = 8
    model.model_version = 7
    helper.set_model_props(
        model, {"author": "tests", "onnxprune.version": "0.0.1-old", "license": "MIT"}
    )
    return model


def _external_model(
    folder: pathlib.Path,
    entries: list[tuple[str, str]],
    *,
    dims: tuple[int, ...] = (4, 4),
    data_type: int = TensorProto.FLOAT,
) -> pathlib.Path:
    """Write ``folder/model.onnx`` whose initializer W has exactly these external_data entries."""
    weight = TensorProto(
        name="W", data_type=data_type, dims=list(dims), data_location=TensorProto.EXTERNAL
    )
    for key, value in entries:
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Identity", ["W"], ["y"])],
        "ext",
        [],
        [helper.make_tensor_value_info("y", data_type, list(dims))],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())  # raw bytes: no onnx helper may "fix" the entries
    return path


FLOATS_4X4 = np.arange(16, dtype=np.float32).reshape(4, 4)


def _run(model_or_path: onnx.ModelProto | pathlib.Path, x: np.ndarray) -> np.ndarray:
    if isinstance(model_or_path, pathlib.Path):
        source: str | bytes = str(model_or_path)  # onnxruntime resolves external data itself
    else:
        source = model_or_path.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _listing(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _metadata(model: onnx.ModelProto) -> list[tuple[str, str]]:
    return [(p.key, p.value) for p in model.metadata_props]


# --------------------------------------------------------------------------------------------------
# round trip, provenance, header preservation


def test_round_trip_keeps_header_and_adds_provenance(tmp_path: pathlib.Path) -> None:
    model = _mlp()
    before = model.SerializeToString()
    out = oio.save_model(model, tmp_path / "out.onnx", provenance={"ratio": 0.5, "method": "l1"})
    assert out == tmp_path / "out.onnx"
    assert model.SerializeToString() == before, "the caller's model must not be modified"

    loaded = oio.load_model(out)
    assert loaded.ir_version == 8
    assert [(o.domain, o.version) for o in loaded.opset_import] == [("", 17), ("com.example", 3)]
    assert (loaded.producer_name, loaded.producer_version) == ("unit-exporter", "4.5.6")
    assert loaded.doc_string == "a model for io tests"
    assert loaded.model_version == 7
    meta = _metadata(loaded)
    assert [k for k, _ in meta] == ["author", "license", "onnxprune.version", "onnxprune.settings"]
    assert dict(meta)["author"] == "tests"
    assert dict(meta)["onnxprune.version"] == __version__ != "0.0.1-old"
    assert json.loads(dict(meta)["onnxprune.settings"]) == {"ratio": 0.5, "method": "l1"}
    for original, reloaded in zip(model.graph.initializer, loaded.graph.initializer):
        np.testing.assert_array_equal(
            numpy_helper.to_array(original), numpy_helper.to_array(reloaded)
        )


def test_save_without_provenance_is_byte_identical_model(tmp_path: pathlib.Path) -> None:
    model = _mlp()
    oio.save_model(model, tmp_path / "out.onnx")
    assert oio.load_model(tmp_path / "out.onnx").SerializeToString() == model.SerializeToString()


def test_add_provenance_replaces_own_keys_and_keeps_others_in_order() -> None:
    model = _mlp()
    model.metadata_props.add(key="author", value="second author entry")
    model.metadata_props.add(key="onnxprune.settings", value="stale")
    oio.add_provenance(model, {"b": [1, 2], "a": None})
    oio.add_provenance(model, {"b": [3]})
    assert _metadata(model) == [
        ("author", "tests"),
        ("license", "MIT"),
        ("author", "second author entry"),
        ("onnxprune.version", __version__),
        ("onnxprune.settings", '{"b":[3]}'),
    ]


@pytest.mark.parametrize("bad", [{"x": {1, 2}}, {"x": float("nan")}, ["not", "a", "mapping"]])
def test_add_provenance_rejects_non_json_and_leaves_model_untouched(bad: object) -> None:
    model = _mlp()
    before = _metadata(model)
    with pytest.raises(InputError, match="provenance"):
        oio.add_provenance(model, bad)  # type: ignore[arg-type]
    assert _metadata(model) == before


def test_version_is_a_non_empty_string() -> None:
    version = __version__
    assert isinstance(version, str) and version


# --------------------------------------------------------------------------------------------------
# save: destination checks


def test_save_refuses_to_overwrite_source_without_inplace(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = oio.save_model(_mlp(1), tmp_path / "m.onnx")
    original = source.read_bytes()
    (tmp_path / "alias.onnx").symlink_to(source)
    os.link(source, tmp_path / "hardlink.onnx")
    monkeypatch.chdir(tmp_path)  # relative spelling of the same file
    for spelling in (source, tmp_path / "alias.onnx", tmp_path / "hardlink.onnx", "m.onnx"):
        with pytest.raises(InputError, match="refusing to overwrite the source model"):
            oio.save_model(_mlp(2), spelling, source_path=source)
        assert source.read_bytes() == original

    oio.save_model(_mlp(2), source, source_path=source, inplace=True)
    assert oio.model_sha256(oio.load_model(source)) == oio.model_sha256(_mlp(2))


def test_save_into_missing_folder_errors_and_creates_nothing(tmp_path: pathlib.Path) -> None:
    with pytest.raises(InputError, match="output folder .* does not exist"):
        oio.save_model(_mlp(), tmp_path / "missing" / "deeper" / "out.onnx")
    assert list(tmp_path.iterdir()) == []


def test_save_onto_a_directory_errors(tmp_path: pathlib.Path) -> None:
    (tmp_path / "out.onnx").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        oio.save_model(_mlp(), tmp_path / "out.onnx")


# --------------------------------------------------------------------------------------------------
# save: atomicity


def _fail_on(
    monkeypatch: pytest.MonkeyPatch, name: str, exc: BaseException, when=lambda *args: True
) -> None:
    """Make ``os.<name>`` raise ``exc`` whenever ``when(*args)`` holds: a real failure mid-save."""
    real = getattr(os, name)

    def failing(*args, **kwargs):
        if when(*args):
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, failing)


def test_failed_rename_leaves_previous_output_and_no_temp_files(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    oio.save_model(_mlp(1), tmp_path / "out.onnx")
    before = _listing(tmp_path)
    _fail_on(monkeypatch, "replace", OSError(28, "No space left on device"))
    with pytest.raises(OnnxPruneError, match=r"out.onnx: cannot save model: .*No space") as info:
        oio.save_model(_mlp(2), tmp_path / "out.onnx")
    assert isinstance(info.value.__cause__, OSError)
    assert _listing(tmp_path) == before


def test_failed_fsync_leaves_no_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_on(monkeypatch, "fsync", OSError(5, "Input/output error"))
    with pytest.raises(OnnxPruneError, match="Input/output error"):
        oio.save_model(_mlp(), tmp_path / "out.onnx", external_data=True)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_during_write_cleans_up_and_propagates(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_on(monkeypatch, "fsync", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        oio.save_model(_mlp(), tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []


def test_model_too_large_for_protobuf_writes_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    oio.save_model(_mlp(1), tmp_path / "out.onnx")
    before = _listing(tmp_path)
    monkeypatch.setattr(saving, "PROTOBUF_LIMIT_BYTES", 4096)  # stand-in for 2 GiB
    with pytest.raises(InputError, match="2 GiB limit; save with external_data=True"):
        oio.save_model(_mlp(2), tmp_path / "out.onnx", external_data=False)
    assert _listing(tmp_path) == before
    oio.save_model(_mlp(2), tmp_path / "out.onnx", external_data=True)  # the skeleton fits


def test_failed_model_rename_in_external_mode_restores_old_model_and_data(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.onnx"
    oio.save_model(_mlp(1), target, external_data=True)
    before = _listing(tmp_path)
    assert set(before) == {"out.onnx", "out.onnx.data"}
    calls: list[str] = []

    def model_placement(src, dst) -> bool:  # fail the first rename *onto* out.onnx: the new model
        calls.append(f"{pathlib.Path(src).name}->{pathlib.Path(dst).name}")
        return pathlib.Path(dst) == target and sum(c.endswith("->out.onnx") for c in calls) == 1

    _fail_on(monkeypatch, "replace", OSError(13, "Permission denied"), model_placement)
    with pytest.raises(OnnxPruneError, match="Permission denied"):
        oio.save_model(_mlp(2), target, external_data=True)
    moves = [tuple(call.split("->")) for call in calls]
    backup = next(dst for src, dst in moves if src == "out.onnx.data")
    new_data = [src for src, dst in moves if dst == "out.onnx.data" and src != backup]
    assert len(new_data) == 1, calls  # the new data *was* in place when the model rename failed
    assert _listing(tmp_path) == before  # old model *and* its old data, nothing else
    monkeypatch.undo()
    x = np.ones((1, 64), np.float32)
    np.testing.assert_array_equal(_run(oio.load_model(target), x), _run(_mlp(1), x))


# --------------------------------------------------------------------------------------------------
# external data: round trip


def test_external_data_round_trip_runs_identically_in_onnxruntime(
    tmp_path: pathlib.Path, opened: list[str]
) -> None:
    model = _mlp()
    before = model.SerializeToString()
    out = oio.save_model(model, tmp_path / "out.onnx", external_data=True)
    assert model.SerializeToString() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.onnx.data"]

    raw = onnx.load(str(out), load_external_data=False)
    weight, bias = raw.graph.initializer
    assert weight.data_location == TensorProto.EXTERNAL
    entries = {e.key: e.value for e in weight.external_data}
    assert entries == {"location": "out.onnx.data", "offset": "0", "length": "8192"}
    assert not bias.HasField("data_location") and len(bias.raw_data) == 128  # small: stays inline
    assert (tmp_path / "out.onnx.data").stat().st_size == 8192

    loaded = oio.load_model(out)
    assert str(tmp_path / "out.onnx.data") in opened  # the audit hook does see our reads
    assert oio.model_sha256(loaded) == oio.model_sha256(model)
    assert loaded.SerializeToString() == before  # no leftover data_location / external_data

    x = np.random.default_rng(RNG_SEED).standard_normal((1, 64)).astype(np.float32)
    expected = _run(model, x)
    np.testing.assert_array_equal(_run(loaded, x), expected)
    np.testing.assert_array_equal(_run(out, x), expected)  # onnxruntime reading our data file


def test_external_data_auto_mode_follows_size_threshold(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    oio.save_model(_mlp(), tmp_path / "small.onnx")
    assert not (tmp_path / "small.onnx.data").exists()
    monkeypatch.setattr(saving, "AUTO_EXTERNAL_BYTES", 1000)  # stand-in for ~1.8 GB
    oio.save_model(_mlp(), tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").stat().st_size == 8192


def test_save_replaces_previous_external_pair(tmp_path: pathlib.Path) -> None:
    oio.save_model(_mlp(1), tmp_path / "out.onnx", external_data=True)
    oio.save_model(_mlp(2), tmp_path / "out.onnx", external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.onnx.data"]
    assert oio.model_sha256(oio.load_model(tmp_path / "out.onnx")) == oio.model_sha256(_mlp(2))


def test_tensors_marked_external_but_holding_bytes_are_saved_inline(tmp_path: pathlib.Path) -> None:
    # convert_model_to_external_data marks tensors EXTERNAL while they still hold raw_data.
    model = _mlp()
    onnx.external_data_helper.convert_model_to_external_data(model, location="w.bin")
    assert model.graph.initializer[0].data_location == TensorProto.EXTERNAL
    out = oio.save_model(model, tmp_path / "out.onnx", external_data=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
    x = np.ones((1, 64), np.float32)
    np.testing.assert_array_equal(_run(out, x), _run(_mlp(), x))


def test_load_weights_false_leaves_external_tensors_unread(
    tmp_path: pathlib.Path, opened: list[str]
) -> None:
    out = oio.save_model(_mlp(), tmp_path / "out.onnx", external_data=True)
    opened.clear()
    model = oio.load_model(out, load_weights=False)
    weight = model.graph.initializer[0]
    assert weight.data_location == TensorProto.EXTERNAL and not weight.HasField("raw_data")
    assert str(tmp_path / "out.onnx.data") not in opened
    with pytest.raises(InputError, match="'W' has weights that were not loaded"):
        oio.save_model(model, tmp_path / "copy.onnx")
    with pytest.raises(InputError, match="'W' has weights that were not loaded"):
        oio.model_sha256(model)
    assert not (tmp_path / "copy.onnx").exists()


def test_external_file_in_subfolder_and_symlink_inside_folder_are_accepted(
    tmp_path: pathlib.Path,
) -> None:
    folder = tmp_path / "model"
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "w.bin").write_bytes(b"\0" * 8 + FLOATS_4X4.tobytes())
    (folder / "link.bin").symlink_to(folder / "weights" / "w.bin")
    for location in ("weights/w.bin", "link.bin", "./weights/w.bin"):
        path = _external_model(folder, [("location", location), ("offset", "8"), ("length", "64")])
        weight = oio.load_model(path).graph.initializer[0]
        np.testing.assert_array_equal(numpy_helper.to_array(weight), FLOATS_4X4)
        mapped = oio.load_model(path, mmap_weights=True).graph.initializer[0]
        np.testing.assert_array_equal(weights.to_array(mapped), FLOATS_4X4)


def test_missing_length_reads_exactly_the_tensor_bytes(tmp_path: pathlib.Path) -> None:
    (tmp_path / "w.bin").write_bytes(FLOATS_4X4.tobytes() + b"trailing bytes of another tensor")
    path = _external_model(tmp_path, [("location", "w.bin")])
    weight = oio.load_model(path).graph.initializer[0]
    assert len(weight.raw_data) == 64
    np.testing.assert_array_equal(numpy_helper.to_array(weight), FLOATS_4X4)


@pytest.mark.parametrize(
    ("data_type", "dims", "nbytes"),
    [
        (TensorProto.FLOAT16, (4, 4), 32),
        (TensorProto.INT4, (5,), 3),  # two per byte, rounded up
        (TensorProto.INT2, (5,), 2),  # four per byte, rounded up
        (TensorProto.DOUBLE, (3,), 24),
        (TensorProto.FLOAT, (0, 7), 0),
    ],
)
def test_expected_length_follows_data_type_including_packed_types(
    tmp_path: pathlib.Path, data_type: int, dims: tuple[int, ...], nbytes: int
) -> None:
    (tmp_path / "w.bin").write_bytes(bytes(range(nbytes + 1)))
    for length in (nbytes, nbytes + 1):
        entries = [("location", "w.bin"), ("length", str(length))]
        path = _external_model(tmp_path, entries, dims=dims, data_type=data_type)
        if length == nbytes:
            assert len(oio.load_model(path).graph.initializer[0].raw_data) == nbytes
    with pytest.raises(ModelLoadError, match=f"length {nbytes + 1} does not match dims"):
        oio.load_model(path)


# --------------------------------------------------------------------------------------------------
# external data: refusals (all before reading anything external)


@pytest.fixture
def outside(tmp_path: pathlib.Path) -> pathlib.Path:
    """A secret file next to (outside of) the model folder ``tmp_path/model``."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(FLOATS_4X4.tobytes())
    (tmp_path / "model").mkdir()
    return secret


@pytest.mark.parametrize(("load_weights", "mmap_weights"), [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("../secret.bin", "contains '..'"),
        ("sub/../../secret.bin", "contains '..'"),
        ("..\\secret.bin", "contains '..'"),
        ("ABSOLUTE", "is absolute"),
        ("C:\\secret.bin", "is absolute"),
        ("\\\\server\\share\\secret.bin", "is absolute"),
        ("link_out.bin", "resolves outside the model folder"),
        ("dangling_out.bin", "resolves outside the model folder"),
        ("dir_out/secret.bin", "resolves outside the model folder"),
        (".", "resolves outside the model folder"),
        ("", "is empty"),
    ],
)
def test_locations_leaving_the_model_folder_are_refused_without_opening_them(
    tmp_path: pathlib.Path,
    outside: pathlib.Path,
    opened: list[str],
    location: str,
    reason: str,
    load_weights: bool,
    mmap_weights: bool,
) -> None:
    folder = tmp_path / "model"
    (folder / "link_out.bin").symlink_to(outside)
    (folder / "dangling_out.bin").symlink_to(tmp_path / "does_not_exist.bin")
    (folder / "dir_out").symlink_to(tmp_path, target_is_directory=True)
    location = str(outside) if location == "ABSOLUTE" else location
    path = _external_model(folder, [("location", location), ("offset", "0"), ("length", "64")])
    opened.clear()
    with pytest.raises(ModelLoadError, match=reason) as info:
        oio.load_model(path, load_weights=load_weights, mmap_weights=mmap_weights)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "'W'" in message
    assert "does not exist" not in message
    assert opened == [str(path.resolve())], "only the model file itself may be opened"


_TOKENS = st.sampled_from(
    ["..", ".", "w.bin", "sub", "link_out", "link_in", "", "secret.bin", "C:", "model"]
)
_PARTS = st.lists(st.tuples(_TOKENS, st.sampled_from(["/", "\\"])), min_size=1, max_size=5)


@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(lead=st.sampled_from(["", "/", "\\", "./"]), parts=_PARTS)
def test_no_location_ever_opens_a_file_outside_the_model_folder(
    tmp_path: pathlib.Path, opened: list[str], lead: str, parts: list[tuple[str, str]]
) -> None:
    folder = tmp_path / "model"
    if not folder.exists():
        (folder / "sub").mkdir(parents=True)
        (tmp_path / "secret.bin").write_bytes(FLOATS_4X4.tobytes())
        (folder / "w.bin").write_bytes(FLOATS_4X4.tobytes())
        (folder / "sub" / "w.bin").write_bytes(FLOATS_4X4.tobytes())
        (folder / "link_out").symlink_to(tmp_path, target_is_directory=True)
        (folder / "link_in").symlink_to(folder / "sub", target_is_directory=True)
    location = lead + "".join(token + sep for token, sep in parts).rstrip("/\\")
    path = _external_model(folder, [("location", location)])
    opened.clear()
    for mmap_weights in (False, True):
        try:
            loaded = oio.load_model(path, mmap_weights=mmap_weights)
        except ModelLoadError as err:
            assert "\n" not in str(err)
        else:
            weight = loaded.graph.initializer[0]
            assert weights.is_stub(weight) == mmap_weights
            np.testing.assert_array_equal(weights.to_array(weight), FLOATS_4X4)
    inside = str(folder.resolve()) + os.sep
    assert all(p.startswith(inside) for p in opened), (location, opened)


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ([("basepath", "/etc")], "unknown external data key 'basepath'"),
        ([("mmap", "1")], "unknown external data key 'mmap'"),
        ([("location", "../secret.bin")], "key 'location' is given twice"),
        ([("offset", "-1")], "offset '-1' is not a non-negative integer"),
        ([("offset", "1e3")], "offset '1e3' is not a non-negative integer"),
        ([("offset", " 8")], "offset ' 8' is not a non-negative integer"),
        ([("length", "6_4")], "length '6_4' is not a non-negative integer"),
        ([("offset", "200")], r"offset 200 is beyond the end of 'w.bin' \(100 bytes\)"),
        ([("offset", "40"), ("length", "64")], r"range 40\+64 exceeds 'w.bin' \(100 bytes\)"),
        ([("length", "32")], r"length 32 does not match dims \[4, 4\] \(64 bytes\)"),
        ([("offset", "50")], "holds 50 bytes after offset 50, tensor needs 64"),
    ],
)
def test_invalid_external_entries_are_refused(
    tmp_path: pathlib.Path, entries: list[tuple[str, str]], reason: str
) -> None:
    (tmp_path / "w.bin").write_bytes(bytes(100))  # 64 bytes would fit: entries make it wrong
    path = _external_model(tmp_path, [("location", "w.bin"), *entries])
    for load_weights, mmap_weights in ((True, False), (False, False), (True, True)):
        with pytest.raises(ModelLoadError, match=reason) as info:
            oio.load_model(path, load_weights=load_weights, mmap_weights=mmap_weights)
        assert "\n" not in str(info.value) and "tensor 'W'" in str(info.value)


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ([("offset", "0")], "has no 'location'"),
        ([("location", "missing.bin")], "external data file 'missing.bin' does not exist"),
        ([("location", "folder")], "'folder' is not a regular file"),
    ],
)
def test_missing_or_unusable_external_files_are_refused(
    tmp_path: pathlib.Path, entries: list[tuple[str, str]], reason: str
) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelLoadError, match=reason):
        oio.load_model(_external_model(tmp_path, entries), load_weights=False)


def test_tensor_with_inline_and_external_data_is_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "w.bin").write_bytes(bytes(64))
    path = _external_model(tmp_path, [("location", "w.bin")])
    model = onnx.ModelProto()
    model.ParseFromString(path.read_bytes())
    model.graph.initializer[0].float_data.extend([1.0] * 16)
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError, match="both inline data and an external data reference"):
        oio.load_model(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX-only")
def test_fifo_location_is_refused_without_blocking(tmp_path: pathlib.Path) -> None:
    os.mkfifo(tmp_path / "pipe.bin")  # opening it for reading would block forever
    with pytest.raises(ModelLoadError, match="'pipe.bin' is not a regular file"):
        oio.load_model(_external_model(tmp_path, [("location", "pipe.bin")]))


def test_string_tensor_cannot_be_external(tmp_path: pathlib.Path) -> None:
    (tmp_path / "w.bin").write_bytes(bytes(64))
    path = _external_model(tmp_path, [("location", "w.bin")], data_type=TensorProto.STRING)
    with pytest.raises(ModelLoadError, match="data type 8 cannot be stored as external raw data"):
        oio.load_model(path)


def test_external_tensor_inside_subgraph_is_validated(
    tmp_path: pathlib.Path, outside: pathlib.Path
) -> None:
    weight = TensorProto(
        name="inner", data_type=TensorProto.FLOAT, dims=[4, 4], data_location=TensorProto.EXTERNAL
    )
    weight.external_data.add(key="location", value="../secret.bin")
    c_info = helper.make_tensor_value_info("c", TensorProto.FLOAT, [4, 4])
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=weight)], "branch", [], [c_info]
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
    )
    path = tmp_path / "model" / "model.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError, match="tensor 'inner': .* '../secret.bin' contains '..'"):
        oio.load_model(path, load_weights=False)


def test_max_file_bytes_caps_model_file_and_loaded_external_weights(tmp_path: pathlib.Path) -> None:
    out = oio.save_model(_mlp(), tmp_path / "out.onnx", external_data=True)
    size = out.stat().st_size
    with pytest.raises(ModelLoadError, match=f"model file is {size} bytes, above the limit of 100"):
        oio.load_model(out, max_file_bytes=100)
    with pytest.raises(ModelLoadError, match="weights total 8192 bytes, above the limit of 8000"):
        oio.load_model(out, max_file_bytes=8000)
    unread = oio.load_model(out, load_weights=False, max_file_bytes=8000)
    assert unread.graph.initializer[0].data_location == TensorProto.EXTERNAL
    assert len(oio.load_model(out, max_file_bytes=8192).graph.initializer[0].raw_data) == 8192
    with pytest.raises(ModelLoadError, match="weights total 8192 bytes, above the limit of 8000"):
        oio.load_model(out, max_file_bytes=8000, mmap_weights=True)  # mapping counts like reading
    assert weights.is_stub(oio.load_model(out, max_file_bytes=8192, mmap_weights=True).graph.initializer[0])


def test_model_file_above_protobuf_limit_is_refused(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = oio.save_model(_mlp(), tmp_path / "out.onnx")
    monkeypatch.setattr(loading, "PROTOBUF_LIMIT_BYTES", 1000)  # stand-in for 2 GiB
    with pytest.raises(ModelLoadError, match="must keep their weights in external data"):
        oio.load_model(out)


# --------------------------------------------------------------------------------------------------
# unreadable model files


def _bad_file(tmp_path: pathlib.Path, kind: str) -> pathlib.Path:
    path = tmp_path / f"{kind}.onnx"
    valid = _mlp().SerializeToString()
    contents = {
        "empty": b"",
        "truncated": valid[: len(valid) // 2],
        "garbage": bytes(np.random.default_rng(RNG_SEED).integers(0, 256, 4096, dtype=np.uint8)),
        "text": b"this is a README, not a model\n",
        "tensor_proto": numpy_helper.from_array(FLOATS_4X4, "t").SerializeToString(),
        "no_opsets": helper.make_model(
            helper.make_graph([], "g", [], []), opset_imports=[]
        ).SerializeToString(),
        "no_graph": onnx.ModelProto(producer_name="parses fine, is no model").SerializeToString(),
    }
    if kind == "directory":
        path.mkdir()
    elif kind in contents:
        path.write_bytes(contents[kind])
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "model file does not exist"),
        ("directory", "is a directory"),
        ("empty", "model file is empty"),
        ("truncated", "not a valid ONNX protobuf"),
        ("garbage", "not a valid ONNX protobuf"),
        ("text", "not a valid ONNX protobuf"),
        ("tensor_proto", "not a valid ONNX protobuf"),
        ("no_graph", "not an ONNX model \\(no IR version or no graph\\)"),
        ("no_opsets", "no opset_import"),
    ],
)
def test_unreadable_model_files_raise_one_line_model_load_error(
    tmp_path: pathlib.Path, kind: str, reason: str
) -> None:
    path = _bad_file(tmp_path, kind)
    with pytest.raises(ModelLoadError, match=reason) as info:
        oio.load_model(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert info.value.exit_code == 2


def test_negative_max_file_bytes_is_an_input_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(InputError, match="max_file_bytes must be >= 0"):
        oio.load_model(tmp_path / "x.onnx", max_file_bytes=-1)


# --------------------------------------------------------------------------------------------------
# hashing


def test_model_sha256_is_deterministic_and_sensitive_to_weights_and_graph() -> None:
    model = _mlp()
    copy = onnx.ModelProto()
    copy.ParseFromString(model.SerializeToString())
    assert oio.model_sha256(model) == oio.model_sha256(copy) == oio.model_sha256(_mlp())
    assert len(oio.model_sha256(model)) == 64

    one_weight = onnx.ModelProto()
    one_weight.CopyFrom(model)
    weights = numpy_helper.to_array(one_weight.graph.initializer[0]).copy()
    weights[3, 5] = np.nextafter(weights[3, 5], np.float32(np.inf))  # one ulp
    one_weight.graph.initializer[0].CopyFrom(numpy_helper.from_array(weights, "W"))
    assert oio.model_sha256(one_weight) != oio.model_sha256(model)

    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    renamed.graph.node[0].name = "other"
    assert oio.model_sha256(renamed) != oio.model_sha256(model)


def test_file_sha256_matches_hashlib_and_reports_missing_files(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 9000  # spans several read chunks
    path.write_bytes(data)
    assert oio.file_sha256(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(InputError, match="missing.bin: cannot read file for hashing"):
        oio.file_sha256(tmp_path / "missing.bin")


@pytest.mark.parametrize("name", ["mnist_cnn", "bert_encoder_static", "constant_weights", "lstm_classifier_static"])
def test_a_streamed_single_file_save_is_byte_identical_to_serializing_the_model(tmp_path: pathlib.Path,
                                                                                 name: str) -> None:
    """``io/single_file.py`` splices payloads into the framing protobuf would write: same bytes, any source."""
    source = pathlib.Path(__file__).resolve().parents[1] / "models" / f"{name}.onnx"
    expected = onnx.load(source).SerializeToString()
    in_memory = oio.save_model(onnx.load(source), tmp_path / "a.onnx", external_data=False)
    mapped = oio.save_model(oio.load_model(source, mmap_weights=True), tmp_path / "b.onnx", external_data=False)
    assert in_memory.read_bytes() == expected
    assert mapped.read_bytes() == expected
