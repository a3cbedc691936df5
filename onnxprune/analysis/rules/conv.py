"""Conv and ConvTranspose: producers of output channels, consumers of input channels.

Weight layouts (the layer table's rows, :mod:`onnxprune.ir.layer_table`): Conv ``W[Cout, Cin/g, k...]``,
ConvTranspose ``W[Cin, Cout/g, k...]``.

* ``group == 1``: input and output channels are independent; the input side cuts the weight's
  input axis (a *consumer* slice), the output side cuts its output axis and the bias.
* depthwise-like (``Cin/g == 1``, any multiplier ``m = Cout/g``): output ``o`` is computed from input
  ``o // m`` only, so input channel ``c`` and outputs ``[c·m, (c+1)·m)`` are one channel; ``group``
  becomes the new input channel count.
* other grouped convs: to keep ``g`` equal groups, channel ``j`` of every group is removed together
  ("rectangular" coupling: position ``grp·n + j`` is linked to ``j``); ``group`` is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from onnxprune.ir.layer_table import WeightAxes, attributes, has_input, row_of
from onnxprune.analysis.rules.base import (Decline, Effects, Link, ParamSlice, Port, RuleContext, SetAttrEdit, Slot,
    positions, register, require_shape)


@dataclass(frozen=True)
class _ConvFacts:
    x: Slot
    y: Slot
    cin: int
    cout: int
    groups: int
    axes: WeightAxes  # the layer table's weight axes: Conv (in 1, out 0), ConvTranspose (in 0, out 1)
    weight: int  # input indices, from the layer table
    bias: int


def _facts(ctx: RuleContext, node: gs.Node, port: Port) -> _ConvFacts:
    row = row_of(node)
    if port.index != 0:
        raise Decline(f"channel axis reaches {node.op} through its weight/bias input")
    if port.axis != 1:
        raise Decline(f"{node.op} mixes axis {port.axis} (only axis 1 carries channels)")
    weight = node.inputs[row.weight]
    if not isinstance(weight, gs.Constant):
        raise Decline(f"{node.op} weight '{weight.name}' is not a constant initializer")
    if has_input(node, row.bias) and not isinstance(node.inputs[row.bias], gs.Constant):
        raise Decline(f"{node.op} bias '{node.inputs[row.bias].name}' is not a constant initializer")
    cin = require_shape(ctx, node.inputs[0])[1]
    cout = require_shape(ctx, node.outputs[0])[1]
    attrs = attributes(node)
    return _ConvFacts(Slot(node.inputs[0].name, 1), Slot(node.outputs[0].name, 1), cin, cout,
                      row.layout.group(attrs), row.layout.weight_axes(attrs, len(weight.shape)), row.weight, row.bias)


def _bias(node: gs.Node, facts: _ConvFacts) -> list[ParamSlice]:
    if has_input(node, facts.bias):
        return [ParamSlice(node.inputs[facts.bias].name, 0, facts.y, positions(facts.cout), "producer", node.name,
                           facts.bias)]
    return []


def _weight_slice(node: gs.Node, facts: _ConvFacts, axis: int, slot: Slot, channels: int, role: str) -> ParamSlice:
    """Cut weight ``axis`` along ``slot``: the grouped axis holds one group's share of the channels."""
    count = channels // facts.groups if axis == facts.axes.grouped else channels
    return ParamSlice(node.inputs[facts.weight].name, axis, slot, positions(count), role, node.name, facts.weight)


def _output_side(node: gs.Node, facts: _ConvFacts) -> Effects:
    """Producer: cut the weight's output axis (with rectangular coupling when grouped) and the bias."""
    effects = Effects(ports=[Port(False, 0, 1)], params=_bias(node, facts))
    effects.params.append(_weight_slice(node, facts, facts.axes.outputs, facts.y, facts.cout, "producer"))
    if facts.groups > 1:
        effects.links.append(_rectangular(facts.y, facts.cout, facts.cout // facts.groups))
    return effects


def _input_side(node: gs.Node, facts: _ConvFacts) -> Effects:
    """Consumer: cut the weight's input axis (rectangular coupling when grouped)."""
    effects = Effects(ports=[Port(True, 0, 1)])
    effects.params.append(_weight_slice(node, facts, facts.axes.inputs, facts.x, facts.cin, "consumer"))
    if facts.groups > 1:
        effects.links.append(_rectangular(facts.x, facts.cin, facts.cin // facts.groups))
    return effects


def _rectangular(slot: Slot, channels: int, per_group: int) -> Link:
    """Link position ``grp·per_group + j`` to ``j``: every group loses the same channels."""
    pos = positions(channels)
    return Link(slot, slot, pos, pos % per_group)


def _depthwise(node: gs.Node, facts: _ConvFacts) -> Effects:
    """Input channel c and outputs [c·m, (c+1)·m) are one channel; ``group`` follows the input."""
    multiplier = facts.cout // facts.cin
    out_pos = positions(facts.cout)
    effects = Effects(
        links=[Link(facts.x, facts.y, out_pos // multiplier, out_pos)],
        ports=[Port(True, 0, 1), Port(False, 0, 1)],
        params=_bias(node, facts),
        edits=[SetAttrEdit(node.name, "group", facts.x)],
    )
    # the weight's full (not grouped) axis: one index per output (Conv) or per input (ConvTranspose)
    if facts.axes.outputs != facts.axes.grouped:
        effects.params.append(_weight_slice(node, facts, facts.axes.outputs, facts.y, facts.cout, "producer"))
    else:
        effects.params.append(_weight_slice(node, facts, facts.axes.inputs, facts.x, facts.cin, "producer"))
    return effects


def _conv_seeds(ctx: RuleContext, node: gs.Node) -> list[Port]:
    return [Port(False, 0, 1)]


@register("Conv", "ConvTranspose", role="producer", seeds=_conv_seeds)
def conv(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Dispatch on the arriving side and the grouping (see module docstring)."""
    facts = _facts(ctx, node, port)
    if facts.groups > 1 and facts.cin == facts.groups:
        if facts.cout % facts.cin:
            raise Decline(f"{node.op} output channels {facts.cout} not a multiple of groups")
        return _depthwise(node, facts)
    if facts.cin % facts.groups or facts.cout % facts.groups:
        raise Decline(f"{node.op} channels not divisible by group={facts.groups}")
    return _input_side(node, facts) if port.is_input else _output_side(node, facts)
