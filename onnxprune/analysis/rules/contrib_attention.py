"""Fused ``com.microsoft`` attention ops: prune whole heads, update packed weights and head counts.

Why: after onnxruntime's transformer optimizer a BERT layer's attention is one ``Attention`` node (or
``MultiHeadAttention`` fed by Q/K/V projections, ``GroupQueryAttention`` in decoders); its heads are
only reachable through the op's own layout.  Semantics follow onnxruntime's contrib op schemas:

* ``Attention(input, weights[K, q+k+v], bias[q+k+v]?, mask_index?, past?, attention_bias?, …)``,
  ``num_heads`` = N, optional ``qkv_hidden_sizes`` = (q, k, v) (else q = k = v = columns / 3).  Head
  ``h`` owns columns ``h·Dq…`` of the Q chunk, ``q + h·Dk…`` of K and ``q + k + h·Dv…`` of V, and
  output features ``h·Dv…h·Dv+Dv-1``.  Each head's softmax(QKᵀ·scale)V only reads its own columns and
  the default scale is 1/√Dq, so removing a head removes exactly its columns and its output features,
  with ``num_heads`` (and ``qkv_hidden_sizes``) shrunk.  ``input``'s feature axis is read by the
  weights' rows (a consumer, like MatMul).
* ``MultiHeadAttention(query[B,S,q], key[B,L,k], value[B,L,v], bias[q+k+v]?, key_padding_mask?,
  attention_bias?, …)``: the same head layout spread over three tensors; their projections are
  ordinary MatMuls, so Q/K/V features are linked head-wise to the output.
* ``GroupQueryAttention(query[B,S,N·H], key[B,S,G·H], value, past_key?, past_value?, seqlens_k,
  total_sequence_length, cos_cache?, sin_cache?, …)``, ``num_heads`` = N, ``kv_num_heads`` = G:
  query head ``n`` reads KV head ``n // (N/G)``.  The units are query heads in blocks of N/G (one block per
  KV head, :mod:`onnxprune.analysis.blocks`): every KV head keeps the same number of query heads, a KV head
  goes with its last query head; ``num_heads`` and ``kv_num_heads`` follow.  A KV cache (``past_key``/
  ``past_value`` inputs, ``present_key``/``present_value`` outputs, [B, G, S, H]) holds one position of its
  axis 1 per KV head: it is linked to the key/value heads, so the cache only changes when a whole KV group
  goes — at the model's interface that is :mod:`onnxprune.analysis.io_change`'s call (``--allow-io-change``),
  and query heads inside the groups stay prunable without it (``Group.fixed_blocks``).
* ``RotaryEmbedding(input, position_ids, cos_cache, sin_cache)``: rotates each head's first
  ``rotary_embedding_dim`` features; per head, so whole heads pass through.

Declined (the group freezes with the reason): KV-cache inputs/outputs of ``Attention`` and
``MultiHeadAttention`` (pruning changes the model's I/O), a quantized GQA cache (``k_scale``/``v_scale``),
packed QKV in ``query``, key/value in BNSH layout, per-head inputs computed at run time.  ``attention_bias``
and ``head_sink`` constants are sliced per head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.analysis.rules.base import (Decline, Effects, KeptView, Link, ParamSlice, Port, RuleContext, Slot,
    find_node, positions, register, require_shape)

MS = "com.microsoft"


@dataclass
class HeadCountEdit:
    """``attr`` ← kept positions of ``slot`` / ``per_head`` (``num_heads``, ``kv_num_heads``); with
    ``sizes``, ``qkv_hidden_sizes`` ← heads × each per-head size."""

    node: str
    slot: Slot
    per_head: int
    attr: str = "num_heads"
    sizes: tuple[int, ...] = ()

    def apply(self, graph: gs.Graph, view: KeptView) -> None:
        node = find_node(graph, self.node)
        heads = view.size(self.slot) // self.per_head
        node.attrs[self.attr] = int(heads)
        if self.sizes:
            node.attrs["qkv_hidden_sizes"] = [int(heads * s) for s in self.sizes]


def head_link(slot: Slot, size: int, unit: int) -> Link:
    """Positions of ``slot`` within one block of ``unit`` are one channel: whole heads (or KV groups)."""
    pos = positions(size)
    return Link(slot, slot, pos, (pos // unit) * unit)


def to_heads(size: int, per_head: int, out_per_head: int) -> np.ndarray:
    """Position ``p`` of a tensor with ``per_head`` features per head → first output position of its head."""
    return (positions(size) // per_head) * out_per_head


def _given(node: gs.Node, index: int) -> bool:
    return index < len(node.inputs) and bool(node.inputs[index].name)


def _reject_cache(node: gs.Node, inputs: tuple[int, ...], outputs: tuple[int, ...]) -> None:
    names = [node.inputs[i].name for i in inputs if _given(node, i)] + \
        [node.outputs[i].name for i in outputs if i < len(node.outputs) and node.outputs[i].name]
    if names:
        raise Decline(f"{node.op} has a KV cache ({', '.join(names)}): removing heads changes its shape")


def _reject_scores_output(node: gs.Node, index: int) -> None:
    """An output of per-head attention scores [B, N, S, T] is read outside the op: its head axis would change."""
    if index < len(node.outputs) and node.outputs[index].name:
        raise Decline(f"{node.op} returns its per-head attention scores ('{node.outputs[index].name}')")


def _num_heads(node: gs.Node, attr: str = "num_heads") -> int:
    heads = int(node.attrs.get(attr, 0) or 0)
    if heads <= 0:
        raise Decline(f"{node.op} has no positive {attr} attribute")
    return heads


def _per_head(size: int, heads: int, what: str) -> int:
    if size % heads:
        raise Decline(f"{what} size {size} is not a multiple of {heads} heads")
    return size // heads


def _head_param(ctx: RuleContext, node: gs.Node, index: int, axis: int, heads: int, out: Slot, out_per_head: int,
                what: str) -> list[ParamSlice]:
    """Slice a per-head input (``attention_bias`` axis 1, ``head_sink``) with its heads; broadcast ones stay."""
    if not _given(node, index):
        return []
    tensor = node.inputs[index]
    shape = require_shape(ctx, tensor)
    if len(shape) <= axis or shape[axis] == 1:
        return []
    if shape[axis] != heads:
        raise Decline(f"{what} '{tensor.name}' has {shape[axis]} != {heads} heads")
    if not isinstance(tensor, gs.Constant):
        raise Decline(f"{what} '{tensor.name}' is computed at run time and indexed by head")
    return [ParamSlice(tensor.name, axis, out, positions(heads) * out_per_head, "param", node.name, index)]


def _packed_bias(node: gs.Node, index: int, out: Slot, index_map: np.ndarray) -> list[ParamSlice]:
    """The packed Q|K|V bias (or weight columns) follows the heads of ``out``."""
    if not _given(node, index):
        return []
    tensor = node.inputs[index]
    if not isinstance(tensor, gs.Constant):
        raise Decline(f"{node.op} bias '{tensor.name}' is not a constant")
    return [ParamSlice(tensor.name, 0, out, index_map, "producer", node.name, index)]


def _rank3_feature_port(ctx: RuleContext, node: gs.Node, port: Port, inputs: tuple[int, ...]) -> None:
    """Only the feature (last) axis of the rank-3 inputs/output follows heads; batch and sequence mix."""
    if port.is_input and port.index not in inputs or not port.is_input and port.index != 0:
        raise Decline(f"channel axis reaches {node.op} through {'input' if port.is_input else 'output'} {port.index}")
    tensor = node.inputs[port.index] if port.is_input else node.outputs[0]
    shape = require_shape(ctx, tensor)
    if len(shape) != 3:
        raise Decline(f"{node.op} '{tensor.name}' is not [batch, sequence, features] (packed or BNSH layout)")
    if port.axis != 2:
        raise Decline(f"{node.op} mixes the batch/sequence axis")


# ------------------------------------------------------------------------------------------- Attention


def _attention_seeds(ctx: RuleContext, node: gs.Node) -> list[Port]:
    return [Port(False, 0, 2)] if isinstance(node.inputs[1], gs.Constant) else []


@register("Attention", role="producer", domain=MS, seeds=_attention_seeds)
def attention(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Packed-QKV self-attention (module docstring): heads on the output, a consumer on the input."""
    _reject_cache(node, inputs=(4, 6), outputs=(1,))
    weights = node.inputs[1]
    if not isinstance(weights, gs.Constant) or len(weights.shape) != 2:
        raise Decline(f"Attention weights '{weights.name}' are not a constant matrix")
    _rank3_feature_port(ctx, node, port, inputs=(0,))
    if port.is_input:
        channels = int(weights.shape[0])
        return Effects(ports=[Port(True, 0, 2)], params=[
            ParamSlice(weights.name, 0, Slot(node.inputs[0].name, 2), positions(channels), "consumer", node.name, 1)])
    heads = _num_heads(node)
    total = int(weights.shape[1])
    sizes = [int(s) for s in node.attrs.get("qkv_hidden_sizes", []) or []] or [total // 3] * 3
    if len(sizes) != 3 or sum(sizes) != total:
        raise Decline(f"Attention weights have {total} columns, not q+k+v = {sizes}")
    per_head = [_per_head(s, heads, name) for s, name in zip(sizes, ("Q", "K", "V"))]
    out = Slot(node.outputs[0].name, 2)
    if require_shape(ctx, node.outputs[0])[2] != sizes[2]:
        raise Decline("Attention output features differ from the V size")
    columns = np.concatenate([to_heads(s, d, per_head[2]) for s, d in zip(sizes, per_head)])
    effects = Effects(links=[head_link(out, sizes[2], per_head[2])], ports=[Port(False, 0, 2)],
                      params=[ParamSlice(weights.name, 1, out, columns, "producer", node.name, 1)],
                      edits=[HeadCountEdit(node.name, out, per_head[2],
                                           sizes=tuple(per_head) if "qkv_hidden_sizes" in node.attrs else ())],
                      head_dims={out: per_head[2]})
    effects.params += _packed_bias(node, 2, out, columns)
    effects.params += _head_param(ctx, node, 5, 1, heads, out, per_head[2], "attention_bias")
    return effects


# ---------------------------------------------------------------------------------- MultiHeadAttention


@register("MultiHeadAttention", role="coupler", domain=MS)
def multi_head_attention(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Separate query/key/value [B, S, features]: their features are linked head-wise to the output."""
    _reject_cache(node, inputs=(6, 7, 9), outputs=(1, 2))
    _reject_scores_output(node, 3)
    if not (_given(node, 1) and _given(node, 2)):
        raise Decline("MultiHeadAttention with packed QKV in query (no key/value inputs)")
    _rank3_feature_port(ctx, node, port, inputs=(0, 1, 2))
    heads = _num_heads(node)
    shapes = [require_shape(ctx, node.inputs[i]) for i in range(3)]
    if any(len(s) != 3 for s in shapes):
        raise Decline("MultiHeadAttention key/value are not [batch, sequence, features] (packed or BNSH layout)")
    sizes = [s[2] for s in shapes]
    per_head = [_per_head(s, heads, name) for s, name in zip(sizes, ("query", "key", "value"))]
    if per_head[0] != per_head[1]:
        raise Decline("MultiHeadAttention query and key head sizes differ")
    out = Slot(node.outputs[0].name, 2)
    effects = Effects(links=[head_link(out, sizes[2], per_head[2])], ports=[Port(False, 0, 2)],
                      edits=[HeadCountEdit(node.name, out, per_head[2])], head_dims={out: per_head[2]})
    for index in range(3):
        effects.links.append(Link(Slot(node.inputs[index].name, 2), out, positions(sizes[index]),
                                  to_heads(sizes[index], per_head[index], per_head[2])))
        effects.ports.append(Port(True, index, 2))
    bias_map = np.concatenate([to_heads(s, d, per_head[2]) for s, d in zip(sizes, per_head)])
    effects.params += _packed_bias(node, 3, out, bias_map)
    effects.params += _head_param(ctx, node, 5, 1, heads, out, per_head[2], "attention_bias")
    return effects


# -------------------------------------------------------------------------------- GroupQueryAttention


@register("GroupQueryAttention", role="coupler", domain=MS)
def group_query_attention(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Units are query heads, in blocks of r = num_heads / kv_num_heads: KV head g (key and value, the
    blocks' parents) serves query heads g·r … g·r+r-1; the KV cache's head axis follows the KV heads."""
    _reject_scores_output(node, 3)
    for index, what in ((12, "k_scale"), (13, "v_scale")):
        if _given(node, index):
            raise Decline(f"GroupQueryAttention '{node.name}' has a quantized KV cache ({what})")
    if not (_given(node, 1) and _given(node, 2)):
        raise Decline(f"GroupQueryAttention '{node.name}' has packed QKV in query (no key/value inputs)")
    if _cache_port(port):
        if port.axis != 1:
            raise Decline(f"channel axis reaches GroupQueryAttention '{node.name}' through axis {port.axis} of "
                          "its KV cache (only the head axis 1 follows heads)")
    else:
        _rank3_feature_port(ctx, node, port, inputs=(0, 1, 2))
    heads, kv_heads = _num_heads(node), _num_heads(node, "kv_num_heads")
    if heads % kv_heads:
        raise Decline(f"num_heads {heads} is not a multiple of kv_num_heads {kv_heads}")
    ratio = heads // kv_heads
    sizes = [require_shape(ctx, node.inputs[i])[2] for i in range(3)]
    head_size = _per_head(sizes[0], heads, "query")
    if sizes[1] != kv_heads * head_size or sizes[2] != kv_heads * head_size:
        raise Decline(f"GroupQueryAttention key/value sizes {sizes[1:]} != kv_num_heads × {head_size}")
    for index, what in ((14, "q_norm_weight"), (15, "k_norm_weight")):  # shared by every head: [head_size]
        if _given(node, index) and require_shape(ctx, node.inputs[index])[-1:] != (head_size,):
            raise Decline(f"GroupQueryAttention {what} is not one [head_size] vector shared by the heads")
    out = Slot(node.outputs[0].name, 2)
    if require_shape(ctx, node.outputs[0])[2] != sizes[0]:
        raise Decline("GroupQueryAttention output features differ from the query size")
    key = Slot(node.inputs[1].name, 2)
    effects = Effects(links=[head_link(out, sizes[0], head_size), Link(Slot(node.inputs[0].name, 2), out)],
                      ports=[Port(False, 0, 2), Port(True, 0, 2)], head_dims={out: head_size},
                      edits=[HeadCountEdit(node.name, out, head_size),
                             HeadCountEdit(node.name, key, head_size, attr="kv_num_heads")])
    copies = positions(sizes[0])  # query position n·H + d reads KV position (n // r)·H + d
    for index in (1, 2):
        kv = Slot(node.inputs[index].name, 2)
        effects.links.append(head_link(kv, sizes[index], head_size))
        effects.nests.append(Link(kv, out, (copies // (ratio * head_size)) * head_size + copies % head_size, copies))
        effects.ports.append(Port(True, index, 2))
    _link_cache(ctx, node, effects, kv_heads, head_size)
    effects.params += _head_param(ctx, node, 10, 1, heads, out, head_size, "attention_bias")
    effects.params += _head_param(ctx, node, 11, 0, heads, out, head_size, "head_sink")
    return effects


#: GroupQueryAttention's cache: (is_input, index) of past_key, past_value, present_key, present_value → the
#: key (1) or value (2) input whose heads it holds
_GQA_CACHE = {(True, 3): 1, (True, 4): 2, (False, 1): 1, (False, 2): 2}


def _cache_port(port: Port) -> bool:
    return (port.is_input, port.index) in _GQA_CACHE


def _link_cache(ctx: RuleContext, node: gs.Node, effects: Effects, kv_heads: int, head_size: int) -> None:
    """Axis 1 of each cache tensor [B, G, S, H] is one position per KV head, linked to that head's features
    of key/value.  Why link rather than decline: a whole KV group then reaches the cache slots, so removing
    it is judged where the cache is read or returned (the model's interface: ``--allow-io-change``), while
    query heads inside the groups never touch it."""
    for (is_input, index), kv_index in _GQA_CACHE.items():
        tensors = node.inputs if is_input else node.outputs
        if index >= len(tensors) or not tensors[index].name:
            continue
        tensor = tensors[index]
        shape = require_shape(ctx, tensor)
        if len(shape) != 4 or shape[1] != kv_heads or shape[3] != head_size:
            raise Decline(f"GroupQueryAttention '{node.name}' KV cache '{tensor.name}' {list(shape)} is not "
                          f"[batch, kv_num_heads={kv_heads}, sequence, head_size={head_size}]")
        kv = Slot(node.inputs[kv_index].name, 2)
        effects.links.append(Link(Slot(tensor.name, 1), kv, positions(kv_heads), positions(kv_heads) * head_size))
        effects.ports.append(Port(is_input, index, 1))


# ------------------------------------------------------------------------------------ RotaryEmbedding


@register("RotaryEmbedding", role="pass-through", domain=MS)
def rotary_embedding(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Rotation within each head: [B, S, N·H] passes whole heads; [B, N, S, H] passes the head axis."""
    if port.index != 0:
        raise Decline(f"channel axis reaches RotaryEmbedding through {'input' if port.is_input else 'output'} "
                      f"{port.index}")
    shape = require_shape(ctx, node.inputs[0])
    inp, out = Slot(node.inputs[0].name, port.axis), Slot(node.outputs[0].name, port.axis)
    effects = Effects(links=[Link(inp, out)], ports=[Port(True, 0, port.axis), Port(False, 0, port.axis)])
    if len(shape) == 4 and port.axis == 1:  # [B, N, S, H]: the head axis itself
        if int(node.attrs.get("num_heads", 0) or 0) > 0:
            effects.edits.append(HeadCountEdit(node.name, out, 1))
        return effects
    if len(shape) != 3 or port.axis != 2:
        raise Decline("RotaryEmbedding rotates within this axis")
    heads = int(node.attrs.get("num_heads", 0) or 0)
    if heads > 0:
        head_size = _per_head(shape[2], heads, "RotaryEmbedding input")
        effects.edits.append(HeadCountEdit(node.name, out, head_size))
    elif int(node.attrs.get("rotary_embedding_dim", 0) or 0) > 0:
        raise Decline("RotaryEmbedding with rotary_embedding_dim but no num_heads")
    else:
        head_size = 2 * int(require_shape(ctx, node.inputs[2])[-1])  # cos_cache [max_len, head_size / 2]
    effects.links.append(head_link(out, shape[2], head_size))
    effects.head_dims[out] = head_size
    return effects
