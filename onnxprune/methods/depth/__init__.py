"""Depth pruning: remove whole residual blocks ``y = x + f(x)`` → ``y = x``.

The method is analyze → plan → apply, with its own oracle (``reference``: the original with the
removed branches' outputs multiplied by zero)::

    method = DepthMethod()
    analysis = method.analyze(prepared)                      # removable blocks; other joins with reasons
    plan = method.plan(prepared, analysis, DepthSettings(count=2), calibration)
    model = method.apply(prepared, plan)                     # equals method.reference(prepared, plan)

``prepared`` is :func:`onnxprune.pipeline.prepare`'s value.  Combining with width pruning (depth first,
then width on the depth-pruned model) is :mod:`onnxprune.planning.depth_stage`, which ``prune`` uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from onnxprune.runtime.calibration import CalibrationSet
from onnxprune.methods.depth.analysis import Block, DepthAnalysis, Join, find_blocks
from onnxprune.methods.depth.plan import DepthPlan, DepthSettings, choose
from onnxprune.methods.depth.rewrite import remove_blocks, zero_branches
from onnxprune.methods.depth.scoring import influence_scores, output_scores, weight_scores
from onnxprune.ir.graph import import_graph
from onnxprune.methods.finish import finish_model

if TYPE_CHECKING:
    from onnxprune.methods.prepared import Prepared

__all__ = ["Block", "DepthAnalysis", "DepthMethod", "DepthPlan", "DepthSettings", "Join"]


class DepthMethod:
    """Residual-block removal behind the method interface (analyze → plan → apply, reference = oracle)."""

    name = "depth"

    def __init__(self, exclude: tuple[str, ...] = ()) -> None:
        self.exclude = tuple(exclude)

    def analyze(self, prepared: Prepared) -> DepthAnalysis:
        """Removable blocks of the normalized model; every other variable+variable Add with its reason."""
        return find_blocks(import_graph(prepared.normalized), prepared.shapes, self.exclude)

    def plan(self, prepared: Prepared, analysis: DepthAnalysis, settings: DepthSettings,
             stats: CalibrationSet | None = None) -> DepthPlan:
        """Score every block (calibration criteria only with ``stats``, the calibration set) and pick the
        lowest-scoring ones.  ``stats`` is the calibration data: block scores need whole activations, not
        the per-channel sums width criteria use."""
        criterion = settings.resolved_criterion(stats is not None)
        count = settings.how_many(len(analysis.blocks))
        scores = {b.id: {} for b in analysis.blocks}
        for key, values in self.scores(prepared, analysis, stats).items():
            for block, value in values.items():
                scores[block][key] = value
        extra: dict = {"removable": len(analysis.blocks), "exclude": list(self.exclude)}
        if criterion == "output" and count:
            alone, steps = output_scores(prepared, analysis, stats, lambda blocks: self._without(prepared, blocks),
                                         count)
            for block, value in alone.items():
                scores[block]["output"] = value
            extra["greedy_steps"] = [{"block": block, "output": error} for block, error in steps]
            removed = tuple(b.id for b in analysis.blocks if b.id in dict(steps))
        else:
            removed = choose(analysis, scores, criterion, count) if count else ()
        if stats is not None:
            extra["calibration"] = stats.describe()
        return DepthPlan(prepared.model_sha256, removed, criterion, scores, settings.to_dict() | extra)

    def scores(self, prepared: Prepared, analysis: DepthAnalysis, calibration: CalibrationSet | None
               ) -> dict[str, dict[str, float]]:
        """Criterion → block id → score: ``weight`` always, ``influence`` with calibration data (one pass).
        ``output`` (SLEB) is greedy, so :meth:`plan` runs it only when it ranks."""
        found = {"weight": weight_scores(import_graph(prepared.normalized), analysis)}
        if calibration is not None and analysis.blocks:
            found["influence"] = influence_scores(prepared.normalized, analysis, calibration)
        return found

    def plan_from_dict(self, data: dict, where: str = "plan") -> DepthPlan:
        """A depth plan read back from JSON."""
        return DepthPlan.from_dict(data)

    def check(self, plan: DepthPlan, prepared: Prepared, where: str = "plan") -> None:
        """Refuse a plan made for another model or naming blocks this model does not have."""
        analysis = DepthMethod(tuple(plan.settings.get("exclude", self.exclude))).analyze(prepared)
        plan.check(analysis, prepared.model_sha256)

    def apply(self, prepared: Prepared, plan: DepthPlan) -> onnx.ModelProto:
        """The model without the plan's blocks (a new object)."""
        analysis = self.analyze(prepared)
        plan.check(analysis, prepared.model_sha256)
        return self._without(prepared, [analysis.block(b) for b in plan.removed])

    def reference(self, prepared: Prepared, plan: DepthPlan) -> onnx.ModelProto:
        """The oracle: the original (before static shape values were frozen) with each removed branch × 0."""
        analysis = self.analyze(prepared)
        plan.check(analysis, prepared.model_sha256)
        graph = import_graph(prepared.unfrozen or prepared.normalized)
        return finish_model(zero_branches(graph, [analysis.block(b) for b in plan.removed]), prepared.original)

    @staticmethod
    def _without(prepared: Prepared, blocks: list[Block]) -> onnx.ModelProto:
        graph = remove_blocks(import_graph(prepared.normalized), blocks)
        return finish_model(graph, prepared.original)
