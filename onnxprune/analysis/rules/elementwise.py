"""Element-wise ops: channel ``c`` of the output depends only on channel ``c`` of the inputs.

Unary ops (Relu, Sigmoid, Clip, Gelu, Cast, ...) link input and output axis one-to-one.

Broadcasting ops (Add, Mul, Max, PRelu, Where, ...) right-align their inputs: an input whose aligned
dimension equals the channel count is *coupled* (variable: same channels; constant: sliced with
them), one whose dimension is 1 or missing broadcasts and is left alone.  If the arriving tensor itself
is broadcast (size 1 against a larger output) the channel cannot be removed without changing the
broadcast, so the rule declines.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.analysis.rules.base import (Decline, Effects, Link, ParamSlice, Port, RuleContext, Slot, positions,
    register, require_shape)

UNARY_OPS = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Abs", "Neg", "Reciprocal", "Floor",
    "Ceil", "Round", "Sign", "Sin", "Cos", "Mish", "ThresholdedRelu", "Shrink", "Identity", "Dropout",
    "Cast", "CastLike", "Not", "IsNaN", "IsInf",
)

BROADCAST_OPS = (
    "Add", "Sub", "Mul", "Div", "Pow", "Sum", "Max", "Min", "Mean", "PRelu", "Where", "Equal", "Less",
    "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "BitShift", "Mod",
)


@register(*UNARY_OPS, role="pass-through")
def unary(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """One-to-one: input 0 axis a is output axis a (Dropout's mask output too)."""
    if port.is_input and port.index != 0:
        raise Decline(f"channel axis reaches {node.op} through its parameter input {port.index}")
    if node.op == "Dropout" and len(node.inputs) > 2 and node.inputs[2].name:
        training = ctx.value(node.inputs[2])
        if training is None or bool(training):
            raise Decline("Dropout in training mode")
    source = Slot(node.inputs[0].name, port.axis)
    effects = Effects(ports=[Port(True, 0, port.axis)])
    for index, out in enumerate(node.outputs):
        if out.name:
            effects.links.append(Link(source, Slot(out.name, port.axis)))
            effects.ports.append(Port(False, index, port.axis))
    return effects


@register(*BROADCAST_OPS, role="coupler")
def broadcast(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Couple every input whose right-aligned dimension equals the channel count; slice constants."""
    out = node.outputs[0]
    out_shape = require_shape(ctx, out)
    rank = len(out_shape)
    if port.is_input:
        in_rank = len(require_shape(ctx, node.inputs[port.index]))
        out_axis = port.axis + rank - in_rank
    else:
        out_axis = port.axis
    channels = out_shape[out_axis]
    if port.is_input and require_shape(ctx, node.inputs[port.index])[port.axis] != channels:
        raise Decline(f"'{node.inputs[port.index].name}' is broadcast along the channel axis")
    out_slot = Slot(out.name, out_axis)
    effects = Effects(ports=[Port(False, 0, out_axis)])
    for index, tensor in enumerate(node.inputs):
        _couple_input(ctx, node, index, tensor, out_slot, rank, channels, effects)
    return effects


def _couple_input(
    ctx: RuleContext, node: gs.Node, index: int, tensor: gs.Tensor, out_slot: Slot, rank: int,
    channels: int, effects: Effects,
) -> None:
    """Add the link or parameter slice that input ``index`` needs, if it carries the channel axis."""
    if tensor.name == "":
        return
    shape = require_shape(ctx, tensor)
    axis = out_slot.axis - (rank - len(shape))
    if axis < 0 or shape[axis] == 1:
        return
    if shape[axis] != channels:
        raise Decline(f"input '{tensor.name}' has {shape[axis]} != {channels} channels")
    if isinstance(tensor, gs.Constant):
        effects.params.append(ParamSlice(tensor.name, axis, out_slot, positions(channels), "param",
                                         node.name, index))
        return
    effects.links.append(Link(Slot(tensor.name, axis), out_slot))
    effects.ports.append(Port(True, index, axis))
