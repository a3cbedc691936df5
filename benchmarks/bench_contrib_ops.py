"""Encoders after onnxruntime's transformer optimizer, pruned with ``--ratio 0.3`` (issue 13).

Measures, side by side in one run (ratios, never absolute timing claims), for each model in ``models/``
rewritten by ``optimize_model`` (``com.microsoft`` Attention / MultiHeadAttention, SkipLayerNormalization,
BiasGelu / FastGelu) and, for reference, the unfused BERT export:

* heads and FFN neurons before → after, params, FLOPs at batch 8 × sequence 16 (fused attention counted
  with :mod:`onnxprune.measurement.counting_contrib`);
* onnxruntime CPU latency, 1 intra-op thread, default graph optimizations, the original and the pruned
  model run in interleaved rounds (median);
* the masked-reference oracle (``--verify``) at the calibration-free trial shapes.

Pruning is what ``onnxprune prune MODEL --ratio 0.3`` does (l2 criterion, ``--round-to auto``).
Reproduce: ``python benchmarks/bench_contrib_ops.py`` (writes ``benchmarks/results_contrib_ops.md``).
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import platform

import repo_paths  # noqa: F401  (the checkout's onnxprune first)

import numpy as np
import onnx
import onnxruntime as ort

from bench_transformers import latency  # interleaved medians, 1 thread, no spinning
from onnxprune.measurement.counting import count_model
from onnxprune.runtime.input_shapes import resolve
from onnxprune.pipeline import PruneOptions, prune

MODELS = ("bert_optimized_attention", "bert_optimized_mha", "gpt_block_optimized", "bert_encoder_dynamic",
          "bert_optimized_attention+int4")
BATCH, SEQ, VOCAB = 8, 16, 100


def feed(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    out = {}
    for value in model.graph.input:
        shape = (BATCH, SEQ)
        out[value.name] = np.ones(shape, np.int64) if value.name == "attention_mask" else \
            rng.integers(0, VOCAB, size=shape).astype(np.int64)
    return out


def units(result, kind: str) -> tuple[int, int]:
    """(before, after) of the prunable groups of one kind: heads, or neurons (a unit of a MatMulNBits group is
    a whole block of neurons, so neurons are counted as positions, not units)."""
    kept = {p.id: p.kept for p in result.plan.groups}
    before = after = 0
    for group in (g for g in result.prepared.analysis.prunable if g.kind == kind):
        size = 1 if kind == "head" else max(n for _, n in group.members) // group.units
        before += group.units * size
        after += size * (group.units if kept.get(group.id) is None else len(kept[group.id]))
    return before, after


def load(name: str) -> onnx.ModelProto:
    """A file of ``models/``; ``+int4``: its MatMuls quantized by onnxruntime's MatMulNBitsQuantizer (4 bits,
    block 16, asymmetric: packed zero points)."""
    base, _, suffix = name.partition("+")
    model = onnx.load(repo_paths.MODELS / f"{base}.onnx")
    if suffix != "int4":
        return model
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(block_size=16, is_symmetric=False)
    quantizer = MatMulNBitsQuantizer(model, block_size=16, is_symmetric=False, algo_config=config)
    quantizer.process()
    return quantizer.model.model


def row(name: str, repeat: int) -> str:
    model = load(name)
    inputs = feed(model)
    shapes = resolve(model, {k: v.shape for k, v in inputs.items()})
    result = prune(model, PruneOptions(ratio=0.3, round_to="auto", input_shapes=shapes), run_verify=True)
    before, after = count_model(model, input_shapes=shapes), count_model(result.model, input_shapes=shapes)
    ms = latency([model, result.model], inputs, repeat)
    heads, ffn = units(result, "head"), units(result, "neuron")
    frozen = sum(1 for g in result.prepared.analysis.groups if g.frozen)
    return (f"| {name} | {heads[0]} → {heads[1]} | {ffn[0]} → {ffn[1]} | {frozen} | "
            f"{before.params} → {after.params} ({after.params / before.params:.3f}×) | "
            f"{2 * before.macs / 1e6:.2f}M → {2 * after.macs / 1e6:.2f}M "
            f"({after.macs / before.macs:.3f}×) | {ms[0]:.3f} → {ms[1]:.3f} ({ms[0] / ms[1]:.2f}×) | "
            f"{'passed' if result.verification and result.verification.ok else 'FAILED'} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(repo_paths.HERE / "results_contrib_ops.md"))
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    lines = [f"# Transformer-optimized encoders at --ratio 0.3 ({datetime.date.today()})", "",
             f"`python benchmarks/bench_contrib_ops.py` · onnxruntime {ort.__version__}, onnx {onnx.__version__}, "
             f"{platform.machine()}, 1 intra-op thread, batch {BATCH} × sequence {SEQ}, {args.repeat} interleaved "
             "repeats, default graph optimizations.", "",
             "| model | heads | FFN neurons | frozen groups | params | FLOPs | latency ms (median, speed-up) "
             "| oracle |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name in MODELS:
        lines.append(row(name, args.repeat))
        print(lines[-1], flush=True)
    lines += ["", "Pruning: `onnxprune prune MODEL --ratio 0.3 --verify` (l2, `--round-to auto`: 16 neurons on CPU, "
              "heads in whole units; 30 % of the GPT block's 2 heads rounds to none). Frozen groups are the residual "
              "hidden size, pinned by (Skip)LayerNormalization, and layers that write a model output (the GPT LM "
              "head, the unfused BERT's pooler and classifier). `bert_encoder_dynamic` is the unfused export "
              "(hidden 32) for reference; the optimized BERTs are hidden 64, 4 heads × 16, FFN 128; the GPT block "
              "hidden 64, 2 heads × 32, FFN 128 (`models/manifest.json`). `+int4`: the same file with its MatMuls "
              "quantized to MatMulNBits (4 bits, block 16, packed zero points) by onnxruntime's MatMulNBitsQuantizer "
              "at run time; FFN neurons then go in whole blocks of 16, and params count only float tensors "
              "(the packed uint8 codes are not counted)."]
    pathlib.Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
