"""Hand-built transformer blocks (onnx.helper) for head and FFN pruning tests.

``encoder_block`` mirrors what PyTorch exports for a BERT layer: Q/K/V as MatMul with a ``[in, out]``
weight plus bias Add, head split ``Reshape [0, 0, H, D]`` + Transpose, scores ``Q·Kᵀ`` scaled by
``1/√D``, an additive mask, Softmax, context ``P·V``, merge ``Transpose + Reshape [0, 0, H·D]``,
output projection, residual + LayerNormalization, Erf-GELU FFN, residual + LayerNormalization.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def encoder_block(hidden: int = 16, heads: int = 4, ffn: int = 24, causal: bool = False, seed: int = 0,
                  runtime_shapes: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    head_dim = hidden // heads
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def linear(name: str, x: str, fan_in: int, fan_out: int) -> str:
        w = const(f"{name}.weight", (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32))
        b = const(f"{name}.bias", (0.1 * rng.standard_normal(fan_out)).astype(np.float32))
        nodes.append(helper.make_node("MatMul", [x, w], [f"{name}.mm"], name=f"{name}/MatMul"))
        nodes.append(helper.make_node("Add", [f"{name}.mm", b], [f"{name}.out"], name=f"{name}/Add"))
        return f"{name}.out"

    def split_heads(name: str, x: str, perm: list[int]) -> str:
        if runtime_shapes:
            target = _runtime_target(nodes, const, x, name, [heads, head_dim])
        else:
            target = const(f"{name}.shape", np.array([0, 0, heads, head_dim], np.int64))
        nodes.append(helper.make_node("Reshape", [x, target], [f"{name}.split"], name=f"{name}/Reshape"))
        nodes.append(helper.make_node("Transpose", [f"{name}.split"], [f"{name}.heads"], perm=perm,
                                      name=f"{name}/Transpose"))
        return f"{name}.heads"

    q = split_heads("q", linear("q", "x", hidden, hidden), [0, 2, 1, 3])
    k = split_heads("k", linear("k", "x", hidden, hidden), [0, 2, 3, 1])
    v = split_heads("v", linear("v", "x", hidden, hidden), [0, 2, 1, 3])
    scale = const("scale", np.array(1.0 / np.sqrt(head_dim), np.float32))
    nodes += [helper.make_node("MatMul", [q, k], ["scores"], name="attn/QK"),
              helper.make_node("Mul", ["scores", scale], ["scaled"], name="attn/scale")]
    if causal:
        mask = np.triu(np.full((8, 8), -1e4, np.float32), k=1)
        const("causal", mask)
        nodes += [helper.make_node("Shape", ["x"], ["x.shape"], name="attn/Shape"),
                  helper.make_node("Gather", ["x.shape", const("one", np.array([1], np.int64))], ["seq"], axis=0,
                                   name="attn/seq"),
                  helper.make_node("Concat", ["seq", "seq"], ["seq2"], axis=0, name="attn/seq2"),
                  helper.make_node("Slice", ["causal", const("zero2", np.array([0, 0], np.int64)),
                                             "seq2", const("axes01", np.array([0, 1], np.int64))], ["cmask"],
                                   name="attn/mask_slice"),
                  helper.make_node("Add", ["scaled", "cmask"], ["masked"], name="attn/mask")]
    else:
        nodes += [helper.make_node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT, name="attn/mask_cast"),
                  helper.make_node("Sub", [const("one_f", np.array(1.0, np.float32)), "mask_f"], ["inv"],
                                   name="attn/inv"),
                  helper.make_node("Mul", ["inv", const("neg", np.array(-1e4, np.float32))], ["bias4"],
                                   name="attn/neg"),
                  helper.make_node("Unsqueeze", ["bias4", const("ax12", np.array([1, 2], np.int64))], ["mask4"],
                                   name="attn/unsq"),
                  helper.make_node("Add", ["scaled", "mask4"], ["masked"], name="attn/mask")]
    nodes += [helper.make_node("Softmax", ["masked"], ["probs"], axis=-1, name="attn/Softmax"),
              helper.make_node("MatMul", ["probs", v], ["context"], name="attn/PV"),
              helper.make_node("Transpose", ["context"], ["context_t"], perm=[0, 2, 1, 3], name="attn/merge_t")]
    if runtime_shapes:
        merge = _runtime_target(nodes, const, "x", "merge", [hidden])
    else:
        merge = const("merge.shape", np.array([0, 0, hidden], np.int64))
    nodes.append(helper.make_node("Reshape", ["context_t", merge], ["merged"], name="attn/merge"))
    attn = linear("o", "merged", hidden, hidden)
    h1 = _residual_norm(nodes, const, "x", attn, "ln1", hidden)
    up = linear("ffn_up", h1, hidden, ffn)
    nodes += [helper.make_node("Div", [up, const("sqrt2", np.array(np.sqrt(2.0), np.float32))], ["g.div"], name="gelu/Div"),
              helper.make_node("Erf", ["g.div"], ["g.erf"], name="gelu/Erf"),
              helper.make_node("Add", ["g.erf", const("one_g", np.array(1.0, np.float32))], ["g.add"], name="gelu/Add"),
              helper.make_node("Mul", [up, "g.add"], ["g.mul"], name="gelu/Mul"),
              helper.make_node("Mul", ["g.mul", const("half", np.array(0.5, np.float32))], ["gelu"], name="gelu/Half")]
    down = linear("ffn_down", "gelu", ffn, hidden)
    out = _residual_norm(nodes, const, h1, down, "ln2", hidden)
    nodes.append(helper.make_node("Identity", [out], ["y"], name="out"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", hidden])]
    if not causal:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", "S"]))
    graph = helper.make_graph(nodes, "encoder", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                       ["N", "S", hidden])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _residual_norm(nodes, const, x: str, y: str, name: str, hidden: int) -> str:
    nodes.append(helper.make_node("Add", [x, y], [f"{name}.res"], name=f"{name}/res"))
    gamma = const(f"{name}.gamma", np.ones(hidden, np.float32))
    beta = const(f"{name}.beta", np.zeros(hidden, np.float32))
    nodes.append(helper.make_node("LayerNormalization", [f"{name}.res", gamma, beta], [f"{name}.out"], axis=-1,
                                  name=f"{name}/LN"))
    return f"{name}.out"


def _runtime_target(nodes, const, x: str, name: str, tail: list[int]) -> str:
    """``Concat(Shape(x)[0], Shape(x)[1], *tail)`` — how dynamic exports build Reshape targets."""
    nodes += [helper.make_node("Shape", [x], [f"{name}.xs"], name=f"{name}/Shape"),
              helper.make_node("Gather", [f"{name}.xs", const(f"{name}.i0", np.array([0], np.int64))],
                               [f"{name}.b"], axis=0, name=f"{name}/Gather0"),
              helper.make_node("Gather", [f"{name}.xs", const(f"{name}.i1", np.array([1], np.int64))],
                               [f"{name}.s"], axis=0, name=f"{name}/Gather1"),
              helper.make_node("Concat", [f"{name}.b", f"{name}.s", const(f"{name}.tail", np.array(tail, np.int64))],
                               [f"{name}.target"], axis=0, name=f"{name}/Concat")]
    return f"{name}.target"
