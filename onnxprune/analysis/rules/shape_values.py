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

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.analysis.rules.base import Decline, Effects, Port, RuleContext, register

SHAPE_ARITHMETIC = ("Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast", "Mul", "Div", "Add", "Sub",
                    "Floor", "Ceil", "Identity", "Min", "Max", "Abs", "Neg")


def _independent_read(node: gs.Node, shape_value: gs.Tensor, entry: int, length: int) -> bool:
    """A Gather of constant entries, or a constant Slice, of the shape vector that does not include the
    channel entry (the head size ``Shape(q)[-1:]`` behind an attention scale, for instance)."""
    if not node.inputs or node.inputs[0] is not shape_value:
        return False
    if node.op == "Slice":
        return entry not in _sliced_entries(node, length)
    if node.op != "Gather" or not isinstance(node.inputs[1], gs.Constant):
        return False
    picked = np.atleast_1d(np.asarray(node.inputs[1].values)).astype(np.int64)
    return entry not in set((picked % length).tolist())


def _sliced_entries(node: gs.Node, length: int) -> set[int]:
    """Entries of a 1-D vector of ``length`` that a Slice with constant bounds reads (all, if unsure)."""
    everything = set(range(length))
    if "starts" in node.attrs:  # opset < 10
        bounds = [node.attrs.get("starts"), node.attrs.get("ends"), node.attrs.get("axes", [0]), [1]]
    else:
        bounds = []
        for index in range(1, 5):
            tensor = node.inputs[index] if len(node.inputs) > index and node.inputs[index].name else None
            if tensor is None:
                bounds.append([0] if index == 3 else [1] if index == 4 else None)
            elif isinstance(tensor, gs.Constant):
                bounds.append(np.atleast_1d(np.asarray(tensor.values)).astype(np.int64).tolist())
            else:
                return everything
    starts, ends, axes, steps = bounds
    if starts is None or ends is None or len(starts) != 1 or list(axes) not in ([0], [-1]):
        return everything
    return set(range(length)[slice(int(starts[0]), int(ends[0]), int(steps[0]))])


LAYOUT_OPS = ("Transpose", "Identity", "Cast", "Squeeze", "Unsqueeze")


def _layout_family(source: gs.Tensor, depth: int = 3) -> list[gs.Tensor]:
    """``source`` and tensors derived from it by layout-only ops (a Transpose before the merge Reshape)."""
    family, frontier = [source], [source]
    for _ in range(depth):
        frontier = [out for t in frontier for n in t.outputs if n.op in LAYOUT_OPS for out in n.outputs]
        family.extend(frontier)
    return family


def _require_reshape_only(tensor: gs.Tensor, graph_outputs: set[str], entry: int, length: int,
                          source: gs.Tensor) -> None:
    """Walk the value's consumers; decline unless every use of the channel entry builds a Reshape target."""
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
                if node.inputs[0] not in _layout_family(source):
                    raise Decline(f"the shape of '{source.name}' builds the target of a Reshape of "
                                  f"'{node.inputs[0].name}'")
                continue
            if current is tensor and _independent_read(node, tensor, entry, length):
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
    rank = len(ctx.shape(node.inputs[0]) or ())
    start = int(node.attrs.get("start", 0)) % rank if rank else 0
    end = int(node.attrs.get("end", rank)) if rank else 0
    end = end % rank if end < 0 else min(end, rank)
    if not start <= port.axis < end:
        return Effects(ports=[Port(True, 0, port.axis)])  # the channel entry is not even read
    _require_reshape_only(node.outputs[0], graph_outputs, port.axis - start, end - start, node.inputs[0])
    return Effects(ports=[Port(True, 0, port.axis)])
