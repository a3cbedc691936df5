"""``onnxprune.prune(model)`` gives the caller's ModelProto back byte for byte.

graphsurgeon names the unnamed value tensors of Constant nodes in the proto it imports; the API puts
them back after the call, and the plan and pruned model are the ones the pipeline gives a fresh copy.
"""

import onnx
import pytest

import onnxprune
from onnxprune.pipeline import prune as pipeline_prune
from conftest import MODELS


@pytest.mark.parametrize("name", ["bert_encoder_dynamic.onnx", "if_compute.onnx"])
def test_prune_leaves_the_callers_model_unchanged(name: str) -> None:
    model = onnx.load(MODELS / name)
    before = model.SerializeToString()
    assert any(node.op_type == "Constant" for node in model.graph.node)  # the case that used to change
    result = onnxprune.prune(model, onnxprune.PruneOptions(ratio=0.3))
    assert model.SerializeToString() == before
    reference = pipeline_prune(onnx.load(MODELS / name), onnxprune.PruneOptions(ratio=0.3))
    assert result.plan.to_dict() == reference.plan.to_dict()
    assert result.model.SerializeToString() == reference.model.SerializeToString()

