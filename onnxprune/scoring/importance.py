"""Channel importance from the weights: one score per unit of every prunable group.

Why per group: a residual group is judged on all its producers and consumers at once.  Each member
(a weight slice of a producer or a consumer) gives a per-unit score; members live on different scales
(a 3×3 conv versus a 1×1), so each is divided by its mean before the members are summed.

Criteria:
* ``l1`` / ``l2`` — norm of the weights each unit owns (filters it produces, columns that read it);
* ``bn`` — ``|γ|`` of the BatchNormalization in the group (falls back to ``l2`` when the exporter
  folded BN away, and says so);
* ``random`` — seeded uniform scores, a baseline.

Data criteria (``activation``, ``apoz``, ``wanda``, ``fluctuation``, ``entropy``, ``reconstruction``) read calibration statistics; they
live in :mod:`onnxprune.scoring.data_importance`; :func:`onnxprune.scoring.criteria.score_groups` reaches both.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.analysis.groups import Analysis
from onnxprune.analysis.rules import ParamSlice
from onnxprune.io.weights import WeightStore, entry_of, float_type, release, stub_entry

WEIGHT_CRITERIA = ("l1", "l2", "bn", "random")


@dataclass
class Scores:
    """Per-group unit scores plus notes for the report (e.g. a ``bn`` fallback)."""

    by_group: dict[int, np.ndarray]
    notes: list[str] = field(default_factory=list)


class NormCache:
    """Per-index norms of constant tensors along an axis, computed once per (tensor, axis, p)."""

    def __init__(self, graph: gs.Graph):
        self.tensors = graph.tensors()
        self.cache: dict[tuple[str, int, int], np.ndarray] = {}
        self.scratch = Scratch()  # float64 blocks reused by every norm (fresh ones cost a page fault per 4 KiB)

    def norms(self, name: str, axis: int, p: int) -> np.ndarray:
        key = (name, axis, p)
        if key not in self.cache:
            values = self.tensors[name].values
            stored = entry_of(values)  # a store's weight: maybe scored already, while the isolation child ran
            self.cache[key] = _stored_norms(values, axis, p, self.scratch) if stored is None else \
                _memo_norms(*stored, values, axis, p, self.scratch)
        return self.cache[key]


def _memo_norms(store: WeightStore, weight: str, values: np.ndarray, axis: int, p: int, scratch: Scratch
                ) -> np.ndarray:
    """The norms of a store's weight, taken once per run (:meth:`WeightStore.memo`, :func:`warm_norms`)."""
    return store.memo(weight, _norms_fact(axis, p), lambda: _stored_norms(values, axis, p, scratch))


def _norms_fact(axis: int, p: int) -> tuple[str, int, int]:
    return ("norms", axis, p)


def _stored_norms(values: np.ndarray, axis: int, p: int, scratch: Scratch) -> np.ndarray:
    # C order as an imported weight has: the norms' rounding follows the layout (_moved_float64), and
    # a pass may have left a computed constant transposed in the graph prepare analysed
    values = np.ascontiguousarray(values)
    norms = _index_norms(values, axis, p, scratch)
    release(values)  # a memory-mapped weight need not stay resident once scored
    return norms


#: Norm order of each weight criterion whose norms :func:`warm_norms` can take ahead of the analysis.
WARMABLE_P = {"l1": 1, "l2": 2}


def warm_norms(model: onnx.ModelProto, criterion: str, busy: Callable[[], bool]) -> int:
    """Take the norms ``criterion`` will read of ``model``'s stored weights ahead of the analysis, while
    ``busy()`` holds; returns how many were taken.

    Why: the CLI waits for its isolation child before any native onnx code touches the model, and the
    analysis that says which weight is scored along which axis needs that code.  Norms are plain numpy
    over bytes the store maps, so they can fill the wait: each weight of two or more axes along its first
    two (the output and input axes of Conv, Gemm and MatMul weights, in either order), kept in its store
    (:meth:`WeightStore.memo`) where :class:`NormCache` finds them -- the same function of the same bytes,
    so scores are bit-identical to norms taken later.  It stops as soon as ``busy()`` is false: it never
    makes the run longer than the wait by more than one weight.
    """
    p = WARMABLE_P.get(criterion)
    if p is None:
        return 0
    scratch, taken = Scratch(), 0
    for init in model.graph.initializer:
        stored = stub_entry(init)
        if stored is None or len(init.dims) < 2 or not float_type(init.data_type):
            continue
        store, weight = stored
        for axis in (0, 1):
            if not busy():
                return taken
            if not store.known(weight, _norms_fact(axis, p)):
                _memo_norms(store, weight, store.array(weight), axis, p, scratch)
                taken += 1
    return taken


#: float64 elements converted at a time by :func:`_index_norms` (16 MiB).
NORM_CHUNK_ELEMENTS = 1 << 21


class Scratch:
    """Two float64 buffers that grow to the largest block asked for and are then reused.

    Why: a ResNet-50's norms convert ~50 M weights to float64 block by block; a fresh block is untouched
    memory whose every page faults on first write, which cost as much as the conversion itself.  The
    blocks handed out are C-ordered like the fresh ones they replace, so the sums stay bit-identical.
    """

    def __init__(self) -> None:
        self.buffers: list[np.ndarray] = [np.empty(0), np.empty(0)]

    def empty(self, which: int, shape: tuple[int, ...]) -> np.ndarray:
        """A C-ordered float64 array of ``shape`` in buffer ``which`` (0 or 1); its old contents are garbage."""
        size = int(np.prod(shape, dtype=np.int64))
        if self.buffers[which].size < size:
            self.buffers[which] = np.empty(size, dtype=np.float64)
        return self.buffers[which][:size].reshape(shape)


def _index_norms(values: np.ndarray, axis: int, p: int, scratch: Scratch | None = None) -> np.ndarray:
    """Sum of |w| (p=1) or w² (p=2) per index of ``axis``, in float64, a block of indices at a time.

    Why blocks: converting a whole 1 GB float32 weight to float64 (and moving its axis) would cost
    several times the weight in temporaries.  Each index's sum is the same reduction over the same
    values in the same order as on the whole array, so the result is bit-identical.  ``scratch``: reuse
    its buffers for the blocks (:class:`Scratch`).
    """
    count = values.shape[axis]
    per_index = values.size // count if count else 0
    step = max(1, NORM_CHUNK_ELEMENTS // max(per_index, 1))
    out = np.empty(count, dtype=np.float64)
    for start in range(0, count, step):
        index = (slice(None),) * axis + (slice(start, min(count, start + step)),)  # a view: one copy, to float64
        moved = _moved_float64(values[index], axis, scratch)
        np.abs(moved, out=moved) if p == 1 else np.square(moved, out=moved)  # in place: no third temporary
        out[start:start + len(moved)] = moved.sum(axis=1)
    return out


def _moved_float64(block: np.ndarray, axis: int, scratch: Scratch | None = None) -> np.ndarray:
    """``block`` as a float64 ``[index, rest]`` matrix with ``axis`` first, in one copy, laid out exactly as
    ``np.moveaxis(np.asarray(block, np.float64), axis, 0).reshape(n, -1)`` lays it out.

    Why: that expression copies twice when the reshape cannot be a view (a Conv weight's input axis), and
    a (scaled) ResNet-50 spent a quarter of its prune there.  The row sums must stay bit-identical to
    the whole-array sums, and a reduction's rounding depends on the memory layout it walks, so the
    layout is the two-step expression's: its float64 copy keeps ``block``'s layout (``empty_like``
    allocates the same without touching memory); where its reshape is a view it is used as is, where
    the reshape would copy into C order the cast writes straight into a C-ordered matrix.
    """
    n = block.shape[axis]
    if scratch is None or not _c_ordered(block):
        target = np.empty_like(block, dtype=np.float64)  # the layout asarray(block, float64) would have
    else:
        target = scratch.empty(0, block.shape)  # the same layout: C order, as empty_like gives a C-ordered block
    moved = np.moveaxis(target, axis, 0).reshape(n, -1)
    if np.shares_memory(moved, target):
        target[...] = block
        return moved
    flat = np.empty(moved.shape, dtype=np.float64) if scratch is None else scratch.empty(1, moved.shape)
    flat.reshape(np.moveaxis(block, axis, 0).shape)[...] = np.moveaxis(block, axis, 0)
    return flat


def _c_ordered(block: np.ndarray) -> bool:
    """Whether ``empty_like(block)`` is C-ordered: the strides of the axes longer than 1 decrease (a block
    sliced from a C-contiguous weight, as :class:`NormCache` reads them)."""
    strides = [abs(stride) for stride, size in zip(block.strides, block.shape) if size > 1]
    return all(a >= b for a, b in itertools.pairwise(strides))


def member_scores(analysis: Analysis, group: int, param: ParamSlice, per_index: np.ndarray,
                   squared: bool) -> np.ndarray | None:
    """Aggregate a member's per-index values onto the group's units (None if it touches none)."""
    first, _ = analysis.slots[param.slot]
    atoms = first + param.index
    mine = analysis.atom_group[atoms] == group
    if not mine.any():
        return None
    scores = np.zeros(analysis.groups[group].units)
    blocks = analysis.atom_block[atoms][mine] if analysis.atom_block is not None else np.full(int(mine.sum()), -1)
    values, plain = per_index[mine], blocks < 0
    np.add.at(scores, analysis.atom_unit[atoms][mine][plain], values[plain])
    for block in np.unique(blocks[~plain]).tolist():  # a KV head's weights: shared evenly by its query heads
        units = list(analysis.groups[group].blocks[block])
        scores[units] += values[blocks == block].sum() / len(units)
    return np.sqrt(scores) if squared else scores


def combine_members(members: list[np.ndarray], units: int) -> np.ndarray:
    """Sum of members, each normalized by its mean so no member dominates by scale."""
    total = np.zeros(units)
    for scores in members:
        mean = scores.mean()
        total += scores / mean if mean > 0 else scores
    return total


def norm_scores(analysis: Analysis, cache: NormCache, group: int, p: int, kinds: tuple[str, ...]) -> list[np.ndarray]:
    members = []
    for param in analysis.groups[group].params:
        wanted = param.kind in kinds if kinds else param.role in ("producer", "consumer")
        if not wanted:
            continue
        per_index = cache.norms(param.tensor, param.axis, p)
        scores = member_scores(analysis, group, param, per_index, squared=(p == 2))
        if scores is not None:
            members.append(scores)
    return members


def score_groups_weights(graph: gs.Graph, analysis: Analysis, criterion: str, seed: int = 0) -> Scores:
    """Scores for every prunable group of ``analysis`` from a weight criterion (``WEIGHT_CRITERIA``)."""
    cache = NormCache(graph)
    result = Scores({})
    fallbacks = 0
    for index in analysis.prunable_indices:
        group = analysis.groups[index]
        if criterion == "random":
            result.by_group[index] = np.random.default_rng([seed, index]).random(group.units)
            continue
        members: list[np.ndarray] = []
        if criterion == "bn":
            members = norm_scores(analysis, cache, index, 1, ("bn_scale",))
            fallbacks += not members
        if not members:
            members = norm_scores(analysis, cache, index, 1 if criterion == "l1" else 2, ())
        result.by_group[index] = combine_members(members, group.units)
    if fallbacks:
        result.notes.append(f"bn: {fallbacks} group(s) have no BatchNormalization scale; used l2 instead")
    return result
