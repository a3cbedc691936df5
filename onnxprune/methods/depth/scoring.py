"""How much each removable block matters (low score: removed first).

| criterion | score of block ``y = x + f(x)`` | needs |
|---|---|---|
| ``influence`` | ShortGPT's block influence: mean over positions of ``1 − cos(x, y)``, the cosine taken over the feature axis (axis 1 of an NC… tensor, the last axis otherwise) | calibration |
| ``output`` | SLEB: relative L2 change of the model's outputs, ‖out − out₀‖/‖out₀‖ (worst output), when the block is removed; chosen greedily, each step given the blocks already chosen (the score shown is the first step's: the block alone) | calibration |
| ``weight`` | L2 norm of the branch's last weighted layer's weight (the one writing f(x)) | nothing |

``influence`` and ``output`` are both computed whenever calibration data is given (the plan records
both; the criterion picks the order).  Random inputs are used only when the user asks for them
(``--calib-random``): the plan records the calibration origin.  ``weight`` is the fallback without data:
a branch whose last layer is small adds little to the stream, but it ignores what the stream carries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.runtime.calibration import CalibrationSet
from onnxprune.methods.depth.analysis import Block, DepthAnalysis
from onnxprune.recovery.layers import output_error
from onnxprune.runtime.sessions import fetch_outputs
from onnxprune.scoring.statistics import with_outputs
from onnxprune.runtime.sessions import make_session

if TYPE_CHECKING:
    from onnxprune.methods.prepared import Prepared

CRITERIA = ("influence", "output", "weight")
CALIBRATED = ("influence", "output")
#: Candidate models scored together in one pass over the calibration data (memory: one copy each).
_CHUNK = 4


def weight_scores(graph: gs.Graph, analysis: DepthAnalysis) -> dict[str, float]:
    """Block id → L2 norm of the weight of the branch's last weighted layer."""
    nodes = {n.name: n for n in graph.nodes}
    scores = {}
    for block in analysis.blocks:
        layer = nodes[block.weights[-1]]
        weight = next(t for t in layer.inputs if isinstance(t, gs.Constant))
        scores[block.id] = float(np.linalg.norm(np.asarray(weight.values, dtype=np.float64)))
    return scores


def influence_scores(model: onnx.ModelProto, analysis: DepthAnalysis, calibration: CalibrationSet
                     ) -> dict[str, float]:
    """Block id → mean ``1 − cos(x, y)`` over calibration positions (ShortGPT), one streamed pass."""
    taps = [name for block in analysis.blocks for name in (block.stream, block.output)]
    session = make_session(with_outputs(model, taps), optimized=False)
    sums = {block.id: [0.0, 0] for block in analysis.blocks}
    for number, batch in enumerate(calibration.batches()):
        values = dict(zip(taps, fetch_outputs(session, taps, batch, f"calibration batch {number}")))
        for block in analysis.blocks:
            cosine = _cosines(values[block.stream], values[block.output])
            sums[block.id][0] += float(np.sum(1.0 - cosine))
            sums[block.id][1] += cosine.size
    return {key: total / max(count, 1) for key, (total, count) in sums.items()}


def _cosines(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cosine of x and y over the feature axis at every other position (float64)."""
    axis = 1 if x.ndim >= 4 else -1
    x, y = x.astype(np.float64), y.astype(np.float64)
    dot = np.sum(x * y, axis=axis)
    norms = np.sqrt(np.sum(x * x, axis=axis) * np.sum(y * y, axis=axis))
    return np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 1.0)


def output_scores(prepared: Prepared, analysis: DepthAnalysis, calibration: CalibrationSet, remove: Any,
                  count: int = 1) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """SLEB: remove ``count`` blocks one at a time, each time the block whose removal (with the ones already
    chosen) changes the outputs least (worst relative L2 over outputs, on the calibration data).

    Returns every block's change when it alone is removed (the first step) and the chosen blocks in
    order with the change of the model at that step.  ``remove(blocks) -> ModelProto`` builds the model
    without ``blocks`` (the method's own rewrite).  Cost: N + (N−1) + … model runs over the data.
    """
    alone: dict[str, float] = {}
    chosen: list[tuple[str, float]] = []
    remaining: list[Block] = list(analysis.blocks)
    for step in range(max(count, 1)):
        errors = _changes(prepared, calibration, remove, [b for b, _ in chosen], remaining)
        if step == 0:
            alone = dict(errors)
        if step >= count:
            break
        best = min(remaining, key=lambda b: errors[b.id])
        chosen.append((best, errors[best.id]))
        remaining.remove(best)
    return alone, [(block.id, error) for block, error in chosen]


def _changes(prepared: Prepared, calibration: CalibrationSet, remove: Any, removed: list[Block],
             candidates: list[Block]) -> dict[str, float]:
    """Block id → output change of the model without ``removed`` and that block, a few models per data pass."""
    changes: dict[str, float] = {}
    for start in range(0, len(candidates), _CHUNK):
        chunk = candidates[start:start + _CHUNK]
        errors = output_error(prepared.original, {b.id: remove(removed + [b]) for b in chunk}, calibration)
        changes.update({key: float(value["worst_relative_l2"]) for key, value in errors.items()})
    return changes
