"""Normalizations and softmax-like ops.

BatchNormalization and InstanceNormalization are per-channel along axis 1: their scale/bias/
mean/variance are sliced with the channel.  On axis 0 they are untouched pass-throughs; Instance-
Normalization reduces over the spatial axes, so a channel axis there cannot be followed.
LayerNormalization normalizes every axis from ``axis`` on, and Softmax-likes mix the axis they
normalize: those axes are barriers, the others pass through unchanged.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.analysis.rules.base import (Decline, Effects, ParamSlice, Port, RuleContext, Slot, norm_axis,
    positions, register, require_shape, through)


def _check_data_port(node: gs.Node, port: Port) -> None:
    if (port.is_input and port.index != 0) or (not port.is_input and port.index != 0):
        raise Decline(f"channel axis reaches {node.op} through port {port.index}")


@register("BatchNormalization", role="pass-through")
def batch_norm(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Per-channel affine on axis 1: slice scale, B, mean and var with the channel."""
    _check_data_port(node, port)
    if len([o for o in node.outputs if o.name]) > 1 or node.attrs.get("training_mode", 0):
        raise Decline("BatchNormalization in training mode")
    effects = through(node, port.axis)
    if port.axis == 1:
        channels = require_shape(ctx, node.inputs[0])[1]
        out = Slot(node.outputs[0].name, 1)
        for index, kind in ((1, "bn_scale"), (2, "bn_bias"), (3, ""), (4, "")):
            tensor = node.inputs[index]
            if not isinstance(tensor, gs.Constant):
                raise Decline(f"BatchNormalization input '{tensor.name}' is not a constant")
            effects.params.append(ParamSlice(tensor.name, 0, out, positions(channels), "param",
                                             node.name, index, kind))
    return effects


@register("InstanceNormalization", role="pass-through")
def instance_norm(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Normalizes over spatial axes per (sample, channel): only axes 0 and 1 pass."""
    _check_data_port(node, port)
    if port.axis >= 2:
        raise Decline("InstanceNormalization reduces over this axis")
    effects = through(node, port.axis)
    if port.axis == 1:
        channels = require_shape(ctx, node.inputs[0])[1]
        out = Slot(node.outputs[0].name, 1)
        for index in (1, 2):
            tensor = node.inputs[index]
            if not isinstance(tensor, gs.Constant):
                raise Decline(f"InstanceNormalization input '{tensor.name}' is not a constant")
            effects.params.append(ParamSlice(tensor.name, 0, out, positions(channels), "param",
                                             node.name, index))
    return effects


@register("LayerNormalization", role="pass-through")
def layer_norm(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Axes before ``axis`` pass through; normalized axes are barriers."""
    _check_data_port(node, port)
    rank = len(require_shape(ctx, node.inputs[0]))
    start = norm_axis(int(node.attrs.get("axis", -1)), rank)
    if port.axis >= start:
        raise Decline("LayerNormalization normalizes over this axis")
    effects = through(node, port.axis)
    for index, out in enumerate(node.outputs[1:], start=1):
        if out.name:
            raise Decline("LayerNormalization mean/inv_std_dev outputs are used")
    return effects


@register("Softmax", "LogSoftmax", "Hardmax", role="pass-through")
def softmax(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Normalizes along ``axis`` (opset < 13: every axis from ``axis`` on): those axes are barriers."""
    _check_data_port(node, port)
    rank = len(require_shape(ctx, node.inputs[0]))
    default = -1 if ctx.opset >= 13 else 1
    axis = norm_axis(int(node.attrs.get("axis", default)), rank)
    mixes = port.axis == axis if ctx.opset >= 13 else port.axis >= axis
    if mixes:
        raise Decline(f"{node.op} normalizes over this axis")
    return through(node, port.axis)
