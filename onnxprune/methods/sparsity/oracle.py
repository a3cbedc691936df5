"""The sparsity oracle: does the written model hold what the plan promised?

Three checks, each able to fail:

1. **Pattern**: in the output model's own weights (ONNX layout), every planned zero is zero and, for an
   N:M pattern, every group of M consecutive input channels (per output and kernel position) has at most
   N nonzeros.
2. **Masked reference** (no weights updated: magnitude, Wanda): the output equals the masked original —
   the original weights multiplied by the 0/1 mask by a ``Mul`` node at run time
   (:meth:`SparsityMethod.reference`) — at more than one input shape: bit for bit with onnxruntime's
   optimizations off on both sides, within ``tolerance`` (relative) when the output model runs optimized
   (fused kernels sum in another order than the unoptimized reference).
3. **Reconstruction** (SparseGPT updated the kept weights): per updated layer, on held-out inputs X as
   the written model feeds that layer, ‖W X − Ŵ X‖² ≤ ‖W X − (W ⊙ M) X‖², i.e. the update did better
   than masking alone, which is what the OBS step promises (``slack`` allows float32 rounding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxprune.runtime.calibration import CalibrationSet
from onnxprune.methods.sparsity import masks
from onnxprune.methods.sparsity.layers import to_matrix
from onnxprune.methods.sparsity.obs import reconstruction_error
from onnxprune.methods.sparsity.plan import SparsityPlan
from onnxprune.methods.sparsity.stats import gram_matrices
from onnxprune.runtime.sessions import Runner
from onnxprune.measurement.agreement import compare_outputs
from onnxprune.runtime.feeds import shapes_of, trial_runs
from onnxprune.io.weights import to_array


@dataclass
class SparsityCheck:
    """What the oracle found; ``ok`` only when every check passed."""

    ok: bool = True
    tolerance: float = 1e-5
    pattern: list[dict[str, Any]] = field(default_factory=list)
    diffs: list[dict[str, Any]] = field(default_factory=list)
    shapes: list[dict[str, list[int]]] = field(default_factory=list)
    reconstruction: list[dict[str, Any]] = field(default_factory=list)
    heldout: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "tolerance": self.tolerance, "pattern": self.pattern, "diffs": self.diffs,
                "runs_at": self.shapes, "reconstruction": self.reconstruction, "heldout": self.heldout}


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def check_pattern(model: onnx.ModelProto, plan: SparsityPlan) -> list[dict[str, Any]]:
    """Per layer: planned zeros present, N:M groups respected, measured zeros (in the written weights)."""
    pattern = masks.parse_pattern(plan.settings["pattern"])
    inits = _initializers(model)
    rows = []
    for record in plan.layers:
        layer = record.layer
        weight = inits.get(layer.weight)
        if weight is None:
            rows.append({"node": layer.node, "ok": False, "reason": f"weight '{layer.weight}' missing"})
            continue
        matrix = to_matrix(to_array(weight), layer)
        keep = masks.unpack(record.mask, matrix.shape)
        zeros_ok = bool(np.all(matrix[~keep] == 0))
        pattern_ok = masks.holds(matrix, pattern)
        rows.append({"node": layer.node, "ok": zeros_ok and pattern_ok, "planned_zeros_hold": zeros_ok,
                     "pattern_holds": pattern_ok, "zeros": int(np.count_nonzero(matrix == 0)), "total": matrix.size})
    return rows


def check_reconstruction(method: Any, prepared: Any, plan: SparsityPlan, model: onnx.ModelProto,
                         heldout: CalibrationSet, slack: float = 1e-6) -> list[dict[str, Any]]:
    """Per updated layer: held-out ‖ΔW X‖² of the update against that of the mask alone."""
    updated = [record.layer for record in plan.layers if record.layer.node in plan.updates]
    grams = gram_matrices(model, tuple(updated), heldout)
    original = _initializers(prepared.normalized)
    rows = []
    for record in plan.layers:
        layer = record.layer
        if layer.node not in plan.updates:
            continue
        w = to_matrix(to_array(original[layer.weight]), layer).astype(np.float64)
        new = to_matrix(np.asarray(plan.updates[layer.node]), layer).astype(np.float64)
        keep = masks.unpack(record.mask, w.shape)
        gram = grams[layer.node][0]
        obs, masked = reconstruction_error(w - new, gram), reconstruction_error(np.where(keep, 0.0, w), gram)
        ok = obs <= masked * (1.0 + slack) + 1e-12
        rows.append({"node": layer.node, "ok": bool(ok), "error_updated": obs, "error_masked": masked,
                     "ratio": obs / masked if masked > 0 else None})
    return rows


def verify_sparsity(method: Any, prepared: Any, plan: SparsityPlan, model: onnx.ModelProto,
                    feeds: list[dict[str, np.ndarray]] | None = None, heldout: CalibrationSet | None = None,
                    tolerance: float = 1e-5, seeds: tuple[int, ...] = (0, 1)) -> SparsityCheck:
    """Run the checks of the module docstring that apply to ``plan`` on the written ``model``."""
    result = SparsityCheck(tolerance=tolerance)
    result.pattern = check_pattern(model, plan)
    result.ok = all(row["ok"] for row in result.pattern)
    if plan.updated:
        if heldout is None:
            raise ValueError("an updated (sparsegpt) plan is checked on held-out calibration data")
        result.heldout = heldout.describe()
        result.reconstruction = check_reconstruction(method, prepared, plan, model, heldout)
        result.ok &= all(row["ok"] for row in result.reconstruction)
        return result
    reference = method.reference(prepared, plan)
    candidate = Runner(model)
    for number, (batch, expected) in enumerate(trial_runs(reference, len(feeds or []) + len(seeds),
                                                          seed=seeds[0] if seeds else 0, given=feeds)):
        result.shapes.append(shapes_of(batch))
        for optimized in (False, True):  # both unoptimized: the same kernels on the same numbers, bit for bit
            for diff in compare_outputs(expected, candidate.run(batch, optimized), tolerance if optimized else 0.0):
                result.diffs.append(diff.to_dict() | {"batch": number, "optimized": optimized})
                result.ok &= diff.ok
    return result
