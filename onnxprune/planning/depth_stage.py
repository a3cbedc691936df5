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
from typing import Any

import numpy as np
import onnx

from onnxprune.runtime.calibration import CalibrationSet
from onnxprune.measurement.counting import count_model
from onnxprune.errors import InputError
from onnxprune.methods.depth import DepthAnalysis, DepthMethod, DepthPlan, DepthSettings
from onnxprune.methods.depth.repair import repair
from onnxprune.methods.oracle import VerifyResult, check_runs, compare_to_reference
from onnxprune.methods.prepared import Prepared, model_stats, prepare
from onnxprune.recovery.layers import RecoveryOptions, output_error
from onnxprune.planning.options import PruneOptions


@dataclass
class DepthResult:
    """What the depth stage did: the original's preparation, the plan, the model without the blocks."""

    prepared: Prepared
    analysis: DepthAnalysis
    plan: DepthPlan
    model: onnx.ModelProto
    verification: VerifyResult | None = None
    checked_shapes: list[dict[str, list[int]]] = field(default_factory=list)
    budget: dict[str, Any] | None = None
    repair: dict[str, Any] | None = None  # least-squares refit of the layers after the removed blocks

    def plan_record(self) -> dict[str, Any]:
        """The depth plan as the width plan's ``settings["depth"]`` records it, with whether a repair was kept
        (the width plan is tied to the repaired model, so a replay must repair again)."""
        return self.plan.to_dict() | {"repaired": bool(self.repair and self.repair.get("status") == "applied")}

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
                "runs_at": self.checked_shapes, "repair": self.repair}


def run_depth(model: onnx.ModelProto, settings: DepthSettings | None, options: PruneOptions,
              calibration: CalibrationSet | None, run_verify: bool, given: list[dict[str, np.ndarray]] | None,
              plan_data: dict[str, Any] | None = None, recovery: RecoveryOptions | None = None
              ) -> tuple[DepthResult, PruneOptions]:
    """Remove blocks from ``model`` (by ``settings`` or by a replayed ``plan_data``); returns the result and
    the width options for the depth-pruned model (a budget target rescaled to what depth left).

    With ``recovery`` ``lsq`` and calibration data, the layers after the removed blocks are refitted
    (:mod:`onnxprune.methods.depth.repair`) once the oracle has judged the rewrite."""

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
    if plan_data is not None and plan_data.get("repaired") and (calibration is None or recovery is None
                                                                or recovery.method != "lsq"):
        raise InputError("the plan's depth stage was repaired by least squares on calibration data; replay it with "
                         "the same --calib (and --recover lsq)")
    if run_verify:
        result.verification = compare_to_reference(method.reference(prepared, plan), pruned, feeds=given)
        result.checked_shapes = result.verification.shapes
        result.verification.require_ok("depth-pruned", "zero-branch reference")
    else:
        result.checked_shapes = check_runs(prepared, pruned, given)
    if recovery is not None and recovery.method != "none" and calibration is not None and plan.removed:
        result.model, result.repair = _repair(result, calibration, recovery)
    options, result.budget = _width_budget(prepared, result.model, options)
    return result, options


def depth_source(model: onnx.ModelProto, plan_data: dict[str, Any], exclude: tuple[str, ...] = ()
                 ) -> tuple[onnx.ModelProto, VerifyResult]:
    """The depth-pruned model a width plan was made for (``verify`` of a depth+width result), rebuilt from the
    original and the plan's ``settings["depth"]``, with its own zero-branch oracle check."""

    if plan_data.get("repaired"):
        raise InputError("the plan's depth stage was repaired by least squares (weights changed on purpose); "
                         "'verify' cannot rebuild it — 'prune --verify' checks both stages before repair")
    prepared = prepare(model, exclude)
    method = DepthMethod(exclude)
    plan = DepthPlan.from_dict(plan_data)
    pruned = method.apply(prepared, plan)
    return pruned, compare_to_reference(method.reference(prepared, plan), pruned)


def _repair(result: DepthResult, calibration: CalibrationSet, recovery: RecoveryOptions
            ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Refit the layers after the removed blocks; keep the refit only if the calibration output error against
    the original does not grow (as width recovery's guard)."""
    if recovery.method != "lsq":
        return result.model, {"method": recovery.method, "status": "not applicable",
                              "reason": "only least-squares refitting (lsq) repairs removed blocks"}
    blocks = [result.analysis.block(b) for b in result.plan.removed]
    repaired, records = repair(result.prepared, blocks, result.model, calibration, recovery)
    errors = output_error(result.prepared.original, {"removed": result.model, "repaired": repaired}, calibration)
    before, after = errors["removed"]["worst_relative_l2"], errors["repaired"]["worst_relative_l2"]
    summary = {"method": "lsq", "layers": records, "calibration_error": {"removed": before, "repaired": after}}
    if recovery.guard and after > before:
        return result.model, summary | {"status": "rejected", "reason": "the refit raised the calibration output error"}
    return repaired, summary | {"status": "applied"}


def _width_budget(prepared: Prepared, pruned: onnx.ModelProto, options: PruneOptions
                  ) -> tuple[PruneOptions, dict[str, Any] | None]:
    """Rescale a FLOPs/params target to the depth-pruned model: width keeps ``target / kept_by_depth``."""

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
