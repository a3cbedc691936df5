"""LSTM, GRU and RNN: hidden units are produced by the gate weights and read back by the recurrence.

Layouts (per direction ``d``; ``G`` gates: LSTM 4 in order i,o,f,c; GRU 3 in order z,r,h; RNN 1):
``W[dirs, G·H, in]``, ``R[dirs, G·H, H]``, ``B[dirs, 2·G·H]`` (Wb then Rb), peepholes ``P[dirs, 3H]``,
states ``initial_h/initial_c[dirs, batch, H]``; outputs ``Y[seq, dirs, batch, H]`` and
``Y_h/Y_c[dirs, batch, H]`` (``layout=1`` puts batch first: ``Y[batch, seq, dirs, H]``,
``Y_h[batch, dirs, H]``).

Hidden unit ``j`` owns rows ``g·H + j`` of W, R, B and P for every gate and direction, column ``j`` of R
(the recurrence *reads* it: a consumer slice, zeroed by the oracle) and index ``j`` of every state and
output.  All directions share the output axis, so unit ``j`` is removed from both directions together.
``hidden_size`` is rewritten.  ``linear_before_reset`` (GRU) only changes where ``r`` multiplies, not
which rows belong to a unit, so it needs nothing.  The input feature axis is read by W's last axis.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.analysis.rules.base import (Decline, Effects, Link, ParamSlice, Port, RuleContext, SetAttrEdit, Slot,
    positions, register, require_shape)

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
STATE_INPUTS = (5, 6)  # initial_h, initial_c


#: (is_input, index) → hidden axis of Y, Y_h, Y_c, initial_h, initial_c.  Both layouts put the hidden
#: axis last, so the axis numbers do not depend on ``layout`` (nor does X's feature axis, 2).
HIDDEN_AXES = {(False, 0): 3, (False, 1): 2, (False, 2): 2, (True, 5): 2, (True, 6): 2}


def _present(tensors: list[gs.Tensor], index: int) -> bool:
    return len(tensors) > index and bool(tensors[index].name)


def _hidden_side(ctx: RuleContext, node: gs.Node) -> Effects:
    """Link every hidden slot of the node and cut W, R (rows and columns), B, P and constant states."""
    hidden = int(node.attrs.get("hidden_size") or require_shape(ctx, node.inputs[2])[2])
    gates = GATES[node.op]
    axes = HIDDEN_AXES
    slots = [(Port(False, i, axes[(False, i)]), Slot(node.outputs[i].name, axes[(False, i)]))
             for i in range(len(node.outputs)) if _present(node.outputs, i)]
    if not slots:
        raise Decline(f"{node.op} has no used output")
    anchor = slots[0][1]
    effects = Effects(ports=[p for p, _ in slots], edits=[SetAttrEdit(node.name, "hidden_size", anchor)])
    effects.links.extend(Link(anchor, s) for _, s in slots[1:])
    for index in STATE_INPUTS:
        if not _present(node.inputs, index) or node.op != "LSTM" and index == 6:
            continue
        tensor = node.inputs[index]
        if isinstance(tensor, gs.Constant):
            effects.params.append(ParamSlice(tensor.name, 2, anchor, positions(hidden), "param", node.name, index))
        else:
            effects.links.append(Link(Slot(tensor.name, 2), anchor))
            effects.ports.append(Port(True, index, 2))
    rows = positions(gates * hidden) % hidden
    for index, axis, index_map, role in ((1, 1, rows, "producer"), (2, 1, rows, "producer"),
                                        (2, 2, positions(hidden), "consumer"),
                                        (3, 1, positions(2 * gates * hidden) % hidden, "producer"),
                                        (7, 1, positions(3 * hidden) % hidden, "producer")):
        if _present(node.inputs, index):
            tensor = node.inputs[index]
            if not isinstance(tensor, gs.Constant):
                raise Decline(f"{node.op} input '{tensor.name}' is not a constant")
            effects.params.append(ParamSlice(tensor.name, axis, anchor, index_map, role, node.name, index))
    return effects


def _recurrent_seeds(ctx: RuleContext, node: gs.Node) -> list[Port]:
    for index in range(len(node.outputs)):
        if _present(node.outputs, index):
            return [Port(False, index, HIDDEN_AXES[(False, index)])]
    return []


@register("LSTM", "GRU", "RNN", role="producer", seeds=_recurrent_seeds)
def recurrent(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Hidden side (outputs, states) or input side (features read by W)."""
    hidden_axis = HIDDEN_AXES.get((port.is_input, port.index))
    if hidden_axis is not None:
        if hidden_axis != port.axis:
            raise Decline(f"{node.op} mixes axis {port.axis} of its states/outputs")
        return _hidden_side(ctx, node)
    if port.is_input and port.index == 0:
        if port.axis != 2:
            raise Decline(f"{node.op} mixes axis {port.axis} of its input sequence")
        weight = node.inputs[1]
        if not isinstance(weight, gs.Constant):
            raise Decline(f"{node.op} weight '{weight.name}' is not a constant")
        channels = require_shape(ctx, node.inputs[0])[2]
        return Effects(ports=[Port(True, 0, 2)], params=[
            ParamSlice(weight.name, 2, Slot(node.inputs[0].name, 2), positions(channels), "consumer", node.name, 1)])
    raise Decline(f"channel axis reaches {node.op} through input {port.index}")
