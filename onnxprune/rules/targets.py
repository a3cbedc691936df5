"""Shape *targets*: the shape inputs of Reshape, Expand and ConstantOfShape.

A constant target holds channel counts that must be rewritten (:class:`SetEntryEdit` in base).  A target
computed at run time — ``Concat(Shape(x)[0], Shape(x)[1], [H], Shape(x)[2] / H)`` in dynamic exports —
keeps its dynamic pieces (batch, sequence) and gets its static pieces replaced by their values after
pruning.  Whether a probe dimension is static is decided by the probe primes: a dimension that depends
on a symbolic one is a multiple of its prime (see :mod:`onnxprune.shapes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.rules.base import Decline, KeptView, RuleContext, Slot, find_node, require_shape
from onnxprune.shapes import PROBE_PRIMES


def _is_static(dim: int, primes: tuple[int, ...] = PROBE_PRIMES) -> bool:
    """A probe dimension that does not come from a symbolic (batch, sequence) dimension.

    ``primes`` are the values the probe gave the symbols (:class:`onnxprune.shapes.ProbeShapes`).
    """
    return not any(dim % prime == 0 for prime in primes)


def probe_primes(ctx: RuleContext) -> tuple[int, ...]:
    """The probe values of symbolic dims behind ``ctx``'s shapes (the default primes if not recorded)."""
    return tuple(getattr(ctx, "probe_primes", PROBE_PRIMES)) or PROBE_PRIMES


@dataclass
class ComputedTargetEdit:
    """Replace the *static* entries of a run-time shape target ``Concat(pieces)`` by constants.

    Dynamic exports build targets like ``Concat(Shape(x)[0], Shape(x)[1], [H], Shape(x)[2] / H)``:
    batch and sequence must stay computed, but every static entry — the head count, ``H·D`` or a
    ``D`` computed by dividing by a constant ``H`` — is replaced by its value after pruning (the new
    size on pruned axes, the unchanged size elsewhere).  Dead shape arithmetic is removed by cleanup.
    """

    node: str
    concat: str
    pieces: tuple[tuple[int, int, int], ...]  # (concat input index, first output axis, length)
    out_tensor: str
    probe_dims: tuple[int, ...]
    primes: tuple[int, ...] = PROBE_PRIMES

    def apply(self, graph: gs.Graph, view: KeptView) -> None:
        concat = find_node(graph, self.concat)
        new_dims = [view.size_or(Slot(self.out_tensor, axis), dim) for axis, dim in enumerate(self.probe_dims)]
        for index, first, length in self.pieces:
            axes = range(first, first + length)
            if not all(_is_static(self.probe_dims[a], self.primes) for a in axes):
                continue
            piece = concat.inputs[index]
            values = np.array([new_dims[a] for a in axes], dtype=np.int64)
            if isinstance(piece, gs.Constant):
                old = np.atleast_1d(np.asarray(piece.values))
                values = np.where(old <= 0, old, values)  # keep -1 (infer) and 0 (copy) entries
            concat.inputs[index] = gs.Constant(f"{self.concat}__target{index}", values.astype(np.int64))


def computed_target_edit(ctx: RuleContext, node: gs.Node, index: int) -> ComputedTargetEdit | None:
    """The edit for a shape input (``node.inputs[index]``) built as ``Concat`` of 1-D pieces; None otherwise."""
    target = node.inputs[index]
    producer = target.inputs[0] if target.inputs else None
    out_shape = require_shape(ctx, node.outputs[0])
    if producer is None or producer.op != "Concat":
        return None
    pieces, offset = [], 0
    for index, piece in enumerate(producer.inputs):
        shape = ctx.shape(piece)
        if shape is None or len(shape) != 1:
            raise Decline(f"{node.op} target piece '{piece.name}' has an unknown length")
        pieces.append((index, offset, shape[0]))
        offset += shape[0]
    if offset != len(out_shape):
        raise Decline(f"{node.op} target '{target.name}' does not match the output rank")
    return ComputedTargetEdit(node.name, producer.name, tuple(pieces), node.outputs[0].name, tuple(out_shape),
                              probe_primes(ctx))
