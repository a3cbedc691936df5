"""Python entry points of the pipeline commands (``prune``, ``validate``, ``bench``, ``quantize``, ``sparsify``, ``run_recipe``).

Re-exported from ``onnxprune``.  Each returns a result object with ``.to_dict()`` — the same dict the
CLI prints with ``--json`` under ``results`` — and raises :class:`~onnxprune.errors.OnnxPruneError`
for bad input instead of exiting.
"""

from __future__ import annotations

import os

import onnx

from onnxprune.measurement.bench import BenchOptions, BenchResult, bench_models
from onnxprune.runtime.calibration import DEFAULT_BATCH_SIZE
from onnxprune.measurement.compare import Thresholds, ValidateResult, validate_models
from onnxprune.io.files import load_model
from onnxprune.ir.graph import caller_model_kept
from onnxprune.pipeline import PruneResult
from onnxprune.pipeline import prune as _prune
from onnxprune.methods.sparsity.plan import SparsitySettings
from onnxprune.workflows.sparsify import SparsifyResult, SparsifyStep, sparsify_to_file
from onnxprune.workflows.quantize import QuantizeResult, quantize_model
from onnxprune.workflows.recipe import RecipeResult
from onnxprune.workflows.recipe import run_recipe as _run_recipe
from onnxprune.workflows.steps import calibration_for

PathLike = str | os.PathLike


def prune(model: onnx.ModelProto, *args, **kwargs) -> PruneResult:
    """:func:`onnxprune.pipeline.prune` (same arguments), leaving the caller's ``model`` as it was passed
    (:func:`onnxprune.ir.graph.caller_model_kept`)."""
    with caller_model_kept(model):
        return _prune(model, *args, **kwargs)


prune.__doc__ = (prune.__doc__ or "") + "\n\n" + (_prune.__doc__ or "")


def validate(original: onnx.ModelProto | PathLike, candidate: onnx.ModelProto | PathLike, *,
             calib: PathLike | None = None, calib_random: int | None = None, atol: float | None = None,
             rtol: float | None = None, min_cosine: float | None = None, min_top1: float | None = None,
             max_accuracy_drop: float | None = None, seed: int = 0,
             batch_size: int = DEFAULT_BATCH_SIZE, input_shapes: dict[str, list[int]] | None = None) -> ValidateResult:
    """Compare ``candidate`` with ``original`` on the same inputs; ``result.ok`` says whether every
    given threshold holds (``result.failures`` names the output and threshold otherwise)."""
    thresholds = Thresholds(atol, rtol, min_cosine, min_top1, max_accuracy_drop)
    return validate_models(original, candidate, calib=calib, calib_random=calib_random, thresholds=thresholds,
                           seed=seed, batch_size=batch_size, input_shapes=input_shapes)


def bench(*models: PathLike, threads: int = 1, batch: int = 1, warmup: int = 5, repeat: int = 50,
          input_shapes: dict[str, list[int]] | None = None) -> BenchResult:
    """Latency (interleaved, spinning off), params, MACs and size; ratios are to the first model.
    ``input_shapes`` (input name → shape) sets the inputs and the shapes MACs are counted at."""
    return bench_models(list(models), BenchOptions(threads, batch, warmup, repeat, input_shapes=input_shapes))


def quantize(model: PathLike, output: PathLike, mode: str = "dynamic", *, calib: PathLike | None = None,
             calib_random: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0,
             inplace: bool = False) -> QuantizeResult:
    """Quantize the file ``model`` into ``output`` (static mode needs ``calib`` or ``calib_random``)."""
    calibration = None
    if mode == "static":
        calibration = calibration_for(load_model(model), calib, calib_random, batch_size, seed)
    return quantize_model(model, output, mode, calibration, inplace=inplace)


def sparsify(model: PathLike, output: PathLike, *, sparsity: float | None = None, pattern: str = "unstructured",
             criterion: str = "magnitude", scope: str = "layer", exclude: tuple[str, ...] = (),
             calib: PathLike | None = None, calib_random: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
             seed: int = 0, verify: bool = False, sparse_format: bool = False,
             verify_calib: PathLike | None = None) -> SparsifyResult:
    """Zero weights of the file ``model`` into ``output`` as ``onnxprune sparsify`` does (same checks and report)."""
    settings = SparsitySettings(sparsity, pattern, criterion, scope, tuple(exclude), seed)
    calibration = None
    if calib is not None or calib_random is not None:
        calibration = calibration_for(load_model(model), calib, calib_random, batch_size, seed)
    step = SparsifyStep(settings, verify, sparse_format, batch_size,
                        os.fspath(verify_calib) if verify_calib is not None else None)
    return SparsifyResult(sparsify_to_file(model, output, step, calibration))


def run_recipe(path: PathLike, out_dir: PathLike | None = None) -> RecipeResult:
    """Run a recipe TOML file; ``result.ok`` is False when a validate step failed a threshold."""
    return _run_recipe(path, out_dir)
