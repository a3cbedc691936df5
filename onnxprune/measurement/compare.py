"""Compare a candidate model (pruned, quantized, ...) with its original on the same inputs.

Why a module of its own: the masked-reference oracle (``pipeline.verify``) judges an exact rewrite;
recovered or quantized models change numbers on purpose, so they are judged by how far their outputs
move from the original's — error, cosine similarity, top-1 agreement, accuracy on labelled data —
against thresholds the user states.  Both models see exactly the same seeded (or user) batches.

Definitions (per graph output, over every sample):

* ``max_abs`` / ``mean_abs``: of ``|candidate - original|``;
* ``max_relative``: ``max_abs / max |original|`` (relative to the output's scale: an element-wise
  ratio explodes wherever the reference crosses zero);
* ``cosine``: of the two outputs flattened over all samples;
* ``top1_agreement``: fraction of rows whose argmax agrees, for 2-D float outputs of >1 columns;
* ``accuracy``: argmax against the labels ``y`` of an ``.npz`` (same outputs), as a fraction;
* ``--atol/--rtol``: every element must satisfy ``|c - o| <= atol + rtol·|o|`` (numpy ``allclose``).

The candidate is also run with ``ORT_DISABLE_ALL`` on the first batch: onnxruntime's default
optimizations can hide a channel-count mismatch (DESIGN.md §3); a failure there fails validation.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from onnxprune.runtime.calibration import DEFAULT_BATCH_SIZE, CalibrationSet, load_calibration, random_calibration
from onnxprune.errors import InputError, OnnxPruneError
from onnxprune.runtime.input_shapes import resolve as resolve_shapes
from onnxprune.io.files import load_model
from onnxprune.runtime.feeds import InputSpec, input_specs
from onnxprune.runtime.sessions import make_session

#: Seeded random samples used when no calibration data is given.
DEFAULT_RANDOM_SAMPLES = 8


@dataclass(frozen=True)
class Thresholds:
    """Checks to apply; ``None`` means "not asked for" (only given thresholds decide the exit code)."""

    atol: float | None = None
    rtol: float | None = None
    min_cosine: float | None = None
    min_top1: float | None = None
    max_accuracy_drop: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Acc:
    """Streaming sums for one output (float64; memory independent of the number of batches)."""

    count: int = 0
    sum_abs: float = 0.0
    max_abs: float = 0.0
    max_ref: float = 0.0
    dot: float = 0.0
    norm_ref: float = 0.0
    norm_got: float = 0.0
    nan_mismatch: int = 0
    tol_violations: int = 0
    rows: int = 0
    top1_agree: int = 0
    labelled: int = 0
    correct_ref: int = 0
    correct_got: int = 0
    classifier: bool = False
    exact: bool = False
    shape_error: str | None = None


@dataclass
class OutputReport:
    """Metrics and failed checks of one output."""

    name: str
    metrics: dict[str, Any]
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, **self.metrics, "failures": list(self.failures)}


@dataclass
class ValidateResult:
    """What :func:`validate_models` returns: per-output reports, the data used and overall status."""

    original: str
    candidate: str
    thresholds: Thresholds
    data: dict[str, Any]
    outputs: list[OutputReport]
    disable_all: dict[str, Any]

    @property
    def failures(self) -> list[str]:
        found = [f"output '{o.name}': {text}" for o in self.outputs for text in o.failures]
        if not self.disable_all["ok"]:
            found.append(f"candidate fails with ORT_DISABLE_ALL: {self.disable_all['error']}")
        return found

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "original": self.original, "candidate": self.candidate,
                "thresholds": self.thresholds.to_dict(), "data": self.data,
                "outputs": [o.to_dict() for o in self.outputs], "ort_disable_all": self.disable_all,
                "failures": self.failures}


def _as_model(model: onnx.ModelProto | str | os.PathLike[str]) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        return model, "<model>"
    return load_model(model), os.fspath(model)


def _check_interfaces(original: onnx.ModelProto, candidate: onnx.ModelProto) -> None:
    """Same input and output names, or a one-line error naming the differences."""
    inits = {i.name for i in original.graph.initializer} | {i.name for i in candidate.graph.initializer}
    for kind in ("input", "output"):
        ours = [v.name for v in getattr(original.graph, kind) if v.name not in inits]
        theirs = [v.name for v in getattr(candidate.graph, kind) if v.name not in inits]
        if set(ours) != set(theirs):
            only_a = sorted(set(ours) - set(theirs))
            only_b = sorted(set(theirs) - set(ours))
            raise InputError(f"the models' {kind} names differ: only in ORIGINAL {only_a}, only in CANDIDATE {only_b}")
    theirs_specs = {spec.name: spec for spec in input_specs(candidate)}
    for spec in input_specs(original):
        other = theirs_specs[spec.name]
        fixed = [(a, b) for a, b in zip(spec.shape, other.shape) if a is not None and b is not None]
        if len(spec.shape) != len(other.shape) or any(a != b for a, b in fixed) or spec.dtype != other.dtype:
            raise InputError(f"input '{spec.name}' differs: ORIGINAL {_spec_text(spec)}, CANDIDATE {_spec_text(other)}")


def _spec_text(spec: InputSpec) -> str:
    dims = ", ".join("?" if d is None else str(d) for d in spec.shape)
    return f"{np.dtype(spec.dtype).name}[{dims}]"


def _labels(path: str | os.PathLike[str] | None) -> np.ndarray | None:
    """Labels ``y`` of an ``.npz`` calibration file (None when there are none)."""
    if path is None or not str(path).endswith(".npz") or not pathlib.Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data["y"]).reshape(-1) if "y" in data.files else None
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read labels from '{path}': {err}") from err


def resolve_data(model: onnx.ModelProto, calib: str | os.PathLike[str] | None, calib_random: int | None,
                 seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
                 input_shapes: Mapping[str, Sequence[int]] | None = None) -> CalibrationSet:
    """The inputs to compare on: a file/folder, N random samples, or the default seeded random set.

    Random samples take ``input_shapes`` (``--input-shape``, checked against the model); real data keeps its own.
    """
    shapes = resolve_shapes(model, input_shapes)
    if calib is not None and calib_random is not None:
        raise InputError("give either --calib PATH or --calib-random N, not both")
    if calib is not None:
        return load_calibration(calib, model, batch_size)
    return random_calibration(model, calib_random or DEFAULT_RANDOM_SAMPLES, seed, batch_size,
                              shapes.as_dict() if shapes else None)


def _accumulate(acc: _Acc, ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None,
                thresholds: Thresholds) -> None:
    if ref.shape != got.shape:
        acc.shape_error = f"shape {list(got.shape)} differs from the original's {list(ref.shape)}"
        return
    if not np.issubdtype(ref.dtype, np.floating):
        acc.exact = True
        acc.count += ref.size
        acc.tol_violations += int(np.count_nonzero(ref != got))
        acc.max_abs = max(acc.max_abs, float(np.max(np.abs(ref.astype(np.float64) - got), initial=0.0)))
        return
    a, b = ref.astype(np.float64), got.astype(np.float64)
    acc.nan_mismatch += int(np.count_nonzero(np.isnan(a) != np.isnan(b)))
    both = ~np.isnan(a) & ~np.isnan(b)
    diff = np.abs(a - b)[both]
    acc.count += diff.size
    acc.sum_abs += float(diff.sum())
    acc.max_abs = max(acc.max_abs, float(diff.max(initial=0.0)))
    acc.max_ref = max(acc.max_ref, float(np.abs(a[both]).max(initial=0.0)))
    acc.dot += float(np.dot(a[both], b[both]))
    acc.norm_ref += float(np.dot(a[both], a[both]))
    acc.norm_got += float(np.dot(b[both], b[both]))
    if thresholds.atol is not None or thresholds.rtol is not None:
        bound = (thresholds.atol or 0.0) + (thresholds.rtol or 0.0) * np.abs(a[both])
        acc.tol_violations += int(np.count_nonzero(diff > bound))
    if ref.ndim == 2 and ref.shape[1] > 1:
        acc.classifier = True
        top_a, top_b = a.argmax(axis=1), b.argmax(axis=1)
        acc.rows += len(top_a)
        acc.top1_agree += int(np.count_nonzero(top_a == top_b))
        if labels is not None and len(labels) == len(top_a):
            acc.labelled += len(labels)
            acc.correct_ref += int(np.count_nonzero(top_a == labels))
            acc.correct_got += int(np.count_nonzero(top_b == labels))


def _metrics(acc: _Acc) -> dict[str, Any]:
    if acc.shape_error:
        return {"error": acc.shape_error}
    out: dict[str, Any] = {"elements": acc.count, "max_abs": acc.max_abs,
                           "mean_abs": acc.sum_abs / acc.count if acc.count else 0.0,
                           "max_relative": acc.max_abs / max(acc.max_ref, 1e-12), "nan_mismatches": acc.nan_mismatch}
    if acc.exact:
        out |= {"exact_mismatches": acc.tol_violations}
        return out
    denom = np.sqrt(acc.norm_ref) * np.sqrt(acc.norm_got)
    out["cosine"] = float(acc.dot / denom) if denom > 0 else (1.0 if acc.norm_ref == acc.norm_got else 0.0)
    out["tolerance_violations"] = acc.tol_violations
    if acc.classifier:
        out["top1_agreement"] = acc.top1_agree / acc.rows if acc.rows else None
    if acc.labelled:
        ref_acc, got_acc = acc.correct_ref / acc.labelled, acc.correct_got / acc.labelled
        out |= {"labelled_samples": acc.labelled, "accuracy_original": ref_acc, "accuracy_candidate": got_acc,
                "accuracy_drop": ref_acc - got_acc}
    return out


def _judge(acc: _Acc, metrics: dict[str, Any], t: Thresholds) -> list[str]:
    """Names of the given thresholds this output fails (with the measured value)."""
    if acc.shape_error:
        return [acc.shape_error]
    failures = []
    if acc.nan_mismatch:
        failures.append(f"{acc.nan_mismatch} NaN positions differ")
    if acc.exact and acc.tol_violations:
        failures.append(f"{acc.tol_violations} integer elements differ")
    if not acc.exact:
        if (t.atol is not None or t.rtol is not None) and acc.tol_violations:
            failures.append(f"{acc.tol_violations} elements exceed --atol {t.atol or 0:g} --rtol {t.rtol or 0:g}")
        if t.min_cosine is not None and metrics["cosine"] < t.min_cosine:
            failures.append(f"cosine similarity {metrics['cosine']:.6f} < --min-cosine {t.min_cosine:g}")
        top1 = metrics.get("top1_agreement")
        if t.min_top1 is not None and top1 is not None and top1 < t.min_top1:
            failures.append(f"top-1 agreement {top1:.4f} < --min-top1 {t.min_top1:g}")
        drop = metrics.get("accuracy_drop")
        if t.max_accuracy_drop is not None and drop is not None and drop > t.max_accuracy_drop:
            failures.append(f"accuracy drop {drop:.4f} > --max-accuracy-drop {t.max_accuracy_drop:g}")
    return failures


def _require_applicable(accs: dict[str, _Acc], t: Thresholds, labels: np.ndarray | None) -> None:
    """A threshold that no output can be judged by is a usage error, not a silent pass."""
    if t.min_top1 is not None and not any(a.classifier for a in accs.values()):
        raise InputError("--min-top1 needs a classifier-like output (2-D float, more than one column); none found")
    if t.max_accuracy_drop is not None and not any(a.labelled for a in accs.values()):
        why = "the data has no labels 'y'" if labels is None else "no classifier-like output matches the labels 'y'"
        raise InputError(f"--max-accuracy-drop needs labelled data (an .npz with 'y'): {why}")


def _disable_all_check(candidate: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    try:
        session = make_session(candidate, optimized=False)
        session.run(None, feeds)
    except OnnxPruneError as err:
        return {"ok": False, "error": str(err).splitlines()[0]}
    except Exception as err:  # onnxruntime's own exception types
        return {"ok": False, "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    return {"ok": True, "error": None}


def _run(session, feeds: dict[str, np.ndarray], which: str) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    try:
        return dict(zip(names, session.run(names, feeds)))
    except Exception as err:
        raise OnnxPruneError(f"onnxruntime failed to run the {which} model: {str(err).splitlines()[0]}") from err


def validate_models(original: onnx.ModelProto | str | os.PathLike[str],
                    candidate: onnx.ModelProto | str | os.PathLike[str], *,
                    calib: str | os.PathLike[str] | None = None, calib_random: int | None = None,
                    thresholds: Thresholds | None = None, seed: int = 0,
                    batch_size: int = DEFAULT_BATCH_SIZE,
                    input_shapes: Mapping[str, Sequence[int]] | None = None) -> ValidateResult:
    """Run both models on the same inputs and judge the candidate by ``thresholds`` (module docstring);
    random inputs take ``input_shapes``."""
    thresholds = thresholds or Thresholds()
    ref_model, ref_name = _as_model(original)
    got_model, got_name = _as_model(candidate)
    _check_interfaces(ref_model, got_model)
    data = resolve_data(ref_model, calib, calib_random, seed, batch_size, input_shapes)
    labels = _labels(calib)
    ref_session = make_session(ref_model, optimized=True)
    got_session = make_session(got_model, optimized=True)
    accs: dict[str, _Acc] = {o.name: _Acc() for o in ref_session.get_outputs()}
    disable_all: dict[str, Any] | None = None
    offset = 0
    for feeds in data.batches():
        if disable_all is None:
            disable_all = _disable_all_check(got_model, feeds)
        expected, got = _run(ref_session, feeds, "original"), _run(got_session, feeds, "candidate")
        rows = next(iter(feeds.values())).shape[0]
        batch_labels = labels[offset:offset + rows] if labels is not None else None
        offset += rows
        for name, acc in accs.items():
            _accumulate(acc, expected[name], got[name], batch_labels, thresholds)
    _require_applicable(accs, thresholds, labels)
    reports = []
    for name, acc in accs.items():
        metrics = _metrics(acc)
        reports.append(OutputReport(name, metrics, _judge(acc, metrics, thresholds)))
    described = data.describe() | {"labels": labels is not None, "seed": seed,
                                   "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()} or None}
    return ValidateResult(ref_name, got_name, thresholds, described, reports,
                          disable_all or {"ok": True, "error": None})


def format_validate(result: dict[str, Any]) -> str:
    """Human text of a validate result dict (``ValidateResult.to_dict()``)."""
    data = result["data"]
    source = "RANDOM inputs" if data["random"] else f"{data['source']} '{data['origin']}'"
    lines = [f"data    {source}: {data['samples']} samples" + (" with labels" if data["labels"] else "")]
    for out in result["outputs"]:
        if "error" in out:
            lines.append(f"output  {out['name']}: {out['error']}")
            continue
        text = (f"output  {out['name']}: max abs {out['max_abs']:.3g}, mean abs {out['mean_abs']:.3g}, "
                f"max rel {out['max_relative']:.3g}")
        if "cosine" in out:
            text += f", cosine {out['cosine']:.6f}"
        if out.get("top1_agreement") is not None:
            text += f", top-1 agreement {out['top1_agreement']:.4f}"
        if "accuracy_candidate" in out:
            text += (f", accuracy {out['accuracy_original']:.4f} → {out['accuracy_candidate']:.4f} "
                     f"(drop {out['accuracy_drop']:+.4f})")
        lines.append(text)
    disable_all = result["ort_disable_all"]
    lines.append("ORT_DISABLE_ALL candidate " + ("ran" if disable_all["ok"] else f"FAILED: {disable_all['error']}"))
    lines.append("validate passed" if result["ok"] else "validate FAILED: " + "; ".join(result["failures"]))
    return "\n".join(lines)
