"""Depth pruning as the first stage of ``prune``: remove blocks, then width-prune the depth-pruned model.

Why depth first: removing a block deletes its layers outright, so width analysis, scoring and budgets
should see only the layers that remain (the width plan is made for, and tied to, the depth-pruned model;
its ``settings["depth"]`` records the depth plan so one plan file replays both).

Budgets (``--target-flops F`` / ``--target-params F``): the number of blocks is fixed by
``--depth-ratio``/``--remove-blocks``; the blocks are removed first, their share is measured, and width
pruning gets the rest: a width target of ``F / kept_by_depth`` on the depth-pruned model (nothing more when
depth alone already keeps at most ``F``).  A joint search over blocks and widths is not done.
``--target-latency`` with depth pruning is refused (its tables and timing loop assume one model).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from onnxprune.calibrate import CalibrationSet
from onnxprune.counting import count_model
from onnxprune.errors import InputError, VerificationError
from onnxprune.methods.depth import DepthAnalysis, DepthMethod, DepthPlan, DepthSettings

if TYPE_CHECKING:
    from onnxprune.pipeline import Prepared, PruneOptions, VerifyResult


@dataclass
class DepthResult:
    """What the depth stage did: the original's preparation, the plan, the model without the blocks."""

    prepared: "Prepared"
    analysis: DepthAnalysis
    plan: DepthPlan
    model: onnx.ModelProto
    verification: "VerifyResult | None" = None
    checked_shapes: list[dict[str, list[int]]] = field(default_factory=list)
    budget: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report's ``depth`` section: every removable block with its scores, what went, what could not."""
        removed = set(self.plan.removed)
        blocks = [block.to_dict() | {"scores": self.plan.scores.get(block.id, {}), "removed": block.id in removed}
                  for block in self.analysis.blocks]
        return {"method": "depth", "criterion": self.plan.criterion, "removable": len(self.analysis.blocks),
                "removed": list(self.plan.removed), "blocks": blocks,
                "not_removable": [join.to_dict() for join in self.analysis.joins],
                "calibration": self.plan.settings.get("calibration"), "budget": self.budget,
                "verification": self.verification.to_dict() if self.verification else None,
                "runs_at": self.checked_shapes}


def run_depth(model: onnx.ModelProto, settings: DepthSettings | None, options: "PruneOptions",
              calibration: CalibrationSet | None, run_verify: bool, given: list[dict[str, np.ndarray]] | None,
              plan_data: dict[str, Any] | None = None) -> tuple[DepthResult, "PruneOptions"]:
    """Remove blocks from ``model`` (by ``settings`` or by a replayed ``plan_data``); returns the result and
    the width options for the depth-pruned model (a budget target rescaled to what depth left)."""
    from onnxprune.pipeline import check_runs, compare_to_reference, prepare

    if settings is not None and plan_data is not None:
        raise InputError("the plan fixes which blocks are removed; drop --depth-ratio/--remove-blocks")
    if options.target_latency is not None:
        raise InputError("--target-latency cannot be combined with depth pruning yet; use --target-flops or "
                         "--target-params (depth is fixed by --depth-ratio/--remove-blocks, width fills the rest)")
    prepared = prepare(model, tuple(options.exclude))
    method = DepthMethod(tuple(options.exclude))
    analysis = method.analyze(prepared)
    plan = DepthPlan.from_dict(plan_data) if plan_data is not None else \
        method.plan(prepared, analysis, settings, calibration)
    pruned = method.apply(prepared, plan)
    result = DepthResult(prepared, analysis, plan, pruned)
    if run_verify:
        result.verification = compare_to_reference(method.reference(prepared, plan), pruned, feeds=given)
        result.checked_shapes = result.verification.shapes
        if not result.verification.ok:
            bad = next(d for d in result.verification.diffs if not d["ok"])
            raise VerificationError(f"depth-pruned output '{bad['name']}' differs from the zero-branch reference "
                                    f"(relative error {bad['relative']:.3g} > {result.verification.tolerance})")
    else:
        result.checked_shapes = check_runs(prepared, pruned, given)
    options, result.budget = _width_budget(prepared, pruned, options)
    return result, options


def _width_budget(prepared: "Prepared", pruned: onnx.ModelProto, options: "PruneOptions"
                  ) -> tuple["PruneOptions", dict[str, Any] | None]:
    """Rescale a FLOPs/params target to the depth-pruned model: width keeps ``target / kept_by_depth``."""
    from onnxprune.pipeline import model_stats

    metric = "flops" if options.target_flops is not None else "params" if options.target_params is not None else None
    if metric is None:
        return options, None
    field_name, attribute = ("target_flops", "macs") if metric == "flops" else ("target_params", "params")
    target = float(getattr(options, field_name))
    before = getattr(model_stats(prepared, input_shapes=options.input_shapes), attribute)
    after = getattr(count_model(pruned, input_shapes=options.input_shapes), attribute)
    kept = after / before if before else 1.0
    width = target / kept if kept else 1.0
    note = {"metric": metric, "target": target, "kept_by_depth": round(kept, 6)}
    if width >= 1.0:
        note["width_target"] = None
        note["note"] = "depth pruning alone meets the target; no width pruning"
        return replace(options, **{field_name: None}), note
    note["width_target"] = round(width, 6)
    return replace(options, **{field_name: width}), note
