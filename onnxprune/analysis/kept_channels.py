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

    def removed_mask(self, slot: Slot) -> np.ndarray:
        first, size = self.analysis.slots[slot]
        return self.atom_removed[first:first + size]

    def kept(self, slot: Slot) -> np.ndarray:
        return np.flatnonzero(~self.removed_mask(slot))

    def size(self, slot: Slot) -> int:
        return int(np.count_nonzero(~self.removed_mask(slot)))

    def size_or(self, slot: Slot, default: int) -> int:
        """New size of ``slot``, or ``default`` for an axis no group touches."""
        return self.size(slot) if slot in self.analysis.slots else default

    def changed(self, slot: Slot) -> bool:
        return bool(self.removed_mask(slot).any())

    def param_keep(self, param) -> np.ndarray:
        """Indices of ``param.tensor`` along ``param.axis`` that survive."""
        return np.flatnonzero(~self.removed_mask(param.slot)[param.index])

