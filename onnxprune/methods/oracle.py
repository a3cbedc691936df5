"""The checks every method's result is judged by: its oracle at distinct input shapes, and the run check.

Why here, below planning and the pipeline: width, depth and sparsity all compare a candidate against the
reference their method builds (``Method.reference``), and every plain ``prune`` runs its result at input
shapes the original accepts; one copy of each check serves them all (DESIGN.md §3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np
import onnx

from onnxprune.errors import InputError, VerificationError
from onnxprune.ir.checker import check_model
from onnxprune.ir.shapes import infer_shapes_at
from onnxprune.measurement.agreement import OutputDiff, compare_outputs
from onnxprune.analysis.io_change import IoChange, narrow, narrow_shape
from onnxprune.methods.prepared import Prepared
from onnxprune.runtime.feeds import shapes_of, trial_batches, trial_runs
from onnxprune.runtime.mapped_checks import MappedChecks
from onnxprune.runtime.sessions import Runner, shape_check_threads


@dataclass
class VerifyResult:
    """Outcome of the oracle: per output diffs for each batch (input shapes) and optimization level."""

    ok: bool
    tolerance: float
    diffs: list[dict] = field(default_factory=list)
    shapes: list[dict[str, list[int]]] = field(default_factory=list)  # the input shapes of each batch

    def to_dict(self) -> dict:
        return {"ok": self.ok, "tolerance": self.tolerance, "input_shapes": self.shapes, "diffs": self.diffs}

    def require_ok(self, subject: str = "pruned", reference: str = "masked reference") -> None:
        """Raise VerificationError naming the first output that differs from the oracle."""
        if not self.ok:
            bad = next(d for d in self.diffs if not d["ok"])
            raise VerificationError(f"{subject} output '{bad['name']}' differs from the {reference} "
                                    f"(relative error {bad['relative']:.3g} > {self.tolerance})")



def compare_to_reference(reference: onnx.ModelProto, pruned: onnx.ModelProto, seeds: tuple[int, ...] = (0, 1),
                         tolerance: float = 1e-4, feeds: list[dict[str, np.ndarray]] | None = None,
                         original: onnx.ModelProto | None = None,
                         changes: Mapping[str, IoChange] | None = None) -> VerifyResult:
    """Checker + ``pruned`` under both optimization levels against ``reference`` (an oracle model, run with
    ORT_DISABLE_ALL) on ``feeds`` and one random batch per seed, at distinct input shapes: any method's oracle.
    ``original`` (the input model) is run only when the reference fails, to tell bad input from a bad rewrite.
    ``changes``: interface tensors the plan narrows (KV heads, ``--allow-io-change``): the candidate is fed, and
    compared on, their kept heads only."""
    check_model(pruned)
    held = [reference]  # _compare lets go of the reference before the candidate runs (inline weights: its size)
    del reference
    with MappedChecks(held[0]) as blocks:  # external data: block by block (onnxprune/runtime/mapped_checks.py)
        spare = held[0] if blocks else None  # stub weights: bytes to keep
        try:
            return _compare(held, pruned, seeds, tolerance, feeds, original, changes)
        except (VerificationError, InputError):
            if not blocks:
                raise
    # Blocks cannot carry everything across a cut (a tensor sequence): what failed in blocks is judged again
    # with whole-model sessions, so the blocks never change a verdict (a real failure costs a second run).
    return _compare([spare], pruned, seeds, tolerance, feeds, original, changes)


def _compare(held: list[onnx.ModelProto], pruned: onnx.ModelProto, seeds: tuple[int, ...], tolerance: float,
             feeds: list[dict[str, np.ndarray]] | None, original: onnx.ModelProto | None,
             changes: Mapping[str, IoChange] | None) -> VerifyResult:
    reference = held.pop()
    result = VerifyResult(True, tolerance)
    runs, failure = [], None
    try:  # every reference output first, so the reference's session is gone before the candidate's exist
        runs.extend(_reference_runs(original, trial_runs(reference, len(feeds or []) + len(seeds),
                                                         seed=seeds[0] if seeds else 0, given=feeds)))
    except (VerificationError, InputError) as err:
        failure = err  # raised after the runs before it, as when reference and candidate alternated
    del reference
    fed = [narrow(batch, changes or {}) for batch, _ in runs]  # kept KV heads only (--allow-io-change)
    outputs = {optimized: _run_each(pruned, fed, optimized) for optimized in (False, True)}
    for number, (batch, expected) in enumerate(runs):
        result.shapes.append(shapes_of(batch))
        expected = narrow(expected, changes or {})
        for optimized in (False, True):
            got = outputs[optimized][number]
            if isinstance(got, VerificationError):
                raise got
            diffs: list[OutputDiff] = compare_outputs(expected, got, tolerance)
            for diff in diffs:
                result.diffs.append(diff.to_dict() | {"batch": number, "optimized": optimized})
                result.ok &= diff.ok
    if failure is not None:
        raise failure
    return result


def _run_each(model: onnx.ModelProto, batches: list[dict[str, np.ndarray]], optimized: bool
              ) -> list[dict[str, np.ndarray] | VerificationError]:
    """Outputs of ``model`` (or the error onnxruntime raised) per batch, from one session that is closed after.

    Why one optimization level at a time: onnxruntime copies the weights into every session (and an
    optimized one re-lays them out), so the oracle's peak holds one session's copy, not three.
    """
    return Runner(model).run_each(batches, optimized)


def _reference_runs(original: onnx.ModelProto | None, runs: Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]
                    ) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """The masked reference's runs; when the reference fails, blame the input model if it fails as well.

    Why: the reference is the input with channels masked, so an input onnxruntime cannot run (a weight of
    the wrong size, an attribute the checker lets through, a declared input too large to feed) fails
    here first.  That is bad input (exit 2, naming the input model), not a failed check of the pruned
    model (exit 1).  The input runs only on this failure path, at the trial shapes.
    """
    try:
        yield from runs
    except VerificationError as err:
        if original is None:
            raise
        try:
            next(trial_runs(original, 1), None)  # raises when the input runs at no trial shape
        except VerificationError as own:
            raise InputError(f"the oracle cannot run the input model: {own}") from err
        raise



def check_runs(prepared: Prepared, pruned: onnx.ModelProto, feeds: list[dict[str, np.ndarray]] | None = None,
               count: int = 2, changes: Mapping[str, IoChange] | None = None) -> list[dict[str, list[int]]]:
    """Run ``pruned`` at ``count`` input shapes the original accepts, and compare output shapes.

    Why: the least a plain ``prune`` (no ``--verify``) owes its user is a model that runs wherever the
    original runs; a probe value baked into a run-time shape fails here instead of in production.
    The original's output shapes come from shape inference at each input shape; the original itself
    runs only where inference cannot tell or the pruned model fails (to learn whether that shape is one
    it accepts), so a large model is not loaded into onnxruntime twice.  ``feeds`` (calibration data)
    are checked first.  ``changes``: interface tensors the plan narrows (fed and expected narrowed).
    Returns the input shapes checked (none when no random inputs can be made for
    the model's input types); raises VerificationError naming the shape that failed.
    """
    threads = shape_check_threads()
    candidate, original = Runner(pruned, threads), Runner(prepared.original, threads)
    checked: list[dict[str, list[int]]] = []
    outputs = [o.name for o in prepared.original.graph.output]
    for batch in trial_batches(prepared.original, feeds):
        if len(checked) >= count + len(feeds or []):
            break
        shapes = shapes_of(batch)
        inferred = infer_shapes_at(prepared.original, {n: tuple(s) for n, s in shapes.items()})
        expected = {name: narrow_shape(name, inferred.get(name), changes or {}) for name in outputs}
        try:
            actual = {name: np.shape(value)
                      for name, value in candidate.run(narrow(batch, changes or {}), optimized=False).items()}
        except VerificationError as err:
            if not _runs(original, batch):
                continue  # a shape the original refuses too (a detector's odd sizes)
            raise VerificationError(f"the pruned model fails at input shapes {_describe(shapes)} where the "
                                    f"original runs: {err}") from err
        if any(shape is None for shape in expected.values()):
            if not _runs(original, batch):
                continue
            expected = {name: narrow_shape(name, np.shape(value), changes or {})
                        for name, value in original.run(batch, optimized=False).items()}
        for name, shape in expected.items():
            if tuple(actual.get(name, ())) != tuple(shape):
                raise VerificationError(f"output '{name}' has shape {list(actual.get(name, ()))} at input shapes "
                                        f"{_describe(shapes)}, the original's is {list(shape)}")
        checked.append(shapes)
    return checked



def _runs(runner: Runner, batch: dict[str, np.ndarray]) -> bool:
    try:
        runner.run(batch, optimized=False)
    except VerificationError:
        return False
    return True



def _describe(shapes: dict[str, list[int]]) -> str:
    return ", ".join(f"{name}{value}" for name, value in shapes.items()).replace(" ", "")
