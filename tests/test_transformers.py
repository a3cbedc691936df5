"""Transformers and recurrent models: heads, FFN neurons and hidden units (issue "Transformers and RNNs").

For every exported model (static and dynamic variants) the masked-reference oracle must hold at head
ratios 0.25/0.5 and FFN ratios 0.3/0.6 (relative error ≤ 1e-4), the pruned dynamic models must run
with batch sizes and sequence lengths different from the export, and ``analyze`` must report the head
groups (H and D) and FFN groups it found.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest

from attention_graphs import encoder_block
from conftest import MODELS, assert_matches_oracle
from graphs import contrib_mlp
from onnxprune.planning.allocate import AllocationSettings, allocate
from onnxprune.scoring.criteria import score_groups
from onnxprune.ir.graph import import_graph
from onnxprune.methods.width import apply_plan, masked_reference
from onnxprune.methods.prepared import prepare
from onnxprune.methods.plan import make_plan
from onnxprune.measurement.agreement import compare_outputs
from onnxprune.runtime.sessions import run_model

FAMILIES = ("bert_encoder", "vit_classifier", "gpt_block", "torch_transformer_encoder", "lstm_classifier",
            "bigru_classifier")
MODEL_FILES = [f"{family}_{variant}" for family in FAMILIES for variant in ("static", "dynamic")]
#: Heads each family must expose as prunable head groups (static export; dynamic where the probe can follow it).
EXPECTED_HEADS = {"bert_encoder_static": 2, "bert_encoder_dynamic": 2, "vit_classifier_static": 2,
                  "vit_classifier_dynamic": 2, "gpt_block_static": 2, "gpt_block_dynamic": 2,
                  "torch_transformer_encoder_static": 2, "torch_transformer_encoder_dynamic": 2}
#: (H, D) of every attention layer of each family (``analyze`` must report the head groups with both).
HEAD_SHAPE = {"bert_encoder": (4, 8), "vit_classifier": (3, 16), "gpt_block": (2, 32),
              "torch_transformer_encoder": (4, 8)}


@functools.lru_cache(maxsize=None)
def prepared(name: str):
    return prepare(onnx.load(MODELS / f"{name}.onnx"))


def plan_for(prep, head_ratio: float, ffn_ratio: float, criterion: str = "l2"):
    scores = score_groups(import_graph(prep.normalized), prep.analysis, criterion)
    settings = AllocationSettings(ratio=ffn_ratio, head_ratio=head_ratio, ffn_ratio=ffn_ratio)
    kept = allocate(prep.analysis, scores.by_group, settings)
    return make_plan(prep.analysis, kept, prep.model_sha256, {"head_ratio": head_ratio, "ffn_ratio": ffn_ratio})


def feeds(model: onnx.ModelProto, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for the exported families: token ids < 10 (every vocab is larger), 0/1 masks, floats."""
    rng = np.random.default_rng(seed)
    out = {}
    for value in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        shape = [batch if i == 0 and d is None else seq if d is None else d for i, d in enumerate(dims)]
        if value.name == "attention_mask":
            mask = np.ones(shape, np.int64)
            mask[:, -1] = 0
            out[value.name] = mask
        elif value.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            out[value.name] = rng.integers(0, 10, size=shape).astype(np.int64)
        else:
            out[value.name] = rng.standard_normal(shape).astype(np.float32)
    return out


@pytest.mark.parametrize("name", MODEL_FILES)
@pytest.mark.parametrize("head_ratio,ffn_ratio", [(0.25, 0.3), (0.5, 0.6)])
def test_oracle_at_head_and_ffn_ratios(name: str, head_ratio: float, ffn_ratio: float) -> None:
    prep = prepared(name)
    plan = plan_for(prep, head_ratio, ffn_ratio)
    pruned = apply_plan(prep, plan)
    reference = masked_reference(prep, plan)
    # dynamic exports: other batch sizes and sequence lengths, up to the 16 positions of the tables (vit and
    # torch_transformer_encoder are dynamic in the batch only: the image size / sequence length is baked in)
    shapes = [(2, 8)] if name.endswith("static") else [(3, 5), (1, 12), (4, 16)] if "gpt" in name or \
        "bert" in name else [(3, 5), (1, 12)] if "lstm" in name or "gru" in name else [(3, 8), (1, 8)]
    for batch, seq in shapes:
        batch_feeds = feeds(prep.original, batch, seq)
        expected = run_model(reference, batch_feeds, optimized=False)
        for optimized in (False, True):
            diffs = compare_outputs(expected, run_model(pruned, batch_feeds, optimized=optimized), 1e-4)
            assert all(d.ok for d in diffs), (batch, seq, optimized, [d for d in diffs if not d.ok])


@pytest.mark.parametrize("name", sorted(EXPECTED_HEADS))
def test_head_groups_found_and_pruned(name: str) -> None:
    prep = prepared(name)
    heads = [g for g in prep.analysis.groups if g.kind == "head" and not g.frozen]
    assert len(heads) == EXPECTED_HEADS[name]
    assert all(g.head_dim and g.head_dim > 1 and g.units >= 2 for g in heads)
    plan = plan_for(prep, 0.5, 0.0)
    pruned = apply_plan(prep, plan)
    for group in heads:
        entry = next(p for p in plan.groups if p.id == group.id)
        assert len(entry.kept) == group.units - group.units // 2
    assert pruned.ByteSize() < prep.original.ByteSize()


@pytest.mark.parametrize("name", ["bert_encoder_static", "gpt_block_static", "vit_classifier_static"])
def test_ffn_groups_found(name: str) -> None:
    prep = prepared(name)
    ffn = [g for g in prep.analysis.groups if g.kind == "neuron" and not g.frozen and g.units >= 64]
    assert len(ffn) >= 2


@pytest.mark.parametrize("name", ["lstm_classifier_static", "lstm_classifier_dynamic", "bigru_classifier_static",
                                  "bigru_classifier_dynamic"])
def test_recurrent_hidden_units_are_prunable(name: str) -> None:
    prep = prepared(name)
    hidden = [g for g in prep.analysis.groups if g.kind == "hidden"]
    assert len(hidden) == 1 and not hidden[0].frozen
    plan = plan_for(prep, 0.0, 0.5)
    assert_matches_oracle(prep, plan, apply_plan(prep, plan), batch=3)


@pytest.mark.parametrize("options", [{}, {"causal": True}, {"runtime_shapes": True},
                                     {"runtime_shapes": True, "causal": True}])
def test_hand_built_block_heads(options: dict) -> None:
    """Masks, 1/√D scaling, causal masks and run-time head reshapes keep working with heads removed."""
    prep = prepare(encoder_block(**options))
    head = next(g for g in prep.analysis.groups if g.kind == "head")
    assert not head.frozen and head.units == 4 and head.head_dim == 4
    for head_ratio in (0.25, 0.5):
        plan = plan_for(prep, head_ratio, 0.5)
        assert_matches_oracle(prep, plan, apply_plan(prep, plan), batch=3)


def test_contrib_ops_freeze_with_a_reason() -> None:
    """A com.microsoft op without a rule (ScaledSiLU): its groups freeze and say which op and domain."""
    model = contrib_mlp(op="ScaledSiLU")
    prep = prepare(model)
    up = next(g for g in prep.analysis.groups if g.label == "up")
    assert up.frozen and any(r.node == "fused_gelu" and "com.microsoft" in r.reason for r in up.reasons)
    # ONNX inference cannot type the contrib op's output; onnxruntime's symbolic shape inference can,
    # so the layer after it ('down') is analyzed and prunes (issue #7)
    down = next(g for g in prep.analysis.groups if g.label == "down")
    assert not down.frozen and down.units == 16
    plan = plan_for(prep, 0.0, 0.5)
    pruned = apply_plan(prep, plan)
    assert any(p.id == down.id and len(p.kept) == 8 for p in plan.groups)
    assert_matches_oracle(prep, plan, pruned, batch=3)


@pytest.mark.parametrize("name", sorted(EXPECTED_HEADS))
def test_analyze_json_lists_head_groups_with_h_and_d(name: str, tmp_path) -> None:
    """The CLI's JSON names every head group with its head count (``channels``) and head size (``head_dim``),
    and lists the FFN (neuron) groups next to them."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "onnxprune.cli", "analyze", "--json", str(MODELS / f"{name}.onnx")],
                         capture_output=True, text=True, check=True).stdout
    groups = json.loads(out)["groups"]
    heads = [g for g in groups if g["kind"] == "head" and not g["frozen"]]
    h, d = HEAD_SHAPE[name.rsplit("_", 1)[0]]
    assert len(heads) == EXPECTED_HEADS[name]
    assert all((g["channels"], g["head_dim"]) == (h, d) for g in heads), heads
    assert any(g["kind"] == "neuron" and not g["frozen"] and g["channels"] >= 64 for g in groups)


@pytest.mark.parametrize("name", ["torch_transformer_encoder_static", "torch_transformer_encoder_dynamic"])
def test_fused_in_projection_loses_the_same_heads_in_q_k_and_v(name: str) -> None:
    """nn.MultiheadAttention's fused in_proj [E, 3E] (+ bias [3E]): removing head h removes columns
    h·D…h·D+D-1 of each of the Q, K and V chunks, and nothing else; out_proj loses the same head's inputs."""
    from onnx import numpy_helper

    prep = prepared(name)
    plan = plan_for(prep, 0.5, 0.0)
    pruned = apply_plan(prep, plan)
    before = {i.name: numpy_helper.to_array(i) for i in prep.normalized.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    heads = [g for g in prep.analysis.groups if g.kind == "head"]
    assert len(heads) == 2
    for group in heads:
        entry = next(p for p in plan.groups if p.id == group.id)
        kept_heads = sorted(entry.kept)
        assert len(kept_heads) == 2  # 4 heads at ratio 0.5
        cols = np.concatenate([chunk * 32 + h * 8 + np.arange(8) for chunk in range(3) for h in kept_heads])
        weight = next(p.tensor for p in group.params if p.role == "producer" and before[p.tensor].ndim == 2)
        bias = next(p.tensor for p in group.params if before[p.tensor].shape == (96,))  # Add's per-channel param
        np.testing.assert_array_equal(after[weight], before[weight][:, np.sort(cols)])
        np.testing.assert_array_equal(after[bias], before[bias][np.sort(cols)])
        out_proj = next(p.tensor for p in group.params if p.role == "consumer")
        inputs = np.concatenate([h * 8 + np.arange(8) for h in kept_heads])
        np.testing.assert_array_equal(after[out_proj], before[out_proj][:, inputs])  # Gemm transB: [out, in]
