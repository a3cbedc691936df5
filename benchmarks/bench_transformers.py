"""BERT-style encoder: heads and FFN neurons at 50 % / 50 %, weight-only vs calibrated criteria and recovery.

Measures, side by side in one run (ratios, never absolute timing claims):
* params, MACs and onnxruntime latency (batch 8, sequence 16, 1 thread, interleaved A/B repeats) of the
  original and the pruned model;
* output agreement with the original on held-out inputs (cosine similarity of the final hidden states
  and of the classifier logits, top-1 agreement of the logits) for each criterion × recovery.

The model ships in ``models/`` (random weights: there is no pretrained checkpoint offline), so inputs
are token ids drawn uniformly from the vocabulary with all-ones attention masks; calibration and
evaluation use different seeds.  Reproduce: ``python benchmarks/bench_transformers.py``.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import platform
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.runtime.calibration import calibration_from_feeds
from onnxprune.measurement.counting import count_model
from onnxprune.pipeline import PruneOptions, prune
from onnxprune.recovery.layers import RecoveryOptions
from onnxprune.runtime.sessions import make_session

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "bert_encoder_dynamic.onnx"
VOCAB = 100


def token_feeds(count: int, batch: int, seq: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(0, VOCAB, size=(batch, seq)).astype(np.int64),
             "attention_mask": np.ones((batch, seq), np.int64)} for _ in range(count)]


def agreement(original: onnx.ModelProto, candidate: onnx.ModelProto, feeds: list[dict]) -> dict[str, float]:
    a, b = make_session(original), make_session(candidate)
    names = [o.name for o in a.get_outputs()]
    cos = {n: [] for n in names}
    top1 = []
    for feed in feeds:
        ya, yb = a.run(names, feed), b.run(names, feed)
        for name, xa, xb in zip(names, ya, yb):
            xa, xb = xa.reshape(-1, xa.shape[-1]).astype(np.float64), xb.reshape(-1, xb.shape[-1]).astype(np.float64)
            cos[name].extend((np.sum(xa * xb, 1) / (np.linalg.norm(xa, axis=1) * np.linalg.norm(xb, axis=1) + 1e-12)).tolist())
            if xa.shape[-1] <= 10:
                top1.extend((xa.argmax(1) == xb.argmax(1)).tolist())
    result = {f"cosine[{n}]": float(np.mean(v)) for n, v in cos.items()}
    result["top1_agreement"] = float(np.mean(top1)) if top1 else float("nan")
    return result


def latency(models: list[onnx.ModelProto], feed: dict, repeat: int) -> list[float]:
    sessions = []
    for model in models:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions.append(ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]))
    times = [[] for _ in sessions]
    for _ in range(10):
        for s in sessions:
            s.run(None, feed)
    for _ in range(repeat):
        for i, s in enumerate(sessions):
            start = time.perf_counter()
            s.run(None, feed)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) * 1e3 for t in times]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_transformers.md"))
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    model = onnx.load(MODEL)
    calib = calibration_from_feeds(token_feeds(16, 16, 16, seed=1), model, batch_size=16)
    held_out = token_feeds(8, 8, 16, seed=2)
    settings = [("l2", "none", False), ("l1", "none", False), ("random", "none", False),
                ("activation", "none", True), ("fluctuation", "none", True), ("wanda", "none", True),
                ("l2", "lsq", True), ("fluctuation", "lsq", True), ("fluctuation", "bias", True)]
    rows, pruned_for_latency = [], None
    for criterion, recover, needs_data in settings:
        options = PruneOptions(criterion=criterion, head_ratio=0.5, ffn_ratio=0.5)
        recovery = RecoveryOptions(recover, guard=False)
        result = prune(model, options, calibration=calib if needs_data else None, recovery=recovery)
        rows.append((criterion, recover, agreement(model, result.model, held_out), result.after))
        pruned_for_latency = pruned_for_latency or result.model
        print(criterion, recover, rows[-1][2], file=sys.stderr)
    before = count_model(model)
    after = rows[0][3]
    ms = latency([model, pruned_for_latency], held_out[0], args.repeat)
    lines = [f"# BERT-style encoder: 50 % heads + 50 % FFN neurons ({datetime.date.today()})", "",
             f"`python benchmarks/bench_transformers.py` · onnxruntime {ort.__version__}, onnx {onnx.__version__}, "
             f"{platform.machine()}, 1 intra-op thread, batch 8 × sequence 16, {args.repeat} interleaved repeats.", "",
             "| | params | MACs per token | latency ms (median) |", "|---|---:|---:|---:|",
             f"| original | {before.params} | {before.macs} | {ms[0]:.3f} |",
             f"| pruned | {after.params} ({after.params / before.params:.3f}×) | {after.macs} "
             f"({after.macs / before.macs:.3f}×) | {ms[1]:.3f} ({ms[0] / ms[1]:.2f}× faster) |", "",
             "MACs are counted with every symbolic dimension set to 1 (one token); the hidden size (32) is pinned "
             "by LayerNormalization and residual adds, so heads and FFN neurons are what can go.", "",
             "Output agreement with the original on 64 held-out sequences (random token ids, seed 2):", "",
             "| criterion | recovery | cosine (hidden states) | cosine (logits) | top-1 agreement |",
             "|---|---|---:|---:|---:|"]
    for criterion, recover, agree, _ in rows:
        hidden = next(v for k, v in agree.items() if "logits" not in k and k.startswith("cosine"))
        logits = agree.get("cosine[logits]", float("nan"))
        lines.append(f"| {criterion} | {recover} | {hidden:.4f} | {logits:.4f} | {agree['top1_agreement']:.3f} |")
    lines += ["", "Calibration: 256 sequences (seed 1) for the data criteria and recovery; `guard=False` shows the "
              "raw effect of recovery."]
    pathlib.Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
