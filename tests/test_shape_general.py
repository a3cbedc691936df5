"""Correct at every input shape (issue #12): no probe value may reach a run-time shape.

Why these tests: a PaddlePaddle recognizer reads its sequence length as
``Cast(Slice(Cast(Shape(h), INT32)))``; the length after a stride-2 conv is ``ceil(W / 2)``, which no
divisibility test by a probe value recognises as symbolic, and earlier versions baked it into the QKV
Reshape target (exit 0, a model failing at every real width).  The probe now runs at two assignments
of the symbols and calls a dim static only when both agree; the rewrite is checked at several real
shapes before it is returned.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st

from onnxprune.passes import cleanup
from onnxprune.errors import VerificationError
from onnxprune.ir.graph import import_graph
from onnxprune.pipeline import PruneOptions, check_runs, prune
from onnxprune.methods.prepared import prepare
from onnxprune.ir.shapes import CHECK_PRIMES, PROBE_PRIMES, infer_static_shapes
from onnxprune.runtime.sessions import Runner
from onnxprune.measurement.agreement import compare_outputs
from shape_graphs import paddle_attention

WIDTHS = (64, 129, 320)


def _feeds(width: int, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((batch, 4, 1, width)).astype(np.float32)}


def test_a_strided_sequence_length_is_not_static() -> None:
    shapes = infer_static_shapes(paddle_attention(), symbol_value=None)
    assert shapes.primes == PROBE_PRIMES and shapes.check_primes == CHECK_PRIMES
    # W = 17 at A and 311 at B; the stride-2 conv makes T = 9 and 156: a dim no probe value divides
    assert shapes["h"] == (13, 9, 24) and shapes.alt["h"] == (307, 156, 24)
    assert shapes.static_axes("h") == (False, False, True)
    assert shapes.static_axes("qkv.split") == (False, False, True, True, True)


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.6])
def test_paddle_style_targets_stay_computed(ratio: float) -> None:
    model = paddle_attention()
    result = prune(model, PruneOptions(ratio=ratio), run_verify=True)
    assert result.verification.ok and len({str(s) for s in result.verification.shapes}) >= 2
    original, pruned = Runner(model), Runner(result.model)
    for width in WIDTHS:
        feeds = _feeds(width, seed=width)
        got = pruned.run(feeds, optimized=False)
        assert got["y"].shape == original.run(feeds)["y"].shape
        if ratio == 0.0:  # nothing removed: the very same function (rel. L2 ≤ 1e-4)
            diff, = compare_outputs(original.run(feeds), got, 1e-4)
            assert diff.ok, diff


def test_plain_prune_runs_the_result_at_two_shapes() -> None:
    result = prune(paddle_attention(), PruneOptions(ratio=0.3))
    widths = {batch["x"][3] for batch in result.checked_shapes}
    assert len(result.checked_shapes) == 2 and len(widths) == 2


def test_a_baked_probe_value_is_caught_by_the_run_check() -> None:
    """The very failure of the issue, made by hand: the run check refuses it, naming the shape."""
    prepared = prepare(paddle_attention())
    broken = onnx.ModelProto()
    broken.CopyFrom(prepared.normalized)
    graph = import_graph(broken)
    concat = next(n for n in graph.nodes if n.outputs[0].name == "qkv_t.target")
    import onnx_graphsurgeon as gs

    concat.inputs[1] = gs.Constant("baked", np.array([prepared.shapes["h"][1]], np.int64))
    from onnxprune.ir.graph import export_graph

    baked = export_graph(cleanup.run(graph).graph, like=prepared.original)
    with pytest.raises(VerificationError, match=r"fails at input shapes x\[2,4,1,3\]"):
        check_runs(prepared, baked)


def test_static_shape_values_become_constants() -> None:
    """``Shape(h)[2] / heads`` is the same at both probes: a constant the rules can follow."""
    from shape_graphs import chunked_conv

    prepared = prepare(chunked_conv())
    ops = [n.op_type for n in prepared.normalized.graph.node]
    assert "Shape" not in ops  # both chunk bounds were computed from Shape(x)[1]
    halves = [g for g in prepared.analysis.groups if g.label == "cv1"]
    assert [(g.units, g.frozen) for g in halves] == [(8, False), (8, False)]  # each half of the chunk prunes
    result = prune(chunked_conv(), PruneOptions(ratio=0.5), run_verify=True)
    assert result.verification.ok
    assert len(result.model.graph.initializer) > 0


@settings(max_examples=12, deadline=None)
@given(ratio=st.sampled_from([0.1, 0.25, 0.5]), width=st.integers(3, 400), batch=st.integers(1, 3))
def test_any_ratio_runs_at_any_width(ratio: float, width: int, batch: int) -> None:
    model = paddle_attention(seed=1)
    pruned = _pruned(ratio)
    feeds = _feeds(width, batch, seed=width)
    assert Runner(pruned).run(feeds, optimized=False)["y"].shape == Runner(model).run(feeds)["y"].shape


_CACHE: dict[float, onnx.ModelProto] = {}


def _pruned(ratio: float) -> onnx.ModelProto:
    if ratio not in _CACHE:
        _CACHE[ratio] = prune(paddle_attention(seed=1), PruneOptions(ratio=ratio)).model
    return _CACHE[ratio]


def test_control_flow_with_layers_is_named_with_its_reason() -> None:
    """A VAD-style model keeps Conv+LSTM inside ``If`` branches: analyze says where, what and why."""
    from conftest import MODELS
    from onnxprune.measurement.counting import count_model
    from onnxprune.reports.prune_report import analysis_report, format_analysis

    prepared = prepare(onnx.load(MODELS / "if_compute.onnx"))
    entry, = prepared.analysis.control_flow
    assert entry["op"] == "If" and entry["layers"] == {"Conv": 4, "LSTM": 2}
    assert entry["bodies"] == ["else_branch", "then_branch"] and entry["params"] > 0
    text = format_analysis(analysis_report(prepared, count_model(prepared.folded)))
    assert f"not pruned: node '{entry['node']}' (If" in text and "control-flow bodies are not pruned" in text
    front = next(g for g in prepared.analysis.groups if g.label == "Conv__0")
    assert front.frozen and f"control-flow node '{entry['node']}'" in front.reasons[0].reason
