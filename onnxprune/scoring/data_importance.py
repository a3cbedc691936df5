"""Channel importance from calibration statistics: same ``Scores`` as the weight criteria.

Why consumer inputs: a channel matters through what the next layers read, so every criterion looks at
the input slot of each consumer layer (Conv input channels, Gemm/MatMul input features) that touches
the group, aggregates per-position values onto the group's units (a Flatten spreads one channel over
H·W features: their values are summed or averaged) and combines consumers like the weight criteria do
(each member divided by its mean, then summed), so allocation is unchanged.

Criteria (X_j: channel j of the consumer's input over all calibration rows, W_j: the consumer weights
that read it):

* ``activation`` — E|x_j| (mean over the unit's positions);
* ``apoz`` — 1 − P(x_j = 0), the *non*-zero fraction (APoZ after a ReLU), ties broken by E|x_j|;
* ``wanda`` — structured Wanda (Sun et al. 2023, FLAP's wanda-sp): Σ_i |W_ji| · ‖X_j‖₂ (RMS);
* ``fluctuation`` — FLAP (An et al. 2024): Var(X_j) · ‖W_j‖₂²;
* ``entropy`` — Shannon entropy of x_j's histogram (fixed bins over its calibration [min, max], counted
  inside onnxruntime: :func:`onnxprune.scoring.statistics.collect_histograms`); a near-constant channel is least
  important;
* ``reconstruction`` — ThiNet-style greedy removal order from the consumers' input Gram matrices
  (:mod:`onnxprune.scoring.reconstruction`).

A group no consumer slot with statistics reaches falls back to ``l2`` and the notes say so.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.errors import InputError
from onnxprune.analysis.groups import Analysis
from onnxprune.scoring.importance import NormCache, Scores, combine_members, member_scores, norm_scores
from onnxprune.analysis.rules import ParamSlice
from onnxprune.scoring.statistics import ActivationStats, ChannelStats

DATA_CRITERIA = ("activation", "apoz", "wanda", "fluctuation", "entropy", "reconstruction")


def _per_index(criterion: str, stats: ChannelStats, param: ParamSlice, cache: NormCache) -> np.ndarray:
    """The criterion's value for each index of the consumer weight ``param`` along its channel axis."""
    at = param.index
    if criterion == "activation":
        return stats.mean_abs[at]
    if criterion == "apoz":
        mean_abs = stats.mean_abs[at]
        scale = mean_abs.max() if mean_abs.size and mean_abs.max() > 0 else 1.0
        return (1.0 - stats.zero_fraction[at]) + 1e-6 * mean_abs / scale
    if criterion == "entropy":
        return stats.entropy[at]
    if criterion == "wanda":
        return cache.norms(param.tensor, param.axis, 1) * stats.rms[at]
    return cache.norms(param.tensor, param.axis, 2) * stats.var[at]  # fluctuation


def _unit_mean(analysis: Analysis, group: int, param: ParamSlice, values: np.ndarray) -> np.ndarray | None:
    """Mean over each unit's positions (activation criteria are per element, not per weight)."""
    total = member_scores(analysis, group, param, values, squared=False)
    if total is None:
        return None
    count = member_scores(analysis, group, param, np.ones_like(values), squared=False)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def _data_members(analysis: Analysis, stats: ActivationStats, cache: NormCache, group: int,
                  criterion: str) -> list[np.ndarray]:
    members = []
    for param in analysis.groups[group].params:
        slot_stats = stats.get(param.slot) if param.role == "consumer" else None
        if criterion == "entropy" and param.role == "consumer" and param.slot in stats.histograms:
            slot_stats = stats.histograms[param.slot]
        elif criterion == "entropy":
            slot_stats = None
        if slot_stats is None:
            continue
        values = _per_index(criterion, slot_stats, param, cache)
        if criterion in ("activation", "apoz", "entropy"):
            scores = _unit_mean(analysis, group, param, values)
        else:
            scores = member_scores(analysis, group, param, values, squared=False)
        if scores is not None:
            members.append(scores)
    return members


def score_groups_data(graph: gs.Graph, analysis: Analysis, criterion: str, stats: ActivationStats | None
                      ) -> Scores:
    """Scores for every prunable group under a data criterion (needs calibration statistics)."""
    if criterion not in DATA_CRITERIA:
        raise InputError(f"unknown data criterion '{criterion}' (choose from {', '.join(DATA_CRITERIA)})")
    if stats is None:
        raise InputError(f"criterion '{criterion}' needs calibration data (--calib PATH or --calib-random N)")
    if criterion == "entropy" and not stats.histograms:
        raise InputError("criterion 'entropy' needs histograms: collect statistics with "
                         "calibration_statistics(prepared, calibration, criterion='entropy')")
    if criterion == "reconstruction":
        return _reconstruction_scores(graph, analysis, stats)
    cache = NormCache(graph)
    result = Scores({})
    fallbacks = 0
    for index in analysis.prunable_indices:
        group = analysis.groups[index]
        members = _data_members(analysis, stats, cache, index, criterion)
        if not members:
            fallbacks += 1
            members = norm_scores(analysis, cache, index, 2, ())
        result.by_group[index] = combine_members(members, group.units)
    if fallbacks:
        result.notes.append(f"{criterion}: {fallbacks} group(s) have no consumer with statistics; used l2 instead")
    return result


def _reconstruction_scores(graph: gs.Graph, analysis: Analysis, stats: ActivationStats) -> Scores:
    """Greedy ThiNet removal order per group (see :mod:`onnxprune.scoring.reconstruction`)."""
    from onnxprune.scoring.reconstruction import greedy_order, order_scores, unit_cost

    if not stats.grams:
        raise InputError("criterion 'reconstruction' needs Gram matrices: collect statistics with "
                         "calibration_statistics(prepared, calibration, criterion='reconstruction')")
    cache = NormCache(graph)
    result = Scores({})
    fallbacks = 0
    for index in analysis.prunable_indices:
        group = analysis.groups[index]
        cost = unit_cost(analysis, index, stats.grams)
        if cost is None:
            fallbacks += 1
            result.by_group[index] = combine_members(norm_scores(analysis, cache, index, 2, ()), group.units)
            continue
        result.by_group[index] = order_scores(greedy_order(cost))
    if fallbacks:
        result.notes.append(f"reconstruction: {fallbacks} group(s) have no Conv/Gemm/MatMul consumer to "
                            "reconstruct; used l2 instead")
    return result
