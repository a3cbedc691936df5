"""Steps a pipeline chains (prune, quantize, validate, bench) and the versioned report envelope.

Why here and not in ``cli.py``: the CLI commands, ``onnxprune run RECIPE.toml`` and the Python API all
run the same steps and wrap their results in the same report schema::

    {"report_version": 1, "command": "validate", "onnxprune_version": "...",
     "settings": {...}, "ok": true, "results": {...}}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from onnxprune import __version__
from onnxprune.calibrate import DEFAULT_BATCH_SIZE, CalibrationSet, load_calibration, random_calibration
from onnxprune.counting import count_model
from onnxprune.errors import InputError
from onnxprune.io import load_model, save_model
from onnxprune.report import REPORT_VERSION, prune_report

REPORT_KEYS = ("report_version", "command", "onnxprune_version", "settings", "ok", "results")


def command_report(command: str, settings: dict[str, Any], results: Any, ok: bool = True) -> dict[str, Any]:
    """The envelope every ``--report`` file of validate / bench / quantize / run shares."""
    return {"report_version": REPORT_VERSION, "command": command, "onnxprune_version": __version__,
            "settings": settings, "ok": ok, "results": results}


def calibration_for(model, path: str | os.PathLike[str] | None, random_count: int | None,
                    batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0) -> CalibrationSet | None:
    """The calibration set asked for (random inputs only when asked explicitly), or None."""
    if path is not None and random_count is not None:
        raise InputError("give either --calib PATH or --calib-random N, not both")
    if path is not None:
        return load_calibration(path, model, batch_size)
    if random_count is not None:
        return random_calibration(model, random_count, seed, batch_size)
    return None


@dataclass
class PruneStep:
    """The ``prune`` command's options (names as in the CLI, underscored)."""

    ratio: float = 0.0
    head_ratio: float | None = None
    ffn_ratio: float | None = None
    criterion: str | None = None
    global_ranking: bool = False
    min_keep: float = 0.1
    round_to: int | str = "auto"  # as the CLI: onnxprune.alignment
    exclude: tuple[str, ...] = ()
    seed: int = 0
    verify: bool = False
    recover: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE


def prune_to_file(model_path: str | os.PathLike[str], output: str | os.PathLike[str], step: PruneStep,
                  calib: str | os.PathLike[str] | None = None, calib_random: int | None = None) -> dict[str, Any]:
    """Prune like ``onnxprune prune`` does and return its report dict (``prune_report``)."""
    from onnxprune.pipeline import (CALIBRATED_CRITERION, CALIBRATED_RECOVERY, PruneOptions, model_stats,
                                    prune)
    from onnxprune.recovery import RecoveryOptions

    loaded = load_model(model_path)
    calibration = calibration_for(loaded, calib, calib_random, step.batch_size, step.seed)
    criterion = step.criterion or (CALIBRATED_CRITERION if calibration is not None else "l2")
    options = PruneOptions(ratio=step.ratio, criterion=criterion, global_ranking=step.global_ranking,
                           round_to=step.round_to, exclude=tuple(step.exclude), seed=step.seed,
                           min_keep=step.min_keep, head_ratio=step.head_ratio, ffn_ratio=step.ffn_ratio)
    recovery = RecoveryOptions(step.recover or (CALIBRATED_RECOVERY if calibration is not None else "none"),
                               seed=step.seed)
    result = prune(loaded, options, None, step.verify, calibration, recovery)
    result.before = model_stats(result.prepared, os.fspath(model_path))
    provenance = {"source_sha256": result.prepared.model_sha256, "settings": result.plan.settings}
    if result.recovery is not None:
        provenance["recovery"] = {"method": result.recovery["method"], "status": result.recovery["status"]}
    written = save_model(result.model, output, source_path=model_path, provenance=provenance)
    result.after = count_model(result.model, path=written)
    return prune_report(result, os.fspath(written), None)
