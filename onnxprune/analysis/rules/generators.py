"""Ops whose output shape comes from a shape input: ConstantOfShape, Expand and Tile.

Exports build zero initial states (``ConstantOfShape([dirs, batch, H])``) and broadcast class tokens
(``Expand(token, [batch, 1, hidden])``) this way.  Their values do not mix channels; what changes with
the channel count is the *target* entry, rewritten like a Reshape target (:mod:`onnxprune.analysis.rules.targets`).
Tile's repeats multiply whatever size the input has, so it needs no edit: GQA's ``repeat_kv`` exported as
Tile copies KV head ``h`` to positions ``h + r·C`` of the repeated axis.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from dataclasses import dataclass

import numpy as np

from onnxprune.analysis.rules.base import (Decline, Edit, Effects, KeptView, Link, ParamSlice, Port, RuleContext,
    SetEntryEdit, Slot, const_input, positions, register, require_shape, through)
from onnxprune.analysis.rules.targets import computed_target_edit


@dataclass
class CountEntryEdit(SetEntryEdit):
    """Entry ``entry`` of the constant ``tensor`` (an Expand target, Tile repeats) ← new size of the copy axis
    ``slot`` / ``divisor``; unchanged unless ``slot`` is a copy-count axis the plan narrows (GQA's ``n_rep``,
    :mod:`onnxprune.analysis.blocks`)."""

    default: int
    divisor: int = 1

    def new_value(self, view: KeptView) -> int | None:
        size = view.size_or(self.slot, self.default)
        return None if size == self.default else size // self.divisor


def _copy_axis_edits(node: gs.Node, index: int, values, data_shape, out_shape) -> list[Edit]:
    """Edits for the broadcast (copy) axes of an Expand/Tile with constant ``node.inputs[index]``."""
    pad = len(out_shape) - len(data_shape)
    return [CountEntryEdit(node.name, node.inputs[index].name, axis, Slot(node.outputs[0].name, axis), size,
                           data_shape[axis - pad])
            for axis, size in enumerate(out_shape)
            if axis >= pad and size > 1 and size != data_shape[axis - pad] and int(values[axis]) > 1]


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
    if entry is not None and len(np.atleast_1d(entry)) == len(out_shape):
        effects.edits.extend(_copy_axis_edits(node, 1, np.atleast_1d(entry), data_shape, out_shape))
    if entry is not None and int(entry[out_axis]) == 1:
        return effects  # the data carries the channels; the target's 1 broadcasts
    effects.edits.extend(_target_edit(ctx, node, 1, out_axis))
    return effects


@register("Tile", role="index-map")
def tile(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Copies along an axis: output position ``j`` of the channel axis is input channel ``j mod C``.

    Pruning keeps channels ``K`` of the input; the tiled output is then ``R`` copies of ``K`` in order,
    exactly the output positions ``{r·C + k}`` in ascending order, so the link is exact for any R.
    """
    if port.is_input and port.index != 0:
        raise Decline("channel axis reaches Tile through its repeats")
    repeats = const_input(ctx, node, 1, "Tile repeats")
    if repeats is None:
        raise Decline("Tile has no repeats input")
    channels = require_shape(ctx, node.inputs[0])[port.axis]
    count = int(repeats.reshape(-1)[port.axis])
    if count == 1:
        effects = through(node, port.axis)
        shapes = require_shape(ctx, node.inputs[0]), require_shape(ctx, node.outputs[0])
        effects.edits.extend(_copy_axis_edits(node, 1, repeats.reshape(-1), *shapes))
        return effects
    out_pos = positions(channels * count)
    return Effects(links=[Link(Slot(node.inputs[0].name, port.axis), Slot(node.outputs[0].name, port.axis),
                               out_pos % channels, out_pos)],
                   ports=[Port(True, 0, port.axis), Port(False, 0, port.axis)])
