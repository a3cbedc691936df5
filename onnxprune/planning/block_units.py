"""Choosing kept units of a group with equal-size blocks (GQA: query heads per KV head).

Why: such a group may keep, in every block, either nothing or the same number ``k`` of units (the copy
count ``n_rep`` is one integer; :mod:`onnxprune.analysis.blocks`).  So with ``b`` blocks of ``n`` units the
legal kept counts are ``m·k`` (``1 ≤ m ≤ b`` blocks, ``1 ≤ k ≤ n`` units each).  A requested count is
rounded *up* to the nearest legal one (the cut never exceeds the request, as ``--round-to`` does; with
``fixed_blocks``, e.g. a KV cache at the interface, ``m = b``), and among
the ``(m, k)`` giving that count the one keeping the highest total score wins: the ``m`` blocks whose best
``k`` units score highest, each keeping its own best ``k`` (which units differs per block).
"""

from __future__ import annotations

import numpy as np

from onnxprune.analysis.groups import Group


def top_units(scores: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` best units, ascending; ties keep the lower index (stable)."""
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:keep])


def legal_keep(group: Group, keep: int) -> int:
    """The smallest count ≥ ``keep`` (at least 1) the group's blocks allow; ``keep`` itself without blocks."""
    if not group.blocks:
        return keep
    blocks, size = len(group.blocks), len(group.blocks[0])
    keep = min(max(1, keep), blocks * size)
    return min(m * k for m in _block_counts(group) for k in range(1, size + 1) if m * k >= keep)


def _block_counts(group: Group) -> range:
    """How many blocks may stay: any number from one, or all of them when the blocks are fixed."""
    return range(len(group.blocks), len(group.blocks) + 1) if group.fixed_blocks else range(1, len(group.blocks) + 1)


def keep_units(group: Group, scores: np.ndarray, keep: int) -> np.ndarray:
    """Kept unit indices (ascending): the ``keep`` best, or for a blocked group the best legal layout of
    :func:`legal_keep` ``(keep)`` units."""
    if not group.blocks:
        return top_units(scores, keep)
    keep = legal_keep(group, keep)
    blocks = [np.asarray(b, dtype=np.int64) for b in group.blocks]
    best: tuple[float, np.ndarray] | None = None
    for k in range(1, len(blocks[0]) + 1):
        if keep % k or keep // k not in _block_counts(group):
            continue
        tops = [block[top_units(scores[block], k)] for block in blocks]
        worth = np.array([scores[t].sum() for t in tops])
        chosen = np.sort(np.argsort(-worth, kind="stable")[:keep // k])
        total = float(worth[chosen].sum())
        if best is None or total > best[0]:
            best = (total, np.sort(np.concatenate([tops[i] for i in chosen])))
    assert best is not None  # legal_keep returned a count some (m, k) gives
    return best[1]
