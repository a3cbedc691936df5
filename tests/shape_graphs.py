"""Hand-built graphs (onnx.helper) with the run-time shape chains real exporters write.

Why: the promise is a correct model at every input shape the original accepts.  These graphs carry
symbolic dims whose values reach Reshape targets through chains a probe value must never leak into:

* :func:`paddle_attention` — PaddlePaddle's recognizer attention: the sequence length of a stride-2
  Conv output (not a multiple of the input width) is read with ``Cast(Shape, INT32) → Slice → Cast``
  and concatenated with constant head pieces into the QKV and merge Reshape targets.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def paddle_attention(hidden: int = 24, heads: int = 3, ffn: int = 48, classes: int = 11,
                     seed: int = 0) -> onnx.ModelProto:
    """``x[N, 4, 1, W]`` (W unnamed) → strided Conv → sequence ``[N, T, hidden]`` → fused-QKV attention
    with Paddle's Cast-ed run-time Reshape targets → FFN → ``[N, T, classes]``."""
    rng = np.random.default_rng(seed)
    head_dim = hidden // heads
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(name: str, x: str, fan_in: int, fan_out: int) -> str:
        w = const(f"{name}.w", (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32))
        b = const(f"{name}.b", (0.1 * rng.standard_normal(fan_out)).astype(np.float32))
        return node("Add", [node("MatMul", [x, w], f"{name}.mm"), b], f"{name}.out")

    def paddle_target(name: str, source: str, tail: list[int]) -> str:
        """``Concat(Cast(0), Cast(Slice(Cast(Shape(source), INT32), 1, 2), INT64), *tail)``."""
        shape32 = node("Cast", [node("Shape", [source], f"{name}.shape")], f"{name}.shape32", to=TensorProto.INT32)
        seq32 = node("Slice", [shape32, const(f"{name}.s", np.array([1], np.int64)),
                               const(f"{name}.e", np.array([2], np.int64)),
                               const(f"{name}.a", np.array([0], np.int64))], f"{name}.seq32")
        seq = node("Cast", [seq32], f"{name}.seq", to=TensorProto.INT64)
        zero = node("Cast", [const(f"{name}.zero32", np.array([0], np.int32))], f"{name}.zero", to=TensorProto.INT64)
        return node("Concat", [zero, seq, const(f"{name}.tail", np.array(tail, np.int64))], f"{name}.target", axis=0)

    conv_w = const("conv.w", (rng.standard_normal((hidden, 4, 1, 3)) / np.sqrt(12)).astype(np.float32))
    conv = node("Conv", ["x", conv_w, const("conv.b", np.zeros(hidden, np.float32))], "conv.out",
                kernel_shape=[1, 3], strides=[1, 2], pads=[0, 1, 0, 1])
    seq = node("Squeeze", [node("Relu", [conv], "conv.relu"), const("ax2", np.array([2], np.int64))], "conv.seq")
    h = node("Transpose", [seq], "h", perm=[0, 2, 1])
    qkv = linear("qkv", h, hidden, 3 * hidden)
    split = node("Reshape", [qkv, paddle_target("qkv_t", h, [3, heads, head_dim])], "qkv.split")
    stacked = node("Transpose", [split], "qkv.stack", perm=[2, 0, 3, 1, 4])
    q, k, v = (node("Gather", [stacked, const(f"i{i}", np.array(i, np.int64))], f"{n}.heads", axis=0)
               for i, n in enumerate("qkv"))
    kt = node("Transpose", [k], "k.t", perm=[0, 1, 3, 2])
    scores = node("Mul", [node("MatMul", [q, kt], "scores"), const("scale", np.array(head_dim ** -0.5, np.float32))],
                  "scaled")
    context = node("MatMul", [node("Softmax", [scores], "probs", axis=-1), v], "context")
    merged = node("Reshape", [node("Transpose", [context], "context.t", perm=[0, 2, 1, 3]),
                              paddle_target("merge_t", h, [hidden])], "merged")
    attn = linear("proj", merged, hidden, hidden)
    gamma = const("ln.g", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
    beta = const("ln.b", (0.1 * rng.standard_normal(hidden)).astype(np.float32))
    normed = node("LayerNormalization", [node("Add", [h, attn], "res"), gamma, beta], "ln", axis=-1)
    up = node("Relu", [linear("ffn_up", normed, hidden, ffn)], "ffn.relu")
    logits = linear("head", up, ffn, classes)
    node("Softmax", [logits], "y", axis=-1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 1, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None, classes])
    graph = helper.make_graph(nodes, "paddle_attention", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def chunked_conv(channels: int = 16, seed: int = 0) -> onnx.ModelProto:
    """A C2f-style ``chunk(2, dim=1)`` with bounds computed from ``Shape``, as torch exports it.

    ``x[N, 4, H, W]`` → Conv ``cv1`` (→ ``channels``) → ``Slice(0, C/2)`` and ``Slice(C/2, C)`` with
    ``C/2 = Shape(cv1)[1] / 2`` → Conv on the second half → Concat of both halves and the conv → Conv.
    """
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    half = channels // 2

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def conv(name: str, x: str, c_in: int, c_out: int) -> str:
        w = const(f"{name}.w", (rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(np.float32))
        b = const(f"{name}.b", (0.1 * rng.standard_normal(c_out)).astype(np.float32))
        nodes.append(helper.make_node("Conv", [x, w, b], [f"{name}.conv"], name=name, pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"{name}.conv"], [f"{name}.out"], name=f"{name}.relu"))
        return f"{name}.out"

    y = conv("cv1", "x", 4, channels)
    nodes += [helper.make_node("Shape", [y], ["cv1.shape"], name="chunk.shape"),
              helper.make_node("Gather", ["cv1.shape", const("one", np.array(1, np.int64))], ["c"], axis=0,
                               name="chunk.c"),
              helper.make_node("Div", ["c", const("two", np.array(2, np.int64))], ["c2"], name="chunk.half"),
              helper.make_node("Unsqueeze", ["c2", const("ax0", np.array([0], np.int64))], ["c2v"], name="chunk.v"),
              helper.make_node("Mul", ["c2v", const("k2", np.array([2], np.int64))], ["cv"], name="chunk.end"),
              helper.make_node("Slice", [y, const("z", np.array([0], np.int64)), "c2v", const("a1", np.array([1], np.int64))],
                               ["first"], name="chunk.first"),
              helper.make_node("Slice", [y, "c2v", "cv", const("a1b", np.array([1], np.int64))], ["second"],
                               name="chunk.second")]
    inner = conv("m", "second", half, half)
    nodes.append(helper.make_node("Concat", ["first", "second", inner], ["cat"], axis=1, name="cat"))
    out = conv("cv2", "cat", 3 * half, 8)
    nodes.append(helper.make_node("Identity", [out], ["y"], name="out"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "H", "W"])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, "H", "W"])
    model = helper.make_model(helper.make_graph(nodes, "chunked_conv", [x], [y_info], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
