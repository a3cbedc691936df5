"""Generate test models written directly with ``onnx.helper`` (no framework needed).

Run from the repository root:  python models/generate_helper_models.py

These cover graph forms that PyTorch rarely or never emits: weights held in
``Constant`` nodes or computed by constant subgraphs, initializers shared by
several nodes, and an op zoo (Sum, Max/Min with constants, Dropout, Cast,
Slice/Split on channels, GlobalMaxPool, ReduceMax, ...). Weights are random
with a fixed seed. IR version 8 (opset 17) / 9 (opset 20) keeps the files
loadable by older onnxruntime releases.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import _common as C

GENERATOR = "generate_helper_models.py"
EXPORTER = f"onnx.helper (onnx {onnx.__version__})"
IR_FOR_OPSET = {17: 8, 20: 9}


class Builder:
    """Tiny graph builder: seeded weights, unique names, nodes in insertion order."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def weight(self, shape: Sequence[int], scale: float | None = None) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        std = scale if scale is not None else float(np.sqrt(2.0 / fan_in))
        return (self.rng.standard_normal(shape) * std).astype(np.float32)

    def init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, **attrs: object) -> list[str]:
        base = self.name(op.lower())
        outs = [base] if n_out == 1 else [f"{base}_o{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=base, **attrs))
        return outs

    def op(self, op: str, inputs: Sequence[str], **attrs: object) -> str:
        return self.node(op, inputs, **attrs)[0]

    def const(self, value: np.ndarray, prefix: str = "const") -> str:
        """A ``Constant`` node (not an initializer) holding ``value``."""
        out = self.name(prefix)
        tensor = numpy_helper.from_array(np.asarray(value), out + "_value")
        self.nodes.append(helper.make_node("Constant", [], [out], name=out + "_node", value=tensor))
        return out

    def model(self, graph_name: str, inputs: dict[str, list], outputs: dict[str, list], opset: int) -> onnx.ModelProto:
        vin = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()]
        vout = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()]
        graph = helper.make_graph(self.nodes, graph_name, vin, vout, initializer=self.inits)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", opset)],
            producer_name="onnxprune-models",
            ir_version=IR_FOR_OPSET[opset],
        )
        return model


def rename_output(b: Builder, tensor: str, new: str) -> None:
    """Rename the producer output ``tensor`` to ``new`` (the graph output name)."""
    for n in b.nodes:
        for i, o in enumerate(n.output):
            if o == tensor:
                n.output[i] = new


# --------------------------------------------------------------------------- 13


def constant_weights() -> onnx.ModelProto:
    """Conv net whose weights live in Constant nodes, Identity chains and constant subgraphs."""
    b = Builder(seed=13)
    # conv1: weight and bias are plain Constant nodes.
    w1, b1 = b.const(b.weight([8, 3, 3, 3]), "w1"), b.const(b.weight([8], 0.1), "b1")
    x = b.op("Relu", [b.op("Conv", ["input", w1, b1], pads=[1, 1, 1, 1])])
    # conv2: weight behind Constant -> Identity -> Identity; bias = ConstantOfShape([8], 1.0) * Constant.
    w2 = b.op("Identity", [b.op("Identity", [b.const(b.weight([8, 8, 3, 3]), "w2")])])
    ones = b.op("ConstantOfShape", [b.const(np.array([8], np.int64), "b2_shape")],
                value=numpy_helper.from_array(np.array([1.0], np.float32)))  # fmt: skip
    b2 = b.op("Mul", [ones, b.const(b.weight([8], 0.1), "b2_scale")])
    x = b.op("Relu", [b.op("Conv", [x, w2, b2], pads=[1, 1, 1, 1])])
    # conv3 (1x1, 8 -> 16): weight = Reshape(flat Constant, Constant shape).
    w3_flat = b.const(b.weight([16, 8, 1, 1]).reshape(-1), "w3_flat")
    w3 = b.op("Reshape", [w3_flat, b.const(np.array([16, 8, 1, 1], np.int64), "w3_shape")])
    x = b.op("Relu", [b.op("Conv", [x, w3, b.const(b.weight([16], 0.1), "b3")])])
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    wf, bf = b.const(b.weight([10, 16]), "wfc"), b.const(b.weight([10], 0.1), "bfc")
    rename_output(b, b.op("Gemm", [x, wf, bf], transB=1), "output")
    return b.model("constant_weights", {"input": ["N", 3, 16, 16]}, {"output": ["N", 10]}, 17)


# --------------------------------------------------------------------------- 14


def shared_initializers() -> onnx.ModelProto:
    """Two Convs share weight+bias initializers; two Gemms share weight+bias initializers."""
    b = Builder(seed=14)
    w0, b0 = b.init("conv0.weight", b.weight([8, 3, 3, 3])), b.init("conv0.bias", b.weight([8], 0.1))
    ws, bs = b.init("shared_conv.weight", b.weight([8, 8, 3, 3])), b.init("shared.bias", b.weight([8], 0.1))
    x = b.op("Relu", [b.op("Conv", ["input", w0, b0], pads=[1, 1, 1, 1])])
    branch_a = b.op("Conv", [x, ws, bs], pads=[1, 1, 1, 1])
    branch_b = b.op("Conv", [b.op("Sigmoid", [x]), ws, bs], pads=[1, 1, 1, 1])
    x = b.op("Relu", [b.op("Add", [branch_a, branch_b])])
    w2, b2 = b.init("conv2.weight", b.weight([16, 8, 3, 3])), b.init("conv2.bias", b.weight([16], 0.1))
    x = b.op("Relu", [b.op("Conv", [x, w2, b2], pads=[1, 1, 1, 1], strides=[2, 2])])
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    wfs, bfs = b.init("shared_fc.weight", b.weight([16, 16])), b.init("shared_fc.bias", b.weight([16], 0.1))
    x = b.op("Relu", [b.op("Gemm", [x, wfs, bfs], transB=1)])
    x = b.op("Relu", [b.op("Gemm", [x, wfs, bfs], transB=1)])
    wh, bh = b.init("head.weight", b.weight([10, 16])), b.init("head.bias", b.weight([10], 0.1))
    rename_output(b, b.op("Gemm", [x, wh, bh], transB=1), "output")
    return b.model("shared_initializers", {"input": ["N", 3, 16, 16]}, {"output": ["N", 10]}, 17)


# --------------------------------------------------------------------------- 16


def op_zoo_helper() -> onnx.ModelProto:
    """Ops PyTorch rarely emits, each between Convs so channels stay prunable."""
    b = Builder(seed=16)
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    chan = lambda lo, hi: np.linspace(lo, hi, 16, dtype=np.float32).reshape(16, 1, 1)  # noqa: E731

    def conv(x: str, cout: int, cin: int, k: int, **attrs: object) -> str:
        w = b.init(b.name("conv_w"), b.weight([cout, cin, k, k]))
        return b.op("Conv", [x, w, b.init(b.name("conv_b"), b.weight([cout], 0.1))], **attrs)

    c0 = conv("input", 16, 3, 3, pads=[1, 1, 1, 1])  # [N,16,16,16]
    s = b.op("Sum", [b.op("Relu", [c0]), b.op("Sigmoid", [c0]), c0])  # Sum of three variables
    s = b.op("Min", [b.op("Max", [s, b.init("max_c", chan(-0.5, 0.0))]), b.init("min_c", chan(1.0, 3.0))])
    s = b.op("Dropout", [s])  # inference: identity
    s = b.op("Identity", [b.op("Cast", [b.op("Cast", [s], to=TensorProto.FLOAT16)], to=TensorProto.FLOAT)])
    bn = [b.init(f"bn.{k}", v) for k, v in (("scale", 0.5 + b.rng.random(16, np.float32)),
                                             ("bias", b.weight([16], 0.1)),
                                             ("mean", b.weight([16], 0.1)),
                                             ("var", 0.5 + b.rng.random(16, np.float32)))]  # fmt: skip
    s = b.op("BatchNormalization", [s, *bn], epsilon=1e-5)
    c1 = conv(s, 16, 16, 1)  # [N,16,16,16]
    sl = b.op("Slice", [c1, b.init("slice_starts", i64(2)), b.init("slice_ends", i64(10)),
                        b.init("slice_axes", i64(1))])  # fmt: skip  # channels 2..9
    sp0, sp1 = b.node("Split", [c1, b.init("split_sizes", i64(4, 12))], n_out=2, axis=1)
    cat = b.op("Concat", [b.op("Softplus", [sl]), b.op("Selu", [sp0]), b.op("Elu", [sp1], alpha=0.5)], axis=1)
    pad = b.op("Pad", [cat, b.init("pads", i64(0, 0, 1, 1, 0, 0, 1, 1)), b.init("pad_value", np.array(0.0, np.float32))],
               mode="constant")  # fmt: skip  # [N,24,18,18]
    inn = b.op("InstanceNormalization", [pad, b.init("in.scale", 0.5 + b.rng.random(24, np.float32)),
                                         b.init("in.bias", b.weight([24], 0.1))], epsilon=1e-5)  # fmt: skip
    c2 = conv(inn, 16, 24, 3)  # valid conv -> [N,16,16,16]
    q = b.op("Squeeze", [b.op("Unsqueeze", [c2, b.init("unsq_axes", i64(2))]), b.init("sq_axes", i64(2))])
    r = b.op("Resize", [q, "", b.init("resize_scales", np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    gate = b.op("Sigmoid", [b.op("Add", [b.op("GlobalMaxPool", [r]), b.op("ReduceMax", [r], axes=[2, 3], keepdims=1)])])
    y = b.op("Relu", [conv(b.op("Mul", [r, gate]), 8, 16, 3, pads=[1, 1, 1, 1], strides=[2, 2])])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1)
    wf, bf = b.init("fc.weight", b.weight([10, 8])), b.init("fc.bias", b.weight([10], 0.1))
    rename_output(b, b.op("Gemm", [y, wf, bf], transB=1), "output")
    return b.model("op_zoo_helper", {"input": ["N", 3, 16, 16]}, {"output": ["N", 10]}, 17)


def gelu_op20() -> onnx.ModelProto:
    """Opset-20 Gelu op (both approximate='none' and 'tanh') between Convs."""
    b = Builder(seed=20)

    def conv(x: str, cout: int, cin: int) -> str:
        w = b.init(b.name("conv_w"), b.weight([cout, cin, 3, 3]))
        return b.op("Conv", [x, w, b.init(b.name("conv_b"), b.weight([cout], 0.1))], pads=[1, 1, 1, 1])

    x = b.op("Gelu", [conv("input", 8, 3)], approximate="none")
    x = b.op("Gelu", [conv(x, 8, 8)], approximate="tanh")
    rename_output(b, conv(x, 4, 8), "output")
    return b.model("gelu_op20", {"input": ["N", 3, 16, 16]}, {"output": ["N", 4, 16, 16]}, 20)


SPECS = (
    ("constant_weights", constant_weights,
     "All weights/biases in Constant nodes (no initializers): conv1 W,B Constant; conv2 W = Constant->"
     "Identity->Identity, B = ConstantOfShape([8],1.0)*Constant; conv3 1x1 W = Reshape(flat Constant, "
     "Constant shape); GlobalAveragePool->Flatten->Gemm(transB=1) with Constant W,B."),
    ("shared_initializers", shared_initializers,
     "Initializer sharing: two Convs (branches on Relu(x) and Sigmoid(x), joined by Add) use the same "
     "weight 'shared_conv.weight' and bias 'shared.bias'; two chained Gemms use the same [16,16] weight "
     "'shared_fc.weight' and bias 'shared_fc.bias' (input dim of one couples to output dim of the other)."),
    ("op_zoo_helper", op_zoo_helper,
     "Op zoo: Sum of three variables, Max/Min with [C,1,1] constants, Dropout (inference), Cast "
     "float->float16->float, Identity, BatchNormalization, Slice on channels (starts/ends/axes initializers), "
     "Split with sizes [4,12] on channels, Softplus/Selu/Elu, Concat, Pad (constant pads on H,W), "
     "InstanceNormalization, Unsqueeze/Squeeze, Resize (scales, nearest, empty roi), GlobalMaxPool + "
     "ReduceMax(axes 2,3) gate with Add/Sigmoid/Mul, Conv consumers, GlobalAveragePool->Flatten->Gemm."),
    ("gelu_op20", gelu_op20,
     "Opset 20 Gelu op (approximate='none' and 'tanh') between 3x3 Convs; output is a 4-channel map."),
)  # fmt: skip


def main() -> None:
    entries = []
    for name, build, exercises in SPECS:
        path = C.save_model(build(), name, doc=exercises, generator=GENERATOR)
        hist = C.verify(path)
        C.report(name, path, hist)
        entries.append(C.manifest_entry(name, path, source="onnx.helper", exporter=EXPORTER,
                                        exercises=exercises, generator=GENERATOR, frameworks=()))  # fmt: skip
    C.update_manifest(entries)


if __name__ == "__main__":
    main()
