"""Calibration data: user inputs matched to the model, served batch by batch.

Why a module of its own: data-driven criteria and recovery passes all read the same inputs, several
times (statistics, then one pass per refitted layer), so calibration data is a *re-iterable* value
that yields feed dicts of ``batch_size`` samples.  Every source is checked against the model's inputs
before any session runs — name, dtype, rank and fixed dims — and a mismatch is one ``InputError`` line
naming the file, the input and what differs.

Sources:

* a ``.npz`` file: arrays keyed by input name; for a single-input model any single array (``arr_0``
  from ``np.savez(path, x)``) is that input.  An array named ``y`` holds labels and is ignored;
* a folder of ``.npz`` / ``.npy`` files, read one file at a time in name order.  Each ``.npz`` is a
  chunk of samples as above; ``.npy`` files are either named after the inputs (``input.npy``: all
  samples of that input) or, for a single-input model, chunks of samples of that input;
* (API) an iterable of feed dicts, one batch each;
* :func:`random_calibration` — seeded standard-normal inputs, only when asked for explicitly: the
  statistics of random inputs say little about real data, so reports name the source.

The first axis of every array is the sample axis.  When the model fixes its first dimension
(e.g. ``[1, 3, 224, 224]``), batches have exactly that size and a remainder is dropped (noted).
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import onnx

from onnxprune.errors import InputError, OnnxPruneError
from onnxprune.runtime.feeds import InputSpec, input_specs

LABEL_KEYS = ("y",)
DEFAULT_BATCH_SIZE = 32

Chunk = dict[str, np.ndarray]


@dataclass(frozen=True)
class CalibrationSet:
    """Validated calibration inputs; ``batches()`` can be iterated any number of times."""

    source: str  # "file" | "folder" | "iterable" | "random"
    origin: str
    samples: int
    batch_size: int
    chunks: Callable[[], Iterator[Chunk]] = field(repr=False)
    notes: tuple[str, ...] = ()
    fixed_batch: bool = False
    #: Called with (batch number, batches per pass) as batches are handed out — batch 1 starts a new pass —
    #: so a front end can show progress on long statistics and recovery passes; None in library use.
    progress: Callable[[int, int], None] | None = field(default=None, repr=False, compare=False)
    #: (input, array shape) of the first file / batch: the default ``--input-shape`` of counting
    #: (:func:`onnxprune.runtime.input_shapes.from_calibration`); empty for random inputs, whose dims are invented.
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def batches(self) -> Iterator[Chunk]:
        """Feed dicts of ``batch_size`` samples (the last one may be smaller unless the batch is fixed)."""
        total = -(-self.used_samples() // self.batch_size)
        for number, batch in enumerate(_rebatch(self.chunks(), self.batch_size, drop_last=self.fixed_batch), 1):
            if self.progress is not None:
                self.progress(number, total)
            yield batch

    @property
    def random(self) -> bool:
        return self.source == "random"

    def describe(self) -> dict[str, Any]:
        """What a report says about the data (random inputs are always called so)."""
        return {"source": self.source, "origin": self.origin, "samples": self.samples,
                "batch_size": self.batch_size, "batches": -(-self.used_samples() // self.batch_size),
                "random": self.random, "notes": list(self.notes)}

    def used_samples(self) -> int:
        """Samples that reach a session (a fixed batch dimension drops a remainder)."""
        return self.samples - self.samples % self.batch_size if self.fixed_batch else self.samples


# --------------------------------------------------------------------------------------------------
# matching arrays to inputs


def _describe_dtype(dtype: Any) -> str:
    return np.dtype(dtype).name


def _check_array(name: str, array: np.ndarray | tuple, spec: InputSpec, where: str) -> None:
    """Rank, dtype and fixed dims (the sample axis may differ) of one array against one input."""
    shape, dtype = (array.shape, array.dtype) if isinstance(array, np.ndarray) else array
    expected = "[" + ", ".join("?" if d is None else str(d) for d in spec.shape) + "]"
    if len(shape) != len(spec.shape):
        raise InputError(f"{where}: array '{name}' has shape {list(shape)} (rank {len(shape)}), input "
                         f"'{spec.name}' expects rank {len(spec.shape)} {expected}")
    for axis, (got, want) in enumerate(zip(shape, spec.shape)):
        if axis > 0 and want is not None and got != want:
            raise InputError(f"{where}: array '{name}' has shape {list(shape)}, input '{spec.name}' expects "
                             f"{expected} (axis {axis}: {got} != {want})")
    same = np.dtype(dtype) == np.dtype(spec.dtype)
    both_float = np.issubdtype(dtype, np.floating) and np.issubdtype(spec.dtype, np.floating)
    if not (same or both_float):
        raise InputError(f"{where}: array '{name}' has dtype {_describe_dtype(dtype)}, input '{spec.name}' "
                         f"expects {_describe_dtype(spec.dtype)}")
    if shape[0] == 0:
        raise InputError(f"{where}: array '{name}' is empty (0 samples)")


def _assign(keys: list[str], specs: list[InputSpec], where: str) -> dict[str, str]:
    """Input name → array key; a single-input model takes any single (non-label) array."""
    data_keys = [k for k in keys if k not in LABEL_KEYS]
    names = [s.name for s in specs]
    if not data_keys:
        raise InputError(f"{where}: no input arrays (found {_listing(keys)}; inputs: {', '.join(names)})")
    if len(specs) == 1 and len(data_keys) == 1:
        return {names[0]: data_keys[0]}
    unknown = [k for k in data_keys if k not in names]
    if unknown:
        raise InputError(f"{where}: array '{unknown[0]}' matches no model input (inputs: {', '.join(names)})")
    missing = [n for n in names if n not in data_keys]
    if missing:
        raise InputError(f"{where}: no array for input '{missing[0]}' (found {_listing(keys)})")
    return {n: n for n in names}


def _listing(keys: list[str]) -> str:
    return ", ".join(f"'{k}'" for k in keys) if keys else "nothing"


def _conform(chunk: Mapping[str, np.ndarray], specs: list[InputSpec], where: str) -> Chunk:
    """Checked copy of ``chunk`` with dtypes cast to the inputs' (float → float only)."""
    out: Chunk = {}
    counts = set()
    for spec in specs:
        array = np.asarray(chunk[spec.name])
        _check_array(spec.name, array, spec, where)
        out[spec.name] = array.astype(spec.dtype, copy=False)
        counts.add(array.shape[0])
    if len(counts) > 1:
        raise InputError(f"{where}: inputs have different sample counts {sorted(counts)}")
    return out


# --------------------------------------------------------------------------------------------------
# reading files


def _npz_headers(path: pathlib.Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array of an ``.npz`` without loading the data."""
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as handle:
                headers[member[:-4]] = _npy_header(handle)
    return headers


def _npy_header(handle: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(handle)
    return tuple(int(d) for d in shape), np.dtype(dtype)


def _read_error(path: pathlib.Path, err: BaseException) -> InputError:
    text = " ".join(str(err).split()) or type(err).__name__
    return InputError(f"cannot read calibration file '{path}': {text[:200]}")


def _load_npz(path: pathlib.Path, mapping: dict[str, str]) -> Chunk:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[key] for name, key in mapping.items()}
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, EOFError) as err:
        raise _read_error(path, err) from err


def _load_npy(path: pathlib.Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise _read_error(path, err) from err


def _npz_file(path: pathlib.Path, specs: list[InputSpec]) -> tuple[int, Callable[[], Chunk]]:
    """(samples, loader) of one ``.npz`` chunk, validated from its headers."""
    try:
        headers = _npz_headers(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise _read_error(path, err) from err
    mapping = _assign(list(headers), specs, f"calibration file '{path}'")
    counts = set()
    for spec in specs:
        _check_array(mapping[spec.name], headers[mapping[spec.name]], spec, f"calibration file '{path}'")
        counts.add(headers[mapping[spec.name]][0][0])
    if len(counts) > 1:
        raise InputError(f"calibration file '{path}': inputs have different sample counts {sorted(counts)}")
    return counts.pop(), lambda: _load_npz(path, mapping)


def _npy_file(path: pathlib.Path, spec: InputSpec) -> int:
    try:
        with open(path, "rb") as handle:
            header = _npy_header(handle)
    except (OSError, ValueError, EOFError) as err:
        raise _read_error(path, err) from err
    _check_array(path.stem, header, spec, f"calibration file '{path}'")
    return header[0][0]


def _folder(path: pathlib.Path, specs: list[InputSpec]) -> tuple[int, list[Callable[[], Chunk]]]:
    """Samples and per-file loaders of a folder of ``.npz`` / ``.npy`` files."""
    files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy") and p.is_file())
    if not files:
        raise InputError(f"calibration folder '{path}' has no .npz or .npy files")
    names = {s.name for s in specs}
    npy = [p for p in files if p.suffix == ".npy"]
    if npy and all(p.stem in names for p in npy) and len(npy) == len(specs) and len(files) == len(npy):
        counts = {_npy_file(p, next(s for s in specs if s.name == p.stem)) for p in npy}
        if len(counts) > 1:
            raise InputError(f"calibration folder '{path}': inputs have different sample counts {sorted(counts)}")
        return counts.pop(), [lambda: {p.stem: _load_npy(p) for p in npy}]
    total, loaders = 0, []
    for file in files:
        if file.suffix == ".npz":
            count, loader = _npz_file(file, specs)
        elif len(specs) == 1:
            count, loader = _npy_file(file, specs[0]), (lambda f=file: {specs[0].name: _load_npy(f)})
        else:
            raise InputError(f"calibration file '{file}': a .npy chunk needs a single-input model "
                             f"(inputs: {', '.join(sorted(names))}); name .npy files after the inputs instead")
        total += count
        loaders.append(loader)
    return total, loaders


# --------------------------------------------------------------------------------------------------
# public constructors


def _batch_size(specs: list[InputSpec], batch_size: int, samples: int, origin: str
                ) -> tuple[int, tuple[str, ...], bool]:
    """Batch size to use: the model's fixed first dim wins (a remainder of samples is then dropped)."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    fixed = {s.shape[0] for s in specs if s.shape and s.shape[0] is not None}
    if not fixed:
        return batch_size, (), False
    size = fixed.pop()
    if samples < size:
        raise InputError(f"{origin}: {samples} samples, but the model's batch dimension is fixed at {size}")
    notes = (f"batch size fixed at {size} by the model",)
    if samples % size:
        notes += (f"{samples % size} trailing sample(s) dropped to fill fixed batches",)
    return size, notes, True


def _specs(model: onnx.ModelProto) -> list[InputSpec]:
    try:
        specs = input_specs(model)
    except OnnxPruneError as err:
        raise InputError(f"calibration: {err}") from err
    if not specs:
        raise InputError("calibration: the model has no inputs")
    for spec in specs:
        if not spec.shape:
            raise InputError(f"calibration: input '{spec.name}' is a scalar; there is no sample axis")
    return specs


def load_calibration(path: str | os.PathLike[str], model: onnx.ModelProto,
                     batch_size: int = DEFAULT_BATCH_SIZE) -> CalibrationSet:
    """Calibration data from a ``.npz`` file or a folder of ``.npz``/``.npy`` files (module docstring)."""
    where = pathlib.Path(path)
    specs = _specs(model)
    if where.is_dir():
        samples, loaders = _folder(where, specs)
        source = "folder"
    elif where.is_file():
        if where.suffix == ".npy" and len(specs) == 1:
            samples, loaders = _npy_file(where, specs[0]), [lambda: {specs[0].name: _load_npy(where)}]
        elif where.suffix == ".npy":
            raise InputError(f"calibration file '{where}' holds one array but the model has {len(specs)} inputs "
                             f"({', '.join(s.name for s in specs)}); use an .npz keyed by input name")
        else:
            count, loader = _npz_file(where, specs)
            samples, loaders = count, [loader]
        source = "file"
    else:
        raise InputError(f"calibration data '{where}' does not exist")
    size, notes, fixed = _batch_size(specs, batch_size, samples, f"calibration data '{where}'")
    label = f"calibration data '{where}'"
    return CalibrationSet(source, os.fspath(where), samples, size,
                          lambda: (_conform(load(), specs, label) for load in loaders), notes, fixed,
                          shapes=_first_shapes(where, specs))


def _first_shapes(where: pathlib.Path, specs: list[InputSpec]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Array shape per input of the first file (headers only; already validated by the loaders)."""
    names = {s.name for s in specs}
    if where.is_dir():
        files = sorted(p for p in where.iterdir() if p.suffix in (".npz", ".npy") and p.is_file())
        named = [p for p in files if p.suffix == ".npy" and p.stem in names]
        if named and len(named) == len(files) == len(specs):
            return tuple((p.stem, _npy_shape(p)) for p in named)
        where = files[0]
    if where.suffix == ".npy":
        return ((specs[0].name, _npy_shape(where)),)
    headers = _npz_headers(where)
    mapping = _assign(list(headers), specs, f"calibration file '{where}'")
    return tuple((name, headers[key][0]) for name, key in mapping.items())


def _npy_shape(path: pathlib.Path) -> tuple[int, ...]:
    with open(path, "rb") as handle:
        return _npy_header(handle)[0]


def calibration_from_feeds(feeds: Iterable[Mapping[str, np.ndarray]], model: onnx.ModelProto,
                           batch_size: int | None = None) -> CalibrationSet:
    """Calibration data from feed dicts (API).  A one-shot iterator is kept in memory (inputs only)."""
    specs = _specs(model)
    names = [s.name for s in specs]
    batches: list[Chunk] = []
    for number, feed in enumerate(feeds):
        where = f"calibration batch {number}"
        if not isinstance(feed, Mapping):
            raise InputError(f"{where}: expected a dict of arrays keyed by input name, got {type(feed).__name__}")
        _assign(list(feed), specs, where)
        if len(specs) == 1 and len(feed) == 1:
            feed = {names[0]: next(iter(feed.values()))}
        batches.append(_conform(feed, specs, where))
    if not batches:
        raise InputError("calibration data is empty (no batches)")
    samples = sum(next(iter(b.values())).shape[0] for b in batches)
    size, notes, fixed = _batch_size(specs, batch_size or next(iter(batches[0].values())).shape[0], samples,
                                     "calibration data")
    return CalibrationSet("iterable", "<iterable>", samples, size, lambda: iter(batches), notes, fixed,
                          shapes=tuple((name, tuple(array.shape)) for name, array in batches[0].items()))


def random_calibration(model: onnx.ModelProto, n: int, seed: int = 0,
                       batch_size: int = DEFAULT_BATCH_SIZE,
                       input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> CalibrationSet:
    """``n`` seeded random samples: standard normal floats, integers in [0, 10), random booleans.

    Only for users who ask (``--calib-random N``): statistics of noise are not those of real data.
    Dynamic dims other than the sample axis get 3, or the ``input_shapes`` (``--input-shape``) value.
    """
    if n < 1:
        raise InputError(f"--calib-random needs at least 1 sample, got {n}")
    specs = _specs(model)
    size, notes, fixed = _batch_size(specs, batch_size, n, "random calibration")

    def chunks() -> Iterator[Chunk]:
        for index, start in enumerate(range(0, n, size)):
            rng = np.random.default_rng([seed, index])
            count = min(size, n - start)
            yield {s.name: _random_array(rng, s, count, (input_shapes or {}).get(s.name)) for s in specs}

    return CalibrationSet("random", f"random(n={n}, seed={seed})", n, size, chunks,
                          notes + ("random inputs (asked for with --calib-random): not real data",), fixed)


def _random_array(rng: np.random.Generator, spec: InputSpec, count: int,
                  given: tuple[int, ...] | None = None) -> np.ndarray:
    shape = (count,) + (tuple(given[1:]) if given else tuple(3 if d is None else d for d in spec.shape[1:]))
    if np.issubdtype(spec.dtype, np.floating):
        return rng.standard_normal(shape).astype(spec.dtype)
    if spec.dtype is np.bool_:
        return rng.random(shape) < 0.5
    return rng.integers(0, 10, size=shape).astype(spec.dtype)


# --------------------------------------------------------------------------------------------------
# batching


def _rebatch(chunks: Iterable[Chunk], size: int, drop_last: bool = False) -> Iterator[Chunk]:
    """Regroup chunks of any sizes into batches of ``size`` samples (memory: one batch + one chunk)."""
    pending: list[Chunk] = []
    count = 0
    for chunk in chunks:
        start, total = 0, next(iter(chunk.values())).shape[0]
        while start < total:
            take = min(size - count, total - start)
            pending.append({k: v[start:start + take] for k, v in chunk.items()})
            count += take
            start += take
            if count == size:
                yield _join(pending)
                pending, count = [], 0
    if pending and not drop_last:
        yield _join(pending)


def _join(parts: list[Chunk]) -> Chunk:
    if len(parts) == 1:
        return {k: np.ascontiguousarray(v) for k, v in parts[0].items()}
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
