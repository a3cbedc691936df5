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

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from onnxprune import passes
from onnxprune.allocate import AllocationSettings, allocate
from onnxprune.counting import ModelStats, count_model
from onnxprune.groups import Analysis, analyze_graph
from onnxprune.calibrate import CalibrationSet
from onnxprune.importance import DATA_CRITERIA, score_groups
from onnxprune.io import model_sha256
from onnxprune.model import export_graph, import_graph
from onnxprune.plan import Plan, check_plan, make_plan
from onnxprune.shapes import infer_static_shapes
from onnxprune.validate import OutputDiff, check_model, compare_outputs, random_feeds, run_model
from onnxprune.errors import InputError, RewriteError, VerificationError
from onnxprune.passes.apply_plan import KeptChannels
from onnxprune.recovery import RecoveryContext, RecoveryOptions, consumer_layers, output_error
from onnxprune.statistics import ActivationStats, collect_statistics, consumer_slots

#: Criterion and recovery used when calibration data is given and the user chose neither
#: (measured on the MNIST CNN: benchmarks/results_mnist_recovery.md).
CALIBRATED_CRITERION = "fluctuation"
CALIBRATED_RECOVERY = "lsq"


@dataclass(frozen=True)
class PruneOptions:
    """Everything that decides a plan; recorded in the plan and in the output's provenance."""

    ratio: float = 0.0
    criterion: str = "l2"
    global_ranking: bool = False
    round_to: int = 1
    exclude: tuple[str, ...] = ()
    seed: int = 0
    min_keep: float = 0.1
    head_ratio: float | None = None  # attention heads (default: ratio)
    ffn_ratio: float | None = None  # Gemm/MatMul neurons such as FFN intermediates (default: ratio)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exclude"] = list(self.exclude)
        return data


@dataclass
class Prepared:
    """A model made ready for pruning: the normalized graph and its analysis."""

    original: onnx.ModelProto
    folded: onnx.ModelProto
    normalized: onnx.ModelProto
    shapes: dict
    analysis: Analysis
    model_sha256: str


def prepare(model: onnx.ModelProto, exclude: tuple[str, ...] = ()) -> Prepared:
    """Normalize (constants visible, shared constants untied, sorted) and analyze.

    The model with constants folded but nothing untied (``folded``) is what "before" numbers are
    counted on: computed weights (``ConstantOfShape → Mul``) are real parameters, and shapes that
    only folding reveals make the MAC count complete.
    """
    graph = passes.run_pipeline(import_graph(model), ("toposort", "name_nodes", "fold_constants"))
    folded = export_graph(graph, like=model)
    graph = passes.run_pipeline(graph, ("untie_shared", "toposort"))
    normalized = export_graph(graph, like=model)
    shapes = infer_static_shapes(normalized, symbol_value=None)
    analysis = analyze_graph(graph, shapes, exclude)
    return Prepared(model, folded, normalized, shapes, analysis, model_sha256(model))


def model_stats(prepared: Prepared, path: str | None = None) -> ModelStats:
    """Params and MACs of the folded model, size of the file (or of the proto when no path)."""
    stats = count_model(prepared.folded)
    size = count_model(prepared.original, path=path).size_bytes
    return replace(stats, size_bytes=size)


def calibration_statistics(prepared: Prepared, calibration: CalibrationSet) -> ActivationStats:
    """Per-channel statistics of every consumer input of a prunable group, streamed over ``calibration``."""
    slots = consumer_slots(prepared.analysis)
    ranks = {slot.tensor: len(prepared.shapes[slot.tensor]) for slot in slots}
    return collect_statistics(prepared.normalized, slots, calibration, ranks)


def plan_prune(prepared: Prepared, options: PruneOptions, stats: ActivationStats | None = None) -> Plan:
    """Score and allocate; the plan records the settings that made it.  Data criteria need ``stats``."""
    graph = import_graph(prepared.normalized)
    scores = score_groups(graph, prepared.analysis, options.criterion, options.seed, stats=stats)
    settings = AllocationSettings(options.ratio, options.global_ranking, options.round_to, options.min_keep,
                                  options.head_ratio, options.ffn_ratio)
    kept = allocate(prepared.analysis, scores.by_group, settings)
    return make_plan(prepared.analysis, kept, prepared.model_sha256, options.to_dict() | {"notes": scores.notes})


def _finish(graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Cleanup, export and refresh intermediate shapes (stale value_info would mislead runtimes)."""
    model = export_graph(passes.PASSES["cleanup"](graph), like=like)
    del model.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is an aid here; the verifier runs the strict checks
        return model


def apply_plan(prepared: Prepared, plan: Plan) -> onnx.ModelProto:
    """The pruned model (a new object; ``prepared`` is unchanged)."""
    check_plan(plan, prepared.analysis, prepared.model_sha256)
    removed = plan.removed(prepared.analysis)
    graph = import_graph(prepared.normalized)
    graph = passes.PASSES["apply_plan"](graph, prepared.analysis, removed)
    pruned = _finish(graph, prepared.original)
    check_shapes(prepared, removed, pruned)
    return pruned


def check_shapes(prepared: Prepared, removed: dict[int, np.ndarray], pruned: onnx.ModelProto) -> None:
    """Every tensor must have exactly the shape the plan implies: slot axes shrink, nothing else moves.

    Why: a stale shape constant or a run-time shape computation the rules did not foresee shows up
    here as a tensor whose inferred (probe) shape differs from the plan's, before any runtime sees it.
    """
    view = KeptChannels(prepared.analysis, removed)
    weights = {init.name for init in prepared.normalized.graph.initializer}
    expected = {name: list(shape) for name, shape in prepared.shapes.items() if name not in weights}
    for slot in prepared.analysis.slots:
        if slot.tensor in expected and view.changed(slot):
            expected[slot.tensor][slot.axis] = view.size(slot)
    actual = infer_static_shapes(pruned, symbol_value=None)
    produced = {name for node in pruned.graph.node for name in node.output if name}
    for name in produced & set(expected):
        if name not in actual:
            raise RewriteError(f"the shape of tensor '{name}' can no longer be inferred after pruning")
        if list(actual[name]) != expected[name]:
            raise RewriteError(f"tensor '{name}' would have shape {list(actual[name])}, the plan implies {expected[name]}")


def masked_reference(prepared: Prepared, plan: Plan) -> onnx.ModelProto:
    """The oracle model for ``plan`` (DESIGN.md §3)."""
    graph = import_graph(prepared.normalized)
    graph = passes.PASSES["mask_reference"](graph, prepared.analysis, plan.removed(prepared.analysis))
    return _finish(graph, prepared.original)


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
    original_graph = import_graph(prepared.normalized)
    layers = consumer_layers(original_graph, prepared.analysis, plan.removed(prepared.analysis))
    context = RecoveryContext(prepared.normalized, original_graph, prepared.analysis, layers, stats, calibration,
                              recovery)
    graph = passes.PASSES[f"recover_{recovery.method}"](import_graph(pruned), context)
    return _finish(graph, prepared.original), context.records


@dataclass
class VerifyResult:
    """Outcome of the oracle: per output diffs for each seed and optimization level."""

    ok: bool
    tolerance: float
    diffs: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "tolerance": self.tolerance, "diffs": self.diffs}


def verify(prepared: Prepared, plan: Plan, pruned: onnx.ModelProto, seeds: tuple[int, ...] = (0, 1),
           tolerance: float = 1e-4, feeds: list[dict[str, np.ndarray]] | None = None) -> VerifyResult:
    """Checker + onnxruntime (default and ORT_DISABLE_ALL) + masked-reference comparison."""
    check_model(pruned)
    reference = masked_reference(prepared, plan)
    batches = list(feeds or []) + [random_feeds(prepared.original, seed=s) for s in seeds]
    result = VerifyResult(True, tolerance)
    for number, batch in enumerate(batches):
        expected = run_model(reference, batch, optimized=False)
        for optimized in (False, True):
            diffs: list[OutputDiff] = compare_outputs(expected, run_model(pruned, batch, optimized), tolerance)
            for diff in diffs:
                result.diffs.append(diff.to_dict() | {"batch": number, "optimized": optimized})
                result.ok &= diff.ok
    return result


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


def prune(model: onnx.ModelProto, options: PruneOptions | None = None, plan: Plan | None = None,
          run_verify: bool = False, calibration: CalibrationSet | None = None,
          recovery: RecoveryOptions | None = None) -> PruneResult:
    """Prune ``model`` by ``options`` or replay ``plan``; optionally verify against the oracle.

    With ``calibration``: data criteria become available, ``recovery`` may refit the pruned layers,
    and the result records the output error against the original on the calibration inputs.
    """
    options = options or PruneOptions()
    recovery = recovery or RecoveryOptions()
    recovery.validate()
    if recovery.method != "none" and calibration is None:
        raise InputError(f"recovery '{recovery.method}' needs calibration data (--calib PATH or --calib-random N)")
    prepared = prepare(model, tuple(options.exclude))
    wants_stats = (plan is None and options.criterion in DATA_CRITERIA) or recovery.method == "bias"
    stats = calibration_statistics(prepared, calibration) if calibration is not None and wants_stats else None
    plan = plan or plan_prune(prepared, options, stats)
    pruned = apply_plan(prepared, plan)
    result = PruneResult(pruned, plan, prepared, model_stats(prepared), count_model(pruned), unrecovered=pruned)
    if run_verify:
        result.verification = verify(prepared, plan, pruned)
        if not result.verification.ok:
            bad = next(d for d in result.verification.diffs if not d["ok"])
            raise VerificationError(f"pruned output '{bad['name']}' differs from the masked reference "
                                    f"(relative error {bad['relative']:.3g} > {result.verification.tolerance})")
    if recovery.method != "none":
        result.model, records = recover(prepared, plan, pruned, recovery, calibration, stats)
        result.recovery = recovery.to_dict() | {"layers": records}
        result.after = count_model(result.model)
    if calibration is not None:
        result.calibration = _calibration_summary(prepared, result, calibration, stats)
    if result.recovery is not None:
        _guard_recovery(result, recovery)
    return result


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
        result.after = count_model(result.model)
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
