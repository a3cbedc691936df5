"""Block-by-block onnxruntime runs (onnxprune/runtime/blockwise.py) give what the whole-graph session gives.

Models: a 3-layer Llama-shaped decoder written by ``models.onnx_builders.build_streamed_llama`` (external
data, memory-mapped like a large model) and the committed BERT encoder.  Blocks are forced small (about one
decoder layer) with ``BlockwiseSettings("on", block_bytes)``; "whole" runs use ``mode="off"``.
Tolerances: block outputs are bit-identical with ``ORT_DISABLE_ALL`` (every kernel sees the same inputs);
with onnxruntime's default optimizations a fusion cannot span a cut, so statistics are compared at
rtol 1e-5 and repaired weights at rtol 1e-4 / atol 1e-6 (float32 activations feeding float64 sums).
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from conftest import MODELS

sys.path.insert(0, str(MODELS))
from onnx_builders import build_streamed_llama  # noqa: E402
from onnxprune.runtime import blockwise
from onnxprune.runtime.blockwise import BlockwiseSession, BlockwiseSettings
from onnxprune.runtime.calibration import random_calibration
from onnxprune.cli.app import main
from onnxprune.io.files import load_model
from onnxprune.pipeline import PruneOptions, calibration_statistics, plan_prune, recover, verify
from onnxprune.methods.width import apply_plan
from onnxprune.methods.prepared import prepare
from onnxprune.recovery.layers import RecoveryOptions
from onnxprune.runtime.sessions import make_session
from onnxprune.runtime.feeds import random_feeds
from onnxprune.io import weights
from onnxprune.io.weights import to_array

ROOT = pathlib.Path(__file__).resolve().parent.parent
WHOLE = BlockwiseSettings("off")


@pytest.fixture(scope="module")
def decoder(tmp_path_factory) -> pathlib.Path:
    return build_streamed_llama(tmp_path_factory.mktemp("blockwise") / "llama.onnx", hidden=64, layers=3, heads=4,
                                kv_heads=2, ffn=128, vocab=96)


def _blocks(model: onnx.ModelProto, count: int = 4) -> BlockwiseSettings:
    """Settings that cut ``model`` into about ``count`` blocks."""
    return BlockwiseSettings("on", max(1, blockwise.weight_bytes(model) // count))


def _loaded(path: pathlib.Path) -> onnx.ModelProto:
    return load_model(path, mmap_weights=True)


def test_cuts_carry_only_activations(decoder: pathlib.Path) -> None:
    model = _loaded(decoder)
    session = BlockwiseSession(model, lambda block: None, settings=_blocks(model))
    assert len(session.blocks) >= 4
    weights = {t.name for t in model.graph.initializer}
    for block in session.blocks:
        assert not weights & set(block.external), block.number  # weights are read in place, never carried
    # between decoder layers only the residual stream (plus the RoPE tables and the mask made once) crosses
    middle = session.blocks[1:-1]
    assert all(len(block.carried_out) <= 4 for block in middle), [b.carried_out for b in middle]
    assert sum(len(block.nodes) for block in session.blocks) + len(session.sched.constant) == len(model.graph.node)


@pytest.mark.parametrize("optimized", [False, True])
def test_outputs_equal_the_whole_graph(decoder: pathlib.Path, optimized: bool) -> None:
    model = _loaded(decoder)
    feeds = [random_feeds(model, batch=2, seed=0, dynamic=7), random_feeds(model, batch=1, seed=1, dynamic=5)]
    with blockwise.use(WHOLE):
        expected = [make_session(model, optimized).run(None, f)[0] for f in feeds]
    with blockwise.use(_blocks(model)):
        session = make_session(model, optimized)
        assert isinstance(session, BlockwiseSession)
        got = session.run_batches(None, feeds)
        single = session.run(["logits"], feeds[1])[0]
    for want, (have,) in zip(expected, got):
        if optimized:
            np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(have, want)
    np.testing.assert_array_equal(single, got[1][0])


def test_bert_encoder_blockwise_equals_whole() -> None:
    model = onnx.load(ROOT / "models" / "bert_encoder_dynamic.onnx")
    feeds = random_feeds(model, batch=2, seed=3, dynamic=6)
    with blockwise.use(WHOLE):
        expected = make_session(model, optimized=False).run(None, feeds)
    with blockwise.use(_blocks(model, 3)):
        session = make_session(model, optimized=False)
        got = session.run(None, feeds)
    assert len(session.blocks) >= 2
    for want, have in zip(expected, got):
        np.testing.assert_array_equal(have, want)


def test_statistics_equal_the_whole_graph(decoder: pathlib.Path) -> None:
    model = _loaded(decoder)
    prepared = prepare(model)
    calibration = random_calibration(model, 6, seed=2, batch_size=4, input_shapes={"input_ids": (6, 5)})
    with blockwise.use(WHOLE):
        whole = calibration_statistics(prepared, calibration)
    with _counting_runs() as runs, blockwise.use(_blocks(prepared.normalized)):
        blocks = calibration_statistics(prepared, calibration)
    assert len(runs) >= 4 and all(run.batches == 2 for run in runs)  # each block once, over both batches
    assert set(whole.by_slot) == set(blocks.by_slot) and whole.by_slot
    assert blocks.batches == whole.batches == 2
    for slot, stats in whole.by_slot.items():
        other = blocks.by_slot[slot]
        assert other.count == stats.count
        for kind in ("sum", "sumsq", "sumabs", "zeros"):
            np.testing.assert_allclose(getattr(other, kind), getattr(stats, kind), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{slot} {kind}")


@contextlib.contextmanager
def _counting_runs():
    """The block runs made inside the ``with`` (blockwise.RUNS records every run of the process)."""
    start = len(blockwise.RUNS)
    runs: list[blockwise.BlockRun] = []
    yield runs
    runs.extend(blockwise.RUNS[start:])


def _pruned(model: onnx.ModelProto, calibration):
    prepared = prepare(model)
    with blockwise.use(WHOLE):
        stats = calibration_statistics(prepared, calibration)
    plan = plan_prune(prepared, PruneOptions(ratio=0.25, criterion="fluctuation"), stats)
    return prepared, plan, apply_plan(prepared, plan)


def test_verify_gives_the_same_verdict(decoder: pathlib.Path) -> None:
    model = _loaded(decoder)
    calibration = random_calibration(model, 4, seed=1, batch_size=4, input_shapes={"input_ids": (4, 6)})
    prepared, plan, pruned = _pruned(model, calibration)
    feeds = [next(iter(calibration.batches()))]
    broken = onnx.ModelProto()
    broken.CopyFrom(pruned)  # a wrong rewrite: one kept down_proj row scaled
    target = next(i for i, t in enumerate(broken.graph.initializer) if "down_proj" in t.name)
    values = np.array(to_array(broken.graph.initializer[target]))
    values[0] *= 3.0
    broken.graph.initializer[target].CopyFrom(onnx.numpy_helper.from_array(values, broken.graph.initializer[target].name))
    results = {}
    for label, settings in (("whole", WHOLE), ("blocks", _blocks(prepared.normalized))):
        with _counting_runs() as runs, blockwise.use(settings):
            results[label] = (verify(prepared, plan, pruned, feeds=feeds), verify(prepared, plan, broken, feeds=feeds))
        assert bool(runs) == (label == "blocks")
    for good, bad in results.values():
        assert good.ok and not bad.ok
    for (whole, blocks) in zip(results["whole"], results["blocks"]):
        assert whole.shapes == blocks.shapes
        np.testing.assert_allclose([d["relative"] for d in blocks.diffs], [d["relative"] for d in whole.diffs],
                                   rtol=1e-3, atol=1e-6)


def test_lsq_repairs_the_same_weights(decoder: pathlib.Path, monkeypatch) -> None:
    monkeypatch.setattr(weights, "SPILL_MIN_BYTES", 4096)  # refitted weights go to mapped files, as for big models
    model = _loaded(decoder)
    calibration = random_calibration(model, 8, seed=4, batch_size=4, input_shapes={"input_ids": (8, 6)})
    prepared, plan, pruned = _pruned(model, calibration)
    options = RecoveryOptions("lsq")
    repaired = {}
    for label, settings in (("whole", WHOLE), ("blocks", _blocks(prepared.normalized))):
        with _counting_runs() as runs, blockwise.use(settings):
            recovered, records = recover(prepared, plan, pruned, options, calibration)
        assert bool(runs) == (label == "blocks")
        assert label == "whole" or any(run.cached for run in runs)  # unchanged blocks are not run again
        assert [r["status"] for r in records].count("applied") >= 3, records
        repaired[label] = {t.name: np.asarray(to_array(t)) for t in recovered.graph.initializer}
    assert repaired["whole"].keys() == repaired["blocks"].keys()
    spilled = [t for t in recovered.graph.initializer if "recovered" in t.name and weights.stub_entry(t)
               and weights.stub_entry(t)[0]._entry(weights.stub_entry(t)[1]).mapping is not None]
    assert spilled  # the blockwise run's refits live in mapped temporary files
    changed = [name for name in repaired["whole"] if "recovered" in name]
    assert changed
    for name, values in repaired["whole"].items():
        np.testing.assert_allclose(repaired["blocks"][name], values, rtol=1e-4, atol=1e-6, err_msg=name)


def test_auto_mode_follows_the_memory_budget(decoder: pathlib.Path, monkeypatch) -> None:
    model = _loaded(decoder)
    size = blockwise.weight_bytes(model)
    monkeypatch.setattr(blockwise, "budget_bytes", lambda: int(size / blockwise.AUTO_FRACTION) + 1)
    assert not blockwise.wanted(model, BlockwiseSettings())
    monkeypatch.setattr(blockwise, "budget_bytes", lambda: int(size / blockwise.AUTO_FRACTION) - 1)
    assert blockwise.wanted(model, BlockwiseSettings())
    assert not blockwise.wanted(model, BlockwiseSettings("off"))


def test_cli_blockwise_prune_verifies_and_reports_blocks(decoder: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out, report = tmp_path / "pruned.onnx", tmp_path / "report.json"
    result = CliRunner().invoke(main, ["--blockwise", "--block-size", "0.0001", "prune", str(decoder), "--ratio", "0.25",
                                       "--calib-random", "4", "--verify", "-o", str(out), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "masked-reference oracle passed" in result.output
    assert "onnxprune: block" not in result.output  # per-block lines only on a terminal, like progress
    assert blockwise.current() == BlockwiseSettings()  # the command's settings ended with it
    runs = json.loads(report.read_text())["blockwise"]
    assert max(run["blocks"] for run in runs) >= 4 and any(run["reused"] for run in runs)
    assert all(run["seconds"] >= 0 and run["batches"] >= 1 for run in runs)
    pruned = onnx.load(str(out))
    assert sum(np.prod(t.dims) for t in pruned.graph.initializer) < sum(
        np.prod(t.dims) for t in onnx.load(str(decoder), load_external_data=False).graph.initializer)


def test_node_reads_counts_what_a_body_captures_and_passes_through() -> None:
    """A body reads outer tensors without listing them as inputs, by its nodes or as an output it passes on
    unchanged; cutting a model into blocks must carry both (onnxprune/ir/node_reads.py)."""
    from onnx import TensorProto, helper

    from onnxprune.ir.node_reads import node_reads

    then_branch = helper.make_graph([], "then", [], [helper.make_tensor_value_info("outer_a", TensorProto.FLOAT, [1])])
    else_branch = helper.make_graph([helper.make_node("Neg", ["outer_b"], ["inner"])], "else", [],
                                    [helper.make_tensor_value_info("inner", TensorProto.FLOAT, [1])])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)
    assert sorted(node_reads(node)) == ["cond", "outer_a", "outer_b"]
