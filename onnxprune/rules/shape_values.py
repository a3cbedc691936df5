"""``Shape`` of a tensor with a channel axis: allowed when the value only builds Reshape targets.

Exporters compute Reshape targets at run time (``Shape → Gather → Div → Unsqueeze → Concat →
Reshape``).  After pruning, that computation sees the new channel count and yields the new target by
itself, so nothing needs rewriting — *provided* the value is used for nothing else (a channel count
used as data, e.g. a divisor, would silently change the numbers).  The rule follows the value through
integer shape arithmetic and declines at the first other use.  The rewrite then re-infers every shape
of the pruned model with the run-time chains evaluated (``pipeline.check_shapes``) and refuses a model
whose computed target does not match the plan.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.rules.base import Decline, Effects, Port, RuleContext, register

SHAPE_ARITHMETIC = ("Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast", "Mul", "Div", "Add", "Sub",
                    "Floor", "Ceil", "Identity", "Min", "Max", "Abs", "Neg")


def _require_reshape_only(tensor: gs.Tensor, graph_outputs: set[str]) -> None:
    """Walk the value's consumers; decline unless every path ends in a Reshape's shape input."""
    stack, seen = [tensor], set()
    while stack:
        current = stack.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        if current.name in graph_outputs:
            raise Decline(f"the shape value '{current.name}' is a model output")
        for node in current.outputs:
            indices = [i for i, t in enumerate(node.inputs) if t is current]
            if node.op == "Reshape" and indices == [1]:
                continue
            if node.op not in SHAPE_ARITHMETIC:
                raise Decline(f"the channel count read by Shape is used by {node.op} '{node.name}'")
            stack.extend(node.outputs)


@register("Shape", role="shape-read")
def shape(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Accept a channel axis on the input when the shape value only feeds Reshape targets."""
    if not port.is_input:
        raise Decline("Shape output is not a channel tensor")
    graph_outputs = {t.name for t in getattr(ctx, "graph").outputs}
    _require_reshape_only(node.outputs[0], graph_outputs)
    return Effects(ports=[Port(True, 0, port.axis)])
