"""Concat, Split and Slice: sub-ranges of the channel axis.

Along the channel axis they are index maps with offsets — input ``k`` of a Concat owns output
positions ``[off_k, off_k + n_k)`` — so each input keeps its own channels and only the offsets move.
Split sizes and Slice bounds are constants that an edit recomputes from the kept channels.  Along any
other axis all of them are plain pass-throughs that couple every input and output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.analysis.rules.base import (Decline, Effects, KeptView, Link, ParamSlice, Port, RuleContext, Slot,
    find_node, int_list, norm_axis, positions, register, require_shape)


@register("Concat", role="index-map")
def concat(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Offsets along the concat axis; identity coupling of all inputs along the others."""
    out_shape = require_shape(ctx, node.outputs[0])
    axis = norm_axis(int(node.attrs["axis"]), len(out_shape))
    out_slot = Slot(node.outputs[0].name, port.axis)
    effects = Effects(ports=[Port(False, 0, port.axis)])
    offset = 0
    for index, tensor in enumerate(node.inputs):
        size = require_shape(ctx, tensor)[port.axis]
        here = positions(size)
        there = here + offset if port.axis == axis else here
        if port.axis != axis and size != out_shape[port.axis]:
            raise Decline(f"Concat input '{tensor.name}' broadcasts the channel axis")
        if isinstance(tensor, gs.Constant):
            effects.params.append(ParamSlice(tensor.name, port.axis, out_slot, there, "param", node.name, index))
        elif size:
            effects.links.append(Link(Slot(tensor.name, port.axis), out_slot, here, there))
            effects.ports.append(Port(True, index, port.axis))
        offset += size if port.axis == axis else 0
    return effects


@dataclass
class SplitSizesEdit:
    """Split sizes ← number of kept channels of each output (attribute or input, per opset)."""

    node: str
    outputs: tuple[Slot, ...]

    def apply(self, graph: gs.Graph, view: KeptView) -> None:
        node = find_node(graph, self.node)
        sizes = np.array([view.size(s) for s in self.outputs], dtype=np.int64)
        node.attrs.pop("num_outputs", None)
        if "split" in node.attrs:
            node.attrs["split"] = [int(s) for s in sizes]
        elif len(node.inputs) > 1 and node.inputs[1].name:
            node.inputs[1].values = sizes
        elif graph.opset >= 13:
            while len(node.inputs) < 2:
                node.inputs.append(gs.Variable.empty())
            node.inputs[1] = gs.Constant(f"{self.node}_split_sizes", sizes)
        else:
            node.attrs["split"] = [int(s) for s in sizes]


@register("Split", role="index-map")
def split(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Offsets along the split axis (sizes rewritten); identity coupling along the others."""
    in_shape = require_shape(ctx, node.inputs[0])
    axis = norm_axis(int(node.attrs.get("axis", 0)), len(in_shape))
    if port.is_input and port.index != 0:
        raise Decline("channel axis reaches Split through its sizes input")
    in_slot = Slot(node.inputs[0].name, port.axis)
    effects = Effects(ports=[Port(True, 0, port.axis)])
    offset = 0
    for index, out in enumerate(node.outputs):
        size = require_shape(ctx, out)[port.axis]
        here = positions(size)
        effects.links.append(Link(in_slot, Slot(out.name, port.axis), here + offset if port.axis == axis else here,
                                  here))
        effects.ports.append(Port(False, index, port.axis))
        offset += size if port.axis == axis else 0
    if port.axis == axis:
        effects.edits.append(SplitSizesEdit(node.name, tuple(Slot(o.name, axis) for o in node.outputs)))
    return effects


@dataclass
class SliceBoundsEdit:
    """Slice start/end on the channel axis ← kept channels before the old start, plus the kept count."""

    node: str
    entry: int
    start: int
    in_slot: Slot
    out_slot: Slot

    def apply(self, graph: gs.Graph, view: KeptView) -> None:
        node = find_node(graph, self.node)
        new_start = int(np.searchsorted(view.kept(self.in_slot), self.start))
        new_end = new_start + view.size(self.out_slot)
        for key, index, value in (("starts", 1, new_start), ("ends", 2, new_end)):
            if key in node.attrs:
                values = list(node.attrs[key])
                values[self.entry] = value
                node.attrs[key] = values
            else:
                tensor = node.inputs[index]
                values = np.array(tensor.values, copy=True)
                values[self.entry] = value
                tensor.values = values


@register("Slice", role="index-map")
def slice_(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """A step-1 slice of the channel axis is an offset map; slices of other axes pass through."""
    if port.is_input and port.index != 0:
        raise Decline("channel axis reaches Slice through a bounds input")
    in_shape = require_shape(ctx, node.inputs[0])
    rank = len(in_shape)
    starts, ends = int_list(ctx, node, "starts", 1), int_list(ctx, node, "ends", 2)
    if starts is None or ends is None:
        raise Decline("Slice bounds are missing")
    for index in (1, 2):
        if "starts" not in node.attrs and len(node.inputs) > index and np.ndim(ctx.value(node.inputs[index])) != 1:
            raise Decline("Slice bounds are not 1-D")
    axes = int_list(ctx, node, "axes", 3) or list(range(len(starts)))
    steps = int_list(ctx, node, "steps", 4) or [1] * len(starts)
    axes = [norm_axis(a, rank, "Slice axis") for a in axes]
    in_slot, out_slot = Slot(node.inputs[0].name, port.axis), Slot(node.outputs[0].name, port.axis)
    ports = [Port(True, 0, port.axis), Port(False, 0, port.axis)]
    if port.axis not in axes:
        return Effects(links=[Link(in_slot, out_slot)], ports=ports)
    entry = axes.index(port.axis)
    if steps[entry] != 1:
        raise Decline("Slice with step != 1 on the channel axis")
    size = in_shape[port.axis]
    start = min(max(starts[entry] + size if starts[entry] < 0 else starts[entry], 0), size)
    end = min(max(ends[entry] + size if ends[entry] < 0 else ends[entry], start), size)
    out_pos = positions(end - start)
    return Effects(links=[Link(in_slot, out_slot, out_pos + start, out_pos)], ports=ports,
                   edits=[SliceBoundsEdit(node.name, entry, start, in_slot, out_slot)])


def _gather_seeds(ctx: RuleContext, node: gs.Node) -> list[Port]:
    """An embedding lookup (constant float table, gather on axis 0) produces its last output axis."""
    table = node.inputs[0]
    shape = ctx.shape(node.outputs[0])
    if not isinstance(table, gs.Constant) or table.dtype.kind != "f" or len(table.shape) != 2 or shape is None:
        return []
    if norm_axis(int(node.attrs.get("axis", 0)), 2) != 0:
        return []
    return [Port(False, 0, len(shape) - 1)]


@register("Gather", role="index-map", seeds=_gather_seeds)
def gather(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Axes other than the gathered one pass through; an embedding table produces its feature axis.

    Output axes are ``data[:axis] + indices.shape + data[axis+1:]``.  Gathering *along* the channel
    axis selects channels by value and declines.
    """
    data = node.inputs[0]
    data_rank = len(require_shape(ctx, data))
    index_rank = len(require_shape(ctx, node.inputs[1]))
    axis = norm_axis(int(node.attrs.get("axis", 0)), data_rank)
    if port.is_input and port.index != 0:
        raise Decline("channel axis reaches Gather through its indices")
    if port.is_input:
        data_axis = port.axis
        out_axis = data_axis if data_axis < axis else data_axis + index_rank - 1
    else:
        out_axis = port.axis
        data_axis = out_axis if out_axis < axis else out_axis - index_rank + 1
    if data_axis == axis or axis <= out_axis < axis + index_rank:
        raise Decline("Gather selects along the channel axis")
    out_slot = Slot(node.outputs[0].name, out_axis)
    if isinstance(data, gs.Constant):
        channels = require_shape(ctx, data)[data_axis]
        return Effects(ports=[Port(False, 0, out_axis)], params=[
            ParamSlice(data.name, data_axis, out_slot, positions(channels), "producer", node.name, 0)])
    return Effects(links=[Link(Slot(data.name, data_axis), out_slot)],
                   ports=[Port(True, 0, data_axis), Port(False, 0, out_axis)])
