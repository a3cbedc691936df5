"""Sensitivity scan: prune one group alone at several ratios and measure how far the outputs move.

Why: a budget is best spent where the model cares least, and the only trustworthy way to know where
that is without training code is to measure it (ALGORITHMS.md "How much to cut where").  Each
(group, ratio) removes the group's lowest-scored units under the chosen criterion, leaves every other
group untouched, and compares the pruned outputs with the original's on the calibration inputs:

* ``cosine`` — mean over samples of the cosine similarity of the flattened outputs (worst output);
* ``rel_mse`` — Σ(pruned − original)² / Σ original² over all samples (worst output);
* ``top1_agreement`` — argmax agreement, for the first classifier-like ``[N, classes]`` output;
* ``accuracy`` — argmax accuracy against labels (the ``y`` array of a calibration ``.npz``);
* ``macs_ratio`` / ``params_ratio`` — measured counts of that pruned model, so a guided allocation
  knows what each ratio saves.

A ratio that removes nothing yields exactly cosine 1, rel-MSE 0, agreement 1.  Reference outputs of
the original are held in memory (one concatenated array per output), which is meant for calibration
sets of a few thousand samples.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import onnx

from onnxprune.planning.block_units import keep_units
from onnxprune.runtime.calibration import CalibrationSet
from onnxprune.measurement.counting import count_model
from onnxprune.runtime.input_shapes import InputShapes, from_calibration, resolve
from onnxprune.errors import InputError
from onnxprune.io.files import write_json, write_text
from onnxprune.methods.plan import make_plan
from onnxprune.runtime.sessions import make_session
from onnxprune.runtime.executor import LOCAL, Executor, per_task
from onnxprune.io.weights import has_stubs

from onnxprune.methods.prepared import Prepared

SENSITIVITY_FORMAT = "onnxprune.planning.sensitivity"
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
COLUMNS = ("group", "label", "units", "ratio", "removed", "cosine", "rel_mse", "top1_agreement", "accuracy",
           "macs_ratio", "params_ratio")


@dataclass
class Sensitivity:
    """The scan's rows (one per group × ratio) and what they were measured on."""

    model_sha256: str
    criterion: str
    ratios: tuple[float, ...]
    calibration: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    baseline_accuracy: float | None = None
    input_shapes: dict[str, list[int]] | None = None  # what macs_ratio was counted at (None: per sample)

    def to_dict(self) -> dict[str, Any]:
        return {"format": SENSITIVITY_FORMAT, "version": 1, "model_sha256": self.model_sha256,
                "criterion": self.criterion, "ratios": list(self.ratios), "calibration": self.calibration,
                "baseline_accuracy": self.baseline_accuracy, "input_shapes": self.input_shapes, "rows": self.rows}

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())

    def save_csv(self, path: str | os.PathLike) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(path, buffer.getvalue())

    def curves(self, prepared: Prepared, metric: str, loss: str = "rel_mse") -> dict[int, dict[str, np.ndarray]]:
        """Per group index: ratios, measured ``loss`` and fraction of ``metric`` saved (for guided allocation)."""
        if self.model_sha256 != prepared.model_sha256:
            raise InputError(f"the sensitivity data was measured on another model (sha256 {self.model_sha256[:12]}…)")
        index = {g.id: i for i, g in enumerate(prepared.analysis.groups)}
        column = "macs_ratio" if metric == "flops" else "params_ratio"
        by_group: dict[int, list[dict]] = {}
        for row in self.rows:
            if row["group"] in index and row["ratio"] > 0 and row["removed"] > 0:
                by_group.setdefault(index[row["group"]], []).append(row)
        curves = {}
        for group, rows in by_group.items():
            rows.sort(key=lambda r: r["ratio"])
            curves[group] = {"ratios": np.array([r["removed"] / r["units"] for r in rows]),
                             "loss": np.array([_loss(r, loss) for r in rows]),
                             "saved": np.array([1.0 - r[column] for r in rows])}
        return curves


def _loss(row: Mapping[str, Any], loss: str) -> float:
    if loss == "1-cosine":
        return 1.0 - row["cosine"]
    return float(row[loss])


def load_sensitivity(path: str | os.PathLike) -> Sensitivity:
    """Read a ``sensitivity -o`` file; malformed content is an InputError naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if data.get("format") != SENSITIVITY_FORMAT:
            raise ValueError("not an onnxprune sensitivity file")
        return Sensitivity(str(data["model_sha256"]), str(data["criterion"]), tuple(data["ratios"]),
                           dict(data.get("calibration") or {}), list(data["rows"]), data.get("baseline_accuracy"),
                           data.get("input_shapes"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"cannot read sensitivity file '{os.fspath(path)}': {err}") from err


def load_labels(path: str | os.PathLike | None) -> np.ndarray | None:
    """The ``y`` array of a calibration ``.npz`` (None for folders, random data or no labels)."""
    if path is None or not os.path.isfile(path) or not os.fspath(path).endswith(".npz"):
        return None
    with np.load(path) as data:
        return np.asarray(data["y"]).reshape(-1) if "y" in data.files else None


def run_outputs(model: onnx.ModelProto, calibration: CalibrationSet) -> dict[str, np.ndarray]:
    """All outputs of ``model`` over the calibration batches, concatenated along the batch axis."""
    session = make_session(model, optimized=True)
    names = [o.name for o in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feeds in calibration.batches():
        for name, value in zip(names, session.run(names, feeds)):
            parts[name].append(np.asarray(value))
    return {n: np.concatenate(v) if v and v[0].ndim else np.stack(v) for n, v in parts.items()}


def output_change(reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray],
                  labels: np.ndarray | None = None) -> dict[str, float | None]:
    """Cosine (worst output), relative MSE (worst output), top-1 agreement and accuracy (first classifier output)."""
    cosine, rel_mse, agreement, accuracy = 1.0, 0.0, None, None
    for name, ref in reference.items():
        a = ref.astype(np.float64).reshape(len(ref), -1) if ref.ndim else ref.astype(np.float64).reshape(1, 1)
        b = outputs[name].astype(np.float64).reshape(a.shape)
        rel_mse = max(rel_mse, _relative_mse(a, b))
        cosine = min(cosine, _mean_cosine(a, b))
        if agreement is None and ref.ndim == 2 and ref.shape[1] > 1:
            agreement = float(np.mean(ref.argmax(1) == outputs[name].argmax(1)))
            if labels is not None and len(labels) >= len(ref):
                accuracy = float(np.mean(outputs[name].argmax(1) == labels[:len(ref)]))
    return {"cosine": cosine, "rel_mse": rel_mse, "top1_agreement": agreement, "accuracy": accuracy}


def _relative_mse(a: np.ndarray, b: np.ndarray) -> float:
    if np.array_equal(a, b):
        return 0.0
    scale = float(np.sum(a * a))
    return float(np.sum((a - b) ** 2) / scale) if scale > 0 else math.inf


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Per-sample cosine; identical samples are exactly 1, a zero sample against a non-zero one is 0."""
    dot = np.sum(a * b, axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    cos[np.all(a == b, axis=1)] = 1.0
    return float(np.clip(cos, -1.0, 1.0).mean())


@dataclass(frozen=True)
class _ScanJob:
    """What a candidate task needs (shipped once per scan): the prepared model, the data and the reference."""

    prepared: Prepared
    calibration: CalibrationSet
    reference: Mapping[str, np.ndarray]
    labels: np.ndarray | None
    shapes: InputShapes | None
    base_macs: int
    base_params: int


def _candidate_row(job: _ScanJob, item: tuple[int, float, int, np.ndarray]) -> dict[str, Any]:
    """Task: prune one group alone (keep ``kept``), count it and measure its outputs' change."""
    from onnxprune.methods.width import apply_plan

    group, ratio, removed, kept = item
    analysis = job.prepared.analysis
    plan = make_plan(analysis, {group: kept}, job.prepared.model_sha256, {})
    pruned = apply_plan(job.prepared, plan)
    counts = count_model(pruned, input_shapes=job.shapes)
    row = {"group": analysis.groups[group].id, "label": analysis.groups[group].label,
           "units": analysis.groups[group].units, "ratio": ratio, "removed": removed}
    row |= output_change(job.reference, run_outputs(pruned, job.calibration), job.labels)
    return row | {"macs_ratio": counts.macs / max(job.base_macs, 1), "params_ratio": counts.params / max(job.base_params, 1)}


def scan(prepared: Prepared, calibration: CalibrationSet, scores: Mapping[int, np.ndarray], criterion: str,
         ratios: tuple[float, ...] = DEFAULT_RATIOS, labels: np.ndarray | None = None,
         progress: Callable[[int], None] | None = None, input_shapes: InputShapes | None = None,
         executor: Executor | None = None) -> Sensitivity:
    """Prune each prunable group alone at each ratio (lowest ``scores`` first) and measure the change.

    MAC ratios are counted at ``input_shapes``, by default the calibration data's (:mod:`onnxprune.runtime.input_shapes`).
    Each (group, ratio) is one task of ``executor`` (default: in this process); rows come back in order.
    """
    from onnxprune.methods.prepared import model_stats

    executor = executor or LOCAL
    if any(not 0.0 <= r < 1.0 for r in ratios):
        raise InputError(f"--ratios must lie in [0, 1), got {', '.join(f'{r:g}' for r in ratios)}")
    if executor.remote and has_stubs(prepared.normalized):
        raise InputError("--ray: a sensitivity scan cannot ship memory-mapped weights; load the model without "
                         "mmap_weights")
    shapes = resolve(prepared.original, input_shapes) or from_calibration(prepared.original, calibration)
    base = model_stats(prepared, input_shapes=shapes)
    reference = run_outputs(prepared.original, calibration)
    baseline = output_change(reference, reference, labels)["accuracy"]
    result = Sensitivity(prepared.model_sha256, criterion, tuple(ratios), calibration.describe(),
                         baseline_accuracy=baseline, input_shapes=shapes.to_dict() if shapes else None)
    shipped = replace(calibration, progress=None) if executor.remote else calibration  # a terminal stays here
    # the imported graph and the count cache stay here: a task re-imports what it needs from the protos
    sent = replace(prepared, graph=None, counts={}) if executor.remote else prepared
    job = _ScanJob(sent, shipped, reference, labels, shapes, base.macs, base.params)
    count = len(scores) * len(ratios)
    for row in executor.map(_candidate_row, _candidates(prepared, scores, ratios), job, what="sensitivity candidate",
                            per_task=per_task(executor, count)):
        result.rows.append(row)
        if progress is not None:
            progress(1)
    return result


def _candidates(prepared: Prepared, scores: Mapping[int, np.ndarray], ratios: tuple[float, ...]
                ) -> Iterator[tuple[int, float, int, np.ndarray]]:
    """(group, ratio, units removed, kept indices) of every candidate, in the scan's row order."""
    for group in sorted(scores):
        units = prepared.analysis.groups[group].units
        for ratio in ratios:
            removed = min(units - 1, math.floor(ratio * units + 1e-9))
            kept = keep_units(prepared.analysis.groups[group], scores[group], units - removed)
            yield group, ratio, units - len(kept), kept
