"""Llama-style decoders (transformers exports): GQA heads, RoPE, RMSNorm, SwiGLU, KV caches.

What must hold: the attention heads of a GQA decoder are prunable as query heads in equal blocks (one block per
KV head; a KV head goes with its last query head, so whole KV groups too), the rewrite matches the masked-reference oracle at several batch sizes and
sequence lengths, a KV-cache model's groups stay frozen unless the interface change is allowed, and a model
pruned with ``allow_io_change`` decodes through its (narrower) cache exactly as it decodes the full sequence.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from onnxprune.runtime.calibration import load_calibration
from onnxprune.analysis.io_change import METADATA_KEY, is_kv_cache
from onnxprune.pipeline import PruneOptions, prune, verify
from onnxprune.methods.prepared import prepare
from onnxprune.runtime.feeds import symbol_sum
from onnxprune.runtime.sessions import Runner
from onnxprune.runtime.feeds import random_feeds

from conftest import MODELS, ROOT
from test_cli import cli

TINY, TINY_KV, OLD_KV = (MODELS / f"{n}.onnx" for n in ("llama_tiny", "llama_tiny_kv", "llama_kv_decoder"))
LAYERS, KV_HEADS, HEADS, HEAD_DIM = 4, 2, 8, 16
TOLERANCE = 1e-4  # relative to each output's scale (DESIGN §3)


def _heads(analysis):
    return [g for g in analysis.groups if g.kind == "head"]


def _token_feeds(cases, seed=0):
    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(0, 256, (b, s)).astype(np.int64)} for b, s in cases]


def test_gqa_heads_and_ffn_are_prunable_and_rmsnorm_pins_hidden():
    analysis = prepare(onnx.load(TINY)).analysis
    heads = _heads(analysis)
    assert len(heads) == LAYERS and all(not g.frozen and g.units == HEADS and g.head_dim == HEAD_DIM for g in heads)
    assert all(g.blocks == ((0, 1, 2, 3), (4, 5, 6, 7)) for g in heads)  # query heads per KV head
    ffn = [g for g in analysis.groups if g.kind == "neuron" and "gate_proj" in g.label]
    assert len(ffn) == LAYERS and all(not g.frozen and g.units == 384 for g in ffn)
    hidden = next(g for g in analysis.groups if g.units == 128)
    assert hidden.frozen and any(r.op == "ReduceMean" for r in hidden.reasons)
    # the group holds both KV heads (block atoms) and all 8 query heads (units)
    q_member = next(n for s, n in heads[0].members if s.tensor.endswith("q_proj/MatMul_output_0"))
    assert q_member == HEADS * HEAD_DIM


@pytest.mark.parametrize("head_ratio, ffn_ratio", [(0.625, 0.3)])
def test_pruned_decoder_matches_oracle_at_several_shapes(head_ratio, ffn_ratio):
    model = onnx.load(TINY)
    options = PruneOptions(head_ratio=head_ratio, ffn_ratio=ffn_ratio, round_to=1)
    result = prune(model, options)
    feeds = _token_feeds([(1, 1), (2, 17), (3, 40)])
    check = verify(result.prepared, result.plan, result.model, seeds=(0, 1), feeds=feeds)
    assert check.ok, [d for d in check.diffs if not d["ok"]]
    assert len({tuple(s["input_ids"]) for s in check.shapes}) >= 4
    head_ids = {g.id for g in _heads(result.prepared.analysis)}
    kept = [len(g.kept) for g in result.plan.groups if g.id in head_ids and g.kept is not None]
    assert kept == [3] * LAYERS  # 8 - 5 query heads: only one KV group (of 3) is legal


def _gathered_rope(model: onnx.ModelProto) -> onnx.ModelProto:
    """llama_tiny with RoPE in its older export form: ``cos_cached[position_ids]`` / ``sin_cached[...]``,
    Gathers from constant [512, 16] tables (transformers < 4.38, optimum exports of that time)."""
    freqs = np.arange(512, dtype=np.float64)[:, None] * (10000.0 ** (-np.arange(0, HEAD_DIM, 2) / HEAD_DIM))[None]
    table = np.concatenate([freqs, freqs], -1)
    positions = "/model/model/Unsqueeze_output_0"  # [1, seq] arange
    swap = {"/model/model/rotary_emb/Cast_4_output_0": "rope_cos", "/model/model/rotary_emb/Cast_5_output_0": "rope_sin"}
    for node in model.graph.node:
        node.input[:] = [swap.get(name, name) for name in node.input]
    nodes = list(model.graph.node)
    at = next(i for i, n in enumerate(nodes) if n.output[0] == positions) + 1
    gathers = [onnx.helper.make_node("Gather", [f"{name}_table", positions], [name], name=f"/{name}/Gather")
               for name in ("rope_cos", "rope_sin")]
    del model.graph.node[:]
    model.graph.node.extend(nodes[:at] + gathers + nodes[at:])
    model.graph.initializer.extend([onnx.numpy_helper.from_array(np.cos(table).astype(np.float32), "rope_cos_table"),
                                    onnx.numpy_helper.from_array(np.sin(table).astype(np.float32), "rope_sin_table")])
    return model


def test_rope_tables_gathered_by_position_do_not_tie_heads_together():
    model = _gathered_rope(onnx.load(TINY))
    result = prune(model, PruneOptions(head_ratio=0.5, ffn_ratio=0.2, round_to=1))
    heads = _heads(result.prepared.analysis)
    assert len(heads) == LAYERS and all(not g.frozen and g.units == HEADS and len(g.blocks) == KV_HEADS for g in heads)
    check = verify(result.prepared, result.plan, result.model, seeds=(0, 1), feeds=_token_feeds([(2, 33)]))
    assert check.ok, [d for d in check.diffs if not d["ok"]]


def _tiled_repeat_kv(model: onnx.ModelProto, interleave: bool) -> onnx.ModelProto:
    """llama_tiny with ``repeat_kv`` exported through Tile instead of Expand.

    ``interleave``: ``Unsqueeze → Tile [1, 1, 4, 1, 1] → Reshape`` (query head ``j`` reads KV head ``j // 4``,
    as ``repeat_interleave`` exports); otherwise ``Tile [1, 4, 1, 1]`` of the ``[b, 2, s, 16]`` keys/values
    (query head ``j`` reads KV head ``j mod 2``).
    """
    graph = model.graph
    model.graph.initializer.extend([onnx.numpy_helper.from_array(np.array([1, 1, 4, 1, 1], np.int64), "rep5"),
                                    onnx.numpy_helper.from_array(np.array([1, 4, 1, 1], np.int64), "rep4")])
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type != "Expand" or "self_attn" not in node.name:
            continue
        reshape = next(n for n in graph.node if n.op_type == "Reshape" and n.input[0] == node.output[0])
        node.op_type = "Tile"
        if interleave:
            node.input[1] = "rep5"
        else:  # tile the [b, 2, s, 16] tensor under the Unsqueeze, and let it be the Reshape's output
            node.input[:] = [producers[node.input[0]].input[0], "rep4"]
            consumers = [n for n in graph.node if reshape.output[0] in n.input]
            for consumer in consumers:
                consumer.input[:] = [node.output[0] if name == reshape.output[0] else name for name in consumer.input]
    return model


@pytest.mark.parametrize("interleave", [True, False], ids=["unsqueeze-tile-reshape", "tile-heads"])
def test_repeat_kv_as_tile_prunes_whole_kv_groups(interleave):
    """Interleaved copies (``[b, 2, 1→4, s, d]`` reshaped) prune query heads inside groups (Tile's repeats
    follow); a Tile of the head axis itself (copies strided, ``j mod 2``) keeps whole KV groups: kept query
    heads in ascending order would no longer alternate between the KV heads."""
    model = _tiled_repeat_kv(onnx.load(TINY), interleave)
    result = prune(model, PruneOptions(head_ratio=0.5 if not interleave else 0.625, round_to=1))
    heads = _heads(result.prepared.analysis)
    units = HEADS if interleave else KV_HEADS
    assert len(heads) == LAYERS and all(not g.frozen and g.units == units for g in heads)
    check = verify(result.prepared, result.plan, result.model, seeds=(0, 1), feeds=_token_feeds([(2, 21)]))
    assert check.ok, [d for d in check.diffs if not d["ok"]]


def test_random_inputs_value_a_sum_of_symbols_as_the_sum():
    feeds = random_feeds(onnx.load(TINY_KV), batch=2, dynamic=5)
    assert feeds["attention_mask"].shape == (2, 10) and feeds["past_key_values.0.key"].shape == (2, 2, 5, 16)
    assert symbol_sum("past_sequence_length + 1", set(), 2, 3) == 4 and symbol_sum("seq", set(), 2, 3) is None


def test_kv_cache_heads_frozen_without_allow_io_change():
    """Without --allow-io-change the KV heads (and so whole KV groups) stay, with the reason; query heads
    inside the groups remain prunable (tests/test_gqa_query_heads.py)."""
    analysis = prepare(onnx.load(TINY_KV)).analysis
    heads = _heads(analysis)
    assert len(heads) == LAYERS and all(not g.frozen and g.fixed_blocks for g in heads)
    reasons = {r.reason for g in heads for r in g.fixed_blocks}
    assert reasons and all("--allow-io-change" in r for r in reasons), reasons
    assert all(not g.frozen and not g.fixed_blocks for g in _heads(prepare(onnx.load(TINY_KV), allow_io_change=True).analysis))


def _kv_feeds(batch: int, seq: int, past: int, kv_heads: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(0, 256, (batch, seq)).astype(np.int64),
             "attention_mask": np.ones((batch, past + seq), dtype=np.int64),
             "position_ids": np.tile(np.arange(past, past + seq, dtype=np.int64), (batch, 1))}
    feeds["attention_mask"][0, :min(2, past)] = 0  # left padding in the first row
    for i in range(LAYERS):
        for kv in ("key", "value"):
            feeds[f"past_key_values.{i}.{kv}"] = rng.standard_normal((batch, kv_heads, past, HEAD_DIM)).astype(np.float32)
    return feeds


@pytest.fixture(scope="module")
def pruned_kv():
    # 8 - 5 query heads: one KV group per layer goes, and one query head of the other
    result = prune(onnx.load(TINY_KV), PruneOptions(head_ratio=0.625, ffn_ratio=0.25, round_to=1, allow_io_change=True))
    return result


def test_kv_cache_pruned_with_allow_io_change_matches_oracle(pruned_kv):
    result = pruned_kv
    feeds = [_kv_feeds(2, 3, 5, KV_HEADS, 0), _kv_feeds(1, 1, 9, KV_HEADS, 1), _kv_feeds(3, 6, 0, KV_HEADS, 2)]
    check = verify(result.prepared, result.plan, result.model, seeds=(0, 1), feeds=feeds)
    assert check.ok, [d for d in check.diffs if not d["ok"]]
    assert len(check.shapes) == 5  # the random ones too: the mask is 'past_seq + seq' long (validate.symbol_sum)
    declared = {v.name: v.type.tensor_type.shape.dim[1].dim_value for v in result.model.graph.input if is_kv_cache(v.name)}
    assert declared and set(declared.values()) == {1}
    recorded = json.loads({p.key: p.value for p in result.model.metadata_props}[METADATA_KEY])
    assert set(recorded) == {f"{io}.{i}.{kv}" for io in ("past_key_values", "present") for i in range(LAYERS)
                             for kv in ("key", "value")}
    assert all(r["before"] == KV_HEADS and r["after"] == 1 and r["axis"] == 1 for r in recorded.values())
    assert result.io_change == recorded


def _step(runner: Runner, ids: np.ndarray, past: list[np.ndarray], kv_heads: int) -> tuple[np.ndarray, list]:
    start = past[0].shape[2]
    feeds = {"input_ids": ids, "attention_mask": np.ones((ids.shape[0], start + ids.shape[1]), dtype=np.int64),
             "position_ids": np.tile(np.arange(start, start + ids.shape[1], dtype=np.int64), (ids.shape[0], 1))}
    names = [f"past_key_values.{i}.{kv}" for i in range(LAYERS) for kv in ("key", "value")]
    feeds.update(dict(zip(names, past)))
    out = runner.run(feeds, optimized=True)
    present = [out[n.replace("past_key_values", "present")] for n in names]
    assert all(p.shape[1] == kv_heads for p in present)
    return out["logits"], present


def assert_cached_decoding_equals_full(model: onnx.ModelProto, kv_heads: int, steps: int = 12) -> None:
    """Greedy decoding through the cache gives the logits (rtol/atol 1e-4) and tokens of decoding the whole
    sequence without a cache, step after step."""
    runner = Runner(model)
    prompt = np.load(MODELS / "llama_text_test.npz")["input_ids"][:2, :8]
    empty = [np.zeros((2, kv_heads, 0, HEAD_DIM), dtype=np.float32)] * (2 * LAYERS)
    logits, cache = _step(runner, prompt, empty, kv_heads)
    cached, full = prompt, prompt
    for _ in range(steps):
        token = logits[:, -1].argmax(-1)[:, None]
        cached = np.concatenate([cached, token], axis=1)
        logits, cache = _step(runner, token, cache, kv_heads)
        full_logits, _ = _step(runner, cached, empty, kv_heads)  # the whole sequence, no cache
        np.testing.assert_allclose(logits[:, -1], full_logits[:, -1], rtol=1e-4, atol=1e-4)
        full = np.concatenate([full, full_logits[:, -2].argmax(-1)[:, None]], axis=1)
    assert np.array_equal(cached, full)
    assert cached.shape == (2, 8 + steps)


def test_greedy_decoding_through_pruned_cache_equals_full_sequence(pruned_kv):
    assert_cached_decoding_equals_full(pruned_kv.model, kv_heads=1)


def test_recipe_key_allow_io_change_prunes_kv_groups_of_the_older_export(tmp_path):
    """llama_kv_decoder (no attention_mask, transformers 4.3x code): through a recipe, verified by the oracle."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'version = 1\nmodel = "{OLD_KV.as_posix()}"\n[[steps]]\ntype = "prune"\noutput = "p.onnx"\n'
                      'head_ratio = 0.75\nround_to = 1\nverify = true\nallow_io_change = true\n')
    report = tmp_path / "run.json"
    run = cli("--isolation-timeout", "300", "run", str(recipe), "--out-dir", str(tmp_path), "--report", str(report))
    assert run.returncode == 0, run.stderr
    step = json.loads(report.read_text())["results"]["steps"][0]["results"]
    assert step["verification"]["ok"] and len(step["verification"]["input_shapes"]) >= 2
    assert {r["after"] for r in step["io_change"].values()} == {1} and len(step["io_change"]) == 8
    pruned = onnx.load(tmp_path / "p.onnx")
    assert METADATA_KEY in {p.key for p in pruned.metadata_props}


def test_cli_prunes_with_token_id_calibration(tmp_path):
    out = tmp_path / "p.onnx"
    cmd = [sys.executable, "-m", "onnxprune.cli", "--isolation-timeout", "300", "prune", str(TINY), "-o", str(out), "--ratio", "0.2",
           "--calib", str(MODELS / "llama_text_calib.npz"), "--batch-size", "32", "--round-to", "1", "--json",
           "--quiet", "--recover", "none"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["settings"]["criterion"] == "fluctuation"
    calibration = load_calibration(MODELS / "llama_text_calib.npz", onnx.load(TINY), batch_size=16)
    assert sum(len(b["input_ids"]) for b in calibration.batches()) == 64


def test_cli_analyze_kv_model_says_how_to_allow_io_change():
    cmd = [sys.executable, "-m", "onnxprune.cli", "--isolation-timeout", "300", "analyze", str(TINY_KV),
           "--allow-io-change"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    allowed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    plain = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert plain.returncode == 0 and "KV-cache model input: pruning its heads changes" in plain.stdout
    summary = next(line for line in allowed.stdout.splitlines() if " groups: " in line)
    assert allowed.returncode == 0 and "(4 head, 4 neuron" in summary, allowed.stdout
