"""Inputs for onnxruntime runs: random feeds that respect declared dims, and trial batches at distinct
shapes the model accepts.

Why distinct shapes: a rewrite that is right only at one shape (a probe value baked into a run-time
target) must be caught by the checks that run the model, so every check runs at more than one shape.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnx

from onnxprune.errors import VerificationError
from onnxprune.runtime import blockwise
from onnxprune.runtime.sessions import Runner


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



_SUM = re.compile(r"^\s*[A-Za-z_]\w*(\s*\+\s*([A-Za-z_]\w*|\d+))+\s*$")


def symbol_sum(symbol: str | None, batch_symbols: set, batch: int, dynamic: int) -> int | None:
    """The value of a dim named as a sum of symbols (``past_sequence_length + sequence_length``, optimum's
    name for a KV model's attention-mask length), each term valued as random inputs value it; None for a
    plain symbol.  Why: one value for every symbol would give the mask a length the cache cannot have."""
    if not symbol or not _SUM.match(symbol):
        return None
    terms = [t.strip() for t in symbol.split("+")]
    return sum(int(t) if t.isdigit() else batch if t in batch_symbols else dynamic for t in terms)


def random_feeds(model: onnx.ModelProto, batch: int = 2, seed: int = 0, dynamic: int = 3,
                 shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs: dynamic first dims get ``batch``, other dynamic dims ``dynamic``; an input named in
    ``shapes`` (``--input-shape``, checked by :mod:`onnxprune.runtime.input_shapes`) gets exactly that shape.

    A named symbol has one value in every input that uses it: the batch value wherever some input has it
    as its first dim (``input_ids[batch, seq]`` and ``mask[batch, seq]`` agree).
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    specs = input_specs(model)
    batch_symbols = {spec.symbols[0] for spec in specs if spec.symbols and spec.symbols[0]}
    for spec in specs:
        symbols = spec.symbols or (None,) * len(spec.shape)
        shape = tuple(d if d is not None else symbol_sum(symbols[i], batch_symbols, batch, dynamic)
                      or (batch if i == 0 or symbols[i] in batch_symbols else dynamic)
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
    if blockwise.wanted(model):  # each block once for all batches; any failure: the exact batch-by-batch path
        first = list(itertools.islice(trial_batches(model, given, seed, repeats=count), max(count, given_count)))
        outcomes = runner.run_each(first, optimized) if len(first) > 1 else []
        if len(outcomes) == max(count, given_count) and not any(isinstance(o, VerificationError) for o in outcomes):
            yield from zip(first, outcomes)
            return
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

