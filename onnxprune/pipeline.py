"""The structured-pruning pipeline: prepare → score → allocate → plan → rewrite → cleanup → verify → recover.

The CLI and the Python API are thin layers over these functions.  ``prepare`` normalizes the model and
runs the analysis once; everything after works from that, so the plan and its masked reference are
built from exactly the graph the analysis saw.

With calibration data, statistics of the consumer inputs are streamed once (data criteria and bias
compensation read them) and a recovery pass may change kept weights afterwards.  The masked-reference
oracle (``verify``) judges the rewrite *before* recovery; the recovered model is judged by its output
error against the original on calibration inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from onnxprune.recovery import bias as recover_bias, lsq as recover_lsq
from onnxprune.planning.alignment import first_feasible
from onnxprune.planning.allocate import AllocationSettings, allocate
from onnxprune.planning.budget import allocate_to_target
from onnxprune.planning.latency import Progress
from onnxprune.measurement.counting import ModelStats, count_model
from onnxprune.runtime.calibration import CalibrationSet
from onnxprune.scoring.criteria import DATA_CRITERIA, score_groups
from onnxprune.scoring.importance import Scores
from onnxprune.runtime.input_shapes import (InputShapes, from_calibration,
    resolve as resolve_shapes)
from onnxprune.ir.graph import import_graph
from onnxprune.methods.plan import Plan, make_plan
from onnxprune.runtime.feeds import random_feeds
from onnxprune.errors import InputError
from onnxprune.planning.sensitivity import Sensitivity, scan
from onnxprune.recovery.layers import RecoveryContext, RecoveryOptions, consumer_layers, output_error
from onnxprune.scoring.statistics import ActivationStats, collect_statistics, consumer_slots
from onnxprune.methods.prepared import Prepared, model_stats, prepare
from onnxprune.methods.finish import finish_model
from onnxprune.methods.oracle import VerifyResult, check_runs, compare_to_reference
from onnxprune.analysis.io_change import record as record_io_change
from onnxprune.methods.registry import method_of
from onnxprune.runtime.executor import Executor
from onnxprune.planning.depth_stage import run_depth
from onnxprune.planning.options import PruneOptions

#: Criterion and recovery used when calibration data is given and the user chose neither
#: (measured on the MNIST CNN: benchmarks/results_mnist_recovery.md).
CALIBRATED_CRITERION = "fluctuation"
CALIBRATED_RECOVERY = "lsq"

#: The recovery passes ``PruneOptions.recovery`` names (``none`` runs nothing).
RECOVERY_PASSES = {"bias": recover_bias.run, "lsq": recover_lsq.run}



def calibration_statistics(prepared: Prepared, calibration: CalibrationSet, criterion: str | None = None,
                           executor: Executor | None = None) -> ActivationStats:
    """Per-channel statistics of every consumer input of a prunable group, streamed over ``calibration``.

    ``criterion`` ``entropy`` also streams per-channel histograms, ``reconstruction`` the consumers'
    input Gram matrices (extra passes; other criteria need only the sums).  Sums and histograms run a
    task per batch on ``executor`` (bit-identical on any executor); Gram matrices stay in this process.
    """
    slots = consumer_slots(prepared.analysis)
    ranks = {slot.tensor: len(prepared.shapes[slot.tensor]) for slot in slots}
    stats = collect_statistics(prepared.normalized, slots, calibration, ranks, executor)
    if criterion == "entropy":
        from onnxprune.scoring.statistics import collect_histograms

        stats.histograms = collect_histograms(prepared.normalized, slots, calibration, ranks, executor=executor)
    elif criterion == "reconstruction":
        from onnxprune.scoring.reconstruction import collect_grams

        stats.grams = collect_grams(prepared.normalized, prepared.analysis, calibration)
    return stats



def group_scores(prepared: Prepared, options: PruneOptions, stats: ActivationStats | None = None) -> Scores:
    """Criterion scores of every prunable group (data criteria need ``stats``).

    Scoring only reads weights, so it reads them from the graph ``prepare`` analysed instead of importing
    the normalized model again (one import per run)."""
    graph = prepared.graph if prepared.graph is not None else import_graph(prepared.normalized)
    return score_groups(graph, prepared.analysis, options.criterion, options.seed, stats=stats)



def plan_prune(prepared: Prepared, options: PruneOptions, stats: ActivationStats | None = None,
               sensitivity: Sensitivity | None = None, progress: Progress | None = None,
               executor: Executor | None = None) -> Plan:
    """Score and allocate; the plan records the settings that made it.  Data criteria need ``stats``.

    With a target (``target_flops``/``target_params``) the kept counts come from
    :func:`onnxprune.planning.budget.allocate_to_target` (guided allocation reads ``sensitivity``), and the
    plan's settings record the target, the measured ratio and every group's kept count.
    """
    scores = group_scores(prepared, options, stats)
    notes = list(scores.notes)
    budget = options.budget()
    extra: dict[str, Any] = {}
    align = options.alignment()
    if budget is None:
        settings = AllocationSettings(options.ratio, options.global_ranking, align.multiple, options.min_keep,
                                      options.head_ratio, options.ffn_ratio, align.min_units)
        kept = allocate(prepared.analysis, scores.by_group, settings)
    else:
        curves = None
        if sensitivity is not None:
            curves = sensitivity.curves(prepared, "flops" if budget.metric == "latency" else budget.metric)
            extra["sensitivity"] = {"criterion": sensitivity.criterion, "ratios": list(sensitivity.ratios),
                                    "calibration": sensitivity.calibration.get("origin")}
            if sensitivity.criterion != options.criterion:
                notes.append(f"sensitivity was measured with criterion '{sensitivity.criterion}', "
                             f"the prune ranks units by '{options.criterion}'")
        base = getattr(model_stats(prepared), "macs" if budget.metric == "flops" else "params")
        (kept, extra["budget"]), align = first_feasible(align, lambda a: allocate_to_target(
            prepared, scores.by_group, replace(budget, round_to=a.multiple, round_min_units=a.min_units), base, curves,
            progress, executor), relax=budget.metric != "latency")
    if not isinstance(options.round_to, int):
        extra["alignment"] = align.to_dict()  # what "auto" meant (after any relaxation) when the plan was made
    return make_plan(prepared.analysis, kept, prepared.model_sha256,
                     options.to_dict() | {"notes": notes} | extra)



def recover(prepared: Prepared, plan: Plan, pruned: onnx.ModelProto, recovery: RecoveryOptions,
            calibration: CalibrationSet | None, stats: ActivationStats | None = None
            ) -> tuple[onnx.ModelProto, list[dict]]:
    """Run the recovery pass named by ``recovery.method`` on ``pruned``; returns the model and per-layer records."""
    recovery.validate()
    if recovery.method == "none":
        return pruned, []
    if calibration is None:
        raise InputError(f"recovery '{recovery.method}' needs calibration data (--calib PATH or --calib-random N)")
    if recovery.method == "bias" and stats is None:
        stats = calibration_statistics(prepared, calibration)
    original_graph = prepared.graph if prepared.graph is not None else import_graph(prepared.normalized)  # read only
    layers = consumer_layers(original_graph, prepared.analysis, plan.removed(prepared.analysis))
    context = RecoveryContext(prepared.normalized, original_graph, prepared.analysis, layers, stats, calibration,
                              recovery)
    graph = RECOVERY_PASSES[recovery.method](import_graph(pruned), context)
    return finish_model(graph, prepared.original), context.records



def verify(prepared: Prepared, plan: Plan, pruned: onnx.ModelProto, seeds: tuple[int, ...] = (0, 1),
           tolerance: float = 1e-4, feeds: list[dict[str, np.ndarray]] | None = None) -> VerifyResult:
    """Checker + onnxruntime (default and ORT_DISABLE_ALL) + masked-reference comparison.

    The comparison runs on ``feeds`` (calibration batches) and then on one random batch per seed, each
    at a different assignment of the symbolic dims that the model accepts (:func:`validate.trial_runs`):
    a rewrite right only at the probe's shapes fails here.
    """
    method = method_of(plan)
    return compare_to_reference(method.reference(prepared, plan), pruned, seeds, tolerance, feeds,
                                prepared.original, method.interface_changes(prepared, plan))


@dataclass
class PruneResult:
    """What ``prune`` returns: the model, its plan, the analysis and before/after statistics."""

    model: onnx.ModelProto
    plan: Plan
    prepared: Prepared
    before: ModelStats
    after: ModelStats
    verification: VerifyResult | None = None
    unrecovered: onnx.ModelProto | None = None  # the rewrite before recovery (what the oracle judged)
    recovery: dict[str, Any] | None = None  # options, per-layer records
    calibration: dict[str, Any] | None = None  # source, size, statistics time, output errors
    sensitivity: Sensitivity | None = None  # what guided allocation read (given or scanned); reports show it
    checked_shapes: list[dict[str, list[int]]] = field(default_factory=list)  # input shapes the rewrite ran at
    input_shapes: InputShapes | None = None  # what before/after were counted at (re-count a saved model with it)
    depth: Any = None  # onnxprune.planning.depth_stage.DepthResult when blocks were removed before width pruning
    io_change: dict[str, dict] = field(default_factory=dict)  # narrowed KV-cache inputs/outputs (io_change.record)

    @property
    def origin(self) -> Prepared:
        """The preparation of the model the user gave (before any depth stage): what "before" describes."""
        return self.depth.prepared if self.depth is not None else self.prepared



def prune(model: onnx.ModelProto, options: PruneOptions | None = None, plan: Plan | None = None,
          run_verify: bool = False, calibration: CalibrationSet | None = None,
          recovery: RecoveryOptions | None = None, sensitivity: Sensitivity | None = None,
          progress: Progress | None = None, depth: Any = None, executor: Executor | None = None) -> PruneResult:
    """Prune ``model`` by ``options`` or replay ``plan``; optionally verify against the oracle.

    ``depth`` (:class:`onnxprune.methods.depth.DepthSettings`) removes residual blocks first, and the width
    stage works on the depth-pruned model (:mod:`onnxprune.planning.depth_stage`); a replayed ``plan`` made
    that way carries its depth plan in ``settings["depth"]``.

    With ``calibration``: data criteria become available, ``recovery`` may refit the pruned layers,
    and the result records the output error against the original on the calibration inputs.
    Guided allocation (``options.allocation == "guided"``) reads ``sensitivity`` or, without it,
    scans the calibration data first.  ``executor`` (:mod:`onnxprune.runtime.executor`) runs statistics batches,
    sensitivity candidates and latency tables; any executor gives the same plan and model.
    """
    options = options or PruneOptions()
    # checked against the model; without shapes, the calibration data's (batch 1; onnxprune.runtime.input_shapes)
    options = replace(options, input_shapes=resolve_shapes(model, options.input_shapes)
                      or from_calibration(model, calibration))
    recovery = recovery or RecoveryOptions()
    recovery.validate()
    if recovery.method != "none" and calibration is None:
        raise InputError(f"recovery '{recovery.method}' needs calibration data (--calib PATH or --calib-random N)")
    depth_result = None
    if depth is not None or (plan is not None and plan.settings.get("depth")):
        depth_result, options = run_depth(model, depth, options, calibration, run_verify,
                                          _first_batch(calibration) or _shaped_batch(model, options.input_shapes),
                                          plan.settings.get("depth") if plan is not None else None, recovery)
        model = depth_result.model
    prepared = prepare(model, tuple(options.exclude), options.allow_io_change)
    wants_stats = (plan is None and options.criterion in DATA_CRITERIA) or recovery.method == "bias"
    stats = calibration_statistics(prepared, calibration, options.criterion if plan is None else None, executor) \
        if calibration is not None and wants_stats else None
    if plan is None and check_guided(options, sensitivity is not None, calibration is not None):
        sensitivity = scan(prepared, calibration, group_scores(prepared, options, stats).by_group, options.criterion,
                           input_shapes=options.input_shapes, executor=executor)
    plan = plan or plan_prune(prepared, options, stats, sensitivity, progress, executor)
    if depth_result is not None and not plan.settings.get("depth"):
        plan = replace(plan, settings=plan.settings | {"depth": depth_result.plan_record()})
    pruned = method_of(plan).apply(prepared, plan)
    changes = method_of(plan).interface_changes(prepared, plan)
    shapes = options.input_shapes
    origin = depth_result.prepared if depth_result is not None else prepared
    result = PruneResult(pruned, plan, prepared, model_stats(origin, input_shapes=shapes),
                         count_model(pruned, input_shapes=shapes), unrecovered=pruned, sensitivity=sensitivity,
                         input_shapes=shapes, depth=depth_result, io_change=record_io_change(pruned, changes))
    given = _first_batch(calibration) or _shaped_batch(prepared.original, shapes)
    if run_verify:
        result.verification = verify(prepared, plan, pruned, feeds=given)
        result.checked_shapes = result.verification.shapes
        result.verification.require_ok()
    else:
        result.checked_shapes = check_runs(prepared, pruned, given, changes=changes)
    if recovery.method != "none" and changes:
        raise InputError("recovery of a model whose KV-cache interface was narrowed is not supported; "
                         "use --recover none with --allow-io-change")
    if recovery.method != "none":
        result.model, records = recover(prepared, plan, pruned, recovery, calibration, stats)
        result.recovery = recovery.to_dict() | {"layers": records}
        result.after = count_model(result.model, input_shapes=shapes)
    if calibration is not None:  # output errors against the user's model, before any depth stage
        result.calibration = _calibration_summary(origin, result, calibration, stats)
    if result.recovery is not None:
        _guard_recovery(result, recovery)
    return result



def _shaped_batch(model: onnx.ModelProto, shapes: InputShapes | None) -> list[dict[str, np.ndarray]] | None:
    """A random batch at the user's ``--input-shape`` (None without one): a real shape a rewrite must run at."""
    if not shapes or shapes.source != "given":
        return None
    return [random_feeds(model, seed=0, shapes=shapes.as_dict())]



def _first_batch(calibration: CalibrationSet | None) -> list[dict[str, np.ndarray]] | None:
    """The first calibration batch: the real input shapes a rewrite must run at (None without data)."""
    if calibration is None:
        return None
    batch = next(iter(calibration.batches()), None)
    return [dict(batch)] if batch else None



def check_guided(options: PruneOptions, sensitivity_given: bool, calibrated: bool) -> bool:
    """Whether guided allocation must scan calibration data for its sensitivity (no file given); refuse
    when it has neither.

    Separate from :func:`prune` so recipes can refuse it before their first step runs.
    """
    scan_needed = options.allocation == "guided" and not sensitivity_given and options.budget() is not None
    if scan_needed and not calibrated:
        raise InputError("guided allocation needs --sensitivity FILE or calibration data "
                         "(--calib PATH or --calib-random N)")
    return scan_needed



def _guard_recovery(result: PruneResult, recovery: RecoveryOptions) -> None:
    """Keep the recovered model only if it is closer to the original on the calibration inputs.

    Why: each layer's fit lowers that layer's error, which almost always lowers the output error, but
    nothing guarantees it through nonlinearities (bias compensation before a LayerNorm, say).
    """
    errors = result.calibration["output_error"]
    before, after = errors["pruned"]["worst_relative_l2"], errors["recovered"]["worst_relative_l2"]
    result.recovery["calibration_error"] = {"pruned": before, "recovered": after}
    if recovery.guard and after > before:
        result.model = result.unrecovered
        result.after = count_model(result.model, input_shapes=result.input_shapes)
        result.recovery["status"] = "rejected"
        result.recovery["reason"] = (f"recovery raised the calibration output error ({before:.4g} → {after:.4g}); "
                                     "the unrecovered model is kept")
    else:
        result.recovery["status"] = "applied"



def _calibration_summary(prepared: Prepared, result: PruneResult, calibration: CalibrationSet,
                         stats: ActivationStats | None) -> dict[str, Any]:
    """Where the data came from and how far the outputs moved from the original on it."""
    candidates = {"pruned": result.unrecovered}
    if result.model is not result.unrecovered:
        candidates["recovered"] = result.model
    summary = calibration.describe()
    if stats is not None:
        summary["statistics_seconds"] = round(stats.seconds, 4)
    summary["output_error"] = output_error(prepared.original, candidates, calibration)
    return summary

