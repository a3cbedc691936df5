"""Query heads pruned *inside* GQA groups, groups kept equal (issue 13), together with KV groups and FFN neurons.

What must hold: a GQA head group's units are its query heads in blocks (one per KV head); every block keeps
none or the same number of query heads, which ones may differ per block; a KV head goes with its block's last
query head.  The rewrite changes q_proj rows, o_proj columns, ``repeat_kv``'s copy count (Expand target /
Tile repeats) and the query Reshape, or ``num_heads`` of ``GroupQueryAttention`` (``kv_num_heads`` unchanged),
and matches the masked-reference oracle at several batch sizes and sequence lengths (and past lengths with a
KV cache); a model pruned this way decodes through its cache exactly as it decodes the full sequence.
Tolerances: the oracle's 1e-4 relative to each output's scale (DESIGN §3); decoding rtol/atol 1e-4.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import contrib_graphs as cg
from conftest import assert_matches_oracle
from test_llm_decoder import (HEAD_DIM, HEADS, KV_HEADS, LAYERS, TINY, TINY_KV, _heads, _kv_feeds, _token_feeds,
    assert_cached_decoding_equals_full)
from onnxprune.analysis.groups import Group
from onnxprune.errors import PlanError
from onnxprune.methods.plan import make_plan
from onnxprune.methods.prepared import prepare
from onnxprune.methods.width import apply_plan
from onnxprune.pipeline import PruneOptions, prune, verify
from onnxprune.planning.block_units import keep_units, legal_keep

BLOCKS = ((0, 1, 2, 3), (4, 5, 6, 7))


@pytest.fixture(scope="module")
def tiny():
    return prepare(onnx.load(TINY))


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _layer_matmul(model: onnx.ModelProto, layer: int, proj: str) -> np.ndarray:
    node = next(n for n in model.graph.node if n.name == f"/model/model/layers.{layer}/self_attn/{proj}/MatMul")
    return _weights(model)[node.input[1]]


def _plan(prep, kept_heads: list[list[int]], ffn_keep: int | None = None):
    heads = [i for i, g in enumerate(prep.analysis.groups) if g.kind == "head"]
    kept = {g: np.array(k) for g, k in zip(heads, kept_heads)}
    if ffn_keep is not None:
        for i, g in enumerate(prep.analysis.groups):
            if g.kind == "neuron" and not g.frozen and g.units > 1:
                kept[i] = np.arange(0, g.units, g.units // ffn_keep)[:ffn_keep]
    return make_plan(prep.analysis, kept, prep.model_sha256, {})


def _blocked(fixed: bool = False) -> Group:
    return Group("g", "heads", [], HEADS, False, [], blocks=BLOCKS, fixed_blocks=["kv cache"] if fixed else [])


@pytest.mark.parametrize("keep, fixed, legal", [(8, False, 8), (7, False, 8), (6, False, 6), (5, False, 6),
                                                (4, False, 4), (3, False, 3), (1, False, 1), (0, False, 1),
                                                (3, True, 4), (5, True, 6), (1, True, 2)])
def test_requested_counts_round_up_to_equal_blocks(keep, fixed, legal):
    """m blocks of k units: 8 over 2 blocks allows 1-4 and 2, 4, 6, 8; fixed blocks only 2, 4, 6, 8."""
    assert legal_keep(_blocked(fixed), keep) == legal


@pytest.mark.parametrize("scores, keep, kept", [
    ([9, 1, 8, 2, 7, 3, 6, 4], 6, [0, 2, 3, 4, 6, 7]),  # each block drops its own lowest head
    ([9, 8, 7, 6, 1, 1, 1, 2], 4, [0, 1, 2, 3]),  # one whole KV group beats 2 + 2
    ([9, 8, 1, 1, 9, 8, 1, 1], 4, [0, 1, 4, 5]),  # 2 + 2 beats one whole group
    ([9, 8, 7, 6, 1, 1, 1, 2], 3, [0, 1, 2]),  # 3 is only legal as one group of 3
])
def test_kept_layout_keeps_the_highest_total_score(scores, keep, kept):
    assert keep_units(_blocked(), np.array(scores, dtype=float), keep).tolist() == kept


def test_query_heads_are_units_in_blocks_per_kv_head(tiny):
    heads = _heads(tiny.analysis)
    assert len(heads) == LAYERS and all(g.units == HEADS and g.blocks == BLOCKS and not g.frozen for g in heads)
    assert len(tiny.analysis.counts) == 2 * LAYERS  # the n_rep axis of repeat_kv for keys and for values


def test_different_heads_per_group_with_kv_groups_and_ffn_match_the_oracle(tiny):
    """Layer 0: one query head per group, a different one in each; layer 1: one KV group of 3 query heads;
    layer 2: two groups of 1; layer 3 untouched; every FFN halved."""
    plan = _plan(tiny, [[0, 1, 3, 4, 6, 7], [1, 2, 3], [2, 5], list(range(HEADS))], ffn_keep=192)
    pruned = apply_plan(tiny, plan)
    for layer, (q_heads, kv_heads) in enumerate([(6, 2), (3, 1), (2, 2), (8, 2)]):
        assert _layer_matmul(pruned, layer, "q_proj").shape == (128, q_heads * HEAD_DIM)
        assert _layer_matmul(pruned, layer, "k_proj").shape == (128, kv_heads * HEAD_DIM)
        assert _layer_matmul(pruned, layer, "o_proj").shape == (q_heads * HEAD_DIM, 128)
    original_q = _layer_matmul(onnx.load(TINY), 0, "q_proj")
    kept_columns = np.concatenate([np.arange(h * HEAD_DIM, (h + 1) * HEAD_DIM) for h in (0, 1, 3, 4, 6, 7)])
    np.testing.assert_array_equal(_layer_matmul(pruned, 0, "q_proj"), original_q[:, kept_columns])
    assert_matches_oracle(tiny, plan, pruned, seeds=(0, 1, 2))
    check = verify(tiny, plan, pruned, seeds=(0, 1), feeds=_token_feeds([(1, 1), (2, 19), (3, 40)]))
    assert check.ok, [d for d in check.diffs if not d["ok"]]
    assert len({tuple(s["input_ids"]) for s in check.shapes}) >= 4


def test_unequal_blocks_are_refused_naming_the_group(tiny):
    with pytest.raises(PlanError, match=r"group g\d+ keeps \[2, 3\] units in different blocks"):
        apply_plan(tiny, _plan(tiny, [[0, 1, 4, 5, 6]] + [list(range(HEADS))] * 3))


@pytest.mark.parametrize("ratio, kept", [(0.2, 8), (0.3, 6)])
def test_ratio_removes_query_heads_per_group_with_ffn(ratio, kept):
    """--ratio r removes floor(8r) query heads, rounded up to an equal count per group (never more)."""
    result = prune(onnx.load(TINY), PruneOptions(ratio=ratio, round_to=1))
    groups = {g.id: g for g in result.prepared.analysis.groups}
    heads = [g for g in result.plan.groups if groups[g.id].kind == "head"]
    assert [len(g.kept) for g in heads] == [kept] * LAYERS
    assert all(sum(u in g.kept for u in block) == kept // 2 for g in heads for block in BLOCKS)
    ffn = [g for g in result.plan.groups if groups[g.id].kind == "neuron" and g.kept is not None]
    assert ffn and all(len(g.kept) == 384 - int(ratio * 384 + 1e-9) for g in ffn)
    if kept < HEADS:
        check = verify(result.prepared, result.plan, result.model, seeds=(0, 1), feeds=_token_feeds([(2, 9), (1, 33)]))
        assert check.ok, [d for d in check.diffs if not d["ok"]]


def test_target_params_removes_query_heads_inside_groups_with_ffn():
    """The budget search (uniform order: every group loses about the same fraction) removes query heads one by
    one; each candidate's kept counts are made legal per group, and the result meets the target."""
    result = prune(onnx.load(TINY), PruneOptions(target_params=0.75, allocation="uniform", round_to=1))
    assert abs(result.after.params / result.before.params - 0.75) <= 0.02
    groups = {g.id: g for g in result.prepared.analysis.groups}
    heads = [e for e in result.plan.groups if groups[e.id].kind == "head"]
    assert len(heads) == LAYERS and all(e.kept is not None and len(e.kept) < HEADS for e in heads)
    for entry in heads:
        assert len({sum(u in entry.kept for u in block) for block in BLOCKS}) == 1  # equal and non-zero
    check = verify(result.prepared, result.plan, result.model, seeds=(0, 1), feeds=_token_feeds([(2, 11)]))
    assert check.ok, [d for d in check.diffs if not d["ok"]]


@pytest.fixture(scope="module")
def kv_inside_groups():
    """llama_tiny_kv with 2 of 4 query heads removed in each KV group (both KV heads stay) and FFN pruned."""
    prep = prepare(onnx.load(TINY_KV), allow_io_change=True)
    plan = _plan(prep, [[0, 2, 5, 7], [1, 3, 4, 6], [0, 1, 4, 5], [2, 3, 6, 7]], ffn_keep=256)
    return prep, plan, apply_plan(prep, plan)


def test_kv_cache_model_inside_groups_matches_oracle_at_past_lengths(kv_inside_groups):
    prep, plan, pruned = kv_inside_groups
    feeds = [_kv_feeds(2, 3, 5, KV_HEADS, 0), _kv_feeds(1, 1, 9, KV_HEADS, 1), _kv_feeds(3, 6, 0, KV_HEADS, 2)]
    check = verify(prep, plan, pruned, seeds=(0, 1), feeds=feeds)
    assert check.ok, [d for d in check.diffs if not d["ok"]]
    declared = {v.name: v.type.tensor_type.shape.dim[1].dim_value for v in pruned.graph.input if "past" in v.name}
    assert set(declared.values()) == {KV_HEADS}  # the cache keeps its KV heads
    assert_matches_oracle(prep, plan, pruned, seeds=(0, 3), batch=2)  # random batch, sequence and past lengths


def test_greedy_decoding_through_cache_equals_full_sequence_inside_groups(kv_inside_groups):
    assert_cached_decoding_equals_full(kv_inside_groups[2], kv_heads=KV_HEADS, steps=10)


def test_kv_cache_model_without_allow_io_change_prunes_inside_groups_only():
    """Without --allow-io-change the cache keeps its KV heads: --ratio 0.3 removes one query head per KV group,
    the interface and metadata stay as they were; a plan removing a KV group is refused with the reason."""
    result = prune(onnx.load(TINY_KV), PruneOptions(ratio=0.3, round_to=1))
    groups = {g.id: g for g in result.prepared.analysis.groups}
    heads = [g for g in result.plan.groups if groups[g.id].kind == "head"]
    assert [len(g.kept) for g in heads] == [6] * LAYERS and not result.io_change
    assert [i.type for i in result.model.graph.input] == [i.type for i in onnx.load(TINY_KV).graph.input]
    feeds = [_kv_feeds(2, 3, 5, KV_HEADS, 3), _kv_feeds(1, 1, 7, KV_HEADS, 4)]
    check = verify(result.prepared, result.plan, result.model, seeds=(0, 1), feeds=feeds)
    assert check.ok, [d for d in check.diffs if not d["ok"]]
    with pytest.raises(PlanError, match=r"removes a whole block, which must stay: KV-cache model .*--allow-io-change"):
        apply_plan(result.prepared, _plan(result.prepared, [[0, 1, 2]] + [list(range(HEADS))] * 3))


def _attr(model: onnx.ModelProto, op: str, name: str) -> list[int]:
    return [onnx.helper.get_attribute_value(a) for n in model.graph.node if n.op_type == op
            for a in n.attribute if a.name == name]


@pytest.mark.parametrize("kept, heads, kv_heads", [([1, 2], 2, 2), ([0, 1], 2, 1)], ids=["inside", "kv-group"])
def test_group_query_attention_num_heads_follow(kept, heads, kv_heads):
    """4 query heads over 2 KV heads (contrib op): one query head of each group (num_heads 2, kv_num_heads 2),
    or a whole KV group (2, 1); the q RotaryEmbedding's num_heads follows."""
    prep = prepare(cg.gqa_decoder_block())
    group = next(i for i, g in enumerate(prep.analysis.groups) if g.kind == "head")
    plan = make_plan(prep.analysis, {group: np.array(kept)}, prep.model_sha256, {})
    pruned = apply_plan(prep, plan)
    assert _attr(pruned, "GroupQueryAttention", "num_heads") == [heads]
    assert _attr(pruned, "GroupQueryAttention", "kv_num_heads") == [kv_heads]
    assert sorted(_attr(pruned, "RotaryEmbedding", "num_heads")) == sorted([heads, kv_heads])
    weights = _weights(pruned)
    assert weights["q_w"].shape == (32, heads * 8) and weights["k_w"].shape == (32, kv_heads * 8)
    assert_matches_oracle(prep, plan, pruned, seeds=(0, 5), batch=3)
