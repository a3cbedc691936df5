"""Hand-built graphs with ``com.microsoft`` ops the transformer optimizer of this onnxruntime does not emit
for the small exported models (GroupQueryAttention, RotaryEmbedding, the simplified RMS norms, QuickGelu,
``qkv_hidden_sizes``, ``attention_bias``, MatMulNBits).

Why hand-built: they are the decoder-side and quantized forms (onnxruntime-genai's builder writes them);
each graph runs in onnxruntime's CPU provider so the oracle can check every rewrite.  Weights are seeded
random numbers; sequence-dependent inputs (``seqlens_k``, ``total_sequence_length``) are computed from
``Shape(x)`` so the graphs accept any batch and sequence length.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"
HIDDEN = 32


class Builder:
    """Collects nodes and seeded initializers of one graph."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], scale: float = 0.3) -> str:
        return self.const(name, (scale * self.rng.standard_normal(shape)).astype(np.float32))

    def node(self, op: str, inputs: list[str], output: str, domain: str = "", **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    def linear(self, x: str, name: str, d_in: int, d_out: int) -> str:
        return self.node("MatMul", [x, self.weight(f"{name}_w", (d_in, d_out))], name)

    def model(self, inputs: list[tuple[str, list]], outputs: list[tuple[str, list]]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "contrib", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], initializer=self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])


def _rotary_caches(b: Builder, head_size: int, max_pos: int = 64) -> tuple[str, str]:
    inv = 1.0 / (10000 ** (np.arange(0, head_size, 2) / head_size))
    angles = np.arange(max_pos)[:, None] * inv[None, :]
    return (b.const("cos_cache", np.cos(angles).astype(np.float32)),
            b.const("sin_cache", np.sin(angles).astype(np.float32)))


def _sequence_inputs(b: Builder, x: str, past: str | None = None) -> tuple[str, str]:
    """``seqlens_k`` = T - 1 per batch row (int32 [B]) and ``total_sequence_length`` = T (int32 scalar), T = S
    plus, with a ``past`` cache [B, G, P, H], its length P."""
    shape = b.node("Shape", [x], "x_shape")
    s = b.node("Gather", [shape, b.const("one", np.array(1, np.int64))], "seq_len", axis=0)
    batch = b.node("Gather", [shape, b.const("zero_1d", np.array([0], np.int64))], "batch_1d", axis=0)
    if past is not None:
        past_len = b.node("Gather", [b.node("Shape", [past], "past_shape"), b.const("two", np.array(2, np.int64))],
                          "past_len", axis=0)
        s = b.node("Add", [past_len, s], "total_len")
    total = b.node("Cast", [s], "total_sequence_length", to=TensorProto.INT32)
    last = b.node("Sub", [total, b.const("one_i32", np.array(1, np.int32))], "last_index")
    return b.node("Expand", [last, batch], "seqlens_k"), total


def gqa_decoder_block(heads: int = 4, kv_heads: int = 2, head_size: int = 8, present: bool = False) -> onnx.ModelProto:
    """Decoder block: q/k/v MatMul → RotaryEmbedding (q, k;
    3-D, ``num_heads`` set) → GroupQueryAttention (causal, no cache) → o MatMul →
    SkipSimplifiedLayerNormalization(residual) → up MatMul → QuickGelu → down MatMul → y; ``present``
    also returns the attention's KV cache (``present_key``/``present_value`` outputs)."""
    b = Builder(seed=1)
    q_size, kv_size = heads * head_size, kv_heads * head_size
    q, k, v = (b.linear("x", name, HIDDEN, size) for name, size in (("q", q_size), ("k", kv_size), ("v", kv_size)))
    cos, sin = _rotary_caches(b, head_size)
    pos = b.const("position_offset", np.array([0], np.int64))
    q = b.node("RotaryEmbedding", [q, pos, cos, sin], "q_rot", domain=MS, num_heads=heads)
    k = b.node("RotaryEmbedding", [k, pos, cos, sin], "k_rot", domain=MS, num_heads=kv_heads)
    seqlens, total = _sequence_inputs(b, "x")
    caches = ["present_key", "present_value"] if present else []
    b.nodes.append(helper.make_node("GroupQueryAttention", [q, k, v, "", "", seqlens, total], ["attn", *caches],
                                    name="attn", domain=MS, num_heads=heads, kv_num_heads=kv_heads))
    attn = "attn"
    o = b.linear(attn, "o", q_size, HIDDEN)
    b.nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [o, "x", b.weight("ln2_g", (HIDDEN,))],
                                    ["ln2", "", "", "resid"], name="ln2", domain=MS, epsilon=1e-5))
    act = b.node("QuickGelu", [b.linear("ln2", "up", HIDDEN, 48)], "act", domain=MS, alpha=1.702)
    down = b.linear(act, "down", 48, HIDDEN)
    b.node("Add", [down, "resid"], "y")
    cache_dims = ["N", kv_heads, "S", head_size]
    return b.model([("x", ["N", "S", HIDDEN])], [("y", ["N", "S", HIDDEN])] + [(c, cache_dims) for c in caches])


GQA_CACHE = ("past_key_values.0.key", "past_key_values.0.value", "present.0.key", "present.0.value")


def gqa_cache_block(heads: int = 4, kv_heads: int = 2, head_size: int = 16, vocab: int = 64,
                    lengths_as_inputs: bool = False) -> onnx.ModelProto:
    """A one-layer token decoder as onnxruntime-genai writes it, with a KV cache: input_ids → embedding Gather →
    q/k/v MatMul → GroupQueryAttention (rotary inside, ``do_rotary``; past_key/past_value [B, G, P, H] in,
    present [B, G, P+S, H] out, seqlens_k and total_sequence_length from P + S) → o MatMul → residual → up
    MatMul → QuickGelu → down MatMul → residual → logits.  onnxruntime's CPU kernel wants head_size % 16 == 0
    for the rotary, and batch 1 when S > 1 tokens follow a past.  ``lengths_as_inputs``: seqlens_k [B] and
    total_sequence_length (int32) are graph inputs, as onnxruntime-genai feeds them."""
    b = Builder(seed=5)
    q_size, kv_size = heads * head_size, kv_heads * head_size
    past_k, past_v, present_k, present_v = GQA_CACHE
    x = b.node("Gather", [b.weight("embed", (vocab, HIDDEN), scale=1.0), "input_ids"], "x")
    q, k, v = (b.linear(x, name, HIDDEN, size) for name, size in (("q", q_size), ("k", kv_size), ("v", kv_size)))
    cos, sin = _rotary_caches(b, head_size)
    seqlens, total = ("seqlens_k", "total_sequence_length") if lengths_as_inputs else \
        _sequence_inputs(b, "input_ids", past_k)
    b.nodes.append(helper.make_node("GroupQueryAttention", [q, k, v, past_k, past_v, seqlens, total, cos, sin],
                                    ["attn", present_k, present_v], name="attn", domain=MS, num_heads=heads,
                                    kv_num_heads=kv_heads, do_rotary=1))
    h = b.node("Add", [b.linear("attn", "o", q_size, HIDDEN), x], "h")
    act = b.node("QuickGelu", [b.linear(h, "up", HIDDEN, 48)], "act", domain=MS, alpha=1.702)
    b.linear(b.node("Add", [b.linear(act, "down", 48, HIDDEN), h], "y"), "logits", HIDDEN, vocab)
    past, present = ["batch", kv_heads, "past", head_size], ["batch", kv_heads, "total", head_size]
    model = b.model([("input_ids", ["batch", "seq"]), (past_k, past), (past_v, past)],
                    [("logits", ["batch", "seq", vocab]), (present_k, present), (present_v, present)])
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    if lengths_as_inputs:
        model.graph.input.extend([helper.make_tensor_value_info(seqlens, TensorProto.INT32, ["batch"]),
                                  helper.make_tensor_value_info(total, TensorProto.INT32, [])])
    return model


def attention_block(seq: int | None = None, v_size: int = 48, unidirectional: int = 0) -> onnx.ModelProto:
    """Packed ``Attention`` with ``qkv_hidden_sizes`` = (32, 32, v_size), 4 heads → o MatMul →
    SkipLayerNormalization → up MatMul → FastGelu(no bias) → com.microsoft Gelu → down MatMul → y.
    With a fixed ``seq`` the attention also gets a constant per-head ``attention_bias`` [1, 4, S, S]."""
    b = Builder(seed=2)
    total = 64 + v_size
    inputs = ["x", b.weight("qkv_w", (HIDDEN, total)), b.weight("qkv_b", (total,))]
    if seq is not None:
        inputs += ["", "", b.weight("attention_bias", (1, 4, seq, seq), scale=1.0)]
    attn = b.node("Attention", inputs, "attn", domain=MS, num_heads=4, qkv_hidden_sizes=[32, 32, v_size],
                  unidirectional=unidirectional)
    o = b.linear(attn, "o", v_size, HIDDEN)
    norm_params = [b.weight(name, (HIDDEN,)) for name in ("ln_g", "ln_b", "o_b")]
    b.nodes.append(helper.make_node("SkipLayerNormalization", [o, "x", *norm_params], ["ln"], name="ln", domain=MS,
                                    epsilon=1e-5))
    act = b.node("FastGelu", [b.linear("ln", "up", HIDDEN, 40)], "fast_gelu", domain=MS)
    act = b.node("Gelu", [act], "gelu", domain=MS)
    b.node("MatMul", [act, b.weight("down_w", (40, HIDDEN))], "y")
    dims = ["N", seq if seq is not None else "S", HIDDEN]
    return b.model([("x", dims)], [("y", dims)])


def mha_rotary_block(seq: int | None = None) -> onnx.ModelProto:
    """q/k/v MatMul → RotaryEmbedding on q and k (``num_heads`` 0: head size 16 from the cos cache) →
    MultiHeadAttention (4 heads, packed bias [96], a constant ``attention_bias`` [1, 4, S, S] when
    ``seq`` is fixed) → o MatMul → y."""
    b = Builder(seed=3)
    q, k, v = (b.linear("x", name, HIDDEN, 64) for name in ("q", "k", "v"))
    cos, sin = _rotary_caches(b, 16)
    pos = b.const("position_offset", np.array([0], np.int64))
    q = b.node("RotaryEmbedding", [q, pos, cos, sin], "q_rot", domain=MS)
    k = b.node("RotaryEmbedding", [k, pos, cos, sin], "k_rot", domain=MS)
    inputs = [q, k, v, b.weight("qkv_bias", (192,))]
    if seq is not None:
        inputs += ["", b.weight("attention_bias", (1, 4, seq, seq), scale=1.0)]
    attn = b.node("MultiHeadAttention", inputs, "attn", domain=MS, num_heads=4)
    b.node("MatMul", [attn, b.weight("o_w", (64, HIDDEN))], "y")
    dims = ["N", seq if seq is not None else "S", HIDDEN]
    return b.model([("x", dims)], [("y", dims)])


def _random_nbits(b: Builder, x: str, name: str, k: int, n: int, block: int = 16) -> str:
    """A MatMulNBits with random 4-bit codes and *flat* scales [N·k_blocks] (older writers' layout)."""
    blocks = k // block
    packed = b.const(f"{name}_q4", b.rng.integers(0, 256, size=(n, blocks, block // 2), dtype=np.uint8))
    scales = b.const(f"{name}_scales", (0.05 * b.rng.random(n * blocks) + 0.01).astype(np.float32))
    return b.node("MatMulNBits", [x, packed, scales], name, domain=MS, K=k, N=n, bits=4, block_size=block)


def matmul_nbits_mlp() -> onnx.ModelProto:
    """x → MatMulNBits 'up' (32 → 48) → Relu → MatMulNBits 'mid' (48 → 32) → Relu → MatMul → y, flat
    scales: 'mid' prunes its output rows; 'up' freezes (flat scales cannot lose input blocks)."""
    b = Builder(seed=4)
    up = b.node("Relu", [_random_nbits(b, "x", "up", HIDDEN, 48)], "up_act")
    mid = b.node("Relu", [_random_nbits(b, up, "mid", 48, HIDDEN)], "mid_act")
    b.node("MatMul", [mid, b.weight("out_w", (HIDDEN, HIDDEN))], "y")
    return b.model([("x", ["N", HIDDEN])], [("y", ["N", HIDDEN])])


def quantized_mlp(symmetric: bool, block: int) -> onnx.ModelProto:
    """x[N, S, 32] → up (32 → 128) → Relu → down (128 → 32) → Add(x) → y, both MatMuls quantized to 4 bits
    by onnxruntime's ``MatMulNBitsQuantizer`` (scales [N, k_blocks]; asymmetric: packed zero points)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    b = Builder(seed=6)
    act = b.node("Relu", [b.linear("x", "up", HIDDEN, 128)], "act")
    b.node("Add", [b.linear(act, "down", 128, HIDDEN), "x"], "y")
    model = b.model([("x", ["N", "S", HIDDEN])], [("y", ["N", "S", HIDDEN])])
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric)
    quantizer = MatMulNBitsQuantizer(model, block_size=block, is_symmetric=symmetric, algo_config=config)
    quantizer.process()
    return quantizer.model.model


def bias_add_block(norm: bool, norm_domain: str = "") -> onnx.ModelProto:
    """x → up, side MatMul → BiasAdd(up, bias, side) [→ SimplifiedLayerNormalization] → down MatMul → y.

    Analysis only: onnxruntime's CPU provider has no BiasAdd kernel, and SimplifiedLayerNormalization is an
    onnxruntime extension of the ONNX domain that the ONNX checker (and so ``prepare``) refuses; in the
    ``com.microsoft`` domain (``norm_domain``) the checker lets it through but onnxruntime has no kernel."""
    b = Builder(seed=5)
    addends = [b.linear("x", "up", HIDDEN, 48), b.weight("bias", (48,)), b.linear("x", "side", HIDDEN, 48)]
    act = b.node("BiasAdd", addends, "bias_add", domain=MS)
    if norm:
        act = b.node("SimplifiedLayerNormalization", [act, b.weight("g", (48,))], "rms", domain=norm_domain, axis=-1,
                     epsilon=1e-5)
    b.node("MatMul", [act, b.weight("down_w", (48, HIDDEN))], "y")
    return b.model([("x", ["N", "S", HIDDEN])], [("y", ["N", "S", HIDDEN])])
