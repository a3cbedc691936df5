"""GroupQueryAttention with a KV cache (past_key/past_value in, present_key/present_value out), issue 13.

What must hold: the cache's head axis (axis 1 of [B, kv_num_heads, S, head_size]) moves only with whole KV
groups.  Without ``--allow-io-change`` query heads inside the groups still prune (``num_heads`` shrinks,
``kv_num_heads`` and the model's interface stay) and a plan removing a KV group is refused in one line; with
it a whole KV group goes, ``kv_num_heads`` and the declared cache shapes shrink and the new head counts are
recorded.  Every rewrite matches the masked-reference oracle at several (batch, sequence, past) assignments —
onnxruntime's CPU kernel takes batch 1 when S > 1 tokens follow a past, so the given feeds cover the other
cases; and decoding token by token through the pruned cache equals running the whole sequence at once.
Tolerances: the oracle's 1e-4 relative to each output's scale (DESIGN §3); decoding rtol/atol 1e-4.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import contrib_graphs as cg
from conftest import assert_matches_oracle
from test_cli import assert_one_line_error, cli
from onnxprune.analysis.io_change import METADATA_KEY
from onnxprune.errors import PlanError
from onnxprune.ir.shapes import infer_shapes_at
from onnxprune.methods.plan import make_plan
from onnxprune.methods.prepared import prepare
from onnxprune.methods.width import apply_plan
from onnxprune.pipeline import PruneOptions, prune, verify
from onnxprune.runtime.sessions import Runner

KV_HEADS, HEAD_SIZE, VOCAB = 2, 16, 64


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return cg.gqa_cache_block(heads=4, kv_heads=KV_HEADS, head_size=HEAD_SIZE, vocab=VOCAB)


def _feeds(batch: int, seq: int, past: int, seed: int, kv_heads: int = KV_HEADS, lengths: bool = False
           ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(0, VOCAB, (batch, seq)).astype(np.int64)}
    if lengths:  # onnxruntime-genai's form: the lengths are fed
        feeds["seqlens_k"] = np.full((batch,), past + seq - 1, np.int32)
        feeds["total_sequence_length"] = np.array(past + seq, np.int32)
    for name in cg.GQA_CACHE[:2]:
        feeds[name] = rng.standard_normal((batch, kv_heads, past, HEAD_SIZE)).astype(np.float32)
    return feeds


#: (batch, new tokens, past length): decode steps of a batch, a prompt, a chunk after a past
SHAPES = [(2, 1, 5), (3, 4, 0), (1, 6, 2)]


def _attrs(model: onnx.ModelProto) -> tuple[int, int]:
    node = next(n for n in model.graph.node if n.op_type == "GroupQueryAttention")
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return values["num_heads"], values["kv_num_heads"]


def _declared_heads(model: onnx.ModelProto) -> set[int]:
    return {v.type.tensor_type.shape.dim[1].dim_value for v in (*model.graph.input, *model.graph.output)
            if v.name in cg.GQA_CACHE}


def _head_group(prep) -> int:
    return next(i for i, g in enumerate(prep.analysis.groups) if g.kind == "head")


def _verify_at_shapes(result) -> None:
    check = verify(result.prepared, result.plan, result.model, seeds=(0, 1),
                   feeds=[_feeds(b, s, p, seed) for seed, (b, s, p) in enumerate(SHAPES)])
    assert check.ok, [d for d in check.diffs if not d["ok"]]
    assert len({tuple(map(tuple, s.values())) for s in check.shapes}) >= 4


def _decode(runner: Runner, ids: np.ndarray, past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    out = runner.run({"input_ids": ids, cg.GQA_CACHE[0]: past[0], cg.GQA_CACHE[1]: past[1]}, optimized=True)
    return out["logits"], [out[cg.GQA_CACHE[2]], out[cg.GQA_CACHE[3]]]


def assert_cached_decoding_equals_full(model: onnx.ModelProto, kv_heads: int, steps: int = 8) -> None:
    """Greedy decoding one token at a time through the cache gives the logits (rtol/atol 1e-4) and tokens of
    running the whole sequence at once without a past."""
    runner = Runner(model)
    empty = [np.zeros((2, kv_heads, 0, HEAD_SIZE), np.float32)] * 2
    tokens = np.random.default_rng(0).integers(0, VOCAB, (2, 5)).astype(np.int64)
    logits, cache = _decode(runner, tokens, empty)
    for _ in range(steps):
        tokens = np.concatenate([tokens, logits[:, -1].argmax(-1)[:, None]], axis=1)
        logits, cache = _decode(runner, tokens[:, -1:], cache)
        assert cache[0].shape == (2, kv_heads, tokens.shape[1], HEAD_SIZE)
        full, _ = _decode(runner, tokens, empty)  # the whole sequence, no past
        np.testing.assert_allclose(logits[:, -1], full[:, -1], rtol=1e-4, atol=1e-4)
        assert np.array_equal(logits[:, -1].argmax(-1), full[:, -1].argmax(-1))  # the same next token
    assert tokens.shape == (2, 5 + steps)


def test_analyze_shows_query_heads_prunable_without_allow_io_change(model, tmp_path):
    """The head group is prunable inside its KV groups (blocks); every KV head stays, and the report says why."""
    path = tmp_path / "gqa_cache.onnx"
    onnx.save(model, path)
    groups = {}
    for flag in ((), ("--allow-io-change",)):
        run = cli("analyze", str(path), "--json", *flag)
        assert run.returncode == 0, run.stderr
        groups[flag] = next(g for g in json.loads(run.stdout)["groups"] if g["kind"] == "head")
    plain, allowed = groups[()], groups[("--allow-io-change",)]
    assert not plain["frozen"] and plain["channels"] == 4 and plain["blocks"] == [[0, 1], [2, 3]]
    assert {r["tensor"] for r in plain["fixed_blocks"]} <= set(cg.GQA_CACHE)
    assert all("--allow-io-change" in r["reason"] for r in plain["fixed_blocks"])
    assert not allowed["frozen"] and "fixed_blocks" not in allowed
    members = {m["tensor"]: (m["axis"], m["positions"]) for m in plain["members"]}
    assert all(members[name] == (1, KV_HEADS) for name in cg.GQA_CACHE)  # one position per KV head


@pytest.fixture(scope="module")
def inside_groups(model):
    """--head-ratio 0.5 without --allow-io-change: one query head per KV group, the cache untouched."""
    return prune(model, PruneOptions(head_ratio=0.5, ffn_ratio=0.25, round_to=1))


def test_query_heads_inside_groups_keep_the_cache_and_match_the_oracle(model, inside_groups):
    result = inside_groups
    head = result.prepared.analysis.groups[_head_group(result.prepared)]
    kept = next(g.kept for g in result.plan.groups if g.id == head.id)
    assert [sum(u in kept for u in block) for block in head.blocks] == [1, 1]
    assert _attrs(result.model) == (2, KV_HEADS) and not result.io_change
    assert [v.type for v in result.model.graph.input] == [v.type for v in model.graph.input]
    assert [v.type for v in result.model.graph.output] == [v.type for v in model.graph.output]
    weights = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    assert weights["q_w"].shape[1] == 2 * HEAD_SIZE and weights["o_w"].shape[0] == 2 * HEAD_SIZE
    assert weights["k_w"].shape[1] == KV_HEADS * HEAD_SIZE
    assert METADATA_KEY not in {p.key for p in result.model.metadata_props}
    _verify_at_shapes(result)
    assert_matches_oracle(result.prepared, result.plan, result.model, seeds=(0, 3), batch=1)


def test_decoding_through_the_unchanged_cache_equals_full_sequence(inside_groups):
    assert_cached_decoding_equals_full(inside_groups.model, kv_heads=KV_HEADS)


def test_removing_a_kv_group_without_allow_io_change_is_refused(model, tmp_path):
    """In the API a PlanError naming the rule; through the CLI one error line and exit 2."""
    prep = prepare(model)
    with pytest.raises(PlanError, match=r"removes a whole block, which must stay: KV-cache model .*--allow-io-change"):
        apply_plan(prep, make_plan(prep.analysis, {_head_group(prep): np.array([2, 3])}, prep.model_sha256, {}))
    path, plan_path = tmp_path / "m.onnx", tmp_path / "plan.json"
    onnx.save(model, path)
    allowed = prepare(model, allow_io_change=True)
    plan = make_plan(allowed.analysis, {_head_group(allowed): np.array([2, 3])}, allowed.model_sha256, {})
    plan_path.write_text(json.dumps(plan.to_dict()))  # made where it was legal, replayed without the flag
    run = cli("prune", str(path), "-o", str(tmp_path / "p.onnx"), "--plan", str(plan_path))
    assert_one_line_error(run, 2, "--allow-io-change")
    assert not (tmp_path / "p.onnx").exists()


@pytest.fixture(scope="module")
def kv_group(model):
    """--head-ratio 0.75 with --allow-io-change: 1 of 4 query heads stays, so one KV group goes whole."""
    return prune(model, PruneOptions(head_ratio=0.75, ffn_ratio=0.25, round_to=1, allow_io_change=True))


def test_whole_kv_group_with_allow_io_change_narrows_the_cache(kv_group):
    result = kv_group
    assert _attrs(result.model) == (1, 1) and _declared_heads(result.model) == {1}
    recorded = json.loads({p.key: p.value for p in result.model.metadata_props}[METADATA_KEY])
    assert set(recorded) == set(cg.GQA_CACHE) and result.io_change == recorded
    assert all(r["axis"] == 1 and r["before"] == KV_HEADS and r["after"] == 1 for r in recorded.values())
    _verify_at_shapes(result)  # fed the kept KV head of the original's random cache, compared on it


def test_decoding_through_the_pruned_cache_equals_full_sequence(kv_group):
    assert_cached_decoding_equals_full(kv_group.model, kv_heads=1)


@pytest.mark.parametrize("batch, seq, past", SHAPES)
def test_inferred_present_shape_is_what_onnxruntime_returns(model, batch, seq, past):
    """onnxruntime's shape rule copies the past's shape to present; corrected (onnxprune/ir/ort_shape_fixes.py)
    it gives the kernel's past + new tokens, which the run check compares the pruned model with."""
    feeds = _feeds(batch, seq, past, seed=7)
    inferred = infer_shapes_at(model, {name: value.shape for name, value in feeds.items()})
    returned = Runner(model).run(feeds, optimized=False)
    for name in cg.GQA_CACHE[2:]:
        assert inferred[name] == returned[name].shape == (batch, KV_HEADS, past + seq, HEAD_SIZE)


@pytest.mark.parametrize("allow, kept, heads", [(False, [0, 3], (2, KV_HEADS)), (True, [0, 1], (2, 1))],
                         ids=["inside-groups", "kv-group"])
def test_lengths_fed_as_inputs_like_onnxruntime_genai(allow, kept, heads):
    """seqlens_k / total_sequence_length as graph inputs (their values unknown to shape inference): the
    cache's head axis is still linked; both kinds of plan match the oracle at three (batch, seq, past)."""
    prep = prepare(cg.gqa_cache_block(lengths_as_inputs=True), allow_io_change=allow)
    head = prep.analysis.groups[_head_group(prep)]
    assert not head.frozen and bool(head.fixed_blocks) is not allow
    plan = make_plan(prep.analysis, {_head_group(prep): np.array(kept)}, prep.model_sha256, {})
    pruned = apply_plan(prep, plan)
    assert _attrs(pruned) == heads and _declared_heads(pruned) == {heads[1]}
    check = verify(prep, plan, pruned, seeds=(),
                   feeds=[_feeds(b, s, p, seed, lengths=True) for seed, (b, s, p) in enumerate(SHAPES)])
    assert check.ok and len(check.shapes) == 3, [d for d in check.diffs if not d["ok"]]


def test_quantized_cache_keeps_declining_naming_the_node():
    """A cache with k_scale (quantized) cannot be sliced per head here: the heads freeze, naming the node."""
    model = cg.gqa_cache_block()
    node = next(n for n in model.graph.node if n.op_type == "GroupQueryAttention")
    node.input.extend(["", "", "", "k_scale"])  # position_ids, attention_bias, head_sink, k_scale
    model.graph.initializer.append(numpy_helper.from_array(np.ones([1], np.float32), "k_scale"))
    prep = prepare(model, allow_io_change=True)
    head = next(g for g in prep.analysis.groups if "attn" in g.label or g.label.startswith("q"))
    assert head.frozen and any(r.node == "attn" and "'attn' has a quantized KV cache (k_scale)" in r.reason
                               for r in head.reasons), [r.reason for r in head.reasons]
