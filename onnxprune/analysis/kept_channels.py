"""The kept-channel view of a plan: which positions of every slot survive, and the new sizes.
"""

from __future__ import annotations

import numpy as np

from onnxprune.analysis.groups import Analysis
from onnxprune.analysis.rules import Slot


class KeptChannels:
    """Which positions of each slot survive a plan (the view edits and passes consult)."""

    def __init__(self, analysis: Analysis, removed: dict[int, np.ndarray]):
        self.analysis = analysis
        sizes = [g.units for g in analysis.groups]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        removed_flat = np.zeros(int(offsets[-1]), dtype=bool)
        for group, units in removed.items():
            removed_flat[offsets[group] + np.asarray(units, dtype=np.int64)] = True
        self.atom_removed = removed_flat[offsets[analysis.atom_group] + analysis.atom_unit] \
            if len(analysis.atom_group) else np.zeros(0, dtype=bool)
        self._block_atoms(offsets, removed_flat)

    def _block_atoms(self, offsets: np.ndarray, removed_flat: np.ndarray) -> None:
        """A block atom (a KV head) goes exactly when every unit of its block goes."""
        blocks = self.analysis.atom_block
        if blocks is None or not len(blocks) or blocks.max() < 0:
            return
        for atom in np.flatnonzero(blocks >= 0).tolist():
            group = int(self.analysis.atom_group[atom])
            units = np.asarray(self.analysis.groups[group].blocks[int(blocks[atom])], dtype=np.int64)
            self.atom_removed[atom] = bool(removed_flat[offsets[group] + units].all())

    def removed_mask(self, slot: Slot) -> np.ndarray:
        first, size = self.analysis.slots[slot]
        return self.atom_removed[first:first + size]

    def kept(self, slot: Slot) -> np.ndarray:
        return np.flatnonzero(~self.removed_mask(slot))

    def size(self, slot: Slot) -> int:
        return int(np.count_nonzero(~self.removed_mask(slot)))

    def size_or(self, slot: Slot, default: int) -> int:
        """New size of ``slot``, or ``default`` for an axis no group touches.  A copy-count axis (``n_rep``)
        has kept children / kept parents."""
        if slot in self.analysis.counts:
            parent, child = self.analysis.counts[slot]
            parents = self.size(parent)
            return self.size(child) // parents if parents else default
        return self.size(slot) if slot in self.analysis.slots else default

    def changed(self, slot: Slot) -> bool:
        return bool(self.removed_mask(slot).any())

    def param_keep(self, param) -> np.ndarray:
        """Indices of ``param.tensor`` along ``param.axis`` that survive."""
        return np.flatnonzero(~self.removed_mask(param.slot)[param.index])
