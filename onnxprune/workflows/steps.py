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

from onnxprune import __version__
from onnxprune.planning.budget import ALLOCATIONS
from onnxprune.runtime.calibration import DEFAULT_BATCH_SIZE, CalibrationSet, load_calibration, random_calibration
from onnxprune.measurement.counting import model_size
from onnxprune.errors import InputError
from onnxprune.runtime.input_shapes import FLAG as INPUT_SHAPE_FLAG, InputShapes, from_calibration, require_known_shapes
from onnxprune.runtime.input_shapes import resolve as resolve_shapes
from onnxprune.io.files import load_model, save_model
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


def check_budget_shapes(model, options: "PruneOptions") -> None:
    """Refuse a FLOPs or latency target on a model whose symbolic dims (other than the batch) have no value,
    before any work: the same check :func:`onnxprune.budget.allocate_to_target` makes."""
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

    def options(self, calibrated: bool) -> PruneOptions:
        """The PruneOptions this step runs with; the default criterion depends on calibration data, as in the CLI."""
        from onnxprune.pipeline import CALIBRATED_CRITERION, PruneOptions

        criterion = self.criterion or (CALIBRATED_CRITERION if calibrated else "l2")
        return PruneOptions(ratio=self.ratio, criterion=criterion, global_ranking=self.global_ranking,
                            round_to=self.round_to, exclude=tuple(self.exclude), seed=self.seed,
                            min_keep=self.min_keep, head_ratio=self.head_ratio, ffn_ratio=self.ffn_ratio,
                            **self.budget, input_shapes=self.input_shapes)

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
        if self.sensitivity is not None:
            load_sensitivity(self.sensitivity)


def prune_to_file(model_path: str | os.PathLike[str], output: str | os.PathLike[str], step: PruneStep,
                  calib: str | os.PathLike[str] | None = None, calib_random: int | None = None) -> dict[str, Any]:
    """Prune like ``onnxprune prune`` does and return its report dict (``prune_report``)."""
    from onnxprune.pipeline import CALIBRATED_RECOVERY, prune
    from onnxprune.methods.prepared import model_stats
    from onnxprune.recovery.layers import RecoveryOptions
    from onnxprune.planning.sensitivity import load_sensitivity

    loaded = load_model(model_path)
    shapes = resolve_shapes(loaded, step.input_shapes, where="input_shapes")
    calibration = calibration_for(loaded, calib, calib_random, step.batch_size, step.seed, shapes)
    options = replace(step.options(calibration is not None), input_shapes=shapes or from_calibration(loaded, calibration))
    check_budget_shapes(loaded, options)
    recovery = RecoveryOptions(step.recover or (CALIBRATED_RECOVERY if calibration is not None else "none"),
                               seed=step.seed)
    sensitivity = load_sensitivity(step.sensitivity) if step.sensitivity is not None else None
    result = prune(loaded, options, None, step.verify, calibration, recovery, sensitivity)
    result.before = model_stats(result.prepared, os.fspath(model_path), result.input_shapes)
    provenance = {"source_sha256": result.prepared.model_sha256, "settings": result.plan.settings}
    if result.recovery is not None:
        provenance["recovery"] = {"method": result.recovery["method"], "status": result.recovery["status"]}
    written = save_model(result.model, output, source_path=model_path, provenance=provenance)
    result.after = replace(result.after, size_bytes=model_size(result.model, written))  # counted by prune()
    report = prune_report(result, os.fspath(written), None)
    if sensitivity is not None:  # as the CLI's report: what guided allocation read
        report["sensitivity"] = {"rows": sensitivity.rows}
    return report
