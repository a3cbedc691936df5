"""Costs of onnxruntime's fused ``com.microsoft`` ops, for :mod:`onnxprune.measurement.counting`.

:data:`CHEAP` lists the fused normalizations and activations: like their standard-domain forms they cost
O(elements) and are not MACs, so they are not reported as uncounted.  The attention ops get MAC rules.

Why: after the transformer optimizer the QKV projection and both attention products of a BERT layer live
inside one ``Attention`` node; without these rules a pruned encoder's FLOPs would leave out the part
head pruning shrinks most.  Per head, QKᵀ costs S·T·Dq and PV costs S·T·Dv, so summed over heads the
products cost ``B·S·T·(q + v)`` with q, v the total Q and V widths — the head count cancels.  T is the key
length (S for self-attention without a cache); a cache whose length is not static leaves the op uncounted
(None), which reports list as a lower bound.  ``MatMulNBits`` (a block-quantized linear layer) counts like a
MatMul: rows × K × N.
"""

from __future__ import annotations

import math
from typing import Mapping

import onnx

Shape = tuple[int, ...]

#: Fused element-wise / normalization ops of the transformer optimizer (O(elements), no matrix product).
CHEAP: frozenset[str] = frozenset({
    "SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization",
    "EmbedLayerNormalization", "BiasGelu", "FastGelu", "Gelu", "QuickGelu", "BiasAdd", "RotaryEmbedding"})


def _shape(node: onnx.NodeProto, index: int, shapes: Mapping[str, Shape]) -> Shape | None:
    if index >= len(node.input) or not node.input[index]:
        return None
    return shapes.get(node.input[index])


def _ints(node: onnx.NodeProto, name: str) -> list[int]:
    attr = next((a for a in node.attribute if a.name == name), None)
    return list(attr.ints) if attr is not None else []


def attention_macs(node: onnx.NodeProto, shapes: Mapping[str, Shape]) -> int | None:
    """Packed projection ``x[B,S,K]·W[K, q+k+v]`` plus the attention products (no cache: T = S)."""
    x, weights = _shape(node, 0, shapes), _shape(node, 1, shapes)
    if x is None or weights is None or len(x) != 3 or len(weights) != 2 or _shape(node, 4, shapes) is not None:
        return None
    sizes = _ints(node, "qkv_hidden_sizes") or [weights[1] // 3] * 3
    b, s, k = x
    return b * s * k * weights[1] + b * s * s * (sizes[0] + sizes[2])


def multi_head_attention_macs(node: onnx.NodeProto, shapes: Mapping[str, Shape]) -> int | None:
    """Attention products of query [B,S,q] over key/value [B,L,k|v] (projections are separate MatMuls)."""
    q, key, value = (_shape(node, i, shapes) for i in range(3))
    if q is None or key is None or value is None or any(len(t) != 3 for t in (q, key, value)) \
            or _shape(node, 6, shapes) is not None:
        return None
    return q[0] * q[1] * key[1] * (q[2] + value[2])


def group_query_attention_macs(node: onnx.NodeProto, shapes: Mapping[str, Shape]) -> int | None:
    """Every query head attends to its KV head: products B·S·L·2·(N·H) without a cache."""
    q, key = _shape(node, 0, shapes), _shape(node, 1, shapes)
    if q is None or key is None or len(q) != 3 or len(key) != 3 or _shape(node, 3, shapes) is not None:
        return None
    return math.prod(q[:2]) * key[1] * 2 * q[2]


def matmul_nbits_macs(node: onnx.NodeProto, shapes: Mapping[str, Shape]) -> int | None:
    """``A[..., K] · dequant(B)ᵀ``: rows × K × N from the ``K`` and ``N`` attributes."""
    a = _shape(node, 0, shapes)
    attrs = {attr.name: attr.i for attr in node.attribute}
    if a is None or not attrs.get("K") or not attrs.get("N"):
        return None
    return math.prod(a[:-1]) * attrs["K"] * attrs["N"]
