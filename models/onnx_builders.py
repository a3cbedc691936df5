"""Torch-free builders for large models that tests and benchmarks write at run time (never committed).

Why: memory and shape-probe benchmarks need a 32k-vocabulary KV-cache decoder
and a ~90 MB encoder, which are too large for ``models/``, while the tests must
not need torch. Each builder starts from a committed torch export and only
resizes weights, so the op patterns are exactly the exporter's:

* ``build_llama_kv_decoder``: ``llama_kv_decoder.onnx`` with the embedding
  table and the lm_head resized to ``vocab`` (run-time causal mask, RoPE,
  GQA Expand/Reshape and KV-cache Concat untouched);
* ``build_bert_encoder``: ``bert_encoder_dynamic.onnx`` widened from hidden 32
  / FFN 64 to hidden ``H`` / FFN ``2H`` (head count 4 stays; its head split
  computes ``hidden // heads`` from ``Shape`` at run time, so no shape
  constant changes).

Weights are seeded random numbers with the scale of the weights they
replace. ``generate_shape_models.py`` has torch builders with the same names
that export the same architectures from torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

MODELS_DIR = Path(__file__).resolve().parent

BERT_HIDDEN, BERT_FFN, BERT_HEADS = 32, 64, 4


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _replace(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
            return
    raise KeyError(name)


def _set_output_dim(model: onnx.ModelProto, output: str, axis: int, value: int) -> None:
    for vi in model.graph.output:
        if vi.name == output:
            vi.type.tensor_type.shape.dim[axis].dim_value = value
            return
    raise KeyError(output)


def build_llama_kv_decoder(path: str | Path, vocab: int = 32000, seed: int = 0) -> Path:
    """Write the committed Llama KV-cache decoder with a ``vocab``-row embedding and lm_head (32k: ~33 MB)."""
    model = onnx.load(str(MODELS_DIR / "llama_kv_decoder.onnx"))
    inits = _initializers(model)
    rng = np.random.default_rng(seed)
    emb = next(n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits
               and len(inits[n.input[0]].dims) == 2)
    hidden = int(inits[emb].dims[1])
    head = next(n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.output[0] == "logits")
    _replace(model, emb, rng.standard_normal((vocab, hidden)))
    bound = 1.0 / math.sqrt(hidden)
    _replace(model, head, rng.uniform(-bound, bound, (hidden, vocab)))
    _set_output_dim(model, "logits", 2, vocab)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "onnx_builder": f"build_llama_kv_decoder(vocab={vocab}, seed={seed})"})
    path = Path(path)
    onnx.save(model, str(path))
    return path


def bert_hidden_for(target_mb: float) -> int:
    """Hidden width (multiple of 64) whose widened 2-layer encoder weighs about ``target_mb`` MB.

    Weights: per layer 4 H^2 (q, k, v, o) + 2 * 2 H^2 (FFN) = 8 H^2, two layers,
    plus the H^2 pooler: about 17 H^2 float32 values.
    """
    hidden = math.sqrt(target_mb * 1e6 / (17 * 4))
    return max(64, int(round(hidden / 64)) * 64)


def build_bert_encoder(path: str | Path, target_mb: float = 90, seed: int = 0) -> Path:
    """Write ``bert_encoder_dynamic.onnx`` widened to hidden H (FFN 2H) so the file is about ``target_mb`` MB."""
    hidden = bert_hidden_for(target_mb)
    model = onnx.load(str(MODELS_DIR / "bert_encoder_dynamic.onnx"))
    widths = {BERT_HIDDEN: hidden, BERT_FFN: 2 * hidden}
    rng = np.random.default_rng(seed)
    for name, tensor in _initializers(model).items():
        old = numpy_helper.to_array(tensor)
        if old.dtype != np.float32 or not any(d in widths for d in old.shape):
            continue
        shape = tuple(widths.get(d, d) for d in old.shape)
        if old.ndim == 1:  # LayerNorm scale / offset, biases: keep the value pattern
            new = np.resize(old, shape)
        else:
            new = rng.standard_normal(shape) * float(old.std()) * math.sqrt(old.shape[0] / shape[0])
        _replace(model, name, new)
    for vi in model.graph.output:
        for dim in vi.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value in widths:
                dim.dim_value = widths[dim.dim_value]
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "onnx_builder": f"build_bert_encoder(target_mb={target_mb}, seed={seed})"})
    path = Path(path)
    onnx.save(model, str(path))
    return path


# --------------------------------------------------------------------------------------------------
# a Llama-shaped decoder of any size, weights streamed to external data


def llama_weight_shapes(hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, vocab: int
                        ) -> list[tuple[str, tuple[int, ...]]]:
    """Name and shape of every weight of :func:`build_streamed_llama`, in file order."""
    head_dim = hidden // heads
    shapes: list[tuple[str, tuple[int, ...]]] = [("embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"layers.{i}."
        shapes += [(p + "input_layernorm.weight", (hidden,)), (p + "q_proj.weight", (hidden, heads * head_dim)),
                   (p + "k_proj.weight", (hidden, kv_heads * head_dim)),
                   (p + "v_proj.weight", (hidden, kv_heads * head_dim)), (p + "o_proj.weight", (heads * head_dim, hidden)),
                   (p + "post_attention_layernorm.weight", (hidden,)), (p + "gate_proj.weight", (hidden, ffn)),
                   (p + "up_proj.weight", (hidden, ffn)), (p + "down_proj.weight", (ffn, hidden))]
    return shapes + [("norm.weight", (hidden,)), ("lm_head.weight", (hidden, vocab))]


def llama_size_bytes(hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, vocab: int) -> int:
    """float32 weight bytes of :func:`build_streamed_llama` with these dimensions."""
    return sum(4 * int(np.prod(s)) for _, s in llama_weight_shapes(hidden, layers, heads, kv_heads, ffn, vocab))


class _Nodes:
    """A tiny graph writer: ``add(op, inputs, **attrs)`` returns the new output's name."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def add(self, op: str, inputs: list[str], outputs: int = 1, **attrs) -> str | list[str]:
        self.count += 1
        names = [f"{op.lower()}_{self.count}" + (f"_{k}" if outputs > 1 else "") for k in range(outputs)]
        self.nodes.append(onnx.helper.make_node(op, inputs, names, name=f"{op}_{self.count}", **attrs))
        return names if outputs > 1 else names[0]

    def const(self, name: str, values) -> str:
        array = np.asarray(values)
        self.inits.append(numpy_helper.from_array(array, name))
        return name


def _rms_norm(g: _Nodes, x: str, weight: str) -> str:
    square = g.add("Mul", [x, x])
    mean = g.add("ReduceMean", [square], axes=[-1], keepdims=1)
    root = g.add("Sqrt", [g.add("Add", [mean, "eps"])])
    return g.add("Mul", [g.add("Div", [x, root]), weight])


def _heads(g: _Nodes, x: str, count: int, head_dim: int) -> str:
    """[B, S, count*D] -> [B, count, S, D]."""
    shape = g.const(f"heads_{count}_{g.count}", np.array([0, 0, count, head_dim], np.int64))
    return g.add("Transpose", [g.add("Reshape", [x, shape])], perm=[0, 2, 1, 3])


def _rope(g: _Nodes, x: str, cos: str, sin: str, head_dim: int) -> str:
    first = g.add("Slice", [x, "rope_zero", "rope_half", "rope_last"])
    second = g.add("Slice", [x, "rope_half", "rope_end", "rope_last"])
    rotated = g.add("Concat", [g.add("Neg", [second]), first], axis=-1)
    return g.add("Add", [g.add("Mul", [x, cos]), g.add("Mul", [rotated, sin])])


def _repeat_kv(g: _Nodes, x: str, heads: int, kv_heads: int, head_dim: int) -> str:
    """[B, KV, S, D] -> [B, KV*rep, S, D] (Unsqueeze -> Expand -> Reshape, like HF's repeat_kv export)."""
    if heads == kv_heads:
        return x
    shape = g.add("Shape", [x])
    dims = [g.add("Gather", [shape, f"dim_{a}"], axis=0) for a in range(4)]  # scalars, like HF's export
    rep = g.const(f"rep_{g.count}", np.array(heads // kv_heads, np.int64))
    pieces = [dims[0], dims[1], rep, dims[2], dims[3]]
    target = g.add("Concat", [g.add("Unsqueeze", [d, "idx_0"]) for d in pieces], axis=0)
    expanded = g.add("Expand", [g.add("Unsqueeze", [x, "idx_2_1d"]), target])
    merged = [dims[0], g.add("Mul", [dims[1], rep]), dims[2], dims[3]]
    return g.add("Reshape", [expanded, g.add("Concat", [g.add("Unsqueeze", [d, "idx_0"]) for d in merged], axis=0)])


def llama_graph(hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, vocab: int, max_seq: int = 512
                ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes and the small constants (RoPE tables, shape targets) of the decoder; weights are added by the caller.

    input_ids [batch, seq] -> embedding -> layers x (RMSNorm, GQA attention with RoPE and a run-time causal
    mask, residual, RMSNorm, SwiGLU MLP, residual) -> RMSNorm -> lm_head -> logits [batch, seq, vocab].
    """
    head_dim = hidden // heads
    g = _Nodes()
    inv = 1.0 / (10000 ** (np.arange(0, head_dim, 2) / head_dim))
    angles = np.outer(np.arange(max_seq), inv)
    angles = np.concatenate([angles, angles], axis=1).astype(np.float32)
    g.const("cos_table", np.cos(angles))
    g.const("sin_table", np.sin(angles))
    g.const("eps", np.array(1e-5, np.float32))
    g.const("scale", np.array(1.0 / math.sqrt(head_dim), np.float32))
    g.const("neg_big", np.array(-1e9, np.float32))
    for a in range(4):
        g.const(f"dim_{a}", np.array(a, np.int64))
    for name, value in {"idx_0": [0], "idx_1": [1], "idx_2": [2], "idx_2_1d": [2], "rope_zero": [0],
                        "rope_half": [head_dim // 2], "rope_end": [head_dim], "rope_last": [-1]}.items():
        g.const(name, np.array(value, np.int64))
    ids_shape = g.add("Shape", ["input_ids"])
    seq = g.add("Slice", [ids_shape, "idx_1", "idx_2", "idx_0"])
    cos = g.add("Slice", ["cos_table", "idx_0", seq, "idx_0"])
    sin = g.add("Slice", ["sin_table", "idx_0", seq, "idx_0"])
    square = g.add("ConstantOfShape", [g.add("Concat", [seq, seq], axis=0)],
                   value=numpy_helper.from_array(np.array([1.0], np.float32)))
    mask = g.add("Mul", [g.add("Trilu", [square, "idx_1_scalar"], upper=1), "neg_big"])
    g.const("idx_1_scalar", np.array(1, np.int64))
    x = g.add("Gather", ["embed_tokens.weight", "input_ids"], axis=0)
    for i in range(layers):
        p = f"layers.{i}."
        h = _rms_norm(g, x, p + "input_layernorm.weight")
        q = _rope(g, _heads(g, g.add("MatMul", [h, p + "q_proj.weight"]), heads, head_dim), cos, sin, head_dim)
        k = _rope(g, _heads(g, g.add("MatMul", [h, p + "k_proj.weight"]), kv_heads, head_dim), cos, sin, head_dim)
        v = _heads(g, g.add("MatMul", [h, p + "v_proj.weight"]), kv_heads, head_dim)
        k, v = _repeat_kv(g, k, heads, kv_heads, head_dim), _repeat_kv(g, v, heads, kv_heads, head_dim)
        scores = g.add("Add", [g.add("Mul", [g.add("MatMul", [q, g.add("Transpose", [k], perm=[0, 1, 3, 2])]),
                                             "scale"]), mask])
        attn = g.add("MatMul", [g.add("Softmax", [scores], axis=-1), v])
        merged = g.add("Reshape", [g.add("Transpose", [attn], perm=[0, 2, 1, 3]),
                                   g.const(f"merge_heads_{i}", np.array([0, 0, heads * head_dim], np.int64))])
        x = g.add("Add", [x, g.add("MatMul", [merged, p + "o_proj.weight"])])
        h = _rms_norm(g, x, p + "post_attention_layernorm.weight")
        gate = g.add("MatMul", [h, p + "gate_proj.weight"])
        act = g.add("Mul", [gate, g.add("Sigmoid", [gate])])
        up = g.add("MatMul", [h, p + "up_proj.weight"])
        x = g.add("Add", [x, g.add("MatMul", [g.add("Mul", [act, up]), p + "down_proj.weight"])])
    h = _rms_norm(g, x, "norm.weight")
    g.nodes.append(onnx.helper.make_node("MatMul", [h, "lm_head.weight"], ["logits"], name="lm_head"))
    return g.nodes, g.inits


def _chunk(pool: np.ndarray, count: int, shift: int, scale: np.float32) -> np.ndarray:
    """``count`` normal values: a window of a pre-drawn pool at a random shift (drawing 10+ GB of normals
    one by one takes minutes on a shared core; weights only need to be random-looking, not independent)."""
    parts, done = [], 0
    while done < count:
        take = min(count - done, len(pool) - shift)
        parts.append(pool[shift:shift + take] * scale)
        done, shift = done + take, 0
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def build_streamed_llama(path: str | Path, hidden: int = 128, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                         ffn: int = 256, vocab: int = 256, seed: int = 0, chunk_bytes: int = 64 << 20) -> Path:
    """Write a Llama-shaped decoder (no KV cache) whose float32 weights go to ``<path>.data``, chunk by chunk.

    Why streamed: the benchmark's model is larger than half of the machine's memory, so no weight — let
    alone the model — is ever held whole; each chunk of rows is written (seeded, scale 1/√fan-in; norms 1)
    and appended, offsets page-aligned for memory mapping.  The ``.onnx`` file holds only the graph.
    Chunks are shifted windows of one seeded pool of ``chunk_bytes`` normal values (:func:`_chunk`).
    """
    path = Path(path)
    data_name = path.name + ".data"
    nodes, small = llama_graph(hidden, layers, heads, kv_heads, ffn, vocab)
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal(max(chunk_bytes // 4, 1) + 4099, dtype=np.float32)  # drawn once: see below
    tensors = []
    with open(path.parent / data_name, "wb") as data:
        for name, shape in llama_weight_shapes(hidden, layers, heads, kv_heads, ffn, vocab):
            offset = data.tell()
            if len(shape) == 1:
                data.write(np.ones(shape, np.float32).tobytes())
            else:
                rows = max(1, chunk_bytes // (4 * int(np.prod(shape[1:]))))
                scale = np.float32(1.0 if name.startswith("embed") else 1.0 / math.sqrt(shape[0]))
                for start in range(0, shape[0], rows):
                    count = min(rows, shape[0] - start) * int(np.prod(shape[1:]))
                    data.write(_chunk(pool, count, int(rng.integers(0, 4096)), scale).tobytes())
            length = data.tell() - offset
            data.write(b"\0" * (-data.tell() % 4096))
            tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=list(shape))
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(length))):
                tensor.external_data.add(key=key, value=value)
            tensors.append(tensor)
    graph = onnx.helper.make_graph(
        nodes, "llama_streamed",
        [onnx.helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, ["batch", "seq"])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", "seq", vocab])],
        small + tensors)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], producer_name="onnxprune")
    model.ir_version = 8
    onnx.helper.set_model_props(model, {"onnx_builder": f"build_streamed_llama(hidden={hidden}, layers={layers}, "
                                        f"heads={heads}, kv_heads={kv_heads}, ffn={ffn}, vocab={vocab}, seed={seed})"})
    with open(path, "wb") as out:
        out.write(model.SerializeToString())
    return path
