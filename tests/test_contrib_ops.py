"""com.microsoft contrib ops (issue 13): encoders after onnxruntime's transformer optimizer prune heads and
FFN neurons; hand-built graphs cover the decoder-side and quantized forms.

Every rewrite is checked by the masked-reference oracle (relative error ≤ 1e-4) at three assignments of the
symbolic dims (batch and sequence), with onnxruntime's CPU provider at both optimization levels.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import contrib_graphs as cg
from conftest import MODELS, assert_matches_oracle
from test_transformers import plan_for  # l2 scores, separate head and FFN ratios
from onnxprune.methods.width import apply_plan, masked_reference
from onnxprune.methods.prepared import prepare
from onnxprune.measurement.agreement import compare_outputs
from onnxprune.runtime.feeds import random_feeds
from onnxprune.runtime.sessions import run_model

OPTIMIZED = ("bert_optimized_attention", "bert_optimized_mha", "gpt_block_optimized")
#: (heads, head size) of every attention layer and FFN width of each optimized model
SHAPES = {"bert_optimized_attention": (4, 16, 128), "bert_optimized_mha": (4, 16, 128),
          "gpt_block_optimized": (2, 32, 128)}
SEEDS = (0, 7, 11)  # three assignments of (batch, sequence)


@functools.lru_cache(maxsize=None)
def prepared(name: str):
    return prepare(onnx.load(MODELS / f"{name}.onnx"))


def arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def nodes(model: onnx.ModelProto, op: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op]


def attr(node: onnx.NodeProto, name: str):
    return onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == name))


def kept_heads(prep, plan, label_part: str) -> list[list[int]]:
    """Kept units of every head group whose label contains ``label_part``, in graph order."""
    groups = [g for g in prep.analysis.groups if g.kind == "head" and label_part in g.label]
    return [sorted(next(p for p in plan.groups if p.id == g.id).kept) for g in groups]


# ----------------------------------------------------------------------------- optimized models


@pytest.mark.parametrize("name", OPTIMIZED)
def test_optimized_models_expose_heads_and_ffn_and_explain_the_rest(name: str) -> None:
    prep = prepared(name)
    heads, head_size, ffn = SHAPES[name]
    head_groups = [g for g in prep.analysis.groups if g.kind == "head"]
    assert len(head_groups) == 2 and all(not g.frozen for g in head_groups)
    assert {(g.units, g.head_dim) for g in head_groups} == {(heads, head_size)}
    ffn_groups = [g for g in prep.analysis.groups if g.kind == "neuron" and not g.frozen]
    assert [g.units for g in ffn_groups] == [ffn, ffn]
    for group in (g for g in prep.analysis.groups if g.frozen):
        reasons = " ".join(r.reason for r in group.reasons)
        assert "no rule" not in reasons, (group.label, reasons)
        assert "SkipLayerNormalization normalizes over this axis" in reasons or "model output" in reasons


@pytest.mark.parametrize("name", OPTIMIZED)
@pytest.mark.parametrize("head_ratio,ffn_ratio", [(0.5, 0.3), (0.75, 0.6)])
def test_optimized_models_match_the_oracle(name: str, head_ratio: float, ffn_ratio: float) -> None:
    prep = prepared(name)
    plan = plan_for(prep, head_ratio, ffn_ratio)
    cut = {p.id: p.channels - len(p.kept) for p in plan.groups if p.kept is not None}
    kinds = {g.kind for g in prep.analysis.groups if cut.get(g.id, 0) > 0}
    assert kinds == {"head", "neuron"}, cut
    assert_matches_oracle(prep, plan, apply_plan(prep, plan), seeds=SEEDS, batch=3)


def test_packed_qkv_weights_lose_whole_heads() -> None:
    """Attention weights [64, 192]: removing head h removes columns h·16…h·16+15 of each of the Q, K and V
    chunks (and of the bias); num_heads becomes the kept count; the dense MatMul loses the head's rows."""
    prep = prepared("bert_optimized_attention")
    plan = plan_for(prep, 0.5, 0.0)
    pruned = apply_plan(prep, plan)
    before, after = arrays(prep.normalized), arrays(pruned)
    originals = nodes(prep.normalized, "Attention")
    for node, heads in zip(nodes(pruned, "Attention"), kept_heads(prep, plan, "Attention")):
        assert len(heads) == 2 and attr(node, "num_heads") == 2
        original = next(n for n in originals if n.name == node.name)
        cols = np.concatenate([chunk * 64 + h * 16 + np.arange(16) for chunk in range(3) for h in heads])
        np.testing.assert_array_equal(after[node.input[1]], before[original.input[1]][:, cols])
        np.testing.assert_array_equal(after[node.input[2]], before[original.input[2]][cols])
        dense = next(n for n in pruned.graph.node if n.op_type == "MatMul" and n.input[0] == node.output[0])
        rows = np.concatenate([h * 16 + np.arange(16) for h in heads])
        np.testing.assert_array_equal(after[dense.input[1]], before[dense.input[1]][rows])


def test_multi_head_attention_projections_and_packed_bias_lose_whole_heads() -> None:
    prep = prepared("bert_optimized_mha")
    plan = plan_for(prep, 0.5, 0.0)
    pruned = apply_plan(prep, plan)
    before, after = arrays(prep.normalized), arrays(pruned)
    producers = {o: n for n in pruned.graph.node for o in n.output}
    for node, heads in zip(nodes(pruned, "MultiHeadAttention"), kept_heads(prep, plan, "Attention")):
        assert attr(node, "num_heads") == 2
        cols = np.concatenate([h * 16 + np.arange(16) for h in heads])
        for index in range(3):
            weight = producers[node.input[index]].input[1]
            np.testing.assert_array_equal(after[weight], before[weight][:, cols])
        np.testing.assert_array_equal(after[node.input[3]], before[node.input[3]][np.concatenate(
            [chunk * 64 + cols for chunk in range(3)])])


def test_oracle_catches_a_head_whose_query_columns_are_swapped() -> None:
    """The oracle has teeth on fused attention: exchanging the Q columns of the two kept heads of the first
    layer (a plausible layout bug) must fail it."""
    prep = prepared("bert_optimized_attention")
    plan = plan_for(prep, 0.5, 0.0)
    pruned = apply_plan(prep, plan)
    node = nodes(pruned, "Attention")[0]
    tensor = next(t for t in pruned.graph.initializer if t.name == node.input[1])
    weights = numpy_helper.to_array(tensor).copy()
    weights[:, :32] = np.concatenate([weights[:, 16:32], weights[:, :16]], axis=1)  # Q chunk: 2 kept heads × 16
    tensor.CopyFrom(numpy_helper.from_array(weights, tensor.name))
    feeds = random_feeds(prep.original, batch=2, seed=0)
    feeds["attention_mask"] = np.ones_like(feeds["attention_mask"])
    diffs = compare_outputs(run_model(masked_reference(prep, plan), feeds), run_model(pruned, feeds), 1e-4)
    assert not all(d.ok for d in diffs)


def test_cli_prunes_the_optimized_encoder_with_verify(tmp_path) -> None:
    out = tmp_path / "pruned.onnx"
    model = str(MODELS / "bert_optimized_attention.onnx")
    result = subprocess.run([sys.executable, "-m", "onnxprune.cli", "prune", model, "-o", str(out), "--ratio", "0.3",
                             "--verify", "--quiet"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "masked-reference oracle passed" in result.stdout
    pruned = onnx.load(out)
    assert all(attr(n, "num_heads") < 4 for n in nodes(pruned, "Attention"))
    analyze = subprocess.run([sys.executable, "-m", "onnxprune.cli", "analyze", model],
                             capture_output=True, text=True, timeout=300, check=True).stdout
    assert "SkipLayerNormalization normalizes over this axis" in analyze and "no rule" not in analyze


# ----------------------------------------------------------------------------- hand-built graphs


def test_group_query_attention_prunes_whole_kv_groups() -> None:
    """4 query heads over 2 KV heads: units are query heads in blocks of 2 (one block per KV head); keeping
    one query head removes a whole KV group and one query head of the other; RotaryEmbedding's num_heads and
    GroupQueryAttention's num_heads / kv_num_heads follow (tests/test_gqa_query_heads.py: inside groups)."""
    prep = prepare(cg.gqa_decoder_block())
    head = next(g for g in prep.analysis.groups if g.kind == "head")
    assert not head.frozen and head.units == 4 and head.blocks == ((0, 1), (2, 3)) and head.head_dim == 8
    ffn = next(g for g in prep.analysis.groups if g.label == "up")
    assert not ffn.frozen and ffn.units == 48
    residual = [g for g in prep.analysis.groups if g.frozen]
    assert residual and all(any("SkipSimplifiedLayerNormalization normalizes" in r.reason or "model" in r.reason
                                for r in g.reasons) for g in residual)
    plan = plan_for(prep, 0.75, 0.5)
    pruned = apply_plan(prep, plan)
    gqa = nodes(pruned, "GroupQueryAttention")[0]
    assert (attr(gqa, "num_heads"), attr(gqa, "kv_num_heads")) == (1, 1)
    assert sorted(attr(n, "num_heads") for n in nodes(pruned, "RotaryEmbedding")) == [1, 1]
    weights = arrays(pruned)
    assert weights["q_w"].shape == (32, 8) and weights["k_w"].shape == (32, 8) and weights["o_w"].shape == (8, 32)
    assert_matches_oracle(prep, plan, pruned, seeds=SEEDS, batch=3)


@pytest.mark.parametrize("seq,unidirectional", [(None, 0), (6, 1)])
def test_attention_with_qkv_hidden_sizes_and_attention_bias(seq: int | None, unidirectional: int) -> None:
    """Q/K heads of 8 and V heads of 12: qkv_hidden_sizes shrinks per head; a constant per-head
    attention_bias [1, 4, S, S] loses the removed heads' planes; FastGelu → Gelu FFN prunes too."""
    prep = prepare(cg.attention_block(seq=seq, unidirectional=unidirectional))
    head = next(g for g in prep.analysis.groups if g.kind == "head")
    assert not head.frozen and head.units == 4 and head.head_dim == 12
    plan = plan_for(prep, 0.5, 0.5)
    pruned = apply_plan(prep, plan)
    node = nodes(pruned, "Attention")[0]
    assert attr(node, "num_heads") == 2 and list(attr(node, "qkv_hidden_sizes")) == [16, 16, 24]
    if seq is not None:
        kept = sorted(next(p for p in plan.groups if p.id == head.id).kept)
        np.testing.assert_array_equal(arrays(pruned)["attention_bias"],
                                      arrays(prep.normalized)["attention_bias"][:, kept])
    assert arrays(pruned)["up_w"].shape == (32, 20)
    assert_matches_oracle(prep, plan, pruned, seeds=SEEDS, batch=3)


@pytest.mark.parametrize("seq", [None, 6])
def test_multi_head_attention_after_rotary_embedding(seq: int | None) -> None:
    """RotaryEmbedding without num_heads (head size from the cos cache) passes whole heads into
    MultiHeadAttention; a constant attention_bias is sliced per head."""
    prep = prepare(cg.mha_rotary_block(seq=seq))
    head = next(g for g in prep.analysis.groups if g.kind == "head")
    assert not head.frozen and head.units == 4 and head.head_dim == 16
    for ratio in (0.25, 0.5):
        plan = plan_for(prep, ratio, 0.0)
        pruned = apply_plan(prep, plan)
        assert attr(nodes(pruned, "MultiHeadAttention")[0], "num_heads") == 4 - int(4 * ratio)
        assert_matches_oracle(prep, plan, pruned, seeds=SEEDS, batch=3)


@pytest.mark.parametrize("symmetric,block", [(True, 16), (False, 16), (False, 32)])
def test_matmul_nbits_prunes_whole_blocks_and_rows(symmetric: bool, block: int) -> None:
    """A 4-bit FFN from onnxruntime's quantizer: the up layer's rows and the down layer's input blocks go
    together in units of block_size; scales, packed zero points, N and K follow; the oracle (which zeroes
    the removed blocks' scales) holds at three shapes."""
    model = cg.quantized_mlp(symmetric, block)
    prep = prepare(model)
    ffn = next(g for g in prep.analysis.groups if g.kind == "neuron" and not g.frozen)
    assert ffn.units == 128 // block
    plan = plan_for(prep, 0.0, 0.5)
    pruned = apply_plan(prep, plan)
    kept = sorted(next(p for p in plan.groups if p.id == ffn.id).kept)
    up, down = nodes(pruned, "MatMulNBits")
    assert (attr(up, "N"), attr(down, "K")) == (64, 64)
    before, after = arrays(prep.normalized), arrays(pruned)
    rows = np.concatenate([u * block + np.arange(block) for u in kept])
    np.testing.assert_array_equal(after[up.input[1]], before[up.input[1]][rows])
    np.testing.assert_array_equal(after[down.input[1]], before[down.input[1]][:, kept])
    np.testing.assert_array_equal(after[down.input[2]], before[down.input[2]][:, kept])
    if not symmetric:  # packed 4-bit zero points: block j is nibble j of each row
        packed = before[down.input[3]]
        nibbles = np.stack([packed & 15, packed >> 4], axis=2).reshape(len(packed), -1)
        kept_nibbles = nibbles[:, kept]
        np.testing.assert_array_equal(after[down.input[3]], kept_nibbles[:, 0::2] | (kept_nibbles[:, 1::2] << 4))
    assert_matches_oracle(prep, plan, pruned, seeds=SEEDS, batch=3)


def test_matmul_nbits_with_flat_scales_prunes_rows_and_freezes_its_input_blocks() -> None:
    prep = prepare(cg.matmul_nbits_mlp())
    up = next(g for g in prep.analysis.groups if g.label == "up")
    assert up.frozen and any(r.node == "mid" and "stored flat" in r.reason for r in up.reasons)
    mid = next(g for g in prep.analysis.groups if g.label == "mid")
    assert not mid.frozen and mid.units == 32
    plan = plan_for(prep, 0.0, 0.5)
    pruned = apply_plan(prep, plan)
    assert attr(nodes(pruned, "MatMulNBits")[1], "N") == 16
    assert arrays(pruned)["mid_scales"].shape == (16 * 3,)
    assert_matches_oracle(prep, plan, pruned, seeds=SEEDS, batch=3)


def test_kv_cache_outputs_of_unknown_shape_freeze_the_heads_with_a_reason() -> None:
    """present_key/present_value outputs without a past: onnxruntime's symbolic shape inference gives up on
    this GroupQueryAttention, so the cache's head axis cannot be linked to the KV heads — q, k and v freeze
    naming the node and the tensor (caches with a past: tests/test_gqa_cache.py)."""
    prep = prepare(cg.gqa_decoder_block(present=True))
    for label in ("q", "k", "v"):
        group = next(g for g in prep.analysis.groups if g.label == label)
        assert group.frozen and any(r.node == "attn" and "'present_key' is unknown" in r.reason
                                    for r in group.reasons), [r.reason for r in group.reasons]
    assert not prep.analysis.prunable


def test_rotary_embedding_on_the_head_axis_of_a_decomposed_attention() -> None:
    """RotaryEmbedding on q in [B, H, S, D] (after the head split of a decomposed attention): the head axis
    passes through and its num_heads follows."""
    from attention_graphs import encoder_block
    from onnx import helper

    model = encoder_block()
    consumer = next(n for n in model.graph.node if "q.heads" in n.input)
    consumer.input[list(consumer.input).index("q.heads")] = "q.rot"
    angles = np.arange(32)[:, None] * (1.0 / 10000 ** (np.arange(0, 4, 2) / 4))[None, :]
    model.graph.initializer.extend([numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos_cache"),
                                    numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin_cache"),
                                    numpy_helper.from_array(np.array([0], np.int64), "position_offset")])
    model.graph.node.insert(list(model.graph.node).index(consumer), helper.make_node(
        "RotaryEmbedding", ["q.heads", "position_offset", "cos_cache", "sin_cache"], ["q.rot"], name="rope",
        domain=cg.MS, num_heads=4))
    model.opset_import.append(helper.make_opsetid(cg.MS, 1))
    prep = prepare(model)
    head = next(g for g in prep.analysis.groups if g.kind == "head")
    assert not head.frozen and head.units == 4
    plan = plan_for(prep, 0.5, 0.0)
    pruned = apply_plan(prep, plan)
    assert attr(nodes(pruned, "RotaryEmbedding")[0], "num_heads") == 2
    assert_matches_oracle(prep, plan, pruned, seeds=SEEDS, batch=3)


def test_matmul_nbits_macs_are_counted() -> None:
    """rows × K × N per MatMulNBits: at batch 2, S = 5 the quantized FFN is 2·5·(32·128 + 128·32) MACs."""
    from onnxprune.measurement.counting import count_model
    from onnxprune.runtime.input_shapes import resolve

    model = cg.quantized_mlp(True, 16)
    stats = count_model(model, input_shapes=resolve(model, {"x": (2, 5, 32)}))
    assert stats.macs == 2 * 5 * 2 * 32 * 128 and not stats.uncounted_ops


def _set_attr(model: onnx.ModelProto, op: str, name: str, value) -> onnx.ModelProto:
    node = nodes(model, op)[0]
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [onnx.helper.make_attribute(name, value)])
    return model


def _drop_kv(model: onnx.ModelProto) -> onnx.ModelProto:
    node = nodes(model, "MultiHeadAttention")[0]
    node.input[1], node.input[2] = "", ""
    return model


@pytest.mark.parametrize("build,label,reason", [
    (lambda: _set_attr(cg.attention_block(), "Attention", "num_heads", 5), "attn", "is not a multiple of 5 heads"),
    (lambda: _set_attr(cg.attention_block(), "Attention", "qkv_hidden_sizes", [32, 40, 48]), "attn",
     "not q+k+v"),
    (lambda: _drop_kv(cg.mha_rotary_block()), "q", "packed QKV in query"),
    (lambda: _set_attr(cg.gqa_decoder_block(), "GroupQueryAttention", "kv_num_heads", 3), "q",
     "num_heads 4 is not a multiple of kv_num_heads 3"),
], ids=["attention-heads", "attention-qkv-sizes", "mha-packed", "gqa-kv-heads"])
def test_inconsistent_attention_declines_with_its_reason(build, label: str, reason: str) -> None:
    """Attributes that do not fit the weights freeze the heads with a reason naming the mismatch."""
    prep = prepare(build())
    group = next(g for g in prep.analysis.groups if label in g.label)
    assert group.frozen and any(reason in r.reason for r in group.reasons), [r.reason for r in group.reasons]
