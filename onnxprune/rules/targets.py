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

from onnxprune.errors import RewriteError
from onnxprune.rules.base import Decline, KeptView, RuleContext, Slot, find_node, require_shape
from onnxprune.shapes import PROBE_PRIMES, is_symbolic


def _is_static(dim: int, primes: tuple[int, ...] = PROBE_PRIMES) -> bool:
    """A probe dimension that does not come from a symbolic (batch, sequence) dimension.

    ``primes`` are the values the probe gave the symbols (:class:`onnxprune.shapes.ProbeShapes`).
    """
    return not is_symbolic(dim, primes)


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
    scaled: tuple[tuple[int, int], ...] = ()  # (concat input index, constant factor k) of ``dyn · k`` pieces

    def apply(self, graph: gs.Graph, view: KeptView) -> None:
        concat = find_node(graph, self.concat)
        new_dims = [view.size_or(Slot(self.out_tensor, axis), dim) for axis, dim in enumerate(self.probe_dims)]
        factors = dict(self.scaled)
        for index, first, length in self.pieces:
            axes = range(first, first + length)
            if index in factors and new_dims[first] != self.probe_dims[first]:
                _rescale_piece(graph, concat, index, factors[index], new_dims[first], self.probe_dims[first])
                continue
            if not all(_is_static(self.probe_dims[a], self.primes) for a in axes):
                continue
            piece = concat.inputs[index]
            values = np.array([new_dims[a] for a in axes], dtype=np.int64)
            if isinstance(piece, gs.Constant):
                old = np.atleast_1d(np.asarray(piece.values))
                values = np.where(old <= 0, old, values)  # keep -1 (infer) and 0 (copy) entries
            concat.inputs[index] = gs.Constant(f"{self.concat}__target{index}", values.astype(np.int64))


def _rescale_piece(graph: gs.Graph, concat: gs.Node, index: int, factor: int, new: int, old: int) -> None:
    """Piece ``dyn · k`` ← ``dyn · k'`` with ``k' = k · new / old`` (``B·H`` → ``B·H'``), as ``piece · k' / k``.

    The piece is a multiple of ``k`` by construction (a ``Mul`` by the constant ``k``), so the integer
    division is exact for every batch size.
    """
    piece = concat.inputs[index]
    if piece.name.startswith(f"{concat.name}__scaled"):
        return  # applied already (the edit is reached once per side of the Reshape)
    if (factor * new) % old:
        raise RewriteError(f"target piece {index} of '{concat.name}': {old} -> {new} is not a multiple of {factor}")
    scale = gs.Constant(f"{concat.name}__scale{index}", np.array([factor * new // old], dtype=np.int64))
    unscale = gs.Constant(f"{concat.name}__unscale{index}", np.array([factor], dtype=np.int64))
    product = gs.Variable(f"{concat.name}__scaled{index}_mul", dtype=np.int64, shape=piece.shape)
    result = gs.Variable(f"{concat.name}__scaled{index}", dtype=np.int64, shape=piece.shape)
    graph.nodes.append(gs.Node("Mul", f"{concat.name}__scaled{index}_mul", inputs=[piece, scale], outputs=[product]))
    graph.nodes.append(gs.Node("Div", f"{concat.name}__scaled{index}_div", inputs=[product, unscale],
                               outputs=[result]))
    concat.inputs[index] = result


#: Ops a scalar shape piece passes through unchanged on its way into a target ``Concat``.
_PIECE_CARRIERS = ("Unsqueeze", "Squeeze", "Reshape", "Cast", "Identity")


def scaled_factor(piece: gs.Tensor) -> int | None:
    """``k`` when ``piece`` is ``dyn · k`` with a constant integer ``k`` (``Mul(Shape(x)[1], H)``), else None."""
    tensor = piece
    while tensor.inputs and tensor.inputs[0].op in _PIECE_CARRIERS:
        tensor = tensor.inputs[0].inputs[0]
    if not tensor.inputs or tensor.inputs[0].op != "Mul" or len(tensor.inputs[0].inputs) != 2:
        return None
    constants = [t for t in tensor.inputs[0].inputs if isinstance(t, gs.Constant)]
    if len(constants) != 1 or np.asarray(constants[0].values).size != 1:
        return None
    value = np.asarray(constants[0].values).reshape(-1)[0]
    return int(value) if np.issubdtype(np.asarray(value).dtype, np.integer) and value > 0 else None


def computed_target_edit(ctx: RuleContext, node: gs.Node, index: int) -> ComputedTargetEdit | None:
    """The edit for a shape input (``node.inputs[index]``) built as ``Concat`` of 1-D pieces; None otherwise."""
    target = node.inputs[index]
    producer = target.inputs[0] if target.inputs else None
    out_shape = require_shape(ctx, node.outputs[0])
    if producer is None or producer.op != "Concat":
        return None
    pieces, offset, scaled = [], 0, []
    primes = probe_primes(ctx)
    for index, piece in enumerate(producer.inputs):
        shape = ctx.shape(piece)
        if shape is None or len(shape) != 1:
            raise Decline(f"{node.op} target piece '{piece.name}' has an unknown length")
        pieces.append((index, offset, shape[0]))
        factor = scaled_factor(piece) if shape[0] == 1 and offset < len(out_shape) else None
        if factor and not _is_static(out_shape[offset], primes) and out_shape[offset] % factor == 0:
            scaled.append((index, factor))
        offset += shape[0]
    if offset != len(out_shape):
        raise Decline(f"{node.op} target '{target.name}' does not match the output rank")
    return ComputedTargetEdit(node.name, producer.name, tuple(pieces), node.outputs[0].name, tuple(out_shape),
                              primes, tuple(scaled))
