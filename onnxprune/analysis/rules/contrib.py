"""Fused ``com.microsoft`` ops of onnxruntime's transformer optimizer: normalizations and activations.

Why: ``onnxruntime.transformers.optimizer.optimize_model`` rewrites a BERT/GPT-2 graph into fused ops;
without rules every FFN group of such a model froze at the first fused node.  Semantics follow
onnxruntime's contrib op schemas (``docs/ContribOperators.md``):

* ``SkipLayerNormalization(input, skip, gamma, beta?, bias?)`` = LayerNorm(input + skip + bias) over the
  last axis, ``SkipSimplifiedLayerNormalization`` the RMS form, ``SimplifiedLayerNormalization(X, scale)``
  RMSNorm over the axes from ``axis`` on.  Like ``LayerNormalization`` the normalized (hidden) axis is
  a barrier — its size is pinned — while the other axes pass through; optional output 3
  (``input_skip_bias_sum``) is the residual sum, the same shape as the output.
* ``BiasGelu(A, B)`` = Gelu(A + B), ``FastGelu(X, bias?)`` = tanh-Gelu(X + bias), ``BiasAdd(X, bias,
  skip)`` = X + bias + skip: element-wise with the bias broadcast over the last axis, so they are the
  default-domain broadcast rule (bias sliced with the channel).  ``Gelu`` and ``QuickGelu`` (x·σ(αx))
  are unary.
* ``MatMulNBits`` (block-quantized weights) is in :mod:`onnxprune.analysis.rules.contrib_nbits`.
  ``EmbedLayerNormalization`` has no rule: no channel reaches it
  (its inputs are token ids and embedding tables) and its output, the residual stream, is pinned anyway.

Attention-like contrib ops live in :mod:`onnxprune.analysis.rules.contrib_attention`.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from onnxprune.analysis.rules.base import (Decline, Effects, Link, Port, RuleContext, Slot, norm_axis, register,
    require_shape)
from onnxprune.analysis.rules.elementwise import broadcast, unary

MS = "com.microsoft"


@dataclass(frozen=True)
class NormSpec:
    """How one fused normalization is wired: inputs added into the normalized value (``data``), outputs
    with the input's shape (``same``), statistics outputs (``stats``), whether ``axis`` is an attribute."""

    data: tuple[int, ...]
    same: tuple[int, ...]
    stats: tuple[int, ...]
    axis_attr: bool = False


NORMS: dict[str, NormSpec] = {
    "SkipLayerNormalization": NormSpec(data=(0, 1), same=(0, 3), stats=(1, 2)),
    "SkipSimplifiedLayerNormalization": NormSpec(data=(0, 1), same=(0, 3), stats=(1, 2)),
    "SimplifiedLayerNormalization": NormSpec(data=(0,), same=(0,), stats=(1,), axis_attr=True),
}


def fused_norm(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Normalized axes are barriers (the hidden size stays); other axes link the data inputs and outputs."""
    spec = NORMS[node.op]
    if port.index not in (spec.data if port.is_input else spec.same):
        raise Decline(f"channel axis reaches {node.op} through {'input' if port.is_input else 'output'} {port.index}")
    rank = len(require_shape(ctx, node.outputs[0]))
    arriving = node.inputs[port.index] if port.is_input else node.outputs[port.index]
    out_axis = port.axis + rank - len(require_shape(ctx, arriving))
    start = norm_axis(int(node.attrs.get("axis", -1)) if spec.axis_attr else -1, rank)
    if out_axis >= start:
        raise Decline(f"{node.op} normalizes over this axis (its size is pinned, like LayerNorm)")
    if any(i < len(node.outputs) and node.outputs[i].name for i in spec.stats):
        raise Decline(f"{node.op} statistics outputs are used")
    out_slot = Slot(node.outputs[0].name, out_axis)
    effects = Effects()
    channels = require_shape(ctx, node.outputs[0])[out_axis]
    for index in spec.data:
        tensor = node.inputs[index]
        axis = out_axis - (rank - len(require_shape(ctx, tensor)))
        if axis < 0 or require_shape(ctx, tensor)[axis] != channels:
            if port.is_input and port.index == index:
                raise Decline(f"'{tensor.name}' is broadcast along the channel axis")
            continue
        effects.links.append(Link(Slot(tensor.name, axis), out_slot))
        effects.ports.append(Port(True, index, axis))
    for index in spec.same:
        if index < len(node.outputs) and node.outputs[index].name:
            effects.links.append(Link(out_slot, Slot(node.outputs[index].name, out_axis)))
            effects.ports.append(Port(False, index, out_axis))
    return effects


register(*NORMS, role="pass-through", domain=MS)(fused_norm)
register("SimplifiedLayerNormalization", role="pass-through")(fused_norm)  # onnxruntime registers it in the ONNX domain

#: Element-wise with a bias broadcast over the last axis: the default-domain broadcast rule slices the bias.
register("BiasGelu", "FastGelu", "BiasAdd", role="pass-through", domain=MS)(broadcast)
register("Gelu", "QuickGelu", role="pass-through", domain=MS)(unary)
