"""Benchmark: perplexity of the trained tiny Llama after pruning heads and FFN neurons together, no fine-tuning.

Run from the repository root::

    python benchmarks/bench_llm.py [--out benchmarks/results_llm.md] [--json FILE] [--ratios 0.1,0.2,0.3,0.4] [--modes ratio,target-params,heads+ffn]
    python benchmarks/bench_llm.py --modes q-heads+ffn,ratio,target-params --section "Query heads inside GQA groups"

What it measures: ``models/llama_tiny.onnx`` (transformers LlamaForCausalLM, 8 query / 2 KV heads, SwiGLU,
trained on stdlib docstrings by ``models/train_llama_decoder.py``) pruned four ways: ``--ratio r`` (the issue's
command; a head group has 8 query heads in 2 blocks, one per KV head, kept equal: floor(8r) heads rounded up
to an equal count per group, none below r = 0.25), ``target-params`` (``--target-params 1 - r``: the budget
search ranks heads and neurons globally; fluctuation + lsq only), ``heads+ffn`` (``--head-ratio 0.5``: 4 of the
8 query heads of every layer — one whole KV group, or 2 per group, whichever scores higher; when a unit was a
whole KV group this removed one KV group — plus the FFN ratio that brings the params removed to about r) and
``q-heads+ffn`` (one of the 4 query heads of every KV group
of every layer — which one differs per group — both KV heads kept, plus the FFN ratio that brings the params
removed to about r), under the criteria
``l2`` (weights only), ``wanda`` (Wanda-sp: mean |W_j| · ‖X_j‖₂) and ``fluctuation`` (FLAP: Var(X_j) · ‖W_j‖²),
each with recovery ``none``, ``bias`` (FLAP's bias compensation) and ``lsq`` (least-squares refit of the
layers reading the pruned channels; the default guard applies: a recovery that raises the calibration output
error is dropped).  Calibration: the 64 windows of 128 byte-tokens of ``models/llama_text_calib.npz``;
perplexity: next-token cross-entropy over the 96 windows of ``models/llama_text_test.npz`` (held-out stdlib
modules, disjoint from the calibration windows), computed from onnxruntime logits.  Params removed are
counted on the written graphs (``onnxprune.measurement.counting``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path

import repo_paths  # noqa: F401  (puts the checkout first on sys.path)

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.runtime.calibration import load_calibration
from onnxprune.measurement.counting import count_model
from onnxprune.errors import OnnxPruneError
from onnxprune.pipeline import PruneOptions, prune
from onnxprune.recovery.layers import RecoveryOptions
from onnxprune.runtime.sessions import make_session

MODEL = repo_paths.MODELS / "llama_tiny.onnx"
CALIB = repo_paths.MODELS / "llama_text_calib.npz"
TEST = repo_paths.MODELS / "llama_text_test.npz"
#: (criterion, recovery) cells: weights only; Wanda-sp; FLAP (fluctuation + bias compensation); each + LSQ.
CELLS = (("l2", "none"), ("l2", "lsq"), ("wanda", "none"), ("wanda", "lsq"), ("fluctuation", "none"),
         ("fluctuation", "bias"), ("fluctuation", "lsq"))
#: Share of the params one KV group per layer holds (q/k/v/o rows and columns of half the heads: 4 layers ×
#: 20.5K of 820K) and the SwiGLU intermediates (4 × 3 × 128 × 384): turns a params target into an FFN ratio.
HALF_HEADS_SHARE, FFN_SHARE = 0.100, 0.719
#: Share of the params 8 query heads hold (q_proj columns and o_proj rows: 8 × 2 × 128 × 16 of 820K).
QUARTER_Q_HEADS_SHARE = 0.040
#: the cells of each mode: weights only, Wanda-sp, FLAP, each with and without LSQ for the new mode
MODE_CELLS = {"heads+ffn": CELLS, "target-params": (("fluctuation", "lsq"),),
              "q-heads+ffn": (("l2", "none"), ("l2", "lsq"), ("wanda", "none"), ("wanda", "lsq"),
                              ("fluctuation", "none"), ("fluctuation", "lsq"))}


#: what the rows of a ``--section`` run mean (units are query heads since GQA groups prune inside blocks)
SECTION_NOTES = (
    "Units of a head group are now its 8 query heads in 2 blocks (one per KV head); every KV head keeps the "
    "same number of query heads (which ones differ per group, lowest-scoring first) and goes with its last one. "
    "`1 query head per KV group + FFN`: `--head-ratio 0.25` (8 − 2 = 6 query heads per layer, 3 per KV group, "
    "the only legal layout; 8 of 32 query heads, 4 % of the params) plus the `--ffn-ratio` that brings the params "
    "removed to about the target. `--ratio r` removes floor(8r) query heads per layer rounded up to an equal count "
    "per KV group (none at 0.1 and 0.2, 2 at 0.3 and 0.4) and r of every FFN. `--target-params` ranks query heads "
    "and FFN neurons globally. `half the query heads + FFN`: `--head-ratio 0.5` (4 of 8 query heads per layer: "
    "one whole KV group, or 2 per group, whichever keeps the higher score — the KV heads column says which) plus "
    "the FFN ratio computed as if a whole KV group went (10 % of the params), so layers that keep both KV heads "
    "land a little under the target. Criteria, recovery, calibration and test windows as above.")


def perplexity(model: onnx.ModelProto, ids: np.ndarray, batch: int = 16) -> float:
    """exp(mean next-token cross-entropy) over every window (float64 log-softmax of onnxruntime logits)."""
    session = make_session(model, optimized=True, threads=2)
    total, count = 0.0, 0
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        logits = session.run(None, {"input_ids": chunk})[0].astype(np.float64)[:, :-1]
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        target = chunk[:, 1:]
        total -= float(np.take_along_axis(logp, target[..., None], -1).sum())
        count += target.size
    return float(np.exp(total / count))


def options_for(mode: str, ratio: float, criterion: str) -> PruneOptions:
    """``ratio``: the issue's ``--ratio r`` (2-unit head groups round to no head below 0.5: FFN only);
    ``heads+ffn``: one KV group of every layer plus the FFN ratio that brings params removed to about r."""
    if mode == "ratio":
        return PruneOptions(ratio=ratio, criterion=criterion, round_to=1)
    if mode == "target-params":  # the budget search ranks heads and neurons globally and picks per-group ratios
        return PruneOptions(target_params=round(1 - ratio, 3), allocation="global", criterion=criterion, round_to=1)
    if mode == "q-heads+ffn":  # 8 - floor(0.25 · 8) = 6 query heads: 3 per KV group is the only legal layout
        ffn = max(0.0, (ratio - QUARTER_Q_HEADS_SHARE) / FFN_SHARE)
        return PruneOptions(head_ratio=0.25, ffn_ratio=round(ffn, 3), criterion=criterion, round_to=1)
    ffn = max(0.0, (ratio - HALF_HEADS_SHARE) / FFN_SHARE)
    return PruneOptions(head_ratio=0.5, ffn_ratio=round(ffn, 3), criterion=criterion, round_to=1)


def run_one(model: onnx.ModelProto, mode: str, ratio: float, criterion: str, recovery: str, test: np.ndarray) -> dict:
    calibration = load_calibration(CALIB, model, batch_size=16)
    start = time.perf_counter()
    try:
        result = prune(model, options_for(mode, ratio, criterion),
                       calibration=calibration if criterion != "l2" or recovery != "none" else None,
                       recovery=RecoveryOptions(recovery.removesuffix("-unguarded"),
                                                guard=not recovery.endswith("-unguarded")))
    except OnnxPruneError as err:
        return {"mode": mode, "ratio": ratio, "criterion": criterion, "recovery": recovery, "error": str(err)}
    seconds = time.perf_counter() - start
    heads, kv_heads = heads_kept(result)
    status = (result.recovery or {}).get("status", "")
    return {"mode": mode, "ratio": ratio, "criterion": criterion, "recovery": recovery, "params": result.after.params,
            "perplexity": perplexity(result.model, test), "query_heads_kept": heads, "kv_heads_kept": kv_heads,
            "recovery_status": status, "seconds": round(seconds, 1)}


def heads_kept(result) -> tuple[int, int]:
    """(query heads, KV heads) the plan keeps: a head group's units are query heads, its blocks KV heads."""
    kinds = {g.id: g for g in result.prepared.analysis.groups}
    queries = kvs = 0
    for entry in result.plan.groups:
        group = kinds[entry.id]
        if group.kind != "head":
            continue
        kept = set(range(group.units) if entry.kept is None else entry.kept)
        queries += len(kept)
        kvs += sum(bool(kept & set(block)) for block in group.blocks) if group.blocks else len(kept)
    return queries, kvs


def table(rows: list[dict], base_ppl: float, base_params: int) -> list[str]:
    lines = ["| setting | target | params removed | query heads kept (of 32) | KV heads kept (of 8) | criterion | "
             "recovery | perplexity | vs original |", "|---|---|---|---|---|---|---|---|---|"]
    order = {"q-heads+ffn": 0, "ratio": 1, "target-params": 2, "heads+ffn": 3}
    names = {"heads+ffn": "half the query heads + FFN", "q-heads+ffn": "1 query head per KV group + FFN"}
    for row in sorted(rows, key=lambda r: (order[r["mode"]], r["ratio"])):
        setting = {"ratio": f"--ratio {row['ratio']}", "target-params": f"--target-params {1 - row['ratio']:g}"}.get(
            row["mode"], names.get(row["mode"], row["mode"]))
        if "error" in row:
            lines.append(f"| {setting} | {row['ratio']} | – | – | – | {row['criterion']} | {row['recovery']} | "
                         f"error: {row['error']} | |")
            continue
        removed = 1 - row["params"] / base_params
        dropped = " (rejected by the guard)" if row["recovery_status"] == "rejected" else ""
        lines.append(f"| {setting} | {row['ratio']} | {removed:.1%} | {row['query_heads_kept']} | "
                     f"{row.get('kv_heads_kept', '–')} | {row['criterion']} | {row['recovery']}{dropped} | "
                     f"{row['perplexity']:.3f} | {row['perplexity'] / base_ppl - 1:+.1%} |")
    return lines


def write_section(path: Path, title: str, body: list[str]) -> str:
    """Replace (or append) the ``## title`` section of ``path``, keeping every other line: rows measured
    earlier by other modes (or other code) stay as they were."""
    old = path.read_text().splitlines() if path.exists() else []
    head = f"## {title}"
    start = old.index(head) if head in old else len(old)
    end = next((i for i in range(start + 1, len(old)) if old[i].startswith("## ")), len(old))
    text = "\n".join(old[:start] + ([""] if start == len(old) and old else []) + [head, ""] + body + old[end:]) + "\n"
    path.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(repo_paths.HERE / "results_llm.md"))
    parser.add_argument("--json", default=None)
    parser.add_argument("--ratios", default="0.1,0.2,0.3,0.4")
    parser.add_argument("--modes", default="ratio,target-params,heads+ffn")
    parser.add_argument("--cells", default=None, metavar="CRITERION:RECOVERY,...",
                        help="Only these (criterion, recovery) cells in every mode (default: each mode's own).")
    parser.add_argument("--section", default=None, metavar="TITLE",
                        help="Write the table as the '## TITLE' section of --out, keeping the rest of the file.")
    parser.add_argument("--merge", nargs="+", metavar="JSON", default=None,
                        help="Only write the table from the --json files of earlier (e.g. parallel) runs.")
    args = parser.parse_args()
    model = onnx.load(MODEL)
    test = np.load(TEST)["input_ids"]
    base_ppl, base_params = perplexity(model, test), count_model(model).params
    rows = []
    for path in args.merge or []:
        rows.extend(json.loads(Path(path).read_text())["rows"])
    for mode in args.modes.split(",") if not args.merge else []:
        for ratio in [float(r) for r in args.ratios.split(",")]:
            cells = ([tuple(cell.split(":")) for cell in args.cells.split(",")] if args.cells else
                     MODE_CELLS.get(mode, (("l2", "none"), ("fluctuation", "lsq"))))
            for criterion, recovery in cells:
                rows.append(run_one(model, mode, ratio, criterion, recovery, test))
                print(json.dumps(rows[-1]), flush=True)
    command = "python benchmarks/bench_llm.py" + (f" --modes {args.modes} --ratios {args.ratios}" if args.section else "") + (
        f" --cells {args.cells}" if args.cells else "")
    if args.section:
        command += f' --section "{args.section}"'
    stamp = (f"Command: `{command}` ({dt.date.today()}, {platform.processor() or platform.machine()}, "
             f"onnxruntime {ort.__version__})" + (f"; rows from {len(args.merge)} runs of it with --modes/--ratios "
                                                  "subsets, joined with --merge" if args.merge else "") + ".")
    if args.section:
        body = [stamp, "", SECTION_NOTES, ""] + table(rows, base_ppl, base_params)
        text = write_section(Path(args.out), args.section, body)
    else:
        head = [f"# Tiny Llama: perplexity after pruning heads + FFN (no fine-tuning)", "", stamp, "",
                f"Original: {base_params} params, held-out perplexity {base_ppl:.3f} (byte tokens, 96 × 128).", "",
                "Settings: `--ratio r` is the issue's command; a head group of this model has 8 units (query heads) "
                "in 2 blocks (one per KV head), each keeping none or the same number. `half the query heads + FFN` "
                "keeps 4 of 8 query heads per layer (one whole KV group, or 2 per group, whichever scores higher) "
                "plus the FFN ratio that brings the params removed to about the target. `bias` is FLAP's "
                "bias compensation; `lsq` the least-squares refit of the layers reading pruned channels; a recovery "
                "that raises the calibration output error is rejected by the default guard. Calibration: 64 × 128 "
                "held-out tokens (`models/llama_text_calib.npz`), disjoint from the test windows. `--target-params` "
                "is the budget search (global ranking of normalized scores, bisection on the measured params).", ""]
        text = "\n".join(head + table(rows, base_ppl, base_params)) + "\n"
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"base_perplexity": base_ppl, "base_params": base_params, "rows": rows},
                                              indent=1))
    print(text)


if __name__ == "__main__":
    main()
