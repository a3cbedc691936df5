"""Depth pruning (onnxprune.methods.depth): which residual blocks are found, the zero-branch oracle, scores,
the plan value, the repair, and the CLI / recipe front-ends.

Every rewrite is compared in onnxruntime (both optimization levels) with the reference model in which the
removed branches' outputs are multiplied by zero, at two or more input shapes: relative error ≤ 1e-5
(max |got − expected| / max |expected| per output).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import onnx
import pytest
from conftest import MODELS
from onnx import TensorProto, helper, numpy_helper
from test_cli import assert_one_line_error, cli

from onnxprune.runtime.calibration import load_calibration
from onnxprune.measurement.counting import count_model
from onnxprune.errors import InputError, PlanError
from onnxprune.methods.depth import DepthMethod, DepthPlan, DepthSettings
from onnxprune.planning.depth_stage import run_depth
from onnxprune.pipeline import PruneOptions, compare_to_reference
from onnxprune.methods.prepared import prepare
from onnxprune.recovery.layers import RecoveryOptions
from onnxprune.runtime.sessions import make_session

EXACT = 1e-5

#: model → (removable blocks, a phrase every non-removable residual join's reason must contain, or None)
FOUND = {
    "resnet_basic": (1, "projection shortcut"),
    "resnet_bottleneck": (2, "projection shortcut"),
    "mobilenetv2": (2, None),
    "mnist_resnet": (6, None),
    "gpt_block_dynamic": (4, None),
    "llama_kv_decoder": (4, None),
    "bert_encoder_dynamic": (4, None),
    "mnist_cnn": (0, None),
    "vgg_chain": (0, None),
}


def _prepared(name: str):
    return prepare(onnx.load(MODELS / f"{name}.onnx"))


def _plan(prepared, removed) -> DepthPlan:
    return DepthPlan(prepared.model_sha256, tuple(removed), "weight")


@pytest.mark.parametrize("name", sorted(FOUND))
def test_removable_blocks_are_found_and_the_rest_say_why(name: str) -> None:
    prepared = _prepared(name)
    analysis = DepthMethod().analyze(prepared)
    count, phrase = FOUND[name]
    assert len(analysis.blocks) == count
    for block in analysis.blocks:
        assert block.weights and block.stream != block.output
    if phrase is not None:
        projections = [j for j in analysis.joins if phrase in j.reason]
        assert projections and all("down" in j.reason and "Conv" in j.reason for j in projections), analysis.joins


def test_resnet_relu_after_the_add_is_kept_and_kv_outputs_keep_their_projections() -> None:
    resnet = DepthMethod().analyze(_prepared("resnet_basic"))
    assert resnet.blocks[0].after == ("Relu",)
    llama = DepthMethod().analyze(_prepared("llama_kv_decoder"))
    attention = [b for b in llama.blocks if any("q_proj" in w for w in b.weights)]
    assert len(attention) == 2
    for block in attention:  # present.* graph outputs need K and V: those nodes are not part of the branch
        assert not any("k_proj" in w or "v_proj" in w for w in block.weights), block.weights


@pytest.mark.parametrize("name", ["resnet_basic", "resnet_bottleneck", "mobilenetv2", "mnist_resnet",
                                  "gpt_block_dynamic", "llama_kv_decoder", "bert_encoder_dynamic", "yolov8_head",
                                  "torch_transformer_encoder_dynamic"])
def test_removing_blocks_equals_the_zero_branch_reference(name: str) -> None:
    prepared = _prepared(name)
    method = DepthMethod()
    analysis = method.analyze(prepared)
    ids = [b.id for b in analysis.blocks]
    for removed in ([ids[-1]], ids):
        plan = _plan(prepared, removed)
        pruned = method.apply(prepared, plan)
        result = compare_to_reference(method.reference(prepared, plan), pruned, tolerance=EXACT)
        assert result.ok, [d for d in result.diffs if not d["ok"]]
        assert len({json.dumps(s, sort_keys=True) for s in result.shapes}) >= 2, result.shapes
        names = {n.name for n in pruned.graph.node}
        gone = [w for b in removed for w in analysis.block(b).weights]
        assert not names & set(gone)
        assert count_model(pruned).params < count_model(prepared.original).params


def test_the_oracle_catches_the_wrong_block() -> None:
    prepared = _prepared("resnet_bottleneck")
    method = DepthMethod()
    first, second = (b.id for b in method.analyze(prepared).blocks)
    wrong = method.apply(prepared, _plan(prepared, [first]))
    result = compare_to_reference(method.reference(prepared, _plan(prepared, [second])), wrong, tolerance=EXACT)
    assert not result.ok


def _output_block_model() -> onnx.ModelProto:
    """x → y = x + MatMul(Relu(MatMul(x, W1)), W2), y a graph output and read by a Softmax (output z)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), f"w{i}") for i in (1, 2)]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["b"], name="mm2"), helper.make_node("Add", ["x", "b"], ["y"], name="add"),
             helper.make_node("Softmax", ["y"], ["z"], name="softmax")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 8])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_block_whose_output_is_a_graph_output_keeps_the_name() -> None:
    prepared = prepare(_output_block_model())
    method = DepthMethod()
    (block,) = method.analyze(prepared).blocks
    plan = _plan(prepared, [block.id])
    pruned = method.apply(prepared, plan)
    assert [o.name for o in pruned.graph.output] == ["y", "z"]
    assert not {"mm1", "mm2"} & {n.name for n in pruned.graph.node}
    assert compare_to_reference(method.reference(prepared, plan), pruned, tolerance=EXACT).ok
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_allclose(make_session(pruned).run(["y"], {"x": x})[0], x, rtol=0, atol=0)


def test_a_branch_tensor_read_inside_a_subgraph_stays() -> None:
    """h = MatMul(x, W1) is read by an If body: its node must survive, the rest of the branch goes."""
    model = _output_block_model()
    body = lambda name: helper.make_graph([helper.make_node("Identity", [name], [f"o_{name}"])], f"b_{name}", [],
                                          [helper.make_tensor_value_info(f"o_{name}", TensorProto.FLOAT, ["N", 8])])
    model.graph.input.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
    model.graph.node.append(helper.make_node("If", ["c"], ["w"], name="if", then_branch=body("h"), else_branch=body("x")))
    model.graph.output.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, ["N", 8]))
    prepared = prepare(model)
    method = DepthMethod()
    (block,) = method.analyze(prepared).blocks
    assert "mm1" not in block.nodes and "mm2" in block.nodes
    plan = _plan(prepared, [block.id])
    pruned = method.apply(prepared, plan)
    assert "mm1" in {n.name for n in pruned.graph.node}
    assert compare_to_reference(method.reference(prepared, plan), pruned, tolerance=EXACT).ok


def test_plan_round_trips_through_json_and_refuses_other_models() -> None:
    prepared = _prepared("resnet_bottleneck")
    method = DepthMethod()
    analysis = method.analyze(prepared)
    plan = method.plan(prepared, analysis, DepthSettings(count=1))
    again = DepthPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and again.to_dict()["method"] == "depth"
    with pytest.raises(PlanError, match="another model"):
        DepthPlan("0" * 64, plan.removed, "weight").check(analysis, prepared.model_sha256)
    with pytest.raises(PlanError, match="not a removable block"):
        _plan(prepared, ["/blocks/blocks.1/Add"]).check(analysis, prepared.model_sha256)
    with pytest.raises(PlanError):
        DepthPlan.from_dict({"format": "onnxprune.methods.plan"})


def test_weight_fallback_ranks_by_the_norm_of_each_branch_last_weight() -> None:
    prepared = _prepared("mnist_resnet")
    method = DepthMethod()
    analysis = method.analyze(prepared)
    plan = method.plan(prepared, analysis, DepthSettings(ratio=0.5))
    inits = {i.name: numpy_helper.to_array(i) for i in prepared.normalized.graph.initializer}
    nodes = {n.name: n for n in prepared.normalized.graph.node}
    norms = {b.id: float(np.linalg.norm(inits[nodes[b.weights[-1]].input[1]])) for b in analysis.blocks}
    assert plan.criterion == "weight" and len(plan.removed) == 3
    assert set(plan.removed) == set(sorted(norms, key=norms.get)[:3])
    for block, value in norms.items():
        assert plan.scores[block]["weight"] == pytest.approx(value, rel=1e-6)


def test_exclude_leaves_a_block_alone_and_analyze_lists_blocks() -> None:
    prepared = _prepared("mobilenetv2")
    analysis = DepthMethod(exclude=(r".*features\.5/.*",)).analyze(prepared)
    assert [b.id for b in analysis.blocks] == ["/features/features.7/Add"]
    assert any("excluded by --exclude" in j.reason for j in analysis.joins)
    result = cli("analyze", str(MODELS / "mobilenetv2.onnx"), "--json")
    assert result.returncode == 0, result.stderr
    assert [b["id"] for b in json.loads(result.stdout)["depth"]["blocks"]] == ["/features/features.5/Add",
                                                                             "/features/features.7/Add"]


def test_settings_are_checked() -> None:
    with pytest.raises(InputError, match="exactly one"):
        DepthSettings()
    with pytest.raises(InputError, match="only 1 removable"):
        DepthSettings(count=2).how_many(1)
    with pytest.raises(InputError, match="needs calibration"):
        DepthSettings(count=1, criterion="influence").resolved_criterion(False)
    assert DepthSettings(ratio=0.5).how_many(3) == 1


@pytest.fixture(scope="module")
def resnet_calibrated(tmp_path_factory):
    """The trained residual CNN and the first 100 of its 500 calibration digits (keeps the test to seconds)."""
    model = onnx.load(MODELS / "mnist_resnet.onnx")
    data = np.load(MODELS / "mnist_calib.npz")
    path = tmp_path_factory.mktemp("calib") / "calib100.npz"
    np.savez(path, input=data["input"][:100], y=data["y"][:100])
    return model, load_calibration(path, model, 100)


def _accuracy(model: onnx.ModelProto) -> float:
    data = np.load(MODELS / "mnist_test.npz")
    logits = make_session(model).run(None, {"input": data["input"]})[0]
    return float(np.mean(logits.argmax(1) == data["y"]))


def test_calibrated_scores_and_repair_on_the_trained_resnet(resnet_calibrated) -> None:
    """2 of 6 blocks by SLEB on 100 digits; measured on the 1000 test digits: 97.9 % → 74.1 % unrepaired,
    97.2 % repaired (bar: 95 %)."""
    model, calibration = resnet_calibrated
    options = PruneOptions()
    plain, _ = run_depth(model, DepthSettings(count=2), options, calibration, True, None)
    repaired, _ = run_depth(model, None, options, calibration, False, None, plain.plan.to_dict(),
                            recovery=RecoveryOptions("lsq"))
    assert plain.verification.ok and plain.plan.criterion == "output" and plain.plan.removed == repaired.plan.removed
    first = plain.plan.settings["greedy_steps"][0]["block"]
    alone = {b: s["output"] for b, s in plain.plan.scores.items()}
    assert first == min(alone, key=alone.get)  # SLEB's first step: the block whose removal alone changes least
    assert all(0.0 <= s["influence"] <= 2.0 for s in plain.plan.scores.values())
    errors = repaired.repair["calibration_error"]
    assert repaired.repair["status"] == "applied" and errors["repaired"] < 0.5 * errors["removed"]
    assert _accuracy(model) == pytest.approx(0.979, abs=1e-3)
    assert _accuracy(repaired.model) >= 0.95
    assert _accuracy(plain.model) < _accuracy(repaired.model) - 0.1


def test_cli_depth_then_width_verified_and_replayed(tmp_path: pathlib.Path) -> None:
    model, out, again = MODELS / "resnet_bottleneck.onnx", tmp_path / "p.onnx", tmp_path / "q.onnx"
    plan = tmp_path / "plan.json"
    result = cli("prune", str(model), "-o", str(out), "--remove-blocks", "1", "--ratio", "0.3", "--verify",
                 "--save-plan", str(plan), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    depth = report["depth"]
    assert depth["removable"] == 2 and len(depth["removed"]) == 1 and depth["verification"]["ok"]
    assert report["verification"]["ok"] and report["groups"]
    assert any("projection shortcut" in j["reason"] for j in depth["not_removable"])
    assert report["comparison"]["params"]["before"] == count_model(onnx.load(model)).params
    replay = cli("prune", str(model), "-o", str(again), "--plan", str(plan), "--verify")
    assert replay.returncode == 0, replay.stderr
    assert out.read_bytes() == again.read_bytes()
    checked = cli("verify", str(model), str(out), "--plan", str(plan))  # rebuilds the depth stage, then the oracle
    assert checked.returncode == 0 and "passed" in checked.stdout, checked.stderr


def test_cli_flops_target_with_depth_is_met_overall(tmp_path: pathlib.Path) -> None:
    model, out = MODELS / "resnet_bottleneck.onnx", tmp_path / "p.onnx"
    result = cli("prune", str(model), "-o", str(out), "--remove-blocks", "1", "--target-flops", "0.6", "--json")
    assert result.returncode == 0, result.stderr
    budget = json.loads(result.stdout)["depth"]["budget"]
    assert budget["width_target"] == pytest.approx(0.6 / budget["kept_by_depth"], rel=1e-5)
    measured = count_model(onnx.load(out)).macs / count_model(onnx.load(model)).macs
    assert abs(measured - 0.6) <= 0.02, measured


@pytest.mark.parametrize("args, needles", [
    (["--remove-blocks", "2"], ["only 1 removable"]),
    (["--remove-blocks", "1", "--depth-ratio", "0.5"], ["either --depth-ratio", "--remove-blocks"]),
    (["--remove-blocks", "1", "--depth-criterion", "influence"], ["needs calibration"]),
    (["--depth-criterion", "weight"], ["--depth-criterion needs"]),
    (["--remove-blocks", "1", "--target-latency", "0.5"], ["--target-latency", "depth"]),
])
def test_cli_refuses_bad_depth_options(tmp_path: pathlib.Path, args: list[str], needles: list[str]) -> None:
    result = cli("prune", str(MODELS / "resnet_basic.onnx"), "-o", str(tmp_path / "p.onnx"), *args)
    assert_one_line_error(result, 2, *needles)


def test_recipe_prune_step_removes_blocks_and_checks_keys_first(tmp_path: pathlib.Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'version = 1\nmodel = "{(MODELS / "mobilenetv2.onnx").as_posix()}"\n'
                      '[[steps]]\ntype = "prune"\noutput = "p.onnx"\nremove_blocks = 1\nratio = 0.25\nverify = true\n')
    report = tmp_path / "run.json"
    result = cli("run", str(recipe), "--out-dir", str(tmp_path), "--report", str(report))
    assert result.returncode == 0, result.stderr
    step = json.loads(report.read_text())["results"]["steps"][0]["results"]
    assert len(step["depth"]["removed"]) == 1 and step["depth"]["verification"]["ok"] and step["verification"]["ok"]
    recipe.write_text(recipe.read_text().replace("ratio = 0.25", "depth_ratio = 0.5"))
    assert_one_line_error(cli("run", str(recipe), "--out-dir", str(tmp_path)), 2, "'depth_ratio'", "'remove_blocks'")
    assert not (tmp_path / "p2.onnx").exists()
