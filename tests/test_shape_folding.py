"""The probe folds only the constant cone of each round (onnxprune/ir/shape_folding.py): the shapes, the
static axes and the plans it gives must be those of folding the whole graph, as before.

Why these models: each reaches the folding rounds through a different exporter's shape chains -- Swin
windows (eight rounds), Llama's rotary and GQA reshapes, YOLO's anchor grid, PaddlePaddle's Cast-ed
chains, a Transformer encoder with a dynamic sequence.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import MODELS
from onnxprune.io import weights
from onnxprune.io.files import load_model
from onnxprune.ir import shape_folding, shapes
from onnxprune.pipeline import PruneOptions, prune

FOLDED = ["swin_block_dynamic", "llama_tiny_kv", "yolov8_head", "paddle_recognizer", "vit_classifier_dynamic",
          "torch_transformer_encoder_dynamic", "gpt_block_dynamic"]


def _whole_graph(monkeypatch) -> None:
    """Every round folds the whole graph (what the probe did before the cone)."""
    monkeypatch.setattr(shape_folding, "_constant_cone", lambda work, known: None)


@pytest.mark.parametrize("name", FOLDED)
def test_cone_folding_gives_the_whole_graph_shapes_and_static_axes(name: str, monkeypatch) -> None:
    model = load_model(MODELS / f"{name}.onnx", mmap_weights=True)
    cone = shapes.infer_static_shapes(model, symbol_value=None)
    _whole_graph(monkeypatch)
    whole = shapes.infer_static_shapes(model, symbol_value=None)
    assert dict(cone) == dict(whole) and len(cone) > 20
    assert all(cone.static_axes(t) == whole.static_axes(t) for t in whole)
    shared = set(cone.values) & set(whole.values)
    assert shared == set(whole.values)  # every value the whole-graph fold found, with the same contents
    assert all(np.array_equal(cone.values[k], whole.values[k]) for k in shared)


@pytest.mark.parametrize("name", ["swin_block", "llama_tiny"])
def test_cone_folding_makes_the_same_plan_and_model(name: str, monkeypatch) -> None:
    """swin_block is the one model where the cone reports four more static values (Unsqueezes feeding a
    Concat whose only reader is a Shape); the plan and the pruned model are still the same."""
    options = PruneOptions(ratio=0.3)
    cone = prune(load_model(MODELS / f"{name}.onnx", mmap_weights=True), options)
    _whole_graph(monkeypatch)
    whole = prune(load_model(MODELS / f"{name}.onnx", mmap_weights=True), options)
    assert cone.plan.to_dict() == whole.plan.to_dict()
    assert weights.checkable(cone.model).SerializeToString() == weights.checkable(whole.model).SerializeToString()


def test_a_control_flow_node_with_constant_inputs_folds_the_whole_graph() -> None:
    """graphsurgeon inlines an If whose condition folds; the cone leaves such a round to the whole-graph fold."""
    model = onnx.load(MODELS / "if_compute.onnx")
    for node in model.graph.node:
        if node.op_type == "If":
            node.input[0] = "always"
    model.graph.node.insert(0, onnx.helper.make_node(
        "Constant", [], ["always"], value=onnx.numpy_helper.from_array(np.array(True))))
    assert shape_folding._constant_cone(model, {}) is None
    assert shape_folding._constant_cone(onnx.load(MODELS / "if_compute.onnx"), {}) is not None


def test_the_cone_leaves_out_table_lookups_and_large_tensors() -> None:
    """A Gather from a float table and a node whose output exceeds MAX_FOLDED_ELEMENTS stay unfolded, and so
    does what reads them."""
    big = shape_folding.MAX_FOLDED_ELEMENTS + 1
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gather", ["table", "index"], ["row"]),
         onnx.helper.make_node("Relu", ["row"], ["row_relu"]),
         onnx.helper.make_node("ConstantOfShape", ["big_shape"], ["big"]),
         onnx.helper.make_node("Add", ["index", "index"], ["sum"])],
        "g", [], [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("row_relu", "big")]
        + [onnx.helper.make_tensor_value_info("sum", onnx.TensorProto.INT64, None)],
        [onnx.numpy_helper.from_array(np.ones((4, 3), np.float32), "table"),
         onnx.numpy_helper.from_array(np.array([1], np.int64), "index"),
         onnx.numpy_helper.from_array(np.array([big], np.int64), "big_shape")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    assert shape_folding._constant_cone(model, {"big": (big,)}) == [3]  # only the Add
