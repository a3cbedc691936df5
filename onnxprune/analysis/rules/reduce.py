"""Reductions: a channel axis survives a reduction over *other* axes and moves left with ``keepdims=0``.

Reducing over the channel axis itself mixes channels (and ArgMax/ArgMin over it returns channel
indices), so those decline.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.analysis.rules.base import (Decline, Effects, Link, Port, RuleContext, Slot, int_list, norm_axis,
    register, require_shape)

REDUCE_OPS = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


def _reduced_axes(ctx: RuleContext, node: gs.Node, rank: int) -> list[int]:
    """Axes a reduction removes; empty ``axes`` means all of them (unless noop_with_empty_axes)."""
    axes = int_list(ctx, node, "axes", 1)
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return []
        return list(range(rank))
    return sorted(norm_axis(a, rank, "reduce axis") for a in axes)


@register(*REDUCE_OPS, role="pass-through")
def reduce(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Follow the channel axis through a reduction over other axes."""
    in_rank = len(require_shape(ctx, node.inputs[0]))
    axes = _reduced_axes(ctx, node, in_rank)
    keep = bool(node.attrs.get("keepdims", 1))
    kept_axes = [a for a in range(in_rank) if keep or a not in axes]
    if port.is_input:
        if port.index != 0:
            raise Decline(f"channel axis reaches {node.op} through its axes input")
        in_axis = port.axis
    else:
        in_axis = kept_axes[port.axis]
    if in_axis in axes:
        raise Decline(f"{node.op} reduces over the channel axis")
    out_axis = kept_axes.index(in_axis)
    return Effects(
        links=[Link(Slot(node.inputs[0].name, in_axis), Slot(node.outputs[0].name, out_axis))],
        ports=[Port(True, 0, in_axis), Port(False, 0, out_axis)],
    )


@register("ArgMax", "ArgMin", role="pass-through")
def arg_reduce(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """ArgMax over another axis keeps channels; over the channel axis it yields channel indices."""
    in_rank = len(require_shape(ctx, node.inputs[0]))
    axis = norm_axis(int(node.attrs.get("axis", 0)), in_rank)
    keep = bool(node.attrs.get("keepdims", 1))
    kept_axes = [a for a in range(in_rank) if keep or a != axis]
    in_axis = port.axis if port.is_input else kept_axes[port.axis]
    if in_axis == axis:
        raise Decline(f"{node.op} returns indices along the channel axis")
    out_axis = kept_axes.index(in_axis)
    return Effects(
        links=[Link(Slot(node.inputs[0].name, in_axis), Slot(node.outputs[0].name, out_axis))],
        ports=[Port(True, 0, in_axis), Port(False, 0, out_axis)],
    )
