"""Steps a pipeline chains (prune, quantize, validate, bench) and the versioned report envelope.

Why here and not in ``cli.py``: the CLI commands, ``onnxprune run RECIPE.toml`` and the Python API all
run the same steps and wrap their results in the same report schema::

    {"report_version": 1, "command": "validate", "onnxprune_version": "...",
     "settings": {...}, "ok": true, "results": {...}}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import click

from onnxprune.version import __version__
from onnxprune.planning.budget import ALLOCATIONS
from onnxprune.runtime.calibration import DEFAULT_BATCH_SIZE, CalibrationSet, load_calibration, random_calibration
from onnxprune.measurement.counting import model_size
from onnxprune.errors import InputError
from onnxprune.runtime.input_shapes import FLAG as INPUT_SHAPE_FLAG, InputShapes, from_calibration, require_known_shapes
from onnxprune.runtime.input_shapes import resolve as resolve_shapes
from onnxprune.io.files import load_model, save_model, start_hashing
from onnxprune.io.isolation import RunningProbe
from onnxprune.scoring.importance import warm_norms
from onnxprune.progress import StatusLine
from onnxprune.runtime.blockwise import runs as block_runs
from onnxprune.reports.prune_report import REPORT_VERSION, prune_report

if TYPE_CHECKING:  # for the annotation only: pipeline is imported lazily in the functions below, as before
    from onnxprune.pipeline import PruneOptions

REPORT_KEYS = ("report_version", "command", "onnxprune_version", "settings", "ok", "results")


def command_report(command: str, settings: dict[str, Any], results: Any, ok: bool = True) -> dict[str, Any]:
    """The envelope every ``--report`` file of validate / bench / quantize / run shares."""
    return {"report_version": REPORT_VERSION, "command": command, "onnxprune_version": __version__,
            "settings": settings, "ok": ok, "results": results}


def calibration_for(model, path: str | os.PathLike[str] | None, random_count: int | None,
                    batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0,
                    input_shapes: InputShapes | None = None) -> CalibrationSet | None:
    """The calibration set asked for (random inputs only when asked explicitly, at ``input_shapes``), or None."""
    if path is not None and random_count is not None:
        raise InputError("give either --calib PATH or --calib-random N, not both")
    if path is not None:
        return load_calibration(path, model, batch_size)
    if random_count is not None:
        return random_calibration(model, random_count, seed, batch_size,
                                  input_shapes.as_dict() if input_shapes else None)
    return None


#: ``--input-shape NAME:D0,D1,...`` (repeatable) of analyze, prune, sensitivity, bench and validate.
input_shape_option = click.option(
    INPUT_SHAPE_FLAG, "input_shape", multiple=True, metavar="NAME:D0,D1,...",
    help="Shape of input NAME (every dim, batch included; repeatable) that FLOPs/MACs, budgets, latency and "
         "random inputs use [default: the calibration data's shapes with batch 1, else per sample with "
         "symbolic dims at 1]. 'NAME:1x3x320x320' works too.")


#: ``--depth-ratio`` / ``--remove-blocks`` / ``--depth-criterion`` of ``prune`` (onnxprune.methods.depth).
def depth_options(fn: Any) -> Any:
    from onnxprune.methods.depth.scoring import CRITERIA as DEPTH_CRITERIA

    fn = click.option("--depth-criterion", type=click.Choice(DEPTH_CRITERIA), default=None,
                      help="How residual blocks are ranked [default: output (each block's removal measured on the "
                           "calibration data); weight (L2 norm of the branch's last layer) without data]. influence: "
                           "ShortGPT's 1 - cos(x, x + f(x)).")(fn)
    fn = click.option("--remove-blocks", type=click.IntRange(min=0), default=None, metavar="N",
                      help="Remove N whole residual blocks (y = x + f(x) becomes y = x) before any width pruning.")(fn)
    return click.option("--depth-ratio", type=click.FloatRange(0.0, 1.0), default=None, metavar="F",
                        help="Remove this fraction of the removable residual blocks (rounded down) before any width "
                             "pruning; 'onnxprune analyze' lists the blocks.")(fn)


def depth_settings(ratio: float | None, count: int | None, criterion: str | None) -> Any:
    """The DepthSettings the depth options ask for (None: no depth pruning); one rule for the CLI and recipes."""
    if ratio is None and count is None:
        if criterion is not None:
            raise InputError("--depth-criterion needs --depth-ratio F or --remove-blocks N")
        return None
    from onnxprune.methods.depth import DepthSettings

    if ratio is not None and count is not None:
        raise InputError("give either --depth-ratio F or --remove-blocks N, not both")
    return DepthSettings(ratio, count, criterion)


def check_budget_shapes(model, options: "PruneOptions") -> None:
    """Refuse a FLOPs or latency target on a model whose symbolic dims (other than the batch) have no value,
    before any work: the same check :func:`onnxprune.planning.budget.allocate_to_target` makes."""
    for target in ("target_flops", "target_latency"):
        value = getattr(options, target)
        if value is not None:
            require_known_shapes(model, options.input_shapes, f"--{target.replace('_', '-')} {value:g}")


#: The budget targets of ``prune`` (at most one; each a fraction of the original to keep).
TARGETS = ("target_flops", "target_params", "target_latency")
#: latency measuring options (None: the PruneOptions default); --latency-cache may come from the environment.
LATENCY_OPTIONS = ("latency_threads", "latency_provider", "latency_batch", "latency_cache")
_KEEP_FRACTION = click.FloatRange(0.0, 1.0, min_open=True)
#: Value checks of the budget options.  Why click types: the CLI parses its flags with exactly these
#: objects and recipes convert their values with them, so both accept and refuse the same values.
BUDGET_TYPES: dict[str, click.ParamType] = {
    "target_flops": _KEEP_FRACTION, "target_params": _KEEP_FRACTION, "target_latency": _KEEP_FRACTION,
    "latency_threads": click.IntRange(min=1), "latency_batch": click.IntRange(min=1),
    "max_ratio": click.FloatRange(0.0, 1.0), "allocation": click.Choice(ALLOCATIONS)}


def prune_runs_onnxruntime(verify: bool, calibrated: bool, target_latency: float | None) -> bool:
    """Whether a prune runs onnxruntime on its input (so isolation also creates and runs a session): the
    oracle, calibration statistics and latency measurement do.  One rule for the CLI and recipes."""
    return bool(verify or calibrated or target_latency is not None)


def budget_fields(budget: dict[str, Any]) -> dict[str, Any]:
    """PruneOptions fields of the budget options (--sensitivity and --guided both mean guided allocation).

    ``budget`` holds every name of :data:`TARGETS` and :data:`LATENCY_OPTIONS` plus ``max_ratio``,
    ``allocation``, ``guided`` and ``sensitivity_path`` (None / False when not given).  Shared by the CLI
    and recipes so that both refuse the same combinations with the same words.
    """
    guided = budget["guided"] or budget["sensitivity_path"] is not None
    if guided and budget["allocation"] not in (None, "guided"):
        raise InputError(f"--sensitivity/--guided mean guided allocation; they conflict with --allocation {budget['allocation']}")
    if (guided or budget["allocation"]) and all(budget[t] is None for t in TARGETS):
        raise InputError("--allocation/--sensitivity/--guided need --target-flops F, --target-params F or "
                         "--target-latency F")
    latency = {k: budget[k] for k in LATENCY_OPTIONS if budget[k] is not None}
    stray = sorted(set(latency) - {"latency_cache"})  # the cache may come from the environment for any prune
    if budget["target_latency"] is None and stray:
        raise InputError(f"--{stray[0].replace('_', '-')} needs --target-latency F")
    return {**{t: budget[t] for t in TARGETS}, **latency,
            "max_ratio": budget["max_ratio"], "allocation": "guided" if guided else budget["allocation"] or "global"}


@dataclass
class PruneStep:
    """The ``prune`` command's options (names as in the CLI, underscored).

    ``budget`` holds the PruneOptions fields :func:`budget_fields` made of the budget options (empty:
    ratio-based pruning); ``sensitivity`` is a ``onnxprune sensitivity`` file for guided allocation.
    """

    ratio: float = 0.0
    head_ratio: float | None = None
    ffn_ratio: float | None = None
    criterion: str | None = None
    global_ranking: bool = False
    min_keep: float = 0.1
    round_to: int | str = "auto"  # as the CLI: onnxprune.planning.alignment
    exclude: tuple[str, ...] = ()
    seed: int = 0
    verify: bool = False
    recover: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    budget: dict[str, Any] = field(default_factory=dict)
    sensitivity: str | None = None
    input_shapes: dict[str, tuple[int, ...]] | None = None  # parsed, checked against the model when it runs
    depth: Any = None  # onnxprune.methods.depth.DepthSettings: residual blocks removed before width pruning
    allow_io_change: bool = False  # KV-cache inputs/outputs may lose heads (onnxprune.analysis.io_change)

    def options(self, calibrated: bool) -> PruneOptions:
        """The PruneOptions this step runs with; the default criterion depends on calibration data, as in the CLI."""
        from onnxprune.pipeline import CALIBRATED_CRITERION, PruneOptions

        criterion = self.criterion or (CALIBRATED_CRITERION if calibrated else "l2")
        return PruneOptions(ratio=self.ratio, criterion=criterion, global_ranking=self.global_ranking,
                            round_to=self.round_to, exclude=tuple(self.exclude), seed=self.seed,
                            min_keep=self.min_keep, head_ratio=self.head_ratio, ffn_ratio=self.ffn_ratio,
                            **self.budget, input_shapes=self.input_shapes, allow_io_change=self.allow_io_change)

    def check(self, calibrated: bool) -> None:
        """Refuse what ``prune`` would refuse once it ran, without loading the model: conflicting targets or
        ratio options, out-of-range budget values, an unavailable latency provider, guided allocation with
        neither a sensitivity file nor calibration data, an unreadable sensitivity file.

        Why: a pipeline should fail before its first step, not after an hour of earlier steps.
        """
        from onnxprune.pipeline import check_guided
        from onnxprune.planning.sensitivity import load_sensitivity

        options = self.options(calibrated)
        budget = options.budget()
        if budget is not None:
            budget.validate()
        check_guided(options, self.sensitivity is not None, calibrated)
        if self.depth is not None:
            self.depth.resolved_criterion(calibrated)  # a data criterion without data is refused up front
            if options.target_latency is not None:
                raise InputError("--target-latency cannot be combined with depth pruning yet")
        if self.sensitivity is not None:
            load_sensitivity(self.sensitivity)


def prune_to_file(model_path: str | os.PathLike[str], output: str | os.PathLike[str], step: PruneStep,
                  calib: str | os.PathLike[str] | None = None, calib_random: int | None = None, *,
                  plan_path: str | os.PathLike[str] | None = None, save_plan: str | os.PathLike[str] | None = None,
                  inplace: bool = False, progress: StatusLine | None = None, command: list[str] | None = None,
                  contributions: bool = False, where: str = "input_shapes", executor: Any = None,
                  guard: RunningProbe | None = None) -> dict[str, Any]:
    """Prune ``model_path`` into ``output`` and return the report dict (``prune_report``).

    Why one function: ``onnxprune prune`` and a recipe's prune step must load, calibrate, prune, record
    provenance and save the same way; two copies had drifted apart.  ``plan_path`` replays a saved plan
    (its settings replace the step's, except ``step.input_shapes`` when given); ``save_plan`` writes the
    plan made; ``progress`` draws calibration passes and budget searches; ``command`` and
    ``contributions`` go to the report (:func:`onnxprune.reports.prune_report.prune_report`); ``where`` names the
    input-shape option in messages (``--input-shape`` for the CLI).  ``guard``: the isolation child the
    CLI started on ``model_path`` (:func:`onnxprune.cli.guard.start_guard`), waited for before anything
    else: the model is loaded, its weights hashed (:func:`onnxprune.io.files.start_hashing`) and, while the
    child still runs, their norms taken meanwhile -- protobuf parsing, sha256 and numpy over bytes, no onnx
    or onnxruntime native code.
    """
    from onnxprune.pipeline import CALIBRATED_RECOVERY, PruneOptions, prune
    from onnxprune.methods.prepared import model_stats
    from onnxprune.methods.registry import load_plan
    from onnxprune.recovery.layers import RecoveryOptions
    from onnxprune.planning.sensitivity import load_sensitivity

    # External weights are memory-mapped, not read -- except for a budget search, which applies many candidate
    # plans: the weight store keeps every slice it computes for the process (onnxprune/io/weights.py).
    searching = any(step.budget.get(k) is not None for k in TARGETS)
    try:
        loaded = load_model(model_path, mmap_weights=not searching)
        if guard is not None:
            start_hashing(loaded)  # reads the weights as bytes, in a thread, from now on
            if plan_path is None:  # a replayed plan scores nothing
                warm_norms(loaded, step.options(calib is not None or calib_random is not None).criterion,
                           guard.running)
    finally:
        if guard is not None:
            guard.wait()  # the child's verdict first: a crash (IsolationError) wins over an error raised above
    given = resolve_shapes(loaded, step.input_shapes, where=where)
    calibration = calibration_for(loaded, calib, calib_random, step.batch_size, step.seed, given)
    if calibration is not None and progress is not None:
        calibration = replace(calibration, progress=progress.passes("calibration"))
    shapes = given or from_calibration(loaded, calibration)
    options = replace(step.options(calibration is not None), input_shapes=shapes)
    recovery = RecoveryOptions(step.recover or (CALIBRATED_RECOVERY if calibration is not None else "none"),
                               seed=step.seed)
    plan = load_plan(plan_path) if plan_path else None
    if plan is not None:
        settings = plan.settings
        options = PruneOptions(**{k: v for k, v in settings.items() if k in PruneOptions.__dataclass_fields__
                                  and k not in ("exclude", "input_shapes")}, exclude=tuple(settings.get("exclude", ())),
                               input_shapes=given or resolve_shapes(loaded, settings.get("input_shapes"),
                                                                    where="the plan's input_shapes") or shapes)
    check_budget_shapes(loaded, options)
    sensitivity = load_sensitivity(step.sensitivity) if step.sensitivity is not None else None
    result = prune(loaded, options, plan, step.verify, calibration, recovery, sensitivity, progress, depth=step.depth,
                   executor=executor)
    result.before = model_stats(result.origin, os.fspath(model_path), result.input_shapes)
    provenance = {"source_sha256": result.origin.model_sha256, "settings": result.plan.settings,
                  "plan_groups_pruned": sum(1 for g in result.plan.groups if g.kept and len(g.kept) < g.channels)}
    if result.recovery is not None:
        provenance["recovery"] = {"method": result.recovery["method"], "status": result.recovery["status"]}
    written = save_model(result.model, output, source_path=model_path, inplace=inplace, provenance=provenance)
    result.after = replace(result.after, size_bytes=model_size(result.model, written))  # counted by prune()
    if save_plan:
        result.plan.save(save_plan)
    report = prune_report(result, os.fspath(written), command, contributions=contributions)
    if block_runs():  # the model ran block by block (onnxprune/runtime/blockwise.py): time per block
        report["blockwise"] = block_runs()
    if sensitivity is not None:  # what guided allocation read
        report["sensitivity"] = {"rows": sensitivity.rows}
    return report
