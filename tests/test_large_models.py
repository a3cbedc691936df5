"""Models with external data: memory-mapped weights (onnxprune.io.weights) give the same results as in memory.

The CLI maps external weights (``load_model(mmap_weights=True)``), so every model here is saved with
external data; the same model saved as one self-contained file takes the in-memory path.  The two
must agree exactly: same analysis, same plan, bit-identical pruned weights and onnxruntime outputs
(atol 0).  A subprocess check bounds peak RSS (VmHWM of the child) by twice the model plus the CLI's
fixed cost.  Models are small (a few MB; one of ~200 MB for the memory bound).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS, assert_matches_oracle
from onnxprune.io import files as oio
from onnxprune.io import loading
from onnxprune.io import weights
from onnxprune.errors import InputError, ModelLoadError, OnnxPruneError
from onnxprune.pipeline import PruneOptions, prune
from onnxprune.runtime.feeds import random_feeds
from onnxprune.runtime.sessions import run_model
from test_cli import cli


def _chain(width: int = 256, layers: int = 3, channels: int = 32, seed: int = 0) -> onnx.ModelProto:
    """Conv 3x3 ×2 → GlobalAveragePool → Flatten → Gemm (width) × layers → Gemm 10: prunable throughout."""
    rng = np.random.default_rng(seed)
    inits, nodes, x = [], [], "input"
    for i in range(2):
        c_in = 3 if i == 0 else channels
        inits += [numpy_helper.from_array(rng.standard_normal((channels, c_in, 3, 3)).astype(np.float32) * 0.3,
                                          f"conv{i}.w"),
                  numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32) * 0.1, f"conv{i}.b")]
        nodes += [helper.make_node("Conv", [x, f"conv{i}.w", f"conv{i}.b"], [f"c{i}"], name=f"conv{i}", pads=[1] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flat")]
    x, width_in = "flat", channels
    for i in range(layers + 1):
        out = 10 if i == layers else width
        inits += [numpy_helper.from_array(rng.standard_normal((out, width_in)).astype(np.float32)
                                          * np.float32(np.sqrt(2 / width_in)), f"fc{i}.w"),
                  numpy_helper.from_array(rng.standard_normal(out).astype(np.float32) * 0.1, f"fc{i}.b")]
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.w", f"fc{i}.b"], [f"f{i}"], name=f"fc{i}", transB=1))
        if i < layers:
            nodes.append(helper.make_node("Relu", [f"f{i}"], [f"fr{i}"], name=f"frelu{i}"))
        x, width_in = (f"f{i}" if i == layers else f"fr{i}"), out
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _pair(folder: pathlib.Path, model: onnx.ModelProto) -> tuple[pathlib.Path, pathlib.Path]:
    """The same model as one file (in-memory path) and with external data (memory-mapped path)."""
    (folder / "inline").mkdir()
    (folder / "ext").mkdir()
    inline = oio.save_model(model, folder / "inline" / "m.onnx", external_data=False)
    ext = oio.save_model(model, folder / "ext" / "m.onnx", external_data=True)
    assert (folder / "ext" / "m.onnx.data").stat().st_size > 0
    return inline, ext


def _digest(folder: pathlib.Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def _initializers(path: pathlib.Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in oio.load_model(path).graph.initializer}


@pytest.fixture(scope="module")
def chain_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    return _pair(tmp_path_factory.mktemp("chain"), _chain())


# --------------------------------------------------------------------------------------------------
# the weight store


def test_mapped_load_keeps_weights_out_of_the_proto(chain_pair) -> None:
    inline, ext = chain_pair
    mapped = oio.load_model(ext, mmap_weights=True)
    loaded = oio.load_model(ext)
    assert weights.has_stubs(mapped) and not weights.has_stubs(loaded)
    assert mapped.ByteSize() < 20_000 < loaded.ByteSize()
    for stub, full in zip(mapped.graph.initializer, loaded.graph.initializer):
        view = weights.to_array(stub)
        np.testing.assert_array_equal(view, numpy_helper.to_array(full))
        if weights.is_stub(stub):
            assert not view.flags.writeable  # a write can never reach the user's file
            with pytest.raises(ValueError):
                view[...] = 0
    # the hash ties plans to weights, wherever they live
    assert oio.model_sha256(mapped) == oio.model_sha256(loaded) == oio.model_sha256(oio.load_model(inline))


def test_mapped_save_streams_and_round_trips(chain_pair, tmp_path: pathlib.Path) -> None:
    _, ext = chain_pair
    mapped = oio.load_model(ext, mmap_weights=True)
    out = oio.save_model(mapped, tmp_path / "copy.onnx")  # stubs: external by default
    assert (tmp_path / "copy.onnx.data").exists()
    assert oio.model_sha256(oio.load_model(out)) == oio.model_sha256(mapped)
    inline = oio.save_model(mapped, tmp_path / "one.onnx", external_data=False)
    assert not (tmp_path / "one.onnx.data").exists()
    reloaded = onnx.load(str(inline))
    assert not any(t.data_location == TensorProto.EXTERNAL for t in reloaded.graph.initializer)
    assert oio.model_sha256(reloaded) == oio.model_sha256(mapped)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.onnx", "copy.onnx.data", "one.onnx"]


def test_failed_save_of_mapped_model_keeps_previous_pair(chain_pair, tmp_path: pathlib.Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _, ext = chain_pair
    target = oio.save_model(_chain(width=64, seed=3), tmp_path / "out.onnx", external_data=True)
    before = _digest(tmp_path)
    mapped = oio.load_model(ext, mmap_weights=True)
    real_replace = os.replace
    failed: list[str] = []

    def failing_replace(src, dst):  # the new model's rename fails once; restoring the old one works
        if str(dst) == str(target) and not failed:
            failed.append(str(src))
            raise OSError("disk on fire")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OnnxPruneError, match="disk on fire"):
        oio.save_model(mapped, target)
    monkeypatch.undo()
    assert _digest(tmp_path) == before  # old model and old data, no temporaries


def test_weights_file_changed_after_validation_is_refused(tmp_path: pathlib.Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = oio.save_model(_chain(width=64), tmp_path / "m.onnx", external_data=True)
    real_validate = loading._validate_external_refs

    def validate_then_truncate(model, model_path):
        refs = real_validate(model, model_path)
        os.truncate(tmp_path / "m.onnx.data", 10)
        return refs

    monkeypatch.setattr(loading, "_validate_external_refs", validate_then_truncate)
    with pytest.raises(ModelLoadError, match="changed while loading"):
        oio.load_model(path, mmap_weights=True)


def test_limits_and_unmappable_types_follow_the_inline_rules(tmp_path: pathlib.Path) -> None:
    path = oio.save_model(_chain(width=64), tmp_path / "m.onnx", external_data=True)
    with pytest.raises(ModelLoadError, match="above the limit"):
        oio.load_model(path, mmap_weights=True, max_file_bytes=20_000)
    bf16 = helper.make_tensor("w", TensorProto.BFLOAT16, [1024], np.zeros(1024, np.uint16).tobytes(), raw=True)
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [1024])], [bf16])
    other = oio.save_model(helper.make_model(graph), tmp_path / "bf16.onnx", external_data=True)
    loaded = oio.load_model(other, mmap_weights=True)  # bfloat16 is read inline, not mapped
    assert not weights.has_stubs(loaded) and len(loaded.graph.initializer[0].raw_data) == 2048


def test_checker_and_onnxruntime_see_mapped_weights(chain_pair) -> None:
    inline, ext = chain_pair
    mapped = oio.load_model(ext, mmap_weights=True)
    with pytest.raises(Exception):  # the plain checker looks for a file
        onnx.checker.check_model(mapped)
    onnx.checker.check_model(weights.checkable(mapped), full_check=True)
    feeds = random_feeds(mapped, batch=2, seed=0)
    expected = run_model(oio.load_model(inline), feeds)
    got = run_model(mapped, feeds)  # stubs handed to onnxruntime as OrtValues
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_computed_arrays_stream_in_row_major_order(monkeypatch: pytest.MonkeyPatch) -> None:
    store = weights.WeightStore()
    monkeypatch.setattr(weights, "CHUNK_BYTES", 64)  # many chunks, also inside rows
    for array in (np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(2, 0, 1),  # non-contiguous view
                  np.arange(5000, dtype=np.int64).reshape(50, 100)[:, ::2],
                  np.arange(300, dtype=np.float16)):
        stub = store.new_stub("x", store.add_array(array))
        assert b"".join(bytes(chunk) for chunk in weights.chunks(stub)) == np.ascontiguousarray(array).tobytes()
        assert list(stub.dims) == list(array.shape)


def test_stub_of_a_dropped_store_is_a_clear_error(chain_pair) -> None:
    _, ext = chain_pair
    mapped = oio.load_model(ext, mmap_weights=True)
    stub = next(t for t in mapped.graph.initializer if weights.is_stub(t))
    forged = onnx.TensorProto()
    forged.CopyFrom(stub)
    forged.external_data[0].value = "<onnxprune-weights>/0123456789abcdef/0"
    with pytest.raises(InputError, match="no longer available"):
        weights.to_array(forged)


# --------------------------------------------------------------------------------------------------
# the pipeline: same answers on both paths


@pytest.mark.parametrize("name", ["resnet_bottleneck.onnx", "mobilenetv2.onnx", "bert_encoder_static.onnx"])
def test_api_prune_identical_and_oracle_passes(name: str, tmp_path: pathlib.Path) -> None:
    _, ext = _pair(tmp_path, oio.load_model(MODELS / name))
    full, mapped = oio.load_model(ext), oio.load_model(ext, mmap_weights=True)
    options = PruneOptions(ratio=0.4)
    a, b = prune(full, options), prune(mapped, options)
    assert weights.has_stubs(b.model) and a.plan.groups == b.plan.groups
    assert b.prepared.original.ByteSize() < a.prepared.original.ByteSize()
    assert (a.after.params, a.after.macs) == (b.after.params, b.after.macs)
    feeds = random_feeds(full, batch=2, seed=1)
    for optimized in (False, True):
        want, got = run_model(a.model, feeds, optimized), run_model(b.model, feeds, optimized)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])  # atol 0: the same float ops on the same weights
    assert_matches_oracle(b.prepared, b.plan, b.model)  # rtol 1e-4 of output scale, both ORT levels


def test_cli_analyze_and_prune_identical_to_in_memory(chain_pair, tmp_path: pathlib.Path) -> None:
    inline, ext = chain_pair
    before = _digest(ext.parent)
    reports = []
    for source in (inline, ext):
        analysis = cli("analyze", str(source), "--json")
        assert analysis.returncode == 0, analysis.stderr
        data = json.loads(analysis.stdout)
        for key in ("model", "size_bytes"):
            data.pop(key, None)
        reports.append(data)
    drop_size = lambda d: json.loads(json.dumps(d).replace(str(inline), "M").replace(str(ext), "M"))  # noqa: E731
    assert drop_size(reports[0])["groups"] == drop_size(reports[1])["groups"]
    assert reports[0]["totals"] == reports[1]["totals"]
    outs = []
    for label, source in (("inline", inline), ("ext", ext)):
        out = tmp_path / label / "pruned.onnx"
        out.parent.mkdir()
        result = cli("prune", str(source), "--ratio", "0.5", "-o", str(out), "--verify",
                     "--save-plan", str(tmp_path / f"{label}.plan.json"), "--json")
        assert result.returncode == 0, result.stderr
        outs.append(out)
    assert not (tmp_path / "inline" / "pruned.onnx.data").exists()
    assert sorted(p.name for p in (tmp_path / "ext").iterdir()) == ["pruned.onnx", "pruned.onnx.data"]
    raw = onnx.load(str(outs[1]), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in raw.graph.initializer)
    a, b = _initializers(outs[0]), _initializers(outs[1])
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    plans = [json.loads((tmp_path / f"{label}.plan.json").read_text()) for label in ("inline", "ext")]
    assert plans[0]["groups"] == plans[1]["groups"]
    feeds = random_feeds(_chain(), batch=3, seed=2)
    want, got = run_model(oio.load_model(outs[0]), feeds), run_model(oio.load_model(outs[1]), feeds)
    np.testing.assert_array_equal(got["f3"], want["f3"])
    oracle = cli("verify", str(ext), str(outs[1]), "--plan", str(tmp_path / "ext.plan.json"))
    assert oracle.returncode == 0 and "passed" in oracle.stdout, oracle.stderr
    assert _digest(ext.parent) == before  # the input pair is untouched (bytes and mtimes)


def test_cli_budget_target_on_external_model(chain_pair, tmp_path: pathlib.Path) -> None:
    """A budget search reads weights in memory (the store would keep every candidate); same result."""
    outs = []
    for source in chain_pair:
        out = tmp_path / f"{source.parent.name}.onnx"
        result = cli("prune", str(source), "--target-params", "0.6", "-o", str(out), "--json")
        assert result.returncode == 0, result.stderr
        outs.append(out)
    a, b = _initializers(outs[0]), _initializers(outs[1])
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------------
# memory: peak RSS of the CLI within 2x the model (plus the CLI's fixed cost)

_CHILD = r"""
import sys
from onnxprune.cli import main
try:
    main(args=sys.argv[1:], prog_name="onnxprune", standalone_mode=True)
except SystemExit as stop:
    code = stop.code or 0
with open("/proc/self/status") as status:
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print("VMHWM", hwm * 1024, code)
"""


def _peak(*args: str) -> int:
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, timeout=120)
    line = proc.stdout.strip().splitlines()[-1].split()
    assert line[0] == "VMHWM" and line[2] == "0", proc.stdout + proc.stderr
    return int(line[1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM needs Linux /proc")
def test_peak_rss_of_analyze_and_prune_within_twice_the_model(tmp_path: pathlib.Path) -> None:
    big = oio.save_model(_chain(width=4096, layers=4, channels=64), tmp_path / "big.onnx", external_data=True)
    size = big.stat().st_size + (tmp_path / "big.onnx.data").stat().st_size
    assert size > 200e6
    small = oio.save_model(_chain(width=64), tmp_path / "small.onnx", external_data=True)
    fixed = _peak("prune", str(small), "--ratio", "0.3", "-o", str(tmp_path / "small_out.onnx"))
    analyze = _peak("analyze", str(big))
    pruned = _peak("prune", str(big), "--ratio", "0.3", "-o", str(tmp_path / "big_out.onnx"))
    assert analyze <= fixed + 2 * size, (analyze, fixed, size)
    assert pruned <= fixed + 2 * size, (pruned, fixed, size)
    # measured (203 MB model, fixed ≈ 83 MB): analyze ≈ fixed + 0.4x, prune ≈ fixed + 1.1x (the kept half of the
    # weights plus one layer's temporaries); the in-memory path needs ≈ fixed + 7x.  Bound: the claim.
