"""Allocation: how many units each prunable group keeps, and which.

Why both modes: a uniform ratio is predictable and easy to reason about; global ranking spends the
budget where scores are lowest, but needs a floor so no group is emptied (an empty group would delete a
layer's whole output).  ``round_to`` keeps widths multiples of N because odd widths defeat vectorized
kernels; it rounds the kept count *up* so the cut never exceeds what was asked.  Groups narrower than
``round_min_units`` get a finer power-of-two multiple (``--round-to auto``, :mod:`onnxprune.planning.alignment`):
for them the full multiple would be too coarse to leave any choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from onnxprune.errors import InputError
from onnxprune.analysis.groups import Analysis
from onnxprune.planning.block_units import keep_units


@dataclass(frozen=True)
class AllocationSettings:
    """``ratio``: fraction of units to remove; ``min_keep``: floor (fraction) per group under global ranking."""

    ratio: float = 0.0
    global_ranking: bool = False
    round_to: int = 1
    min_keep: float = 0.1
    head_ratio: float | None = None  # attention heads; None: ``ratio``
    ffn_ratio: float | None = None  # neurons of Gemm/MatMul layers (FFN intermediates); None: ``ratio``
    round_min_units: int = 0  # auto: narrower groups get a finer multiple (round_step); 0: explicit round_to

    def ratio_for(self, kind: str) -> float:
        """The uniform ratio of a group of this kind (heads and FFN neurons may differ)."""
        if kind == "head" and self.head_ratio is not None:
            return self.head_ratio
        if kind == "neuron" and self.ffn_ratio is not None:
            return self.ffn_ratio
        return self.ratio

    def validate(self) -> None:
        for name, value in (("--ratio", self.ratio), ("--head-ratio", self.head_ratio),
                            ("--ffn-ratio", self.ffn_ratio)):
            if value is not None and not 0.0 <= value < 1.0:
                raise InputError(f"{name} must be in [0, 1), got {value}")
        if self.global_ranking and (self.head_ratio is not None or self.ffn_ratio is not None):
            raise InputError("--head-ratio/--ffn-ratio set per-kind uniform ratios; they cannot be combined with --global")
        if self.round_to < 1:
            raise InputError(f"--round-to must be >= 1, got {self.round_to}")
        if not 0.0 <= self.min_keep <= 1.0:
            raise InputError(f"min_keep must be in [0, 1], got {self.min_keep}")


def round_step(units: int, round_to: int, min_units: int = 0) -> int:
    """The multiple a group of ``units`` units is rounded to.

    Groups with at least ``min_units`` units use ``round_to``.  Narrower ones (``--round-to auto``) use
    the largest power of two below ``round_to`` that still leaves one aligned width under the full one
    (``2·step <= units``): a 24-channel group gets 8, a 12-channel group 4, so narrow layers stay
    prunable and partly aligned instead of frozen at full width by a coarse multiple.
    """
    if units >= min_units:
        return round_to
    step = 1
    while step * 2 < round_to and step * 4 <= units:
        step *= 2
    return step


def _round_up(keep: int, units: int, step: int) -> int:
    """``keep`` rounded up to a multiple of ``step``, never above ``units``."""
    return min(units, math.ceil(keep / step) * step)


def rounded_keep(keep: int, units: int, round_to: int, min_units: int = 0) -> int:
    """``keep`` (at least 1) rounded up to a multiple of :func:`round_step`, never above ``units``."""
    return _round_up(max(1, keep), units, round_step(units, round_to, min_units))


def _rounded_keeping_the_cut(keep: int, units: int, round_to: int, min_units: int) -> int:
    """Ratio mode under ``--round-to auto``: the coarsest step (from :func:`round_step` down to 1, halving)
    whose rounding up gives back at most half of the cut the ratio asked for.

    Why: a ratio is an explicit per-group request.  Rounding 23 of 32 kept channels up to 32 would cancel
    a 30 % cut entirely; alignment is a speed preference and must not silently undo the request (the
    target modes get the same guarantee from their measured search instead).
    """
    keep = max(1, keep)
    cut = units - keep
    step = round_step(units, round_to, min_units)
    while step > 1 and _round_up(keep, units, step) - keep > cut / 2:
        step //= 2
    return _round_up(keep, units, step)


def allocate(analysis: Analysis, scores: dict[int, np.ndarray], settings: AllocationSettings) -> dict[int, np.ndarray]:
    """Kept unit indices per prunable group index."""
    settings.validate()
    if settings.global_ranking:
        counts = _global_counts(analysis, scores, settings)
    else:
        counts = {}
        for g in scores:
            group = analysis.groups[g]
            counts[g] = group.units - math.floor(settings.ratio_for(group.kind) * group.units + 1e-9)
    kept = {}
    for group, keep in counts.items():
        units = analysis.groups[group].units
        rounded = rounded_keep(keep, units, settings.round_to) if not settings.round_min_units else \
            _rounded_keeping_the_cut(keep, units, settings.round_to, settings.round_min_units)
        kept[group] = keep_units(analysis.groups[group], scores[group], rounded)
    return kept


def _global_counts(analysis: Analysis, scores: dict[int, np.ndarray], settings: AllocationSettings) -> dict[int, int]:
    """Remove the globally lowest mean-normalized scores, never below the per-group floor."""
    entries = []
    floors = {}
    for group, values in scores.items():
        mean = values.mean()
        normalized = values / mean if mean > 0 else values
        entries.extend((float(v), group) for v in normalized)
        units = analysis.groups[group].units
        floors[group] = max(1, math.ceil(settings.min_keep * units))
    target = math.floor(settings.ratio * len(entries) + 1e-9)
    counts = {g: analysis.groups[g].units for g in scores}
    removed = 0
    for _, group in sorted(entries, key=lambda e: (e[0], e[1])):
        if removed >= target:
            break
        if counts[group] > floors[group]:
            counts[group] -= 1
            removed += 1
    return counts
