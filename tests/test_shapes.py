"""The shape probe (onnxprune/ir/shapes.py): probe values below capping tables, and gaps after custom-domain ops.

Why these matter: a rule maps channels through Reshape/Flatten with probe shapes, so a probe value that
overruns a position table (S ≤ 16) leaves the attention of a dynamic GPT export untyped, and a custom op
that ONNX inference cannot type leaves everything after it untyped (issue #7).  Both must be filled in
without trusting a source that contradicts shape inference.
"""

from __future__ import annotations

import warnings

import onnx
import pytest
from onnx import helper

from conftest import MODELS
from graphs import contrib_mlp as _contrib_mlp
from onnxprune.ir.shapes import PROBE_PRIMES, infer_static_shapes


def _untyped(model: onnx.ModelProto, shapes: dict, ops: tuple[str, ...]) -> list[str]:
    return [out for node in model.graph.node if node.op_type in ops for out in node.output if out not in shapes]


def test_a_capped_sequence_is_probed_below_the_position_table() -> None:
    """gpt_block_dynamic slices a [16, 16] causal mask and gathers a 16-row position table with S."""
    model = onnx.load(MODELS / "gpt_block_dynamic.onnx")
    shapes = infer_static_shapes(model, symbol_value=None)
    batch, seq = shapes.primes
    assert batch != seq and max(batch, seq) < 16
    assert all(all(v % p for p in range(2, v)) for v in (batch, seq))  # primes
    assert 100 % batch and 100 % seq  # no collision with the static vocab dim of the output
    assert shapes["logits"] == (batch, seq, 100)
    assert not _untyped(model, shapes, ("MatMul", "Softmax", "Where", "Reshape", "Transpose"))
    assert shapes["/h.0/attn/Softmax_output_0"] == (batch, 2, seq, seq)


def test_large_position_tables_are_found_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real position tables are large, so the probe declares them as inputs; the cap still comes from them."""
    import onnxprune.ir.shapes as shapes_module

    monkeypatch.setattr(shapes_module, "LARGE_WEIGHT_BYTES", 0)
    shapes = infer_static_shapes(onnx.load(MODELS / "gpt_block_dynamic.onnx"), symbol_value=None)
    assert max(shapes.primes) < 16 and shapes["logits"] == (*shapes.primes, 100)


@pytest.mark.parametrize("name", ["vit_classifier_dynamic", "lstm_classifier_dynamic", "mobilenetv2"])
def test_models_without_capping_tables_keep_the_large_primes(name: str) -> None:
    shapes = infer_static_shapes(onnx.load(MODELS / f"{name}.onnx"), symbol_value=None)
    assert shapes.primes == PROBE_PRIMES


def test_counting_shapes_are_unaffected() -> None:
    """``symbol_value=1`` (per-sample counting) never needs a retry: 1 is below every table."""
    shapes = infer_static_shapes(onnx.load(MODELS / "gpt_block_dynamic.onnx"), symbol_value=1)
    assert shapes["logits"] == (1, 1, 100)


def test_custom_op_outputs_are_typed_by_onnxruntime() -> None:
    shapes = infer_static_shapes(_contrib_mlp(), symbol_value=None)
    n = PROBE_PRIMES[0]
    assert shapes["g"] == (n, 32) and shapes["d"] == (n, 16) and shapes["y"] == (n, 8)


def test_value_info_agreeing_with_onnxruntime_is_fine() -> None:
    shapes = infer_static_shapes(_contrib_mlp({"g": ["N", 32], "d": ["N", 16]}), symbol_value=None)
    assert shapes["d"] == (PROBE_PRIMES[0], 16)


def test_value_info_contradicting_onnxruntime_leaves_the_gap_unknown() -> None:
    """The model claims the custom op's output has 24 features; onnxruntime says 32: trust neither."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shapes = infer_static_shapes(_contrib_mlp({"g": ["N", 24]}), symbol_value=None)
    assert "g" not in shapes and "d" not in shapes
    assert any("'g'" in str(w.message) and "value_info" in str(w.message) for w in caught)


def test_value_info_contradicting_inference_is_not_used() -> None:
    """A stale value_info on a tensor ONNX inference types ([N, 32] claimed [N, 30]) is ignored, with a warning,
    and onnxruntime's shapes still fill the gap (they agree with inference)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shapes = infer_static_shapes(_contrib_mlp({"h": ["N", 30]}), symbol_value=None)
    assert shapes["h"] == (PROBE_PRIMES[0], 32) and shapes["d"] == (PROBE_PRIMES[0], 16)
    assert any("'h'" in str(w.message) for w in caught)


def test_incomplete_custom_op_inference_writes_nothing_to_the_working_directory(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime's ``infer_shapes`` saves ``sym_shape_infer_temp.onnx`` and a uuid ``.data`` file into the
    current directory when it cannot type everything (an op it does not know); the probe must not."""
    model = _contrib_mlp()
    gelu = next(node for node in model.graph.node if node.name == "fused_gelu")
    gelu.op_type, gelu.domain = "Mystery", "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    monkeypatch.chdir(tmp_path)
    shapes = infer_static_shapes(model, symbol_value=None)
    assert "g" not in shapes, "nothing can type an op no runtime knows"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
