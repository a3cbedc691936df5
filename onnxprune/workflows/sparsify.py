"""``sparsify`` as a step: load → prepare → analyze → statistics → plan → apply → check → save → report.

Shared by the CLI command, recipes and the Python API so all three write the same file and report.
The report (``results`` of the command envelope) carries the pattern, the achieved sparsity, zeros per
layer, the layers left dense with the reason, the file size before → after and the gzip-compressed
sizes (what zeros are worth on disk), and the oracle's findings when asked for.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from onnxprune.runtime.calibration import DEFAULT_BATCH_SIZE, CalibrationSet, load_calibration
from onnxprune.measurement.counting import count_model, format_bytes
from onnxprune.errors import InputError, VerificationError
from onnxprune.io.files import load_model, save_model
from onnxprune.methods.sparsity.method import SparsityMethod
from onnxprune.methods.sparsity.oracle import verify_sparsity
from onnxprune.methods.sparsity.plan import SparsityPlan, SparsitySettings
from onnxprune.methods.sparsity.storage import gzip_size, model_files, to_sparse_initializers

TENSORRT_NOTE = ("onnxruntime's CPU kernels run zeros at dense speed; N:M (2:4) sparsity pays off on GPUs with "
                 "sparse tensor cores, e.g. TensorRT: trtexec --onnx=OUT --sparsity=enable")


@dataclass
class SparsifyStep:
    """The ``sparsify`` command's options (names as in the CLI, underscored)."""

    settings: SparsitySettings
    verify: bool = False
    sparse_format: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    verify_calib: str | None = None  # held-out data for the reconstruction check (default: the calibration data)
    plan_path: str | None = None  # replay a saved plan (masks only; a sparsegpt plan needs its updates)
    save_plan: str | None = None


@dataclass
class SparsifyResult:
    """What the Python API returns: the report's ``results`` dict, with the common fields as properties."""

    results: dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> str:
        return self.results["output"]

    @property
    def sparsity(self) -> float:
        return self.results["sparsity"]

    def to_dict(self) -> dict[str, Any]:
        return self.results


#: The keys of a recipe's ``sparsify`` step (besides type/name/input/output/calib/calib_random/batch_size).
RECIPE_KEYS = {"sparsity": (int, float), "pattern": str, "criterion": str, "scope": str, "exclude": list, "seed": int,
               "verify": bool, "sparse_format": bool}


def recipe_step(table: dict[str, Any], batch_size: int = DEFAULT_BATCH_SIZE) -> SparsifyStep:
    """The SparsifyStep a recipe's ``sparsify`` table asks for (settings checked here, before anything runs)."""
    settings = SparsitySettings(table.get("sparsity"), table.get("pattern", "unstructured"),
                                table.get("criterion", "magnitude"), table.get("scope", "layer"),
                                tuple(table.get("exclude", ())), table.get("seed", 0))
    return SparsifyStep(settings, table.get("verify", False), table.get("sparse_format", False),
                        table.get("batch_size", batch_size))


def _layer_rows(plan: SparsityPlan) -> list[dict[str, Any]]:
    return [{"node": m.layer.node, "op": m.layer.op, "weight": m.layer.weight, "shape": list(m.layer.shape),
             "criterion": m.criterion, "zeros": m.zeros, "total": m.total, "sparsity": m.zeros / m.total,
             "updated": m.layer.node in plan.updates, "note": m.note} for m in plan.layers]


def _sizes(source: str, loaded, written: str, model) -> dict[str, Any]:
    before, after = model_files(source, loaded), model_files(written, model)
    size = {"before": sum(os.path.getsize(f) for f in before), "after": sum(os.path.getsize(f) for f in after),
            "gzip_before": gzip_size(before), "gzip_after": gzip_size(after)}
    size["gzip_ratio"] = size["gzip_after"] / size["gzip_before"] if size["gzip_before"] else None
    return size


def sparsify_to_file(model_path: str | os.PathLike[str], output: str | os.PathLike[str], step: SparsifyStep,
                     calibration: CalibrationSet | None = None, inplace: bool = False) -> dict[str, Any]:
    """Sparsify ``model_path`` into ``output`` and return the report's ``results`` dict.

    Raises :class:`~onnxprune.errors.VerificationError` (nothing written) when ``step.verify`` is set and
    the oracle fails.
    """
    from onnxprune.pipeline import check_runs
    from onnxprune.methods.prepared import prepare

    start = time.perf_counter()
    settings = step.settings
    if settings.needs_calibration and calibration is None and step.plan_path is None:
        raise InputError(f"criterion '{settings.criterion}' needs calibration data (--calib PATH or --calib-random N)")
    loaded = load_model(model_path, mmap_weights=True)  # read-only views: nothing is ever written into them
    prepared = prepare(loaded)
    method = SparsityMethod()
    if step.plan_path is not None:
        plan = SparsityPlan.load(step.plan_path)
    else:
        analysis = method.analyze(prepared, settings.exclude)
        plan = method.plan(prepared, analysis, settings, method.statistics(prepared, analysis, settings, calibration))
    model = method.apply(prepared, plan)
    feeds = [next(iter(calibration.batches()))] if calibration is not None else None
    check = _verify(method, prepared, plan, model, step, calibration, feeds) if step.verify else None
    runs_at = check_runs(prepared, model, feeds)
    written_model, converted = model, []
    if step.sparse_format:
        written_model, converted = to_sparse_initializers(model, [m.layer.weight for m in plan.layers])
        check_same_outputs(model, written_model, feeds)
    provenance = {"source_sha256": prepared.model_sha256, "settings": {"method": "sparsity", **plan.settings}}
    written = save_model(written_model, output, source_path=model_path, inplace=inplace, provenance=provenance)
    if step.save_plan:
        plan.save(step.save_plan)
    after = count_model(model)
    summary = plan.summary()
    results = {"source": os.fspath(model_path), "output": os.fspath(written), "method": "sparsity",
               "pattern": plan.settings["pattern"], "criterion": plan.settings["criterion"],
               "scope": plan.settings["scope"], "target_sparsity": plan.settings["sparsity"],
               "zeros": summary["zeros"], "weights": summary["weights"], "sparsity": summary["sparsity"],
               "params": after.params, "layers": _layer_rows(plan), "skipped": [s.to_dict() for s in plan.skipped],
               "size": _sizes(os.fspath(model_path), loaded, os.fspath(written), written_model)
               | {"sparse_format": step.sparse_format, "sparse_initializers": converted},
               "weights_updated": plan.updated,
               "calibration": calibration.describe() if calibration is not None else None,
               "verification": check.to_dict() if check is not None else None, "runs_at": runs_at,
               "note": TENSORRT_NOTE, "seconds": time.perf_counter() - start}
    return results


def _verify(method: SparsityMethod, prepared, plan: SparsityPlan, model, step: SparsifyStep,
            calibration: CalibrationSet | None, feeds: list | None):
    """The oracle (:mod:`onnxprune.methods.sparsity.oracle`); raises VerificationError when it fails."""
    heldout = calibration
    if plan.updated and step.verify_calib is not None:
        heldout = load_calibration(step.verify_calib, prepared.original, step.batch_size)
    check = verify_sparsity(method, prepared, plan, model, feeds, heldout)
    if check.heldout is not None:
        check.heldout["held_out"] = heldout is not calibration  # False: checked on the calibration data itself
    if not check.ok:
        raise VerificationError(f"sparsity oracle failed: {_first_failure(check.to_dict())}")
    return check


def check_same_outputs(dense, sparse, feeds: list | None) -> None:
    """The ``sparse_initializer`` copy must load in onnxruntime and compute exactly what the dense model does."""
    from onnxprune.runtime.sessions import Runner
    from onnxprune.measurement.agreement import compare_outputs
    from onnxprune.runtime.feeds import random_feeds

    batch = feeds[0] if feeds else random_feeds(dense, batch=2, seed=0)
    expected = Runner(dense).run(batch, optimized=False)
    for diff in compare_outputs(expected, Runner(sparse).run(batch, optimized=False), 0.0):
        if not diff.ok:
            raise VerificationError(f"the sparse_initializer model differs from the dense one on output "
                                    f"'{diff.name}' ({diff.max_abs:.3g})")


def _first_failure(check: dict[str, Any]) -> str:
    for row in check["pattern"]:
        if not row["ok"]:
            return f"layer '{row['node']}': the written weights break the planned zeros or the pattern"
    for row in check["reconstruction"]:
        if not row["ok"]:
            return (f"layer '{row['node']}': held-out reconstruction error {row['error_updated']:.4g} exceeds the "
                    f"masked-only {row['error_masked']:.4g}")
    worst = max(check["diffs"], key=lambda d: d["relative"], default=None)
    return f"output '{worst['name']}' differs from the masked reference by {worst['relative']:.3g}" if worst else "?"


def format_sparsify(results: dict[str, Any]) -> str:
    """The text the CLI prints."""
    size = results["size"]
    lines = [f"sparsified ({results['pattern']}, {results['criterion']}, scope {results['scope']}) → {results['output']}",
             f"zeros   {results['zeros']:,} of {results['weights']:,} weights in {len(results['layers'])} layers "
             f"({results['sparsity']:.1%})",
             f"size    {format_bytes(size['before']):>10} → {format_bytes(size['after']):>10}"
             + (f" (sparse_initializer: {len(size['sparse_initializers'])} weights)" if size["sparse_format"] else ""),
             f"gzip    {format_bytes(size['gzip_before']):>10} → {format_bytes(size['gzip_after']):>10}"
             + (f" ({size['gzip_ratio']:.3f}×)" if size["gzip_ratio"] else "")]
    for row in results["layers"]:
        lines.append(f"  {row['node']:40s} {row['op']:6s} {row['zeros']:>9,}/{row['total']:<9,} {row['sparsity']:6.1%}"
                     + (" updated" if row["updated"] else "") + (f"  ({row['note']})" if row["note"] else ""))
    for row in results["skipped"]:
        lines.append(f"  dense: {row['node']} ({row['op']}): {row['reason']}")
    if results["verification"] is not None:
        lines.append("verified: " + ("ok" if results["verification"]["ok"] else "FAILED"))
    lines.append(f"note: {results['note']}")
    return "\n".join(lines)
