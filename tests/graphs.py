"""Small ``onnx.helper`` model builders shared by the rule and property tests.

Why a module: every rule test needs the same scaffolding — a dynamic batch input, seeded conv/gemm
weights with predictable names, a ``Conv → GlobalAveragePool → Flatten → Gemm`` head — and the
property test composes the same blocks at random.  Names are deterministic so a test can look up the
weights and shape constants a rewrite must have edited:

* node ``<name>`` has weight ``<name>_W`` and bias ``<name>_B``, output ``<name>_out``;
* constants made by :meth:`G.const` are initializers named as given.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_FOR_OPSET = {9: 4, 11: 6, 13: 7, 17: 8, 18: 8, 20: 9}
FLOAT = TensorProto.FLOAT


class G:
    """Graph under construction: nodes in insertion order, initializers, one or more inputs/outputs."""

    def __init__(self, opset: int = 17, seed: int = 0) -> None:
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.domains: dict[str, int] = {}
        self._count = 0

    # -- names, inputs, constants -----------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def input(self, name: str = "x", shape: Sequence = ("N", 4, 8, 8), dtype: int = FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        return name

    def output(self, name: str, dtype: int = FLOAT, shape: list | None = None) -> str:
        """A graph output; without ``shape`` (filled by shape inference where it can run) the rank is unknown."""
        self.outputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def const(self, value, name: str | None = None, dtype=np.float32) -> str:
        name = name or self.fresh("k")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, values: Sequence[int], name: str | None = None) -> str:
        return self.const(np.asarray(values, dtype=np.int64), name, dtype=np.int64)

    def randn(self, shape: Sequence[int], scale: float | None = None) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        std = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return (self.rng.standard_normal(list(shape)) * std).astype(np.float32)

    # -- nodes -------------------------------------------------------------------------------------

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, name: str | None = None, domain: str = "",
             outputs: Sequence[str] | None = None, **attrs) -> str | list[str]:
        name = name or self.fresh(op.lower() + "_")
        outs = list(outputs) if outputs is not None else (
            [f"{name}_out"] if n_out == 1 else [f"{name}_out{i}" for i in range(n_out)])
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, domain=domain or None, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def conv(self, x: str, cin: int, cout: int, k: int = 3, group: int = 1, name: str | None = None,
             bias: bool = True, **attrs) -> str:
        """``Conv`` with 'same' padding for odd ``k`` (override with ``pads=``)."""
        name = name or self.fresh("conv")
        w = self.const(self.randn((cout, cin // group, k, k)), f"{name}_W")
        ins = [x, w] + ([self.const(self.randn((cout,), 0.1), f"{name}_B")] if bias else [])
        attrs.setdefault("pads", [k // 2] * 4)
        return self.node("Conv", ins, name=name, kernel_shape=[k, k], group=group, **attrs)

    def conv_t(self, x: str, cin: int, cout: int, k: int = 2, group: int = 1, name: str | None = None,
               strides: Sequence[int] = (2, 2)) -> str:
        """``ConvTranspose`` (weight ``[Cin, Cout/g, k, k]``)."""
        name = name or self.fresh("convt")
        w = self.const(self.randn((cin, cout // group, k, k), 1.0 / np.sqrt(cin // group * k * k)), f"{name}_W")
        b = self.const(self.randn((cout,), 0.1), f"{name}_B")
        return self.node("ConvTranspose", [x, w, b], name=name, kernel_shape=[k, k], group=group,
                         strides=list(strides))

    def gemm(self, x: str, k: int, n: int, name: str | None = None, trans_b: int = 1) -> str:
        name = name or self.fresh("gemm")
        w = self.randn((n, k)) if trans_b else self.randn((n, k)).T.copy()
        ins = [x, self.const(w, f"{name}_W"), self.const(self.randn((n,), 0.1), f"{name}_B")]
        return self.node("Gemm", ins, name=name, transB=trans_b)

    def matmul(self, x: str, k: int, n: int, name: str | None = None) -> str:
        name = name or self.fresh("matmul")
        return self.node("MatMul", [x, self.const(self.randn((k, n), 1.0 / np.sqrt(k)), f"{name}_W")], name=name)

    def bn(self, x: str, c: int, name: str | None = None) -> str:
        name = name or self.fresh("bn")
        ins = [x, self.const(1.0 + self.randn((c,), 0.3), f"{name}_scale"),
               self.const(self.randn((c,), 0.1), f"{name}_bias"), self.const(self.randn((c,), 0.1), f"{name}_mean"),
               self.const(0.5 + np.abs(self.randn((c,), 0.3)), f"{name}_var")]
        return self.node("BatchNormalization", ins, name=name)

    def head(self, x: str, cin: int, out: str = "y", name: str = "c1", width: int = 6) -> str:
        """``Conv(width) → GlobalAveragePool → Flatten → Gemm(5)``: the tail of most rule cases."""
        h = self.conv(x, cin, width, name=name)
        h = self.node("GlobalAveragePool", [h], name=f"{name}_gap")
        h = self.node("Flatten", [h], name=f"{name}_flat", axis=1)
        return self.gemm_out(h, width, out)

    def gemm_out(self, x: str, k: int, out: str = "y", n: int = 5) -> str:
        """A final ``Gemm`` writing the graph output ``out``."""
        ins = [x, self.const(self.randn((n, k)), "head_W"), self.const(self.randn((n,), 0.1), "head_B")]
        self.node("Gemm", ins, name="head", outputs=[out], transB=1)
        return self.output(out)

    # -- model -------------------------------------------------------------------------------------

    def model(self, check: bool = True) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "g", self.inputs, self.outputs, initializer=self.inits)
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, v) for d, v in self.domains.items()]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="onnxprune-tests",
                                  ir_version=IR_FOR_OPSET[self.opset])
        if not self.domains:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # fills the output shapes
            del model.graph.value_info[:]
        if check:
            onnx.checker.check_model(model, full_check=not self.domains)
        return model


def chain(body, opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """The standard rule case: ``x[N,4,8,8] → Conv c0 (8 out) → body → head``.

    ``body(g, t)`` adds the nodes under test after ``t`` (``c0_out``) and returns the tensor to feed
    the head, or ``(tensor, channels)`` when the channel count is not 8 any more.
    """
    g = G(opset, seed)
    t = g.conv(g.input(), 4, 8, name="c0")
    result = body(g, t)
    tensor, channels = result if isinstance(result, tuple) else (result, 8)
    g.head(tensor, channels)
    return g.model()


def contrib_mlp(value_info: dict[str, list] | None = None, op: str = "BiasGelu") -> onnx.ModelProto:
    """x[N,16] → MatMul 'up' → com.microsoft ``op`` (BiasGelu(h, b1), or a unary op) → MatMul 'down' → Relu →
    MatMul 'head'; ``value_info`` adds claimed shapes (for the shape probe's custom-op fallback)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w3")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
             helper.make_node(op, ["h", "b1"] if op == "BiasGelu" else ["h"], ["g"], name="fused_gelu",
                              domain="com.microsoft"),
             helper.make_node("MatMul", ["g", "w2"], ["d"], name="down"),
             helper.make_node("Relu", ["d"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w3"], ["y"], name="head")]
    infos = [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name, dims in (value_info or {}).items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], initializer=inits,
                              value_info=infos)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
