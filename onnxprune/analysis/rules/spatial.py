"""Ops that act on spatial axes only: pooling, Resize/Upsample, Pad.

They treat every (sample, channel) plane independently, so the batch and channel axes pass straight
through; a channel axis that has moved onto a spatial position would be mixed, and declines.
Resize with an explicit ``sizes`` constant stores the channel count, which an edit rewrites.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.analysis.rules.base import (Decline, Effects, Port, RuleContext, SetEntryEdit, Slot, const_input,
    int_list, register, require_shape, through)

POOL_OPS = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
            "MaxRoiPool")


def _data_port_only(node: gs.Node, port: Port) -> None:
    if port.index != 0:
        raise Decline(f"channel axis reaches {node.op} through port {port.index}")


@register(*POOL_OPS, role="pass-through")
def pooling(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Batch and channel axes pass; MaxPool's Indices output encodes the channel, so it declines."""
    _data_port_only(node, port)
    if node.op == "MaxRoiPool":
        raise Decline("MaxRoiPool is not supported")
    if len(node.outputs) > 1 and node.outputs[1].name:
        raise Decline("MaxPool Indices output depends on the channel count")
    if port.axis > 1:
        raise Decline(f"{node.op} pools over this axis")
    return through(node, port.axis)


@register("Resize", "Upsample", role="pass-through")
def resize(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Channels pass when the scale on their axis is 1; an explicit ``sizes`` entry is rewritten."""
    _data_port_only(node, port)
    shape_in = require_shape(ctx, node.inputs[0])
    shape_out = require_shape(ctx, node.outputs[0])
    if shape_in[port.axis] != shape_out[port.axis]:
        raise Decline(f"{node.op} rescales this axis")
    effects = through(node, port.axis)
    if node.op == "Resize" and len(node.inputs) > 3 and node.inputs[3].name:
        sizes = const_input(ctx, node, 3, "Resize sizes")
        axes = node.attrs.get("axes")
        if axes is not None:
            rank = len(shape_in)
            axes = [int(a) % rank for a in axes]
            if port.axis not in axes:
                return effects
            index = axes.index(port.axis)
        else:
            index = port.axis
        assert sizes is not None
        effects.edits.append(SetEntryEdit(node.name, node.inputs[3].name, index,
                                             Slot(node.outputs[0].name, port.axis)))
    return effects


@register("Pad", role="pass-through")
def pad(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Passes when the pads on the channel axis are zero (constant pads only)."""
    _data_port_only(node, port)
    rank = len(require_shape(ctx, node.inputs[0]))
    pads = int_list(ctx, node, "pads", 1)
    if pads is None:
        raise Decline("Pad has no pads")
    axes = list(range(rank))
    if len(node.inputs) > 3 and node.inputs[3].name:
        given = const_input(ctx, node, 3, "Pad axes")
        axes = [int(a) % rank for a in np.atleast_1d(given)]
    count = len(axes)
    if port.axis in axes:
        index = axes.index(port.axis)
        if pads[index] != 0 or pads[index + count] != 0:
            raise Decline("Pad pads the channel axis")
    return through(node, port.axis)
