"""Generate models that reproduce how third-party exporters write shape computations.

Run from the repository root:  python models/generate_shape_models.py

Needs torch 2.13.0 (CPU) for the torch-exported files; the ``onnx.helper``
ones need only onnx. Each file reproduces a pattern that a real exporter
writes and that a shape analysis has to see through: run-time Reshape targets
built from ``Shape`` with int32 round trips (Paddle2ONNX), anchors built from
feature-map shapes (Ultralytics YOLOv8), Roll/Pad/window partition chains
(Swin), LSTM initial states whose size is read from a weight's ``Shape``
(tf2onnx), compute inside ``If`` branches (Silero-VAD-like), and a KV-cache
decoder with a run-time causal mask (Llama-like).

Every file is full-checked and run in onnxruntime (graph optimizations off
and on) at three or more assignments of its symbolic dims; the torch exports
are compared with torch (rtol 1e-4, atol 1e-5) at each. The assignments are
recorded in the manifest as ``verified_shapes``.

Large variants are not committed; build them with the functions below
(``build_swin_t``, ``build_llama_kv_decoder``, ``build_bert_encoder``, which
need torch) or with the torch-free builders in ``models/onnx_builders.py``.
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GENERATOR = "generate_shape_models.py"
SEED = 2468
HELPER_EXPORTER = f"onnx.helper (onnx {onnx.__version__})"
MAX_COMMITTED_BYTES = 2 * 1024 * 1024

Feed = dict[str, np.ndarray]


# --------------------------------------------------------------------------- checking


def sessions(path: Path) -> list[ort.InferenceSession]:
    """One session with every graph optimization off, one with the defaults."""
    out = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        out.append(ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]))
    return out


def check_at_shapes(
    path: Path,
    feeds: Sequence[Feed],
    reference: Callable[[Feed], Sequence[np.ndarray]] | None = None,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> None:
    """Full-check ``path`` and run it on every feed, optimized and not; compare with ``reference`` if given.

    Why: a symbolic dim is only proven symbolic by running the file at several
    values of it; the unoptimized run guards against onnxruntime rewrites that
    hide a wrong graph.
    """
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    runs = sessions(path)
    for feed in feeds:
        shapes = {k: list(v.shape) for k, v in feed.items()}
        results = [s.run(None, feed) for s in runs]
        want = list(reference(feed)) if reference is not None else results[0]
        for sess, got in zip(runs, results):
            for meta, g, w in zip(sess.get_outputs(), got, want):
                assert g.shape == w.shape, (path.name, meta.name, g.shape, w.shape, shapes)
                if np.issubdtype(g.dtype, np.floating):
                    assert np.all(np.isfinite(g)), (path.name, meta.name, shapes)
                np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{path.name}:{meta.name} {shapes}")


def finish(
    name: str,
    model: onnx.ModelProto,
    feeds: Sequence[Feed],
    *,
    exercises: str,
    source: str,
    exporter: str,
    verified: Sequence[Mapping[str, int]],
    reference: Callable[[Feed], Sequence[np.ndarray]] | None = None,
    frameworks: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Save, check at every feed, report, and return the manifest entry."""
    path = C.save_model(model, name, doc=exercises, generator=GENERATOR)
    check_at_shapes(path, feeds, reference)
    size = path.stat().st_size
    assert size < MAX_COMMITTED_BYTES, (name, size)
    C.report(name, path, C.op_histogram(model))
    fields = {"family": "shape_patterns", "verified_shapes": [dict(v) for v in verified], **(extra or {})}
    return C.manifest_entry(name, path, source=source, exporter=exporter, exercises=exercises,
                            generator=GENERATOR, frameworks=frameworks, extra=fields)


# --------------------------------------------------------------------------- onnx.helper graph builder


class Graph:
    """Minimal onnx.helper builder: seeded weights as initializers, shape pieces as Constant nodes.

    ``style`` picks the tensor naming of the exporter being imitated
    (``p2o``: Paddle2ONNX ``p2o.<Op>.<n>``; ``tf``: tf2onnx-like ``<scope>/<Op>:0``).
    """

    def __init__(self, seed: int, style: str = "p2o", prefix: str = "") -> None:
        self.rng = np.random.default_rng(seed)
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.style = style
        self._count: dict[str, int] = {}

    def _name(self, op: str) -> str:
        k = self._count.get(op, 0)
        self._count[op] = k + 1
        return f"{self.prefix}p2o.{op}.{k}" if self.style == "p2o" else f"{self.prefix}{op}__{k}"

    def weight(self, name: str, shape: Sequence[int], std: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        scale = std if std is not None else float(np.sqrt(1.0 / max(fan_in, 1)))
        return self.init(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> Any:
        base = self._name(op_type)
        outs = [f"{base}.out{i}" if n_out > 1 else f"{base}.out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=base, **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        """A ``Constant`` node, as exporters write shape pieces and scalars."""
        base = self._name("Constant")
        arr = np.asarray(value, dtype=dtype)
        self.nodes.append(helper.make_node("Constant", [], [base + ".out"], name=base,
                                           value=numpy_helper.from_array(arr)))
        return base + ".out"

    def graph(self, inputs: Sequence[onnx.ValueInfoProto], outputs: Sequence[onnx.ValueInfoProto],
              name: str) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, name, list(inputs), list(outputs), initializer=self.inits)

    def model(self, inputs: Sequence[onnx.ValueInfoProto], outputs: Sequence[onnx.ValueInfoProto], opset: int,
              graph_name: str, producer: str) -> onnx.ModelProto:
        graph = self.graph(inputs, outputs, graph_name)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=producer)
        model.ir_version = 8 if opset >= 13 else 7
        return model


# --------------------------------------------------------------------------- 1 paddle_recognizer

PADDLE_CLASSES = 11  # 10 digits + CTC blank
PADDLE_HIDDEN, PADDLE_HEADS = 24, 3


def _paddle_conv_bn_relu(g: Graph, x: str, prefix: str, cin: int, cout: int, stride: Sequence[int]) -> str:
    """Paddle ConvBNLayer: Conv (no bias) -> BatchNormalization (kept, as Paddle2ONNX writes it) -> Relu."""
    w = g.weight(f"{prefix}_weights", (cout, cin, 3, 3), std=float(np.sqrt(2.0 / (cin * 9))))
    y = g.op("Conv", [x, w], kernel_shape=[3, 3], strides=list(stride), pads=[1, 1, 1, 1], dilations=[1, 1], group=1)
    scale = g.init(f"{prefix}_bn_scale", (0.5 + g.rng.random(cout)).astype(np.float32))
    bias = g.init(f"{prefix}_bn_offset", (0.1 * g.rng.standard_normal(cout)).astype(np.float32))
    mean = g.init(f"{prefix}_bn_mean", (0.1 * g.rng.standard_normal(cout)).astype(np.float32))
    var = g.init(f"{prefix}_bn_variance", (0.5 + g.rng.random(cout)).astype(np.float32))
    y = g.op("BatchNormalization", [y, scale, bias, mean, var], epsilon=1e-5, momentum=0.9)
    return g.op("Relu", [y])


def _paddle_layer_norm(g: Graph, x: str, prefix: str, dim: int) -> str:
    """layer_norm below opset 17 as Paddle2ONNX writes it: ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add."""
    mean = g.op("ReduceMean", [x], axes=[-1], keepdims=1)
    centred = g.op("Sub", [x, mean])
    var = g.op("ReduceMean", [g.op("Pow", [centred, g.const(2.0, np.float32)])], axes=[-1], keepdims=1)
    std = g.op("Sqrt", [g.op("Add", [var, g.const(1e-6, np.float32)])])
    y = g.op("Div", [centred, std])
    w = g.init(f"{prefix}.w_0", (0.5 + g.rng.random(dim)).astype(np.float32))
    b = g.init(f"{prefix}.b_0", (0.1 * g.rng.standard_normal(dim)).astype(np.float32))
    return g.op("Add", [g.op("Mul", [y, w]), b])


def _paddle_linear(g: Graph, x: str, prefix: str, cin: int, cout: int) -> str:
    """paddle.nn.Linear: MatMul with a [in, out] weight + Add bias."""
    w = g.weight(f"{prefix}.w_0", (cin, cout))
    b = g.init(f"{prefix}.b_0", (0.1 * g.rng.standard_normal(cout)).astype(np.float32))
    return g.op("Add", [g.op("MatMul", [x, w]), b])


def _paddle_shape_piece(g: Graph, t: str, start: int) -> str:
    """``t.shape[start]`` as Paddle2ONNX writes it: Cast(Slice(Cast(Shape(t), INT32), start, start+1), INT64)."""
    shape32 = g.op("Cast", [g.op("Shape", [t])], to=TensorProto.INT32)
    piece = g.op("Slice", [shape32, g.const([start]), g.const([start + 1]), g.const([0])])
    return piece


def _paddle_attention(g: Graph, x: str, prefix: str) -> str:
    """SVTR Attention: ``_, N, C = x.shape``; qkv.reshape((0, -1, 3, heads, C // heads)); ...reshape((0, -1, C)).

    Both Reshape targets are built at run time from ``Shape(x)`` with the
    int64 -> int32 -> Slice -> (Div) -> int64 round trip and Concat with
    Cast constants, as Paddle2ONNX writes a shape list that mixes Python ints
    and tensor values.
    """
    hidden, heads = PADDLE_HIDDEN, PADDLE_HEADS
    qkv = _paddle_linear(g, x, f"{prefix}.qkv", hidden, 3 * hidden)
    zero = g.op("Cast", [g.const([0], np.int32)], to=TensorProto.INT64)
    seq = g.op("Cast", [_paddle_shape_piece(g, x, 1)], to=TensorProto.INT64)
    chan = _paddle_shape_piece(g, x, 2)
    head_dim = g.op("Cast", [g.op("Div", [chan, g.const([heads], np.int32)])], to=TensorProto.INT64)
    three = g.op("Cast", [g.const([3], np.int32)], to=TensorProto.INT64)
    nheads = g.op("Cast", [g.const([heads], np.int32)], to=TensorProto.INT64)
    target = g.op("Concat", [zero, seq, three, nheads, head_dim], axis=0)
    qkv = g.op("Transpose", [g.op("Reshape", [qkv, target])], perm=[2, 0, 3, 1, 4])
    q = g.op("Mul", [g.op("Gather", [qkv, g.const(0)], axis=0), g.const((hidden // heads) ** -0.5, np.float32)])
    k = g.op("Gather", [qkv, g.const(1)], axis=0)
    v = g.op("Gather", [qkv, g.const(2)], axis=0)
    attn = g.op("Softmax", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])], axis=-1)
    y = g.op("Transpose", [g.op("MatMul", [attn, v])], perm=[0, 2, 1, 3])
    zero2 = g.op("Cast", [g.const([0], np.int32)], to=TensorProto.INT64)
    minus1 = g.op("Cast", [g.const([-1], np.int32)], to=TensorProto.INT64)
    chan64 = g.op("Cast", [_paddle_shape_piece(g, x, 2)], to=TensorProto.INT64)
    y = g.op("Reshape", [y, g.op("Concat", [zero2, minus1, chan64], axis=0)])
    return _paddle_linear(g, y, f"{prefix}.proj", hidden, hidden)


def paddle_recognizer() -> tuple[onnx.ModelProto, list[Feed], list[dict[str, int]]]:
    """PaddleOCR-style recognizer (CRNN backbone + one SVTR mixing block + CTC head), opset 13."""
    g = Graph(SEED, "p2o")
    x = "x"
    y = _paddle_conv_bn_relu(g, x, "conv1", 3, 8, (2, 2))  # 24 x W/2
    y = _paddle_conv_bn_relu(g, y, "conv2", 8, 16, (2, 2))  # 12 x W/4
    y = _paddle_conv_bn_relu(g, y, "conv3", 16, 24, (2, 1))  # 6
    y = _paddle_conv_bn_relu(g, y, "conv4", 24, PADDLE_HIDDEN, (2, 1))  # 3
    y = g.op("MaxPool", [y], kernel_shape=[3, 1], strides=[3, 1], pads=[0, 0, 0, 0])  # 1 x W/4
    # Im2Seq: x.squeeze(axis=2).transpose([0, 2, 1])
    y = g.op("Transpose", [g.op("Squeeze", [y, g.const([2])])], perm=[0, 2, 1])
    h = y
    y = _paddle_attention(g, _paddle_layer_norm(g, h, "norm1", PADDLE_HIDDEN), "mixer")
    h = g.op("Add", [h, y])
    y = _paddle_layer_norm(g, h, "norm2", PADDLE_HIDDEN)
    y = _paddle_linear(g, y, "mlp.fc1", PADDLE_HIDDEN, 2 * PADDLE_HIDDEN)
    y = g.op("Mul", [y, g.op("Sigmoid", [y])])  # Swish
    y = _paddle_linear(g, y, "mlp.fc2", 2 * PADDLE_HIDDEN, PADDLE_HIDDEN)
    h = g.op("Add", [h, y])
    y = _paddle_layer_norm(g, h, "norm", PADDLE_HIDDEN)
    y = _paddle_linear(g, y, "ctc_fc", PADDLE_HIDDEN, PADDLE_CLASSES)
    g.nodes.append(helper.make_node("Softmax", [y], ["softmax_0.tmp_0"], name="p2o.Softmax.final", axis=2))
    batch = "p2o.DynamicDimension.0"
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 48, None])  # W: no value, no name
    out = helper.make_tensor_value_info("softmax_0.tmp_0", TensorProto.FLOAT, [batch, None, PADDLE_CLASSES])
    model = g.model([inp], [out], 13, "paddle_recognizer", "PaddlePaddle")
    rng = np.random.default_rng(SEED + 1)
    cases = [(1, 64), (2, 128), (3, 320), (2, 100)]
    feeds = [{"x": rng.standard_normal((n, 3, 48, w)).astype(np.float32)} for n, w in cases]
    return model, feeds, [{"N": n, "W": w} for n, w in cases]


PADDLE_EXERCISES = (
    "Paddle2ONNX-style PaddleOCR text recognizer, opset 13 (producer PaddlePaddle, p2o.<Op>.<n> node names). "
    "Input x [p2o.DynamicDimension.0, 3, 48, W] where W has neither dim_value nor dim_param (an anonymous "
    "dynamic dim, as Paddle2ONNX writes -1 dims). Backbone: 4 x (Conv 3x3 no bias -> BatchNormalization kept "
    "as a node -> Relu), strides (2,2),(2,2),(2,1),(2,1), then MaxPool (3,1) -> H 48 -> 1, W -> ceil(W/4); "
    "Im2Seq as Squeeze(axis 2, axes as a Constant input) -> Transpose(0,2,1) -> [N, T, 24]. One SVTR "
    "mixing block (pre-norm): LayerNorm decomposed (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add); "
    "attention hidden 24 = 3 heads x 8 with a fused qkv MatMul [24,72] + Add, whose Reshape target is "
    "built at run time the Paddle way: Concat(Cast(Constant int32 [0]) -> int64, Cast(Slice(Cast(Shape(x), "
    "INT32), 1, 2)) -> int64 (= T), Cast(Constant int32 [3]), Cast(Constant int32 [3 heads]), "
    "Cast(Div(Slice(Cast(Shape(x), INT32), 2, 3), Constant int32 [3])) -> int64 (= C // heads)) with 0 meaning "
    "'copy the input dim'; Transpose(2,0,3,1,4); q/k/v as Gather(0/1/2, axis 0); q * 8**-0.5; MatMul with "
    "Transpose(k); Softmax; MatMul v; Transpose(0,2,1,3); merge Reshape target Concat(Cast(int32 0), "
    "Cast(int32 -1), Cast(Slice(Cast(Shape(x), INT32), 2, 3))) (= [0, -1, C]); proj MatMul+Add; residual; "
    "MLP MatMul [24,48]+Add -> Swish (Sigmoid, Mul) -> MatMul [48,24]+Add; residual; final LayerNorm; CTC "
    "head MatMul [24,11]+Add -> Softmax(axis 2) -> softmax_0.tmp_0 [N, T, 11] (T anonymous)."
)


# --------------------------------------------------------------------------- 2 tf2onnx_lstm

TF_VOCAB, TF_EMB, TF_HIDDEN, TF_STEPS, TF_CLASSES = 50, 16, 20, 20, 5


def lstm_reference(x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Numpy ONNX LSTM (forward, gate order i,o,f,c, zero initial state): all hidden states [T, B, H]."""
    hidden = r.shape[-1]
    h = np.zeros((x.shape[1], hidden), np.float64)
    c = np.zeros_like(h)
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    ys = []
    for xt in x.astype(np.float64):
        gates = xt @ w[0].T + h @ r[0].T + b[0, : 4 * hidden] + b[0, 4 * hidden:]
        i, o, f, cc = np.split(gates, 4, axis=1)
        c = sig(f) * c + sig(i) * np.tanh(cc)
        h = sig(o) * np.tanh(c)
        ys.append(h)
    return np.stack(ys)


def tf2onnx_lstm() -> tuple[onnx.ModelProto, list[Feed], list[dict[str, int]], Callable[[Feed], list[np.ndarray]]]:
    """Keras Embedding -> LSTM -> Dense(softmax) as tf2onnx writes it (opset 13)."""
    g = Graph(SEED + 10, "tf")
    prefix = "StatefulPartitionedCall/sequential"
    emb = g.weight(f"{prefix}/embedding/embedding_lookup", (TF_VOCAB, TF_EMB), std=0.5)
    w = g.weight("W", (1, 4 * TF_HIDDEN, TF_EMB), std=0.3)
    r = g.weight("R", (1, 4 * TF_HIDDEN, TF_HIDDEN), std=0.3)
    b = g.weight("B", (1, 8 * TF_HIDDEN), std=0.1)
    x = g.op("Gather", [emb, "input_1"], axis=0)  # [B, T, E]
    xt = g.op("Transpose", [x], perm=[1, 0, 2])  # time major [T, B, E]
    batch = g.op("Slice", [g.op("Shape", [xt]), g.const([1]), g.const([2]), g.const([0])])
    hidden = g.op("Slice", [g.op("Shape", [r]), g.const([2]), g.const([3]), g.const([0])])  # R is [1, 4H, H]
    state_shape = g.op("Concat", [g.const([1]), batch, hidden], axis=0)
    init_h = g.op("Expand", [g.const(0.0, np.float32), state_shape])
    init_c = g.op("Expand", [g.const(0.0, np.float32), state_shape])
    y = g.op("LSTM", [xt, w, r, b, "", init_h, init_c], direction="forward", hidden_size=TF_HIDDEN)
    last = g.op("Slice", [y, g.const([-1]), g.const([np.iinfo(np.int64).max]), g.const([0])])  # [1, 1, B, H]
    last = g.op("Squeeze", [last, g.const([0, 1])])  # [B, H]
    dw = g.weight(f"{prefix}/dense/MatMul/ReadVariableOp:0", (TF_HIDDEN, TF_CLASSES))
    db = g.weight(f"{prefix}/dense/BiasAdd/ReadVariableOp:0", (TF_CLASSES,), std=0.1)
    logits = g.op("Add", [g.op("MatMul", [last, dw]), db])
    g.nodes.append(helper.make_node("Softmax", [logits], ["dense"], name=f"{prefix}/dense/Softmax", axis=-1))
    inp = helper.make_tensor_value_info("input_1", TensorProto.INT32, ["unk__6", TF_STEPS])
    out = helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["unk__7", TF_CLASSES])
    model = g.model([inp], [out], 13, "tf2onnx", "tf2onnx")
    weights = {t.name: numpy_helper.to_array(t) for t in g.inits}

    def reference(feed: Feed) -> list[np.ndarray]:
        seq = weights[emb][feed["input_1"]].transpose(1, 0, 2)
        hs = lstm_reference(seq, weights[w], weights[r], weights[b])[-1]
        z = hs @ weights[dw] + weights[db]
        e = np.exp(z - z.max(-1, keepdims=True))
        return [(e / e.sum(-1, keepdims=True)).astype(np.float32)]

    rng = np.random.default_rng(SEED + 11)
    batches = [1, 2, 5]
    feeds = [{"input_1": rng.integers(0, TF_VOCAB, (n, TF_STEPS)).astype(np.int32)} for n in batches]
    return model, feeds, [{"unk__6": n} for n in batches], reference


TF_EXERCISES = (
    "tf2onnx-style Keras Sequential Embedding(50,16) -> LSTM(20) -> Dense(5, softmax), opset 13, producer "
    "tf2onnx. Input input_1 int32 [unk__6, 20] (token ids; batch dim_param in tf2onnx's unk__N form; the output "
    "has its own unk__7). Gather(embedding initializer, input_1) -> Transpose(1,0,2) to time major -> one ONNX "
    "LSTM (forward, hidden 20, W [1,80,16], R [1,80,20], B [1,160], gate order i,o,f,c, sequence_lens empty). "
    "initial_h and initial_c are two Expand(Constant 0.0 scalar, state_shape) whose shared state_shape = "
    "Concat(Constant [1], Slice(Shape(transposed x), 1, 2) (= batch), Slice(Shape(R), 2, 3) (= hidden size, "
    "read from the recurrence weight's shape at run time)). Only Y is used: Slice(Y, -1, INT64_MAX, axis 0) "
    "(last time step) -> Squeeze(axes 0,1 as a Constant input) -> Dense MatMul [20,5] + Add -> Softmax -> "
    "dense [unk__7, 5]. Pruning LSTM hidden units changes R's shape, so the Shape(R)-derived state size "
    "follows automatically; the batch comes from Shape of the data."
)


# --------------------------------------------------------------------------- 3 if_compute

IF_FRONT, IF_HIDDEN, IF_FC = 16, 16, 32


def _if_branch(seed: int, prefix: str, feat: str, mid: int, stride: int) -> onnx.GraphProto:
    """Conv1d -> Relu -> Conv1d -> Relu -> LSTM over time -> last hidden state [B, 16]; weights are subgraph initializers."""
    g = Graph(seed, "tf", prefix)
    w1 = g.weight(f"{prefix}conv1.weight", (mid, IF_FRONT, 3))
    b1 = g.weight(f"{prefix}conv1.bias", (mid,), std=0.1)
    y = g.op("Relu", [g.op("Conv", [feat, w1, b1], kernel_shape=[3], pads=[1, 1], strides=[stride])])
    w2 = g.weight(f"{prefix}conv2.weight", (IF_HIDDEN, mid, 3))
    b2 = g.weight(f"{prefix}conv2.bias", (IF_HIDDEN,), std=0.1)
    y = g.op("Relu", [g.op("Conv", [y, w2, b2], kernel_shape=[3], pads=[1, 1])])
    seq = g.op("Transpose", [y], perm=[2, 0, 1])  # [L, B, C]
    w = g.weight(f"{prefix}lstm.W", (1, 4 * IF_HIDDEN, IF_HIDDEN))
    r = g.weight(f"{prefix}lstm.R", (1, 4 * IF_HIDDEN, IF_HIDDEN))
    b = g.weight(f"{prefix}lstm.B", (1, 8 * IF_HIDDEN), std=0.1)
    _, y_h = g.op("LSTM", [seq, w, r, b], n_out=2, hidden_size=IF_HIDDEN)
    g.nodes.append(helper.make_node("Squeeze", [y_h, g.const([0])], [f"{prefix}out"], name=f"{prefix}Squeeze_out"))
    out = helper.make_tensor_value_info(f"{prefix}out", TensorProto.FLOAT, [None, IF_HIDDEN])
    return g.graph([], [out], prefix.rstrip("/"))


def if_compute() -> tuple[onnx.ModelProto, list[Feed], list[dict[str, int]]]:
    """Silero-VAD-like: shared front Conv outside, one of two Conv+LSTM encoders chosen by If(sr == 16000)."""
    g = Graph(SEED + 20, "tf")
    x = g.op("Unsqueeze", ["input", g.const([1])])  # [B, 1, S]
    wf = g.weight("front.weight", (IF_FRONT, 1, 8))
    bf = g.weight("front.bias", (IF_FRONT,), std=0.1)
    feat = g.op("Relu", [g.op("Conv", [x, wf, bf], kernel_shape=[8], strides=[4], pads=[4, 4])])  # [B, 16, L]
    cond = g.op("Equal", ["sr", g.const(16000)])
    then_g = _if_branch(SEED + 21, "then_16k/", feat, 24, 1)
    else_g = _if_branch(SEED + 22, "else_8k/", feat, 12, 2)
    enc = g.op("If", [cond], then_branch=then_g, else_branch=else_g)
    w1 = g.weight("decoder.fc1.weight", (IF_FC, IF_HIDDEN))
    b1 = g.weight("decoder.fc1.bias", (IF_FC,), std=0.1)
    y = g.op("Relu", [g.op("Gemm", [enc, w1, b1], transB=1)])
    w2 = g.weight("decoder.fc2.weight", (1, IF_FC))
    b2 = g.weight("decoder.fc2.bias", (1,), std=0.1)
    y = g.op("Gemm", [y, w2, b2], transB=1)
    g.nodes.append(helper.make_node("Sigmoid", [y], ["output"], name="Sigmoid_out"))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "samples"]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])
    model = g.model(inputs, [out], 17, "if_compute", "onnx.helper")
    rng = np.random.default_rng(SEED + 23)
    cases = [(1, 512, 16000), (2, 1024, 8000), (3, 1536, 16000), (2, 256, 8000), (1, 96, 16000), (3, 96, 8000)]
    feeds = [{"input": rng.standard_normal((b, s)).astype(np.float32), "sr": np.array(sr, np.int64)}
             for b, s, sr in cases]
    return model, feeds, [{"batch": b, "samples": s, "sr": sr} for b, s, sr in cases]


IF_EXERCISES = (
    "Silero-VAD-like model with real compute inside the branches of an If, opset 17. Inputs input float "
    "[batch, samples] and sr int64 scalar []. Outside the If: Unsqueeze(axis 1) -> front Conv1d(1->16, k8, "
    "stride 4, pads 4,4) + Relu -> feat [batch, 16, L] (prunable: its 16 channels are consumed inside both "
    "branches, which read feat from the outer scope). cond = Equal(sr, Constant 16000). then_branch (16 kHz): "
    "Conv1d(16->24, k3, pad 1) + Relu -> Conv1d(24->16, k3, pad 1) + Relu -> Transpose(2,0,1) -> LSTM(hidden "
    "16, no initial state) -> Y_h -> Squeeze(0) -> [batch, 16]. else_branch (8 kHz): the same with Conv1d(16->12, "
    "k3, stride 2) and its own weights. Branch weights are initializers of the subgraphs (not of the main graph). "
    "After the If: Gemm(16->32, transB=1) + Relu -> Gemm(32->1) -> Sigmoid -> output [batch, 1]. Hidden "
    "channels inside each branch (24 / 12) and the outer Gemm width 32 are prunable; the If output width 16 "
    "couples both branches' conv2/LSTM with the outer Gemm."
)


# --------------------------------------------------------------------------- torch export helpers


def torch_export(module: Any, args: tuple, input_names: Sequence[str], output_names: Sequence[str],
                 dynamic_axes: Mapping[str, Mapping[int, str]] | None, *, opset: int = 17) -> onnx.ModelProto:
    """TorchScript exporter (dynamo=False), constant folding on, with exporter-style named dynamic axes."""
    import torch

    module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=opset, input_names=list(input_names),
                          output_names=list(output_names),
                          dynamic_axes={k: dict(v) for k, v in (dynamic_axes or {}).items()},
                          do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def torch_reference(module: Any, input_names: Sequence[str]) -> Callable[[Feed], list[np.ndarray]]:
    """Run the torch module on a feed (inputs in ``input_names`` order), outputs as numpy."""
    import torch

    def run(feed: Feed) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*(torch.from_numpy(feed[n]) for n in input_names))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        flat: list[Any] = []
        for o in outs:
            flat.extend(o if isinstance(o, (tuple, list)) else (o,))
        return [o.numpy() for o in flat]

    return run


# --------------------------------------------------------------------------- 4 yolov8_head


def yolov8_head() -> tuple[onnx.ModelProto, list[Feed], list[dict[str, int]], Callable]:
    """Tiny YOLOv8 exported as ``yolo export format=onnx dynamic=True`` does (opset 17, TorchScript exporter)."""
    import torch

    import _shape_torch as T

    torch.manual_seed(SEED + 30)
    module = T.TinyYOLOv8(nc=3)
    T.randomize_batchnorm(module, torch.Generator().manual_seed(SEED + 31))
    module.eval()
    dyn = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}}
    model = torch_export(module, (torch.zeros(1, 3, 64, 64),), ["images"], ["output0"], dyn)
    rng = np.random.default_rng(SEED + 32)
    cases = [(1, 320, 320), (2, 256, 384), (1, 640, 640), (2, 96, 160)]
    feeds = [{"images": rng.random((b, 3, h, w)).astype(np.float32)} for b, h, w in cases]
    return model, feeds, [{"batch": b, "height": h, "width": w} for b, h, w in cases], torch_reference(module, ["images"])


YOLO_EXERCISES = (
    "Tiny YOLOv8n-style detector exported like Ultralytics `export(format='onnx', dynamic=True)`: TorchScript "
    "exporter, opset 17, input images [batch, 3, height, width] (all three named), output output0 [batch, 7, "
    "anchors]. Every Ultralytics Conv is Conv2d(no bias)+BN folded by constant folding into Conv+bias, SiLU as "
    "Sigmoid+Mul. Backbone: Conv s2 (3->8), Conv s2 (8->16), C2f(16), Conv s2 (->24) C2f = P3 (stride 8), Conv "
    "s2 (->32) C2f = P4 (16), Conv s2 (->48) C2f = P5 (32); each C2f = cv1 1x1 -> Split(2, axis 1) (chunk) -> "
    "Bottleneck (two 3x3 Conv + residual Add) on the second piece -> Concat of all three pieces -> cv2 1x1. "
    "Detect head per level: box branch Conv3x3(->32)+SiLU, Conv3x3(32)+SiLU (Ultralytics' width formula gives 64; halved to keep the file small), Conv1x1(->64 = 4*reg_max 16) and "
    "class branch Conv3x3(->24), Conv3x3(24), Conv1x1(->3 classes), Concat(axis 1) -> [b, 67, h, w]; "
    "Reshape(xi, [b, 67, -1]) with b from Shape(level 0) (run-time target) per level -> Concat(axis 2) over "
    "levels -> Split([64, 3], axis 1). DFL: Reshape [b, 4, 16, A] (b, A from Shape) -> Transpose(0,2,1,3) -> "
    "Softmax(axis 1) -> the fixed DFL Conv 1x1 16->1 with weight arange(16) (no bias) -> Reshape [b, 4, A]. "
    "Anchors (make_anchors) rebuilt at run time from Shape of each level's feature map: Range(0, w) + 0.5 and "
    "Range(0, h) + 0.5 -> meshgrid (Reshape/Expand) -> Stack(Unsqueeze+Concat) -> Reshape [-1, 2]; stride "
    "column from ConstantOfShape/Expand of h*w with the level stride; Concat over levels; Transpose. "
    "dist2bbox: Split(2) of the DFL output -> Sub/Add with anchors -> (x1y1+x2y2)/2 and x2y2-x1y1 -> Concat "
    "-> Mul by strides; classes Sigmoid; Concat(axis 1) -> [batch, 4+3, anchors]. Sizes must be multiples of 32."
)


# --------------------------------------------------------------------------- 5 swin_block


def swin_module(embed: int, depths: Sequence[int], heads: Sequence[int], seed: int) -> Any:
    """A seeded eval-mode Swin with randomised LayerNorm affines."""
    import torch

    import _shape_torch as T

    torch.manual_seed(seed)
    module = T.Swin(embed, tuple(depths), tuple(heads))
    T.randomize_batchnorm(module, torch.Generator().manual_seed(seed + 1))
    return module.eval()


def swin_export(module: Any, size: int, dynamic: bool) -> onnx.ModelProto:
    import torch

    dyn = {"pixel_values": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}} if dynamic else None
    return torch_export(module, (torch.zeros(1, 3, size, size),), ["pixel_values"], ["logits"], dyn)


def swin_block(dynamic: bool) -> tuple[onnx.ModelProto, list[Feed], list[dict[str, int]], Callable]:
    """Patch embed + one stage of 2 Swin layers (window 7, the second shifted by 3), embed 48, 3 heads."""
    module = swin_module(48, (2,), (3,), SEED + 40)
    model = swin_export(module, 56, dynamic)
    rng = np.random.default_rng(SEED + 42)
    cases = [(1, 56, 56), (2, 64, 64), (1, 48, 80), (3, 112, 100), (2, 30, 45)] if dynamic else [(1, 56, 56)]
    feeds = [{"pixel_values": rng.standard_normal((b, 3, h, w)).astype(np.float32)} for b, h, w in cases]
    return (model, feeds, [{"batch": b, "height": h, "width": w} for b, h, w in cases],
            torch_reference(module, ["pixel_values"]))


def build_swin_t(path: str | Path, *, embed: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 heads: Sequence[int] = (3, 6, 12, 24), size: int = 224, dynamic: bool = False,
                 seed: int = SEED + 50) -> Path:
    """Export a Swin-T-sized model (about 110 MB at the defaults) to ``path``; needs torch.

    Not committed: tests and benchmarks that need a full-size Swin call this
    (or pass a smaller ``embed``) and write into a temporary directory.
    """
    module = swin_module(embed, depths, heads, seed)
    model = swin_export(module, size, dynamic)
    onnx.helper.set_model_props(model, {"generator": f"models/{GENERATOR}", "onnxprune_model": "swin_t"})
    path = Path(path)
    onnx.save(model, str(path))
    return path


SWIN_REDUCED = {"embed": 8, "depths": (2, 2, 2, 2), "heads": (1, 2, 4, 8)}


def swin_reduced() -> tuple[onnx.ModelProto, list[Feed], list[dict[str, int]], Callable]:
    """Swin-T topology (4 stages, patch merging, window 7, 224 input) at width 8 and depth 2-2-2-2, dynamic."""
    module = swin_module(SWIN_REDUCED["embed"], SWIN_REDUCED["depths"], SWIN_REDUCED["heads"], SEED + 50)
    model = swin_export(module, 224, True)
    rng = np.random.default_rng(SEED + 52)
    cases = [(1, 224, 224), (2, 160, 192), (1, 96, 96)]
    feeds = [{"pixel_values": rng.standard_normal((b, 3, h, w)).astype(np.float32)} for b, h, w in cases]
    return (model, feeds, [{"batch": b, "height": h, "width": w} for b, h, w in cases],
            torch_reference(module, ["pixel_values"]))


SWIN_REDUCED_EXERCISES = (
    "Swin-T topology at reduced width and depth: the same HF-SwinLayer forward as swin_block_dynamic (run-time "
    "patch Pad and window Pad, roll as Slice+Concat, window partition/reverse Reshape/Transpose chains, "
    "run-time shifted-window mask, folded relative position bias constants) over 4 stages: embed 8, depths "
    "2-2-2-2 (Swin-T: 2-2-6-2), heads 1-2-4-8 (head dim 8), window 7, MLP ratio 4, exported at 224x224 with "
    "batch/height/width dynamic, so the stages run at 56, 28, 14 and 7 tokens per side. Between stages, "
    "PatchMerging: Pad H, W to even (Mod on Shape values) -> four strided Slices [0::2, 1::2] -> Concat(-1) -> "
    "Reshape [B, -1, 4C] -> LayerNormalization -> MatMul 4C->2C (no bias). Final LayerNormalization -> "
    "ReduceMean -> Gemm [batch, 10]. The full-size Swin-T (embed 96, 2-2-6-2, heads 3-6-12-24, about "
    "110 MB) is not committed: build_swin_t(path) writes it (needs torch)."
)


def swin_exercises(variant: str) -> str:
    io_text = ("Static input pixel_values [1, 3, 56, 56]: every Reshape/Pad/Slice target is a constant, yet the "
               "window MatMuls sit behind Reshape/Transpose chains. " if variant == "static" else
               "Input pixel_values [batch, 3, height, width] (any size: the patch Pad and the window Pad are "
               "computed from Shape at run time), logits [batch, 10]. ")
    return (
        f"Swin-style stage ({variant}), TorchScript exporter opset 17, Hugging Face SwinLayer forward. "
        + io_text +
        "Patch embedding: Pad(pixel_values) to a multiple of 4 (amount (4 - W % 4) % 4) -> Conv(3->48, 4x4, "
        "stride 4) -> flatten(2)/Transpose -> LayerNormalization. Two SwinLayers (embed 48, 3 heads x 16, "
        "window 7, MLP ratio 4 with exact GELU); layer 0 unshifted, layer 1 shifted by 3: LayerNormalization -> "
        "Reshape [B,H,W,C] -> Pad H and W up to a multiple of 7 ((7 - W % 7) % 7, Mod/Sub on Shape values in the "
        "dynamic file) -> layer 1: torch.roll(-3,-3) exported as Slice+Slice+Concat on axis 1 and on axis 2 -> "
        "window partition Reshape [B, H/7, 7, W/7, 7, C] -> Transpose(0,1,3,2,4,5) -> Reshape [-1, 49, C] -> "
        "separate q/k/v MatMul+Add, head Reshape/Transpose, MatMul(q, k^T) / sqrt(16) + relative position "
        "bias [3, 49, 49] (the bias table [169, 3] Gather with a constant relative_position_index is folded to "
        "a constant by the exporter's constant folding) -> layer 1: the shifted-window attention mask is "
        "built at run time from the padded size (ConstantOfShape zeros [1,Hp,Wp,1], nine slice assignments as "
        "ScatterND/Slice, window partition, Unsqueeze/Sub, Where(!=0, -100)) and added after a Reshape "
        "[B*nW -> B, nW, heads, 49, 49] -> Softmax -> MatMul v -> Transpose/Reshape -> dense MatMul+Add -> "
        "window reverse Reshape [-1, H/7, W/7, 7, 7, C] -> Transpose -> Reshape [B, Hp, Wp, C] -> roll back "
        "(+3,+3) -> crop Slice [:, :H, :W] -> Reshape [B, H*W, C] -> residual Add; MLP LayerNormalization -> "
        "MatMul 48->192 + Add -> GELU (Div/Erf/Add/Mul/Mul) -> MatMul 192->48 + Add -> residual. Final "
        "LayerNormalization -> ReduceMean over tokens -> Gemm head [B, 10]."
    )


# --------------------------------------------------------------------------- 6 llama_kv_decoder

LLAMA = {"hidden": 128, "heads": 4, "kv_heads": 2, "inter": 256, "layers": 2}


def llama_names(layers: int) -> tuple[list[str], list[str]]:
    """HF/optimum I/O names: past_key_values.{i}.key/value in, present.{i}.key/value out."""
    past = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return ["input_ids", *past], ["logits", *present]


def llama_module(vocab: int, seed: int, **config: int) -> Any:
    import torch

    import _shape_torch as T

    torch.manual_seed(seed)
    module = T.LlamaDecoder(vocab=vocab, **{**LLAMA, **config})
    T.randomize_rmsnorm(module, torch.Generator().manual_seed(seed + 1))
    return module.eval()


def llama_export(module: Any) -> onnx.ModelProto:
    import torch

    layers = len(module.layers)
    inputs, outputs = llama_names(layers)
    attn = module.layers[0].self_attn
    past = tuple(torch.zeros(2, attn.kv_heads, 4, attn.head_dim) for _ in range(2 * layers))
    dyn: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    dyn.update({n: {0: "batch", 2: "past_seq"} for n in inputs[1:]})
    dyn.update({n: {0: "batch", 2: "past_seq + seq"} for n in outputs[1:]})
    ids = torch.zeros(2, 3, dtype=torch.int64)
    return torch_export(module, (ids, *past), inputs, outputs, dyn)


def llama_feeds(vocab: int, layers: int, kv_heads: int, head_dim: int,
                cases: Sequence[tuple[int, int, int]], seed: int) -> list[Feed]:
    rng = np.random.default_rng(seed)
    inputs, _ = llama_names(layers)
    feeds = []
    for b, s, p in cases:
        feed = {"input_ids": rng.integers(0, vocab, (b, s)).astype(np.int64)}
        feed.update({n: rng.standard_normal((b, kv_heads, p, head_dim)).astype(np.float32) for n in inputs[1:]})
        feeds.append(feed)
    return feeds


LLAMA_CASES = [(1, 1, 5), (2, 4, 0), (3, 2, 7), (2, 3, 3), (1, 6, 16)]


def llama_kv_decoder() -> tuple[onnx.ModelProto, list[Feed], list[dict[str, int]], Callable]:
    module = llama_module(256, SEED + 60)
    model = llama_export(module)
    feeds = llama_feeds(256, LLAMA["layers"], LLAMA["kv_heads"], LLAMA["hidden"] // LLAMA["heads"], LLAMA_CASES,
                        SEED + 62)
    verified = [{"batch": b, "seq": s, "past_seq": p} for b, s, p in LLAMA_CASES]
    return model, feeds, verified, torch_reference(module, llama_names(LLAMA["layers"])[0])


def build_llama_kv_decoder(path: str | Path, vocab: int = 32000, *, seed: int = SEED + 60, **config: int) -> Path:
    """Export the llama_kv_decoder architecture with a larger vocabulary (32k: about 33 MB); needs torch.

    ``config`` overrides hidden/heads/kv_heads/inter/layers. The torch-free
    equivalent is ``onnx_builders.build_llama_kv_decoder``.
    """
    model = llama_export(llama_module(vocab, seed, **config))
    onnx.helper.set_model_props(model, {"generator": f"models/{GENERATOR}", "onnxprune_model": "llama_kv_decoder"})
    path = Path(path)
    onnx.save(model, str(path))
    return path


LLAMA_EXERCISES = (
    "Llama-style decoder with a KV cache (HF LlamaModel forward re-typed, transformers 4.3x mask code), "
    "TorchScript exporter opset 17. vocab 256, hidden 128, 4 query heads / 2 kv heads (GQA) x head dim 32, "
    "SwiGLU MLP 256, 2 layers, untied lm_head, no biases. Inputs input_ids int64 [batch, seq] and "
    "past_key_values.{0,1}.{key,value} [batch, 2, past_seq, 32]; outputs logits [batch, seq, 256] and "
    "present.{0,1}.{key,value} [batch, 2, 'past_seq + seq', 32] (optimum-style sum name). No attention_mask "
    "input. embed_tokens Gather; RMSNorm as Pow(2)/ReduceMean/Add(eps)/Sqrt/Div(1, .)/Mul/Mul(weight); "
    "q/k/v/o and gate/up/down as MatMul with transposed onnx::MatMul_* initializers; heads Reshape (run-time "
    "targets from Shape) -> Transpose; RoPE positions Range(past_seq, past_seq + seq) with past_seq from "
    "Shape(past key) -> Mul inv_freq -> Concat -> Cos/Sin -> Unsqueeze; rotate_half as Slice/Neg/Slice/Concat, "
    "q*cos + rotate_half(q)*sin; KV cache Concat(past, new, axis 2) = present; repeat_kv for GQA as "
    "Unsqueeze -> Expand [b, 2, 2, total, 32] -> Reshape [b, 4, total, 32]; scores MatMul / sqrt(32) + causal "
    "mask built at run time: ConstantOfShape(seq, seq) filled with float32 min, Range/Add/Reshape/Less/Where "
    "(masked_fill below the diagonal), Concat with ConstantOfShape zeros [seq, past_seq] on the left, "
    "Unsqueeze x2; Softmax; MatMul v; Transpose/Reshape; o_proj; residual; SwiGLU down(silu(gate) * up) with "
    "SiLU as Sigmoid/Mul; final RMSNorm; lm_head MatMul [128, 256]. A 32k-vocab variant (about 33 MB, not "
    "committed) comes from build_llama_kv_decoder(path) here (torch) or onnx_builders.build_llama_kv_decoder "
    "(torch-free: this file with resized embedding and lm_head)."
)


# --------------------------------------------------------------------------- 7 large encoder (never committed)


def build_bert_encoder(path: str | Path, target_mb: float = 90, *, seed: int = SEED + 70) -> Path:
    """Export the bert_encoder_dynamic architecture widened to about ``target_mb`` MB; needs torch.

    Hidden H (4 heads, FFN 2H, 2 layers, dynamic N/S) is chosen by
    ``onnx_builders.bert_hidden_for``; the torch-free equivalent is
    ``onnx_builders.build_bert_encoder``.
    """
    import torch

    import generate_transformer_models as TM
    import onnx_builders

    hidden = onnx_builders.bert_hidden_for(target_mb)
    torch.manual_seed(seed)
    module = TM.BertEncoder(hidden=hidden, heads=4, ffn=2 * hidden, layers=2)
    with torch.no_grad():
        TM.randomize_norms(module, torch.Generator().manual_seed(seed + 1))
    module.eval()
    example = {k: torch.from_numpy(v) for k, v in TM.bert_feed(np.random.default_rng(seed), 2, 8).items()}
    axes = {0: C.BATCH_AXIS, 1: "S"}
    dyn = {"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes, "logits": {0: C.BATCH_AXIS}}
    model = TM.export(module, example, ("last_hidden_state", "logits"), dyn)
    onnx.helper.set_model_props(model, {"generator": f"models/{GENERATOR}", "onnxprune_model": "bert_encoder_large"})
    path = Path(path)
    onnx.save(model, str(path))
    return path


def check_builders() -> None:
    """Build the uncommitted models with the torch-free builders into a temp dir and run them at 3 shapes."""
    import tempfile

    import onnx_builders

    with tempfile.TemporaryDirectory() as tmp:
        path = onnx_builders.build_llama_kv_decoder(Path(tmp) / "llama32k.onnx")
        feeds = llama_feeds(32000, LLAMA["layers"], LLAMA["kv_heads"], LLAMA["hidden"] // LLAMA["heads"],
                            LLAMA_CASES[:3], SEED + 80)
        check_at_shapes(path, feeds)
        print(f"OK onnx_builders.build_llama_kv_decoder   {path.stat().st_size / 2**20:.1f} MB")
        path = onnx_builders.build_bert_encoder(Path(tmp) / "bert90.onnx")
        rng = np.random.default_rng(SEED + 81)
        feeds = [{"input_ids": rng.integers(0, 100, (b, s)).astype(np.int64),
                  "attention_mask": np.ones((b, s), np.int64)} for b, s in ((1, 16), (2, 5), (3, 9))]
        check_at_shapes(path, feeds)
        print(f"OK onnx_builders.build_bert_encoder       {path.stat().st_size / 2**20:.1f} MB")


# --------------------------------------------------------------------------- main


def main() -> None:
    entries = []
    model, feeds, verified = paddle_recognizer()
    entries.append(finish("paddle_recognizer", model, feeds, exercises=PADDLE_EXERCISES, source="onnx.helper",
                          exporter=HELPER_EXPORTER + ", imitating Paddle2ONNX", verified=verified))
    model, feeds, verified, reference = tf2onnx_lstm()
    entries.append(finish("tf2onnx_lstm", model, feeds, exercises=TF_EXERCISES, source="onnx.helper",
                          exporter=HELPER_EXPORTER + ", imitating tf2onnx", verified=verified, reference=reference))
    model, feeds, verified = if_compute()
    entries.append(finish("if_compute", model, feeds, exercises=IF_EXERCISES, source="onnx.helper",
                          exporter=HELPER_EXPORTER, verified=verified))
    entries.extend(torch_entries())
    C.update_manifest(entries)
    check_builders()


def torch_entries() -> list[dict[str, Any]]:
    """The torch-exported files (skipped with a message when torch is missing)."""
    try:
        import torch
    except ImportError:
        print("torch is not installed: skipping yolov8_head, swin_block, llama_kv_decoder")
        return []
    torch.set_num_threads(1)
    exporter = C.torch_exporter_string()
    out = []
    model, feeds, verified, reference = yolov8_head()
    out.append(finish("yolov8_head", model, feeds, exercises=YOLO_EXERCISES, source="pytorch", exporter=exporter,
                      verified=verified, reference=reference, frameworks=("torch",)))
    for variant in ("static", "dynamic"):
        model, feeds, verified, reference = swin_block(variant == "dynamic")
        name = "swin_block" if variant == "static" else "swin_block_dynamic"
        out.append(finish(name, model, feeds, exercises=swin_exercises(variant), source="pytorch",
                          exporter=exporter, verified=verified, reference=reference, frameworks=("torch",)))
    model, feeds, verified, reference = swin_reduced()
    out.append(finish("swin_t_reduced", model, feeds, exercises=SWIN_REDUCED_EXERCISES, source="pytorch",
                      exporter=exporter, verified=verified, reference=reference, frameworks=("torch",)))
    model, feeds, verified, reference = llama_kv_decoder()
    out.append(finish("llama_kv_decoder", model, feeds, exercises=LLAMA_EXERCISES, source="pytorch",
                      exporter=exporter, verified=verified, reference=reference, frameworks=("torch",)))
    return out


if __name__ == "__main__":
    main()
