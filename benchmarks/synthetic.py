"""The shared builder of the synthetic benchmark CNNs (``resnet50.py``, ``mobilenetv2.py``).

Why one builder: both generators write He-normal convolutions with a small bias, a Gemm classifier and
the same graph boilerplate; a fix to any of these (initialization, naming, the checked IR version)
must reach both models the benchmarks compare.  The random stream is consumed in a fixed order, so a
model is deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class ConvNetBuilder:
    """Accumulates nodes and initializers of a CNN on input ``input`` [N, 3, 224, 224]; names are unique by
    construction (each layer names its outputs ``<name>_out``)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def conv(self, x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1,
             scale: float = 1.0) -> str:
        """Conv k×k (same padding) with a He-normal weight scaled by ``scale`` and a small random bias."""
        fan_in = cin // group * k * k
        weight = self.rng.standard_normal((cout, cin // group, k, k), dtype=np.float32) \
            * np.float32(scale * np.sqrt(2.0 / fan_in))
        bias = self.rng.standard_normal(cout, dtype=np.float32) * np.float32(0.01)
        self.inits += [numpy_helper.from_array(weight, f"{name}.weight"), numpy_helper.from_array(bias, f"{name}.bias")]
        grouping = {"group": group} if group != 1 else {}
        return self.op("Conv", [x, f"{name}.weight", f"{name}.bias"], name, kernel_shape=[k, k],
                       strides=[stride, stride], pads=[k // 2] * 4, **grouping)

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def classifier(self, x: str, name: str, cin: int, classes: int) -> str:
        """Gemm ``cin → classes`` (transB, weight std √(1/cin), zero bias) writing the graph output ``output``."""
        weight = self.rng.standard_normal((classes, cin), dtype=np.float32) * np.float32(np.sqrt(1.0 / cin))
        self.inits += [numpy_helper.from_array(weight, f"{name}.weight"),
                       numpy_helper.from_array(np.zeros(classes, np.float32), f"{name}.bias")]
        self.nodes.append(helper.make_node("Gemm", [x, f"{name}.weight", f"{name}.bias"], ["output"], name=name,
                                           transB=1))
        return "output"

    def model(self, graph_name: str, classes: int) -> onnx.ModelProto:
        """The checked model (opset 17, IR 8, symbolic batch ``N``)."""
        graph = helper.make_graph(
            self.nodes, graph_name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", classes])],
            initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="onnxprune-benchmarks")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model
