"""Ops whose output shape comes from a shape input: ConstantOfShape and Expand.

Exports build zero initial states (``ConstantOfShape([dirs, batch, H])``) and broadcast class tokens
(``Expand(token, [batch, 1, hidden])``) this way.  Their values do not mix channels; what changes with
the channel count is the *target* entry, rewritten like a Reshape target (:mod:`onnxprune.analysis.rules.targets`).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.analysis.rules.base import (Decline, Edit, Effects, Link, ParamSlice, Port, RuleContext, SetEntryEdit,
    Slot, positions, register, require_shape)
from onnxprune.analysis.rules.targets import computed_target_edit


def _target_edit(ctx: RuleContext, node: gs.Node, index: int, out_axis: int) -> list[Edit]:
    """Edit of the shape input's entry for ``out_axis`` (constant) or of its static pieces (computed)."""
    target = node.inputs[index]
    out_slot = Slot(node.outputs[0].name, out_axis)
    if isinstance(target, gs.Constant):
        return [SetEntryEdit(node.name, target.name, out_axis, out_slot)]
    edit = computed_target_edit(ctx, node, index)
    if edit is None:
        raise Decline(f"{node.op} shape '{target.name}' is computed in a way that cannot be followed")
    return [edit]


@register("ConstantOfShape", role="pass-through")
def constant_of_shape(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """A filled tensor: only its shape entry for the channel axis changes."""
    if port.is_input:
        raise Decline("channel axis reaches ConstantOfShape through its shape input")
    return Effects(ports=[Port(False, 0, port.axis)], edits=_target_edit(ctx, node, 0, port.axis))


@register("Expand", role="pass-through")
def expand(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Broadcast: an input with the full channel count is linked (or sliced); the target entry is rewritten."""
    if port.is_input and port.index != 0:
        raise Decline("channel axis reaches Expand through its shape input")
    out_shape = require_shape(ctx, node.outputs[0])
    data = node.inputs[0]
    data_shape = require_shape(ctx, data)
    out_axis = port.axis + len(out_shape) - len(data_shape) if port.is_input else port.axis
    data_axis = out_axis - (len(out_shape) - len(data_shape))
    channels = out_shape[out_axis]
    out_slot = Slot(node.outputs[0].name, out_axis)
    effects = Effects(ports=[Port(False, 0, out_axis)])
    if data_axis >= 0 and data_shape[data_axis] == channels and channels != 1:
        if isinstance(data, gs.Constant):
            effects.params.append(ParamSlice(data.name, data_axis, out_slot, positions(channels), "param", node.name, 0))
        else:
            effects.links.append(Link(Slot(data.name, data_axis), out_slot))
            effects.ports.append(Port(True, 0, data_axis))
    elif port.is_input:
        raise Decline(f"'{data.name}' is broadcast along the channel axis")
    target = node.inputs[1]
    entry = ctx.value(target)
    if entry is not None and int(entry[out_axis]) == 1:
        return effects  # the data carries the channels; the target's 1 broadcasts
    effects.edits.extend(_target_edit(ctx, node, 1, out_axis))
    return effects
