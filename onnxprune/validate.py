"""Validation with onnxruntime: checker, sessions under both optimization levels, output comparison.

Why both levels: onnxruntime's default graph optimizations (NCHWc layout rewrites) can execute a Conv
whose weights expect more input channels than it receives and still return numbers.  A rewritten model
is therefore always also run with ``ORT_DISABLE_ALL``, which validates shapes strictly.  ``onnx.checker``
alone is not a semantic check either (a Reshape with a wrong element count passes it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.runtime import blockwise
from onnxprune.errors import VerificationError
from onnxprune.io.weights import checkable, ort_session

ort.set_default_logger_severity(4)  # only fatal: onnxprune reports failures itself, in one line

_NUMPY_OF_ONNX = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT8: np.int8, onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.BOOL: np.bool_,
}


#: Random test inputs larger than this (per input) are refused rather than allocated.
MAX_FEED_ELEMENTS = 1 << 27


@dataclass(frozen=True)
class InputSpec:
    """A graph input: name, NumPy dtype, and dims (None where dynamic)."""

    name: str
    dtype: type
    shape: tuple[int | None, ...]
    symbols: tuple[str | None, ...] = ()  # the dim_param of each dynamic dim ('' or None: unnamed)


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The real inputs of a model (initializers listed as inputs by old exporters are skipped)."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dtype = _NUMPY_OF_ONNX.get(tensor_type.elem_type)
        if dtype is None:
            raise VerificationError(f"input '{value.name}' has an unsupported element type {tensor_type.elem_type}")
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in tensor_type.shape.dim)
        symbols = tuple(d.dim_param or None for d in tensor_type.shape.dim)
        specs.append(InputSpec(value.name, dtype, dims, symbols))
    return specs


def random_feeds(model: onnx.ModelProto, batch: int = 2, seed: int = 0, dynamic: int = 3,
                 shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs: dynamic first dims get ``batch``, other dynamic dims ``dynamic``; an input named in
    ``shapes`` (``--input-shape``, checked by :mod:`onnxprune.input_shapes`) gets exactly that shape.

    A named symbol has one value in every input that uses it: the batch value wherever some input has it
    as its first dim (``input_ids[batch, seq]`` and ``mask[batch, seq]`` agree).
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    specs = input_specs(model)
    batch_symbols = {spec.symbols[0] for spec in specs if spec.symbols and spec.symbols[0]}
    for spec in specs:
        symbols = spec.symbols or (None,) * len(spec.shape)
        shape = tuple(d if d is not None else batch if i == 0 or symbols[i] in batch_symbols else dynamic
                      for i, d in enumerate(spec.shape))
        shape = tuple((shapes or {}).get(spec.name, shape))
        if int(np.prod(shape, dtype=np.float64)) > MAX_FEED_ELEMENTS:
            raise VerificationError(f"input '{spec.name}' of shape {list(shape)} is too large for random test inputs")
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype is np.bool_:
            feeds[spec.name] = np.asarray(rng.random(shape) < 0.5)
        else:
            feeds[spec.name] = rng.integers(0, 10, size=shape).astype(spec.dtype)
    return feeds


#: ``(batch, every other symbolic dim)`` tried in order for checks that must run a model at several input
#: shapes: small first (cheap), then multiples of 32, which detectors with stride-32 maps need.
TRIAL_SHAPES: tuple[tuple[int, int], ...] = ((2, 3), (1, 5), (3, 7), (2, 32), (1, 64), (2, 96), (1, 128))


def has_dynamic_inputs(model: onnx.ModelProto) -> bool:
    """Whether some input dimension is symbolic or unknown (the model accepts more than one shape)."""
    weights = {init.name for init in model.graph.initializer}
    return any(not (d.HasField("dim_value") and d.dim_value > 0) for value in model.graph.input
               if value.name not in weights and value.type.HasField("tensor_type")
               for d in value.type.tensor_type.shape.dim)


def shapes_of(feeds: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """The input shapes of one batch, for reports."""
    return {name: list(np.shape(value)) for name, value in feeds.items()}


def trial_batches(model: onnx.ModelProto, given: list[dict[str, np.ndarray]] | None = None, seed: int = 0,
                  repeats: int = 1, errors: list[VerificationError] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Input batches at distinct shapes for checks that must run ``model`` at several shapes.

    ``given`` batches (calibration data, ``--input-shape``; inputs the model does not have dropped) come
    first, then random ones at each :data:`TRIAL_SHAPES` entry whose shapes are new.  A model without
    symbolic dims has one shape: ``repeats`` random batches of it, seeds ``seed, seed + 1, …``.  A trial
    shape no random batch can be made for (too large, an input type without stand-in) is skipped, its
    error appended to ``errors``.
    """
    names = {value.name for value in model.graph.input}  # not input_specs: any input type may be given
    seen: set[tuple] = set()
    for batch in given or []:
        feeds = {k: v for k, v in batch.items() if k in names}
        seen.add(_shape_key(feeds))
        yield feeds
    dynamic = has_dynamic_inputs(model)
    for number, (batch, other) in enumerate(TRIAL_SHAPES if dynamic else ((2, 3),) * max(repeats, 1)):
        try:
            feeds = random_feeds(model, batch=batch, seed=seed + number, dynamic=other)
        except VerificationError as err:
            if errors is not None:
                errors.append(err)
            continue
        if dynamic and _shape_key(feeds) in seen:
            continue
        seen.add(_shape_key(feeds))
        yield feeds


def _shape_key(feeds: dict[str, np.ndarray]) -> tuple:
    return tuple(sorted((name, tuple(np.shape(value))) for name, value in feeds.items()))


def trial_runs(model: onnx.ModelProto, count: int, seed: int = 0, given: list[dict[str, np.ndarray]] | None = None,
               optimized: bool = False) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Yield ``(feeds, outputs)`` of ``model`` at up to ``count`` distinct input shapes it accepts.

    Why: a rewrite that is right only at one shape (a probe value baked into a run-time target) must be
    caught, so checks run at several assignments of the symbolic dims.  The batches are
    :func:`trial_batches`; ``given`` ones must run, trial shapes the model itself refuses are skipped (a
    detector only takes multiples of its stride).  Raises the first error when the model runs at no
    trial shape at all.
    """
    runner, errors, done = Runner(model), [], 0
    given_count = len(given or [])
    for number, feeds in enumerate(trial_batches(model, given, seed, repeats=count, errors=errors)):
        if done >= max(count, given_count):
            return
        if number < given_count:
            outputs = runner.run(feeds, optimized)
        else:
            try:
                outputs = runner.run(feeds, optimized)
            except VerificationError as err:
                errors.append(err)
                continue
        done += 1
        yield feeds, outputs
    if done == 0 and errors:
        raise errors[0]


def make_session(model: onnx.ModelProto, optimized: bool = True, threads: int = 1,
                 prepack: bool = True) -> ort.InferenceSession | blockwise.BlockwiseSession:
    """CPU session from memory; ``optimized=False`` disables every graph optimization.

    ``prepack=False``: kernels read the weights where they are instead of keeping re-laid-out copies
    (slower per run, one copy of the weights less): for checks that run a model a few times.
    A model whose weights are too large for one session (:func:`onnxprune.blockwise.wanted`) gets a
    :class:`~onnxprune.blockwise.BlockwiseSession` with the same interface, one block session at a time.
    """
    if blockwise.wanted(model):
        # each block session runs once (over all batches): pre-packed copies of its weights would not pay off
        return blockwise.BlockwiseSession(model, lambda block: _session(block, optimized, threads, prepack=False),
                                          tag=f"{optimized}/{threads}")
    return _session(model, optimized, threads, prepack)


def _session(model: onnx.ModelProto, optimized: bool, threads: int, prepack: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort_session(model, options, providers=["CPUExecutionProvider"])  # memory-mapped weights as OrtValues
    except MemoryError:
        raise  # the memory budget: reported as such by the CLI, not as a model fault
    except Exception as err:  # onnxruntime raises its own exception hierarchy
        raise VerificationError(f"onnxruntime cannot load the model: {err}".splitlines()[0]) from err


class Runner:
    """Runs one model at any number of input shapes; a session per optimization level, made on first use.

    Why: checks that run a model at several input shapes would otherwise load (and pre-pack) its
    weights once per shape.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self._sessions: dict[bool, ort.InferenceSession] = {}

    def run(self, feeds: dict[str, np.ndarray], optimized: bool = True) -> dict[str, np.ndarray]:
        """Outputs by name."""
        if optimized not in self._sessions:
            self._sessions[optimized] = make_session(self.model, optimized, prepack=False)
        session = self._sessions[optimized]
        names = [o.name for o in session.get_outputs()]
        try:
            values = session.run(names, feeds)
        except MemoryError:
            raise  # the memory budget: reported as such by the CLI, not as a model fault
        except Exception as err:
            raise VerificationError(f"onnxruntime failed to run the model: {err}".splitlines()[0]) from err
        return dict(zip(names, values))


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimized: bool = True) -> dict[str, np.ndarray]:
    """Outputs by name."""
    return Runner(model).run(feeds, optimized)


def check_model(model: onnx.ModelProto) -> None:
    """Full ONNX checker (with shape inference); raises VerificationError with the first line."""
    try:
        full_check(model)
    except MemoryError:
        raise  # the memory budget: reported as such by the CLI, not as a model fault
    except Exception as err:
        raise VerificationError(f"onnx checker: {err}".splitlines()[0]) from err


def full_check(model: onnx.ModelProto) -> None:
    """``onnx.checker.check_model(model, full_check=True)``, minus the one verdict it cannot give.

    Why not the plain check: strict shape inference is what rejects a Transpose ``perm`` that is not a
    permutation, an initializer whose dims contradict its consumer, or a declared shape the graph cannot
    produce.  What it cannot judge: a standard op whose shape inference *is* its function body in onnx
    (no inference function of its own), where the body itself fails to infer -- onnx 1.23's
    MeanVarianceNormalization-13 references its optional ``axes`` attribute in a Constant and fails
    whenever the attribute is left at its default, although the model is valid and runs.  When every
    strict error is of that kind the structural check has already passed (it runs first), so the model
    is accepted; a single error of any other kind re-raises the checker's exception unchanged.
    Raises what the checker raises (``ValidationError``, ``InferenceError``; ``ValueError`` for a proto
    over 2 GB, which the checker can only read from a file).
    """
    try:
        onnx.checker.check_model(checkable(model), full_check=True)  # memory-mapped weights as typed inputs
    except onnx.shape_inference.InferenceError as err:
        entries = inference_error_entries(str(err))
        if not entries or not all(_inside_onnx_function(model, entry) for entry in entries):
            raise


@dataclass(frozen=True)
class InferenceErrorEntry:
    """One node's error in onnx's aggregated strict-inference message; ``nested`` when it comes from
    inside the node's subgraph or function body (the entry's text is itself an error list)."""

    op_type: str
    node: str
    text: str
    nested: bool


_ERRORS = "Inference error(s): "
_ENTRY = re.compile(r"\(op_type:([^,)]*)(?:, node name: ([^)]*))?\): ")


def inference_error_entries(message: str) -> list[InferenceErrorEntry]:
    """The top-level entries of onnx's aggregated strict-inference error, [] if it is not in that form.

    onnx writes ``[ShapeInferenceError] Inference error(s): `` followed by one ``(op_type:T[, node name:
    N]): <error>\\n`` per failing node, where ``<error>`` may itself be such a list (function bodies,
    subgraphs).  Parsed exactly; anything unexpected gives [] (callers then treat the error as real).
    """
    start = message.find(_ERRORS)
    if start < 0:
        return []
    entries, end = _parse_entries(message, start + len(_ERRORS))
    return entries if entries and message[end:].strip() == "" else []


def _parse_entries(message: str, pos: int) -> tuple[list[InferenceErrorEntry], int]:
    """Entries from ``pos`` up to the first character that does not start one; returns (entries, end)."""
    entries = []
    while (match := _ENTRY.match(message, pos)) is not None:
        body = match.end()
        newline = message.find("\n", body)
        newline = len(message) if newline < 0 else newline
        nested_at = message.find(_ERRORS, body, newline)
        if nested_at >= 0:  # a nested list: its entries each end in a newline, then this entry's own
            inner, after = _parse_entries(message, nested_at + len(_ERRORS))
            if not inner or not message.startswith("\n", after):
                return [], pos
            entries.append(InferenceErrorEntry(match.group(1), match.group(2) or "", message[body:after], True))
            pos = after + 1
        else:
            entries.append(InferenceErrorEntry(match.group(1), match.group(2) or "", message[body:newline], False))
            pos = newline + 1
    return entries, pos


def _inside_onnx_function(model: onnx.ModelProto, entry: InferenceErrorEntry) -> bool:
    """True when ``entry`` failed inside the function body onnx uses as a standard op's inference."""
    if not entry.nested:
        return False
    opsets = {o.domain or "": o.version for o in model.opset_import}
    nodes = [n for n in model.graph.node if n.op_type == entry.op_type and n.name == entry.node
             and (n.domain or "") in ("", "ai.onnx")]
    if not nodes or opsets.get("", opsets.get("ai.onnx")) is None:
        return False
    try:
        schema = onnx.defs.get_schema(entry.op_type, opsets.get("", opsets.get("ai.onnx")), "")
    except onnx.defs.SchemaError:
        return False
    has_body = schema.has_function or schema.has_context_dependent_function
    return has_body and not schema.has_type_and_shape_inference_function


@dataclass(frozen=True)
class OutputDiff:
    """How far one output is from its reference; ``relative`` is max |a-b| over max |reference|."""

    name: str
    max_abs: float
    relative: float
    ok: bool

    def to_dict(self) -> dict:
        return {"name": self.name, "max_abs": self.max_abs, "relative": self.relative, "ok": self.ok}


def compare_outputs(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], tolerance: float) -> list[OutputDiff]:
    """Per-output agreement; integer outputs must match exactly, float ones within ``tolerance``."""
    diffs = []
    for name, expected in reference.items():
        got = actual.get(name)
        if got is None or got.shape != expected.shape:
            diffs.append(OutputDiff(name, float("inf"), float("inf"), False))
            continue
        if not np.issubdtype(expected.dtype, np.floating):
            mismatch = float(np.count_nonzero(got != expected))
            diffs.append(OutputDiff(name, mismatch, mismatch, mismatch == 0))
            continue
        diffs.append(_float_diff(name, expected.astype(np.float64), got.astype(np.float64), tolerance))
    return diffs


def _float_diff(name: str, expected: np.ndarray, got: np.ndarray, tolerance: float) -> OutputDiff:
    """Relative error over finite positions; NaN/inf must sit at the same places with the same values."""
    finite = np.isfinite(expected) & np.isfinite(got)
    same_special = np.array_equal(np.where(finite, 0.0, np.nan_to_num(expected, nan=7.0, posinf=8.0, neginf=9.0)),
                                  np.where(finite, 0.0, np.nan_to_num(got, nan=7.0, posinf=8.0, neginf=9.0)))
    exp, act = expected[finite], got[finite]
    max_abs = float(np.max(np.abs(exp - act))) if exp.size else 0.0
    scale = max(float(np.max(np.abs(exp))) if exp.size else 0.0, 1e-12)
    relative = max_abs / scale if same_special else float("inf")
    return OutputDiff(name, max_abs if same_special else float("inf"), relative,
                      bool(same_special and relative <= tolerance))
