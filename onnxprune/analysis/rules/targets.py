"""Shape *targets*: the shape inputs of Reshape, Expand and ConstantOfShape.

A constant target holds channel counts that must be rewritten (:class:`SetEntryEdit` in base).  A target
computed at run time — ``Concat(Shape(x)[0], Shape(x)[1], [H], Shape(x)[2] / H)`` in dynamic exports —
keeps its dynamic pieces (batch, sequence) and gets its static pieces replaced by their values after
pruning.  A dimension is static when it is the same at both assignments of the symbolic dims
(:meth:`onnxprune.ir.shapes.ProbeShapes.static_axes`): a piece read from a symbol through any chain
(``Cast(Slice(Cast(Shape(x), INT32)))``, a strided conv's ``ceil(W / 2)``) differs between them and is
never replaced by a probe value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.errors import RewriteError
from onnxprune.analysis.rules.base import Decline, KeptView, RuleContext, Slot, find_node, require_shape


@dataclass
class ComputedTargetEdit:
    """Replace the *static* entries that pruning changes in a run-time shape target ``Concat(pieces)``.

    Dynamic exports build targets like ``Concat(Shape(x)[0], Shape(x)[1], [H], Shape(x)[2] / H)``:
    batch and sequence must stay computed, but every static piece — the head count, ``H·D`` or a ``D``
    computed by dividing a pruned hidden size by ``H`` — becomes a constant with its size after pruning
    (the new size on pruned axes, the unchanged size elsewhere).  Dead shape arithmetic is removed by
    cleanup.
    """

    node: str
    concat: str
    pieces: tuple[tuple[int, int, int], ...]  # (concat input index, first output axis, length)
    out_tensor: str
    probe_dims: tuple[int, ...]
    static: tuple[bool, ...] = ()  # per output axis: the same at every assignment of the symbols
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
            if not all(self.static[a] for a in axes):
                continue  # follows a symbol: stays computed
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


def _is_constant(tensor: gs.Tensor, predicate) -> bool:
    return isinstance(tensor, gs.Constant) and bool(predicate(np.asarray(tensor.values)))


def _target_concat(target: gs.Tensor) -> gs.Node | None:
    """The ``Concat`` that builds ``target``, looking through the wrappers torch's exporter puts around it.

    ``x.expand(b, n, r, s, d)`` exports its target as ``Where(Equal(t, -1), 1, t)`` with
    ``t = Reshape(Concat(pieces), [-1])`` (Llama's ``repeat_kv``): the Reshape of a 1-D vector to
    ``[-1]`` is the identity, and the Where only replaces ``-1`` entries by 1.  A static piece rewritten
    to its (positive) size after pruning passes both unchanged, so editing the Concat's pieces is exact.
    """
    producer = target.inputs[0] if target.inputs else None
    if producer is not None and producer.op == "Where" and len(producer.inputs) == 3:
        cond, ones, value = producer.inputs
        test = cond.inputs[0] if cond.inputs else None
        if (test is None or test.op != "Equal" or value not in test.inputs
                or not _is_constant(ones, lambda v: np.all(v == 1))
                or not any(_is_constant(t, lambda v: np.all(v < 0)) for t in test.inputs)):
            return None
        producer = value.inputs[0] if value.inputs else None
    if producer is not None and producer.op == "Reshape" and _is_constant(
            producer.inputs[1], lambda v: v.reshape(-1).tolist() == [-1]):
        producer = producer.inputs[0].inputs[0] if producer.inputs[0].inputs else None
    return producer


def computed_target_edit(ctx: RuleContext, node: gs.Node, index: int) -> ComputedTargetEdit | None:
    """The edit for a shape input (``node.inputs[index]``) built as ``Concat`` of 1-D pieces; None otherwise."""
    target = node.inputs[index]
    producer = _target_concat(target)
    out_shape = require_shape(ctx, node.outputs[0])
    if producer is None or producer.op != "Concat":
        return None
    pieces, offset, scaled = [], 0, []
    static = ctx.static_axes(node.outputs[0]) or (False,) * len(out_shape)
    for index, piece in enumerate(producer.inputs):
        shape = ctx.shape(piece)
        if shape is None or len(shape) != 1:
            raise Decline(f"{node.op} target piece '{piece.name}' has an unknown length")
        pieces.append((index, offset, shape[0]))
        factor = scaled_factor(piece) if shape[0] == 1 and offset < len(out_shape) else None
        if factor and not static[offset] and out_shape[offset] % factor == 0:
            scaled.append((index, factor))
        offset += shape[0]
    if offset != len(out_shape):
        raise Decline(f"{node.op} target '{target.name}' does not match the output rank")
    return ComputedTargetEdit(node.name, producer.name, tuple(pieces), node.outputs[0].name, tuple(out_shape),
                              tuple(static), tuple(scaled))
