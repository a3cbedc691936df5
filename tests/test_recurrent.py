"""LSTM / GRU / RNN hidden units: pruned across W, R (rows and columns), B, states and outputs.

Graphs are built with onnx.helper: x[S,N,8] → MatMul → RNN op → Transpose/Reshape merging directions
→ MatMul head.  Oracle tolerance: relative error ≤ 1e-4 against the masked reference.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_matches_oracle
from onnxprune.pipeline import PruneOptions, plan_prune
from onnxprune.methods.width import apply_plan
from onnxprune.methods.prepared import prepare

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent_model(op: str, directions: int, hidden: int = 6, features: int = 5, before_reset: int = 0,
                    with_state: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    gates = GATES[op]
    inits = [
        numpy_helper.from_array(rng.standard_normal((directions, gates * hidden, features)).astype(np.float32), "W"),
        numpy_helper.from_array(0.3 * rng.standard_normal((directions, gates * hidden, hidden)).astype(np.float32), "R"),
        numpy_helper.from_array(rng.standard_normal((directions, 2 * gates * hidden)).astype(np.float32), "B"),
        numpy_helper.from_array(rng.standard_normal((8, features)).astype(np.float32), "Wp"),
        numpy_helper.from_array(rng.standard_normal((directions * hidden, 4)).astype(np.float32), "Wo"),
        numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape"),
    ]
    inputs = ["xp", "W", "R", "B"]
    if with_state:
        inits.append(numpy_helper.from_array(rng.standard_normal((directions, 2, hidden)).astype(np.float32), "h0"))
        inputs += ["", "h0"]
    attrs = {"hidden_size": hidden, "direction": "bidirectional" if directions == 2 else "forward"}
    if op == "GRU":
        attrs["linear_before_reset"] = before_reset
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    nodes = [helper.make_node("MatMul", ["x", "Wp"], ["xp"], name="proj"),
             helper.make_node(op, inputs, outputs, name="rnn", **attrs),
             helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3], name="t"),
             helper.make_node("Reshape", ["Yt", "shape"], ["Yf"], name="merge"),
             helper.make_node("MatMul", ["Yf", "Wo"], ["out"], name="head")]
    batch = 2 if with_state else "N"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["S", batch, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["S", batch, 4])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


CASES = [("LSTM", 1, 0), ("LSTM", 2, 0), ("GRU", 1, 0), ("GRU", 1, 1), ("GRU", 2, 1), ("RNN", 1, 0), ("RNN", 2, 0)]


@pytest.mark.parametrize("op,directions,before_reset", CASES)
@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_hidden_units_prune_and_match_oracle(op: str, directions: int, before_reset: int, ratio: float) -> None:
    model = recurrent_model(op, directions, before_reset=before_reset)
    onnx.checker.check_model(model, full_check=True)
    prepared = prepare(model)
    hidden_groups = [g for g in prepared.analysis.groups if any(s.tensor == "Y" for s, _ in g.members)]
    assert len(hidden_groups) == 1 and not hidden_groups[0].frozen and hidden_groups[0].units == 6
    plan = plan_prune(prepared, PruneOptions(ratio=ratio))
    pruned = apply_plan(prepared, plan)
    assert_matches_oracle(prepared, plan, pruned, batch=2)
    kept = 6 - int(ratio * 6)
    node = next(n for n in pruned.graph.node if n.op_type == op)
    assert next(a.i for a in node.attribute if a.name == "hidden_size") == kept
    dims = {i.name: list(i.dims) for i in pruned.graph.initializer}
    assert dims["R"] == [directions, GATES[op] * kept, kept]
    assert dims["Wo"][0] == directions * kept


def test_constant_initial_state_is_sliced() -> None:
    model = recurrent_model("LSTM", 2, with_state=True)
    prepared = prepare(model)
    plan = plan_prune(prepared, PruneOptions(ratio=0.5))
    pruned = apply_plan(prepared, plan)
    assert_matches_oracle(prepared, plan, pruned, batch=2)
    assert {i.name: list(i.dims) for i in pruned.graph.initializer}["h0"] == [2, 2, 3]


def test_input_features_are_read_by_w() -> None:
    """The projection feeding the LSTM is a prunable group; W's input axis is its consumer."""
    prepared = prepare(recurrent_model("GRU", 2))
    proj = next(g for g in prepared.analysis.groups if g.label == "proj")
    assert not proj.frozen and any(p.tensor == "W" and p.axis == 2 for p in proj.params)
