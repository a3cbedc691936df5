"""The oracle on a model with external data runs block by block (onnxprune/runtime/mapped_checks.py) and judges
exactly as the whole-model run does.

Models: the committed ResNet (basic blocks) and BERT encoder, saved here with external data and memory-mapped.
"Whole" is ``BlockwiseSettings("off")`` (``--no-blockwise``: whole-model sessions, the path before); the
route is the default ``auto`` mode with blocks of about a quarter of the weights, so every model is cut.
Tolerances: outputs under ``ORT_DISABLE_ALL`` are bit-identical (every kernel sees the same inputs), so those
diffs must be equal to the last bit; with onnxruntime's optimizations a fusion cannot span a cut, so the
optimized diffs may differ by float32 rounding: |Δ max_abs| ≤ 1e-5 × the output's scale.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
from collections.abc import Iterator

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from click.testing import CliRunner

from onnxprune.cli.app import main
from onnxprune.errors import VerificationError
from onnxprune.io.files import load_model
from onnxprune.io.weights import store_of, to_array
from onnxprune.methods.prepared import prepare
from onnxprune.methods.width import apply_plan
from onnxprune.methods.oracle import compare_to_reference
from onnxprune.pipeline import PruneOptions, plan_prune, verify
from onnxprune.runtime import blockwise
from onnxprune.runtime.blockwise import BlockwiseSession, BlockwiseSettings
from onnxprune.runtime.mapped_checks import MappedChecks, settings_for

ROOT = pathlib.Path(__file__).resolve().parent.parent
WHOLE = BlockwiseSettings("off")
MODELS = ("resnet_basic", "bert_encoder_dynamic")


def _external(name: str, folder: pathlib.Path) -> pathlib.Path:
    """The committed model ``name`` saved with every initializer of 1 KiB or more in one data file."""
    path = folder / f"{name}.onnx"
    onnx.save(onnx.load(ROOT / "models" / f"{name}.onnx"), path, save_as_external_data=True,
              all_tensors_to_one_file=True, location=f"{name}.onnx.data", size_threshold=1024)
    return path


@pytest.fixture(scope="module")
def external(tmp_path_factory) -> dict[str, pathlib.Path]:
    folder = tmp_path_factory.mktemp("mapped_checks")
    return {name: _external(name, folder) for name in MODELS}


def _quarter(model: onnx.ModelProto) -> BlockwiseSettings:
    """The default mode with blocks of about a quarter of the model's weights (the CLI's --block-size)."""
    return BlockwiseSettings("auto", max(1, blockwise.weight_bytes(model) // 4))


@contextlib.contextmanager
def _block_sessions() -> Iterator[list[BlockwiseSession]]:
    """The BlockwiseSessions made inside the ``with`` (a spy: the class itself runs unchanged)."""
    made: list[BlockwiseSession] = []
    original = BlockwiseSession.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    BlockwiseSession.__init__ = spy
    try:
        yield made
    finally:
        BlockwiseSession.__init__ = original


def _pruned(path: pathlib.Path):
    model = load_model(path, mmap_weights=True)
    prepared = prepare(model)
    with blockwise.use(WHOLE):
        plan = plan_prune(prepared, PruneOptions(ratio=0.3))
    return prepared, plan, apply_plan(prepared, plan)


def _assert_same_judgement(whole, route) -> None:
    assert route.ok == whole.ok and route.tolerance == whole.tolerance
    assert route.shapes == whole.shapes
    assert [(d["name"], d["batch"], d["optimized"], d["ok"]) for d in route.diffs] == \
        [(d["name"], d["batch"], d["optimized"], d["ok"]) for d in whole.diffs]
    for got, want in zip(route.diffs, whole.diffs):
        if not want["optimized"]:
            assert got == want  # ORT_DISABLE_ALL: bit-identical outputs, equal numbers
        else:
            scale = want["max_abs"] / want["relative"] if want["relative"] else 1.0
            assert abs(got["max_abs"] - want["max_abs"]) <= 1e-5 * scale, (got, want)


@pytest.mark.parametrize("name", MODELS)
def test_verify_blockwise_judges_as_the_whole_model(external: dict[str, pathlib.Path], name: str) -> None:
    prepared, plan, pruned = _pruned(external[name])
    with blockwise.use(WHOLE), _block_sessions() as none:
        whole = verify(prepared, plan, pruned)
    assert not none
    with blockwise.use(_quarter(prepared.original)), _block_sessions() as made:
        route = verify(prepared, plan, pruned)
    assert made and all(len(session.blocks) >= 2 for session in made)  # the route really ran blocks
    assert whole.ok and len(whole.diffs) >= 4
    _assert_same_judgement(whole, route)
    assert not store_of(prepared.original).spill  # restored after the check


def test_a_wrong_rewrite_still_fails(external: dict[str, pathlib.Path]) -> None:
    """One kept weight changed: both paths report the same failing output with the same error."""
    prepared, plan, pruned = _pruned(external["resnet_basic"])
    conv = next(n for n in pruned.graph.node if n.op_type == "Conv")
    index = next(i for i, t in enumerate(pruned.graph.initializer) if t.name == conv.input[1])
    wrong = np.array(to_array(pruned.graph.initializer[index]), dtype=np.float32)
    wrong[0] += 0.5
    pruned.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(wrong, conv.input[1]))
    with blockwise.use(WHOLE):
        whole = verify(prepared, plan, pruned)
    with blockwise.use(_quarter(prepared.original)), _block_sessions() as made:
        route = verify(prepared, plan, pruned)
    assert made
    assert not whole.ok
    _assert_same_judgement(whole, route)
    with pytest.raises(VerificationError, match="differs from the masked reference"):
        route.require_ok()


def test_when_the_route_applies(external: dict[str, pathlib.Path]) -> None:
    mapped = load_model(external["resnet_basic"], mmap_weights=True)
    settings = settings_for(mapped)
    assert settings is not None and settings.mode == "on" and not settings.memo
    assert settings.block_bytes == max(1 << 20, blockwise.weight_bytes(mapped) // 16)
    with blockwise.use(BlockwiseSettings("auto", 12345)):
        assert settings_for(mapped).block_bytes == 12345  # --block-size is obeyed
    for mode in ("on", "off"):  # --blockwise / --no-blockwise are obeyed as given
        with blockwise.use(BlockwiseSettings(mode)):
            assert settings_for(mapped) is None
    single = load_model(ROOT / "models" / "resnet_basic.onnx")  # weights in the file: whole-model sessions
    assert settings_for(single) is None
    with blockwise.use(WHOLE), MappedChecks(single) as used:
        assert not used


def test_cli_prune_verify_writes_the_same_model(external: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    """``prune --verify`` on external data: the default (blocks) and --no-blockwise write the same bytes and
    report the same verdict at the same shapes, with unoptimized diffs equal; the check's block runs are not
    recorded for the report (they are not a user's --blockwise)."""
    source = external["resnet_basic"]
    reports, sessions = {}, {}
    # the test model's weights are 77 KiB: --block-size 20 KB cuts it as 1/16 of the weights cuts a large one
    for label, flags in (("route", ["--block-size", "0.00002"]), ("whole", ["--no-blockwise"])):
        out = tmp_path / label / "pruned.onnx"
        out.parent.mkdir()
        recorded = len(blockwise.RUNS)  # every block run of the process (other tests' too) goes to reports
        with _block_sessions() as made:
            result = CliRunner().invoke(main, ["--no-isolation", *flags, "prune", str(source), "-o", str(out),
                                               "--ratio", "0.3", "--verify", "--json"])
        assert result.exit_code == 0, result.output
        assert len(blockwise.RUNS) == recorded  # the check's blocks are not recorded (nor reported)
        reports[label], sessions[label] = json.loads(result.output), made
    assert not sessions["whole"] and sessions["route"] and all(len(s.blocks) >= 2 for s in sessions["route"])
    for name in ("pruned.onnx", "pruned.onnx.data"):
        assert (tmp_path / "route" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    route, whole = reports["route"]["verification"], reports["whole"]["verification"]
    assert route["ok"] and whole["ok"] and route["input_shapes"] == whole["input_shapes"]
    assert [d for d in route["diffs"] if not d["optimized"]] == [d for d in whole["diffs"] if not d["optimized"]]


def _sequence_model(path: pathlib.Path, scale: float = 1.0) -> pathlib.Path:
    """MatMul → Relu → SplitToSequence … ConcatFromSequence → Add → MatMul, with external data: cut into blocks,
    the tensor sequence crosses a cut, which blocks cannot carry (they carry arrays)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32) * (scale if i == 2 else 1),
                                       f"W{i}") for i in range(3)]
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("SplitToSequence", ["r"], ["s"], axis=1, keepdims=1),
             helper.make_node("MatMul", ["r", "W1"], ["b"]),
             helper.make_node("ConcatFromSequence", ["s"], ["c"], axis=1),
             helper.make_node("Add", ["c", "b"], ["d"]), helper.make_node("MatMul", ["d", "W2"], ["y"])]
    graph = helper.make_graph(nodes, "sequence", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path, save_as_external_data=True, location=path.name + ".data", size_threshold=1024)
    return path


def test_what_blocks_cannot_run_is_judged_whole(tmp_path: pathlib.Path) -> None:
    """A sequence across a cut fails in blocks; the oracle then judges with whole-model sessions: the same
    result as --no-blockwise, for a right and for a wrong candidate."""
    reference = load_model(_sequence_model(tmp_path / "seq.onnx"), mmap_weights=True)
    right = load_model(_sequence_model(tmp_path / "right.onnx"), mmap_weights=True)
    wrong = load_model(_sequence_model(tmp_path / "wrong.onnx", scale=1.01), mmap_weights=True)
    small = BlockwiseSettings("auto", 8000)  # three blocks; the sequence 's' is carried from the first
    for candidate, ok in ((right, True), (wrong, False)):
        with blockwise.use(WHOLE):
            whole = compare_to_reference(reference, candidate)
        with blockwise.use(small), _block_sessions() as made:
            route = compare_to_reference(reference, candidate)
        assert made and any("s" in block.carried_out for block in made[0].blocks)  # blocks were tried first
        assert whole.ok is ok and route.to_dict() == whole.to_dict()
