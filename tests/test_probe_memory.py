"""Issue #18: the shape probe stays small — peak RSS of the real CLI on KV-cache decoders and a ~90 MB encoder.

Each measurement is a fresh child running the click entry point; its peak RSS is its own ``VmHWM``
(``test_large_models._peak``; ``ru_maxrss`` would inherit this process's).  No timing here: times and
before/after numbers are in ``benchmarks/bench_probe_memory.py`` / ``results_probe_memory.md``.

Before the fix (probe values near 10⁴, folding of run-time causal masks) the 1.5 MB decoder needed
≈ 6.4 GB to analyze and the 32k one ≈ 6.6 GB; both are now far below the 600 MB bound.

Not tested in-process: that folding never holds a tensor above ``shape_folding.MAX_FOLDED_ELEMENTS``.  The probe
returns shapes and small (≤ 64-element) values only, and the large tensors of the old probe were
onnxruntime's (C++) allocations, which ``tracemalloc`` does not see (the old probe of the 1.5 MB decoder
traced a 4 MiB peak at 6.3 GB RSS), so only a child's RSS can show it.
"""

from __future__ import annotations

import os
import pathlib
import sys

import onnx
import pytest

from conftest import MODELS
from test_large_models import _peak

sys.path.insert(0, str(MODELS))
from onnx_builders import build_bert_encoder, build_llama_kv_decoder  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM needs Linux /proc")

MB = 10**6
BUDGET = 600 * MB  # the bound for the decoders


def test_kv_decoder_analyze_and_prune_ratio_0_stay_small(tmp_path: pathlib.Path) -> None:
    model = str(MODELS / "llama_kv_decoder.onnx")  # 1.5 MB, vocab 256, symbolic batch / seq / past_seq
    analyze = _peak("analyze", model)
    pruned = _peak("prune", model, "--ratio", "0", "-o", str(tmp_path / "out.onnx"))
    assert analyze <= BUDGET, analyze  # measured 134 MB (import alone ≈ 80 MB); 3d4b4f7: 6.4 GB
    assert pruned <= BUDGET, pruned  # measured 151 MB; 3d4b4f7: 7.1 GB


def test_32k_vocab_decoder_with_three_symbolic_dims_analyzes_small(tmp_path: pathlib.Path) -> None:
    model = build_llama_kv_decoder(tmp_path / "llama32k.onnx", vocab=32000)  # ~34 MB
    analyze = _peak("analyze", str(model))
    assert analyze <= BUDGET, analyze  # measured 376 MB (11x the file: inline weights); 3d4b4f7: 6.6 GB


def test_90mb_encoder_analyze_within_three_times_the_file(tmp_path: pathlib.Path) -> None:
    model = build_bert_encoder(tmp_path / "bert90.onnx", target_mb=90)  # hidden 1152, ~91 MB, one file
    size = model.stat().st_size
    analyze = _peak("analyze", str(model))
    # measured 1.74x (VmHWM bytes / file bytes): the weights are mapped from the file (inline_weights), the
    # isolation's refs check maps too; 8.4x before that, 7.3x on 3d4b4f7
    assert analyze <= 3 * size, (analyze, size)


def test_90mb_encoder_with_external_data_analyzes_within_three_times_the_file(tmp_path: pathlib.Path) -> None:
    built = build_bert_encoder(tmp_path / "bert90.onnx", target_mb=90)
    (tmp_path / "ext").mkdir()
    model = tmp_path / "ext" / "bert90.onnx"  # the CLI memory-maps external weights (onnxprune.io.weights)
    onnx.save(onnx.load(str(built)), str(model), save_as_external_data=True, location="bert90.onnx.data")
    size = model.stat().st_size + (tmp_path / "ext" / "bert90.onnx.data").stat().st_size
    analyze = _peak("analyze", str(model))
    assert analyze <= 3 * size, (analyze, size)  # measured 129 MB = 1.4x; 3d4b4f7: 1.4x too
