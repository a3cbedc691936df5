"""Conv and ConvTranspose: producers of output channels, consumers of input channels.

Weight layouts: Conv ``W[Cout, Cin/g, k...]``, ConvTranspose ``W[Cin, Cout/g, k...]``.

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

from onnxprune.analysis.rules.base import (Decline, Effects, Link, ParamSlice, Port, RuleContext, SetAttrEdit, Slot,
    positions, register, require_shape)


@dataclass(frozen=True)
class _ConvFacts:
    x: Slot
    y: Slot
    cin: int
    cout: int
    groups: int
    transposed: bool


def _facts(ctx: RuleContext, node: gs.Node, port: Port) -> _ConvFacts:
    if port.index != 0:
        raise Decline(f"channel axis reaches {node.op} through its weight/bias input")
    if port.axis != 1:
        raise Decline(f"{node.op} mixes axis {port.axis} (only axis 1 carries channels)")
    weight = node.inputs[1]
    if not isinstance(weight, gs.Constant):
        raise Decline(f"{node.op} weight '{weight.name}' is not a constant initializer")
    if len(node.inputs) > 2 and node.inputs[2].name and not isinstance(node.inputs[2], gs.Constant):
        raise Decline(f"{node.op} bias '{node.inputs[2].name}' is not a constant initializer")
    cin = require_shape(ctx, node.inputs[0])[1]
    cout = require_shape(ctx, node.outputs[0])[1]
    return _ConvFacts(Slot(node.inputs[0].name, 1), Slot(node.outputs[0].name, 1), cin, cout,
                      int(node.attrs.get("group", 1)), node.op == "ConvTranspose")


def _bias(node: gs.Node, facts: _ConvFacts) -> list[ParamSlice]:
    if len(node.inputs) > 2 and node.inputs[2].name:
        return [ParamSlice(node.inputs[2].name, 0, facts.y, positions(facts.cout), "producer", node.name, 2)]
    return []


def _output_side(node: gs.Node, facts: _ConvFacts) -> Effects:
    """Producer: cut the weight's output axis (with rectangular coupling when grouped) and the bias."""
    per_group = facts.cout // facts.groups
    weight = node.inputs[1].name
    effects = Effects(ports=[Port(False, 0, 1)], params=_bias(node, facts))
    if facts.transposed:
        effects.params.append(ParamSlice(weight, 1, facts.y, positions(per_group), "producer", node.name, 1))
    else:
        effects.params.append(ParamSlice(weight, 0, facts.y, positions(facts.cout), "producer", node.name, 1))
    if facts.groups > 1:
        effects.links.append(_rectangular(facts.y, facts.cout, per_group))
    return effects


def _input_side(node: gs.Node, facts: _ConvFacts) -> Effects:
    """Consumer: cut the weight's input axis (rectangular coupling when grouped)."""
    per_group = facts.cin // facts.groups
    weight = node.inputs[1].name
    effects = Effects(ports=[Port(True, 0, 1)])
    if facts.transposed:
        effects.params.append(ParamSlice(weight, 0, facts.x, positions(facts.cin), "consumer", node.name, 1))
    else:
        effects.params.append(ParamSlice(weight, 1, facts.x, positions(per_group), "consumer", node.name, 1))
    if facts.groups > 1:
        effects.links.append(_rectangular(facts.x, facts.cin, per_group))
    return effects


def _rectangular(slot: Slot, channels: int, per_group: int) -> Link:
    """Link position ``grp·per_group + j`` to ``j``: every group loses the same channels."""
    pos = positions(channels)
    return Link(slot, slot, pos, pos % per_group)


def _depthwise(node: gs.Node, facts: _ConvFacts) -> Effects:
    """Input channel c and outputs [c·m, (c+1)·m) are one channel; ``group`` follows the input."""
    multiplier = facts.cout // facts.cin
    out_pos = positions(facts.cout)
    weight = node.inputs[1].name
    effects = Effects(
        links=[Link(facts.x, facts.y, out_pos // multiplier, out_pos)],
        ports=[Port(True, 0, 1), Port(False, 0, 1)],
        params=_bias(node, facts),
        edits=[SetAttrEdit(node.name, "group", facts.x)],
    )
    if facts.transposed:
        effects.params.append(ParamSlice(weight, 0, facts.x, positions(facts.cin), "producer", node.name, 1))
    else:
        effects.params.append(ParamSlice(weight, 0, facts.y, out_pos, "producer", node.name, 1))
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
