"""Layout ops: Transpose moves the channel axis; Reshape, Flatten, Squeeze and Unsqueeze regroup it.

A reshape keeps the row-major order of elements, so with global strides the channel ``c`` of axis
``x`` (size ``C``, inner stride ``I``) owns flat indices ``outer·C·I + c·I + s``.  An axis ``y`` on the
other side (size ``S``, inner stride ``J``) relates to it in one of two exact ways:

* *merge* — ``J | I`` and ``S`` is a multiple of ``(I/J)·C``: every index ``o`` of ``y`` belongs to one
  channel, ``c = (o // (I/J)) mod C`` (Flatten into Gemm: channel ``c`` ↔ its block of features);
* *split* — ``I | J`` and ``C`` is a multiple of ``(J/I)·S``: every channel falls in one index of ``y``,
  ``o = (c // (J/I)) mod S`` (channel shuffle ``[C] → [g, C/g]``, heads ``[H·D] → [H, D]``).

* *interleave* — ``I | J``, ``K = C·I/J`` is a whole number ≥ 2 and ``S`` is a multiple of ``K``: the
  channel splits into ``K`` parts that are the *minor* part of ``y``, whose major part is an outer axis,
  ``o mod K = c // (J/I)`` (``[S, B, H·D] → [S, B·H, D]`` in ``nn.MultiheadAttention``: batch and heads
  share one axis).  Each index of ``y`` still belongs to one part, each channel to ``S/K`` indices;
* *de-interleave* — the way back (``[S, B·H, D] → [S, B, H·D]``): ``J | I``, ``K = J·S/I`` ≥ 2 divides
  ``C``: index ``p`` of the channel axis holds part ``p mod K`` of ``y`` (``I/J`` indices).

An axis of ``y`` whose probe size is symbolic (a multiple of a probe prime: the batch) is the last choice.

All keep the order of the kept elements, so slicing the channels and rewriting the size of ``y`` is
exact.  A split couples all channels that share an index of ``y`` (whole heads, or the same position in
every shuffle group).  Preference: identity, then merge, then the split onto the *largest* axis (the
finest units), then an interleave — except a head split ``[..., H·D] → [..., H, D]`` (or ``[..., B·H, D]``)
whose last axis is the contracted head dimension: there the head axis carries the channel.  A stacked
projection ``[..., 3·E] → [..., 3, E]`` whose ``3`` axis is then picked apart by constant ``Gather``s
(fused Q/K/V) is not a head split: ``E`` carries the channel, coupling the same channel of Q, K and V.
Anything else declines.
"""

from __future__ import annotations

from math import prod

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.analysis.rules.base import (Decline, Effects, Link, Port, RuleContext, SetEntryEdit, Slot,
    const_input, positions, register, require_shape)
from onnxprune.analysis.rules.targets import computed_target_edit
from onnxprune.ir.shapes import Shape


@register("Transpose", role="index-map")
def transpose(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Output axis ``b`` is input axis ``perm[b]``."""
    rank = len(require_shape(ctx, node.inputs[0]))
    perm = [int(p) for p in node.attrs.get("perm", list(range(rank))[::-1])]
    in_axis = port.axis if port.is_input else perm[port.axis]
    out_axis = perm.index(in_axis)
    return Effects(
        links=[Link(Slot(node.inputs[0].name, in_axis), Slot(node.outputs[0].name, out_axis))],
        ports=[Port(True, 0, in_axis), Port(False, 0, out_axis)],
    )


def is_head_split(candidates: list[tuple[int, int, int]], rank: int) -> bool:
    """A split whose innermost part is the tensor's last axis (``[..., H·D] → [..., H, D]``, or
    ``[..., B·H, D]`` where the head axis also holds the batch).

    The last axis of such a tensor is the head dimension that attention contracts (``q·kᵀ``), so the
    channel is carried by the axis before it: whole heads are the units.
    """
    splits = {y for rank_, _, y in candidates if rank_ in (SPLIT, INTERLEAVE)}
    return not any(rank_ < 2 for rank_, _, _ in candidates) and {rank - 1, rank - 2} <= splits


MERGE, SPLIT, INTERLEAVE, DEINTERLEAVE = 1, 2, 3, 4


def relate_axes(here: Shape, axis: int, there: Shape, stacked: bool = False,
                dynamic: tuple[bool, ...] = (), repeated: tuple[bool, ...] = ()) -> tuple[int, np.ndarray, np.ndarray]:
    """Find the axis of ``there`` that channel axis ``axis`` of ``here`` maps to under a reshape.

    ``stacked``: the second-to-last axis of ``there`` is a stack of projections picked apart later
    (fused Q/K/V), so a ``[..., 3, E]`` split is not a head split.  ``dynamic``: per axis of ``there``,
    whether its size follows a symbolic dim; such an axis (the batch in ``[B·H] → [B, H]``) is the last
    choice, however large.  ``repeated``: per axis of ``there``, whether it holds broadcast copies (the
    ``n_rep`` axis of GQA's ``repeat_kv`` Expand); copies cannot carry a channel, so such an axis is never
    chosen and query head ``q`` relates to KV head ``q // n_rep``.  Returns ``(there_axis, here_positions, there_positions)`` for a
    Link.  Raises Decline when no exact relation exists.
    """
    channels, inner = here[axis], prod(here[axis + 1:])
    candidates: list[tuple[int, int, int, int]] = []  # (symbolic, preference, -size, there_axis)
    for y, size in enumerate(there):
        if size == 1 or (y < len(repeated) and repeated[y]):
            continue
        stride = prod(there[y + 1:])
        merge = inner % stride == 0 and size % ((inner // stride) * channels) == 0
        split = stride % inner == 0 and channels % ((stride // inner) * size) == 0
        parts = channels * inner // stride if stride % inner == 0 and (channels * inner) % stride == 0 else 0
        back = stride * size // inner if inner % stride == 0 and (stride * size) % inner == 0 else 0
        last = int(y < len(dynamic) and dynamic[y])
        if merge or split:
            candidates.append((last, 0 if (merge and split) else MERGE if merge else SPLIT, -size, y))
        elif parts >= 2 and size % parts == 0:
            candidates.append((last, INTERLEAVE, -size, y))
        elif back >= 2 and channels % back == 0:
            candidates.append((last, DEINTERLEAVE, -size, y))
    if not candidates:
        raise Decline(f"reshape {list(here)} -> {list(there)} regroups the channel axis {axis}")
    best = min(candidates)
    if not stacked and is_head_split([(c[1], c[2], c[3]) for c in candidates], len(there)):
        best = next(c for c in candidates if c[3] == len(there) - 2)
    kind, y = best[1], best[3]
    size, stride = there[y], prod(there[y + 1:])
    if kind <= MERGE:  # merge (or identity): every index of y belongs to one channel
        there_pos = positions(size)
        return y, (there_pos // (inner // stride)) % channels, there_pos
    if kind == SPLIT:
        here_pos = positions(channels)
        return y, here_pos, (here_pos // (stride // inner)) % size
    if kind == INTERLEAVE:  # index o of y holds part o mod K of the channel axis
        parts, block = channels * inner // stride, stride // inner  # K parts of `block` channels
        flat = positions(size * block)  # link f: index f // block of y, channel (f // block mod K)·block + f mod block
        return y, (flat // block % parts) * block + flat % block, flat // block
    # de-interleave (the way back): channel p holds part p mod K of y, K = J·S/I parts of I/J indices
    parts, block = stride * size // inner, inner // stride
    flat = positions(channels * block)  # link f: channel f // block, index (f // block mod K)·block + f mod block
    return y, flat // block, (flat // block % parts) * block + flat % block


#: Ops that move or drop size-1 axes without touching data: a stack axis is followed through them.
_AXIS_MOVERS = ("Transpose", "Unsqueeze", "Squeeze", "Identity")


def picked_apart(ctx: RuleContext, tensor: gs.Tensor, axis: int, depth: int = 4) -> bool:
    """Whether every use of ``tensor`` ends, through layout-only ops, in a ``Gather`` of constant indices
    along ``axis`` — a stack of separate projections (fused Q/K/V), not a tensor axis."""
    uses = list(tensor.outputs)
    if not uses or depth < 0:
        return False
    for node in uses:
        if node.op == "Gather" and node.inputs[0] is tensor and isinstance(node.inputs[1], gs.Constant):
            rank = len(ctx.shape(tensor) or ())
            if rank and int(node.attrs.get("axis", 0)) % rank == axis:
                continue
            return False
        if node.op not in _AXIS_MOVERS or node.inputs[0] is not tensor:
            return False
        moved = _moved_axis(ctx, node, axis)
        if moved is None or not picked_apart(ctx, node.outputs[0], moved, depth - 1):
            return False
    return True


def _moved_axis(ctx: RuleContext, node: gs.Node, axis: int) -> int | None:
    """Where ``axis`` of a layout-only op's input lands on its output (None: dropped or unknown)."""
    shape_in, shape_out = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    if shape_in is None or shape_out is None:
        return None
    if node.op == "Identity":
        return axis
    if node.op == "Transpose":
        perm = [int(p) for p in node.attrs.get("perm", list(range(len(shape_in)))[::-1])]
        return perm.index(axis) if axis in perm else None
    kept = [a for a, d in enumerate(shape_in) if d != 1]  # Squeeze/Unsqueeze only move size-1 axes
    placed = [a for a, d in enumerate(shape_out) if d != 1]
    if len(kept) != len(placed) or axis not in kept:
        return None
    return placed[kept.index(axis)]


def _reshape_like(ctx: RuleContext, node: gs.Node, port: Port) -> tuple[Effects, int]:
    """Link the channel axis across any reshape-like op; returns the effects and the output axis."""
    if port.index != 0:
        raise Decline(f"channel axis reaches {node.op} through its shape/axes input")
    shape_in = require_shape(ctx, node.inputs[0])
    shape_out = require_shape(ctx, node.outputs[0])
    here, there = (shape_in, shape_out) if port.is_input else (shape_out, shape_in)
    there_tensor = node.outputs[0] if port.is_input else node.inputs[0]
    stacked = len(there) >= 2 and picked_apart(ctx, there_tensor, len(there) - 2)
    other_axis, here_pos, there_pos = _relate_at_every_shape(ctx, node, port, here, there, stacked)
    in_axis, out_axis = (port.axis, other_axis) if port.is_input else (other_axis, port.axis)
    in_pos, out_pos = (here_pos, there_pos) if port.is_input else (there_pos, here_pos)
    link = Link(Slot(node.inputs[0].name, in_axis), Slot(node.outputs[0].name, out_axis), in_pos, out_pos)
    effects = Effects(links=[link], ports=[Port(True, 0, in_axis), Port(False, 0, out_axis)])
    count_axis = copy_axis(ctx, node.inputs[0], in_axis, shape_in, shape_out[out_axis], link)
    if count_axis is not None:  # [..., C, n_rep, ...] → [..., C·n_rep, ...]: position j is a copy of channel j // n_rep
        effects.links, effects.nests = [], [link]
        effects.counts[Slot(node.inputs[0].name, count_axis)] = (link.a, link.b)
    _mark_heads(effects, (link.a, shape_in), (link.b, shape_out))
    return effects, out_axis


def copy_axis(ctx: RuleContext, tensor: gs.Tensor, axis: int, shape: Shape, merged: int, link: Link) -> int | None:
    """The ``n_rep`` axis when a reshape merges channel ``axis`` of ``tensor`` with one broadcast-copy axis
    right after it (GQA's ``repeat_kv``: ``Expand``/``Tile`` ``[b, G, 1→n_rep, s, d]`` → ``[b, G·n_rep, s, d]``).

    Why it matters: the merged positions are copies, so a query head may go alone as long as every KV head
    keeps the same number of copies (the copy count is one integer).  None for any other merge (or when the
    positions do not follow ``j // n_rep``), which stays an ordinary all-together link.
    """
    repeated = broadcast_axes(ctx, tensor)
    channels = shape[axis]
    if not repeated or channels < 1 or merged % channels or merged // channels < 2:
        return None
    factor, product, found = merged // channels, 1, None
    for later in range(axis + 1, len(shape)):
        if product == factor:
            break
        if shape[later] == 1:
            continue
        if not repeated[later] or found is not None:
            return None
        found, product = later, product * shape[later]
    if product != factor or found is None or link.a_pos is None or link.b_pos is None:
        return None
    return found if np.array_equal(link.a_pos, link.b_pos // factor) else None


def _relate_at_every_shape(ctx: RuleContext, node: gs.Node, port: Port, here: Shape, there: Shape,
                           stacked: bool) -> tuple[int, np.ndarray, np.ndarray]:
    """:func:`relate_axes` at the probe shapes, refused unless the second assignment of the symbols
    gives the same relation.

    Why: a relation found by dividing sizes can hold by coincidence of the probe values (a sequence of
    13 against 13 channels); one that holds at two unrelated assignments is the graph's, not the probe's.
    """
    here_tensor, there_tensor = (node.inputs[0], node.outputs[0]) if port.is_input else (node.outputs[0], node.inputs[0])
    flags = ctx.static_axes(there_tensor) or (False,) * len(there)
    dynamic = tuple(not flag for flag in flags)
    repeated = broadcast_axes(ctx, there_tensor)
    found = relate_axes(here, port.axis, there, stacked, dynamic, repeated)
    here_alt, there_alt = ctx.alt_shape(here_tensor), ctx.alt_shape(there_tensor)
    if here_alt is None or there_alt is None:
        raise Decline(f"{node.op} '{node.name}': its shape at a second assignment of the symbolic dims is unknown")
    if (tuple(here_alt), tuple(there_alt)) == (tuple(here), tuple(there)):
        return found
    try:
        again = relate_axes(here_alt, port.axis, there_alt, stacked, dynamic, repeated)
    except Decline as err:
        raise Decline(f"{node.op} '{node.name}' relates the channel axis only at some input shapes ({err})") from err
    here_static = (ctx.static_axes(here_tensor) or (False,) * len(here))[port.axis]
    exact = here_static and flags[found[0]]  # both sides static: the very same positions
    same = again[0] == found[0] and (not exact or all(np.array_equal(a, b) for a, b in zip(again[1:], found[1:])))
    if not same:
        raise Decline(f"{node.op} '{node.name}' maps the channel axis differently at other input shapes")
    return found


def broadcast_axes(ctx: RuleContext, tensor: gs.Tensor) -> tuple[bool, ...]:
    """Per axis of ``tensor``: whether an ``Expand`` or ``Tile`` produced it by copying a size-1 axis of its
    data."""
    producer = tensor.inputs[0] if tensor.inputs else None
    if producer is None or producer.op not in ("Expand", "Tile"):
        return ()
    out_shape, data_shape = ctx.shape(tensor), ctx.shape(producer.inputs[0])
    if out_shape is None or data_shape is None:
        return ()
    pad = len(out_shape) - len(data_shape)
    return tuple(axis >= pad and data_shape[axis - pad] == 1 and size > 1 for axis, size in enumerate(out_shape))


def _mark_heads(effects: Effects, *sides: tuple[Slot, Shape]) -> None:
    """Tag ``[..., H, D]`` ↔ ``[..., H·D]`` relations: the H slot indexes attention heads of size D."""
    (a, shape_a), (b, shape_b) = sides
    for (head, head_shape), (flat, flat_shape) in (((a, shape_a), (b, shape_b)), ((b, shape_b), (a, shape_a))):
        rank = len(head_shape)
        if rank >= 3 and head.axis == rank - 2 and flat.axis == len(flat_shape) - 1 and head_shape[-1] > 1 \
                and flat_shape[-1] % head_shape[-1] == 0 and head_shape[-2] % (flat_shape[-1] // head_shape[-1]) == 0:
            effects.head_dims[head] = head_shape[-1]  # [..., H·D] ↔ [..., H, D] or [..., B·H, D]


@register("Flatten", "Squeeze", "Unsqueeze", role="index-map")
def flatten_like(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Shapes follow from the input, so no constant needs rewriting."""
    return _reshape_like(ctx, node, port)[0]


@register("Reshape", role="index-map")
def reshape(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Like Flatten, plus the shape constant: its entry for the channel axis is rewritten (``-1`` stays).

    A target computed at run time (from ``Shape``, see :mod:`onnxprune.analysis.rules.shape_values`) needs no
    edit: it recomputes itself from the pruned tensor.
    """
    effects, out_axis = _reshape_like(ctx, node, port)
    if not isinstance(node.inputs[1], gs.Constant):
        if not node.inputs[1].inputs:
            raise Decline(f"Reshape shape '{node.inputs[1].name}' is a model input")
        edit = computed_target_edit(ctx, node, 1)
        effects.edits.extend([edit] if edit else [])
        return effects  # the rest is computed at run time from the new shapes; check_shapes confirms
    target = const_input(ctx, node, 1, "Reshape shape")
    if target is None:
        raise Decline("Reshape has no shape input")
    target = np.atleast_1d(target)
    entry = int(target[out_axis])
    link = (effects.links or effects.nests)[0]
    if entry == 0:
        identity = link.a.axis == link.b.axis and link.a_pos is not None and np.array_equal(link.a_pos, link.b_pos)
        if not identity:
            raise Decline("Reshape copies (0) a dimension that changes")
    elif entry != -1:
        effects.edits.append(SetEntryEdit(node.name, node.inputs[1].name, out_axis, link.b))
    return effects

