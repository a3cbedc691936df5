"""Input shapes: the concrete shape of every graph input that counts, budgets, latency and reports use.

Why: FLOPs/MACs of a model with symbolic dims depend on them.  Counting a detector ``[batch, 3, height,
width]`` with every symbol at 1 gives a figure for a 1×1 image (2.54 MFLOPs for a 2 GFLOPs model), and a
FLOPs budget bisecting on it optimises nothing real.  So the user states the shapes
(``--input-shape images:1,3,320,320``, repeatable, as onnxsim / Polygraphy / trtexec take them; recipes:
``input_shapes = {images = [1, 3, 320, 320]}``), or they come from the calibration data, and every count
says at which shapes it was made (:class:`CountedAt`).

Semantics, decided once here:

* A given shape is the whole shape of that input, batch included: ``images:8,3,320,320`` counts for a
  batch of 8.  Each value must be positive and equal every fixed dim of the model; the rank must match.
* A symbol shared by several inputs (``attention_mask`` and ``input_ids`` both ``[N, S]``) takes the value
  given for any of them in the others; two given inputs disagreeing on one symbol are refused.
* Calibration data (real data, not ``--calib-random``) supplies the default: each input's per-sample
  array shape (first file / batch), with a symbolic batch (axis 0) set to 1, so figures stay **per
  sample** as before; a fixed batch stays fixed.
* Without shapes a symbolic dim at axis 0 is the batch and is set to 1 (per sample, as always); any other
  symbolic dim is also set to 1, but the figure then says so (``per sample with symbolic dims W=1 (give
  --input-shape for real figures)``) and FLOPs / latency targets refuse to run
  (:func:`require_known_shapes`).  A symbol that appears at axis 0 of some input counts as a batch symbol
  everywhere (a sequence-first ``[S, B, I]`` input is therefore counted per time step).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import onnx

from onnxprune.errors import InputError

if TYPE_CHECKING:
    from onnxprune.runtime.calibration import CalibrationSet

Shape = tuple[int, ...]

FLAG = "--input-shape"


@dataclass(frozen=True)
class InputShapes:
    """Input name → concrete shape (checked against a model by :func:`resolve`), and where they came from.

    ``source`` is ``"given"`` (CLI, recipe, API, a replayed plan) or ``"calibration"`` (the data's shapes).
    Frozen and hashable, so options holding it stay values.
    """

    shapes: tuple[tuple[str, Shape], ...] = ()
    source: str = "given"

    @classmethod
    def of(cls, mapping: Mapping[str, Sequence[int]], source: str = "given") -> "InputShapes":
        """From a mapping (sorted by nothing: the order given is kept for printing)."""
        return cls(tuple((str(name), tuple(int(d) for d in dims)) for name, dims in mapping.items()), source)

    def as_dict(self) -> dict[str, Shape]:
        return dict(self.shapes)

    def to_dict(self) -> dict[str, list[int]]:
        """JSON form (plans, reports): ``{"images": [1, 3, 320, 320]}``."""
        return {name: list(dims) for name, dims in self.shapes}

    def __bool__(self) -> bool:
        return bool(self.shapes)

    def text(self) -> str:
        """``images[1,3,320,320]``, inputs separated by a space: how every figure names its shapes."""
        return " ".join(f"{name}[{','.join(map(str, dims))}]" for name, dims in self.shapes)


def coerce(value: "InputShapes | Mapping[str, Sequence[int]] | None") -> InputShapes | None:
    """An :class:`InputShapes` from what options and plans may carry (a JSON dict after a replay)."""
    if value is None or isinstance(value, InputShapes):
        return value or None
    if isinstance(value, Mapping):
        return InputShapes.of(value) or None
    raise InputError(f"input shapes must map input names to lists of integers, got {type(value).__name__}")


# ---------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------

_DIM = re.compile(r"-?\d+")


def parse_input_shape(text: str, where: str = FLAG) -> tuple[str, Shape]:
    """``NAME:D0,D1,...`` (or ``NAME:D0xD1x...``) → (name, dims).  The name may itself contain ``:``
    (``input:0`` of TensorFlow exports): the shape is what follows the last colon."""
    name, colon, dims_text = text.strip().rpartition(":")
    example = "(expected NAME:D0,D1,..., e.g. images:1,3,320,320)"
    if not colon or not name:
        raise InputError(f"{where} '{text}' is malformed {example}")
    parts = [p.strip() for p in re.split(r"[,xX]", dims_text.strip())] if dims_text.strip() else []
    if not parts or any(not _DIM.fullmatch(p) for p in parts):
        raise InputError(f"{where} '{text}': input '{name}' has a malformed shape '{dims_text}' {example}")
    dims = tuple(int(p) for p in parts)
    bad = next((d for d in dims if d <= 0), None)
    if bad is not None:
        raise InputError(f"{where} '{text}': input '{name}' has the non-positive dim {bad} (every dim must be >= 1)")
    return name, dims


def parse_input_shapes(values: Iterable[str], where: str = FLAG) -> dict[str, Shape]:
    """Every ``--input-shape`` value; an input named twice is refused."""
    out: dict[str, Shape] = {}
    for value in values:
        name, dims = parse_input_shape(value, where)
        if name in out:
            raise InputError(f"{where}: input '{name}' is given twice")
        out[name] = dims
    return out


def from_recipe(value: Any, where: str) -> dict[str, Shape]:
    """A recipe's ``input_shapes``: a table ``{images = [1, 3, 320, 320]}`` or a list of ``"NAME:D0,..."``."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return parse_input_shapes(value, f"{where}: option 'input_shapes'")
    if isinstance(value, dict):
        out: dict[str, Shape] = {}
        for name, dims in value.items():
            if not isinstance(dims, list) or not dims or any(isinstance(d, bool) or not isinstance(d, int) for d in dims):
                raise InputError(f"{where}: option 'input_shapes': input '{name}' must be a list of integers, "
                                 f"got {dims!r}")
            out[name] = parse_input_shape(f"{name}:{','.join(map(str, dims))}", f"{where}: option 'input_shapes'")[1]
        return out
    raise InputError(f"{where}: option 'input_shapes' must be a table (images = [1, 3, 320, 320]) or a list of "
                     "\"NAME:D0,D1,...\" strings")


# ---------------------------------------------------------------------------------------------------
# Checking against a model
# ---------------------------------------------------------------------------------------------------


def model_inputs(model: onnx.ModelProto) -> dict[str, tuple[Any, ...] | None]:
    """Real graph inputs (initializers listed as inputs skipped) → dims (int | symbol | None), or None
    when the input declares no shape at all."""
    weights = {init.name for init in model.graph.initializer}
    out: dict[str, tuple[Any, ...] | None] = {}
    for value in model.graph.input:
        if value.name in weights:
            continue
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
            out[value.name] = None
            continue
        out[value.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                                else (d.dim_param or None) for d in tensor.shape.dim)
    return out


def _text(dims: Sequence[Any]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


def resolve(model: onnx.ModelProto, given: Mapping[str, Sequence[int]] | InputShapes | None,
            source: str = "given", where: str = FLAG) -> InputShapes | None:
    """Check ``given`` against ``model``'s inputs (name, rank, fixed dims, positive values, shared symbols
    agreeing) and return it as :class:`InputShapes` (None when nothing was given).  Every message names the
    input."""
    if isinstance(given, InputShapes):
        source, given = given.source, given.as_dict()
    if not given:
        return None
    inputs = model_inputs(model)
    symbols: dict[str, tuple[int, str]] = {}
    for name, dims in given.items():
        if name not in inputs:
            raise InputError(f"{where}: the model has no input '{name}' (inputs: {', '.join(inputs) or 'none'})")
        declared, dims = inputs[name], tuple(int(d) for d in dims)
        if any(d <= 0 for d in dims):
            raise InputError(f"{where}: input '{name}' has a non-positive dim in {list(dims)}")
        if declared is None:
            continue
        if len(dims) != len(declared):
            raise InputError(f"{where}: input '{name}' has rank {len(declared)} {_text(declared)}, "
                             f"the shape {list(dims)} has rank {len(dims)}")
        for axis, (want, got) in enumerate(zip(declared, dims)):
            if isinstance(want, int) and want != got:
                raise InputError(f"{where}: input '{name}' has the fixed dim {want} at axis {axis} "
                                 f"{_text(declared)}, the shape {list(dims)} says {got}")
            if isinstance(want, str):
                if want in symbols and symbols[want][0] != got:
                    value, other = symbols[want]
                    raise InputError(f"{where}: input '{name}' sets symbol '{want}' to {got}, input '{other}' "
                                     f"to {value}")
                symbols.setdefault(want, (got, name))
    return InputShapes.of(given, source)


def from_calibration(model: onnx.ModelProto, calibration: "CalibrationSet | None") -> InputShapes | None:
    """The default shapes from real calibration data: per-sample array shapes, batch dim 1 when symbolic.

    None for random calibration (its dims are invented) or when the data carries no shapes.
    """
    if calibration is None or calibration.random or not calibration.shapes:
        return None
    inputs = model_inputs(model)
    shapes = {}
    for name, dims in calibration.shapes:
        declared = inputs.get(name)
        first = declared[0] if declared else None
        shapes[name] = ((first if isinstance(first, int) else 1), *dims[1:]) if dims else dims
    return resolve(model, shapes, "calibration", "calibration data")


# ---------------------------------------------------------------------------------------------------
# What a count was made at
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CountedAt:
    """The concrete shape every input was counted (or timed) at, and which symbolic dims had no value.

    ``symbolic`` lists the non-batch symbolic dims set to the fill value (``W``, or ``input[2]`` for an
    anonymous one); ``per_sample`` says a symbolic batch was set to 1; ``source`` is where given shapes
    came from (``given`` | ``calibration``), ``model`` when none were given.
    """

    inputs: tuple[tuple[str, Shape], ...]
    symbolic: tuple[str, ...] = ()
    per_sample: bool = False
    source: str = "model"
    fill: int = 1

    def as_dict(self) -> dict[str, Shape]:
        return dict(self.inputs)

    @property
    def shapes_text(self) -> str:
        return InputShapes(self.inputs).text()

    def label(self) -> str:
        """What a figure means, for printing after its name: ``at images[1,3,320,320]``, ``per sample``,
        ``per sample with symbolic dims W=1 (give --input-shape for real figures)``, or ``""`` (static)."""
        if self.symbolic:
            dims = ", ".join(f"{s}={self.fill}" for s in self.symbolic)
            head = f"at {self.shapes_text}" if self.source != "model" else "per sample"
            return f"{head} with symbolic dims {dims} (give {FLAG} for real figures)"
        if self.source != "model":
            return f"at {self.shapes_text}"
        return "per sample" if self.per_sample else ""

    def to_dict(self) -> dict[str, Any]:
        """JSON: ``input_shapes`` is the shapes counted at, or ``"symbolic"`` when some non-batch symbolic
        dim had no value (the figures then mean little); the details follow."""
        known = not self.symbolic
        return {"input_shapes": {n: list(d) for n, d in self.inputs} if known else "symbolic",
                "counted_at": {n: list(d) for n, d in self.inputs}, "source": self.source,
                "per_sample": self.per_sample, "symbolic_dims": {s: self.fill for s in self.symbolic},
                "label": self.label()}


def counted_at(model: onnx.ModelProto, shapes: InputShapes | None = None, fill: int = 1) -> CountedAt:
    """The shape each input of ``model`` is counted at: given shapes first, then symbols they fix (shared
    by other inputs), then ``fill`` for the rest (module docstring)."""
    inputs = model_inputs(model)
    given = shapes.as_dict() if shapes else {}
    values: dict[str, int] = {}
    for name, dims in given.items():
        for want, got in zip(inputs.get(name) or (), dims):
            if isinstance(want, str):
                values.setdefault(want, got)
    batch_symbols = {dims[0] for dims in inputs.values() if dims and isinstance(dims[0], str)}
    concrete, symbolic, per_sample = [], [], False
    for name, dims in inputs.items():
        if name in given:
            concrete.append((name, tuple(given[name])))
            continue
        if dims is None:
            symbolic.append(f"{name}[?]")
            continue
        out = []
        for axis, dim in enumerate(dims):
            if isinstance(dim, int):
                out.append(dim)
            elif isinstance(dim, str) and dim in values:
                out.append(values[dim])
            else:
                out.append(fill)
                if axis == 0 or dim in batch_symbols:
                    per_sample = True
                else:
                    label = dim if isinstance(dim, str) else f"{name}[{axis}]"
                    if label not in symbolic:
                        symbolic.append(label)
        concrete.append((name, tuple(out)))
    return CountedAt(tuple(concrete), tuple(symbolic), per_sample, shapes.source if shapes else "model", fill)


def require_known_shapes(model: onnx.ModelProto, shapes: InputShapes | None, what: str) -> None:
    """Refuse ``what`` (``--target-flops 0.7``) when symbolic dims other than the batch have no value: a
    target on figures counted at 1 would optimise a 1×1 image.  The message shows an ``--input-shape`` to
    fill in."""
    counted = counted_at(model, shapes)
    if not counted.symbolic:
        return
    inputs = model_inputs(model)

    def unresolved(name: str) -> bool:
        dims = inputs[name]
        return dims is None or any(x in counted.symbolic or f"{name}[{a}]" in counted.symbolic
                                   for a, x in enumerate(dims))

    name = next(n for n in inputs if unresolved(n))
    dims = inputs[name]
    example = f"{name}:" + ("D0,D1,..." if dims is None else ",".join(
        "1" if a == 0 and not isinstance(x, int) else str(x) if x is not None else f"D{a}" for a, x in enumerate(dims)))
    raise InputError(f"{what} needs {FLAG}: input '{name}' has symbolic dims "
                     f"{', '.join(s for s in counted.symbolic)} that decide the cost (e.g. {FLAG} {example} with "
                     "real values)")
