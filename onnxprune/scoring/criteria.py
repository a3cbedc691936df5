"""Every importance criterion by name, and the one entry point that scores groups with it.

Why a module of its own: weight criteria (:mod:`onnxprune.scoring.importance`) are the building blocks the
data criteria (:mod:`onnxprune.scoring.data_importance`) combine and fall back to, so the dispatcher sits
above both and neither imports the other's caller.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.analysis.groups import Analysis
from onnxprune.errors import InputError
from onnxprune.scoring.data_importance import DATA_CRITERIA, score_groups_data
from onnxprune.scoring.importance import WEIGHT_CRITERIA, Scores, score_groups_weights

CRITERIA = WEIGHT_CRITERIA + DATA_CRITERIA


def score_groups(graph: gs.Graph, analysis: Analysis, criterion: str, seed: int = 0, stats=None) -> Scores:
    """Scores for every prunable group of ``analysis``; data criteria need ``stats`` (ActivationStats)."""
    if criterion in DATA_CRITERIA:
        return score_groups_data(graph, analysis, criterion, stats)
    if criterion not in WEIGHT_CRITERIA:
        raise InputError(f"unknown criterion '{criterion}' (choose from {', '.join(CRITERIA)})")
    return score_groups_weights(graph, analysis, criterion, seed)
