"""Latency model for ``--target-latency``: per-layer width → latency tables measured with onnxruntime.

Why tables and not whole-model runs: a budget search evaluates a dozen candidate plans, and timing each
pruned model well enough to bisect on would take minutes on a ResNet-50.  Instead every prunable
compute layer is timed *once*, alone, as a tiny single-op model at its real input shape, for a small
grid of widths (:data:`FRACTIONS_2D` / :data:`FRACTIONS_1D` of each prunable axis, rounded up to
hardware-aligned multiples).  A candidate's estimate is then a table lookup per layer:

* ``conv`` (Conv, group 1) and ``gemm``/``matmul`` (constant weight): a 2-D grid over (input width,
  output width); an axis no prunable group touches has one point (its full width);
* ``depthwise`` (Conv with one input channel per group): a 1-D grid over the group count.

Between grid points the estimate is bilinear; below the smallest point it falls linearly to (0, 0).
Each grid point is the *fastest* of its interleaved runs: interference from other processes only ever
adds time, so on a shared machine the minimum is the stable statistic (``timeit``'s advice).  Tables
are then made monotone from above (every point is the minimum of itself and all wider points):
removing channels never costs time, a point slower than a wider one is interference, and a monotone
estimate keeps the budget bisection exact.

Every other op (activations, pooling, additions, layers the kinds above do not cover, session
overhead) is the **remainder**: the share of the whole original model's time that its layers, each
timed alone at full width in the *same* interleaved rounds as the original (medians), do not account
for, applied to the tables' full-width sum.  Timing them together matters: cached tables were measured
under another load than the machine has now.  For a candidate the remainder shrinks in proportion to
the layers' estimate: in onnxruntime most of it rides with the layers (activations and batch norms
fused into the convolutions, NCHWc reorders and residual additions at the layers' widths).  A first
version scaled it by output activations (linear in width) instead, and its first-round estimates were
consistently pessimistic (MobileNetV2-sized: estimated 0.59, measured 0.52); what the proportional
model misses is left to the measured correction in :mod:`onnxprune.planning.budget`.

The per-run call overhead of onnxruntime (fastest run of a one-element Identity model) is subtracted
from every single-op time, so a thin layer is not charged a whole ``session.run``.

Tables are cached in a JSON file (``--latency-cache``, ``$ONNXPRUNE_LATENCY_CACHE``, default
``~/.cache/onnxprune/latency.json``) keyed by the layer signature (op, attributes, shapes, grid) and
the measuring environment (execution provider, threads, onnxruntime version, CPU model, method
version :data:`SCHEME`), so a second run on the same machine measures no layer again.  The inputs
named in ``input_shapes`` (``--input-shape``) take those shapes; every other symbolic dimension of the
model is set to ``batch``, for the tables and the confirming runs alike.

Every session is checked to be run by the provider asked for (:func:`onnxprune.measurement.bench.check_provider`):
onnxruntime silently falls back to its CPU provider when a provider listed as available cannot run the
model (``AzureExecutionProvider`` runs no standard op), and CPU timings stored under another provider's
name would mislead the search, the report and the cache.  Such a provider is refused with one line; the
report records how many of the original's nodes each provider runs (``nodes_by_provider``).

The estimate is only a guide: :mod:`onnxprune.planning.budget` confirms the chosen plan by timing the pruned
model against the original (:func:`measure_models`) and corrects the estimate when they disagree.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import json
import math
import os
import pathlib
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxprune.measurement.bench import DEFAULT_PROVIDER, interleaved_ms, nodes_by_provider, run_once, timing_session
from onnxprune.errors import InputError
from onnxprune.runtime.executor import LOCAL, Executor
from onnxprune.runtime.input_shapes import InputShapes, counted_at
from onnxprune.io.files import write_bytes
from onnxprune.progress import Progress
from onnxprune.ir.layer_table import LAYER_TABLE, WeightAxes, attributes, layout_of, row_of, weight_axes
from onnxprune.ir.shapes import infer_static_shapes
from onnxprune.runtime.feeds import random_feeds

from onnxprune.methods.prepared import Prepared

#: Version of the measuring method; part of every cache key, bump it when grids or timing change.
SCHEME = 2
#: Grid fractions of a prunable axis (2-D tables: both axes; 1-D tables are cheap, so finer).
FRACTIONS_2D = (0.25, 0.5, 0.75, 1.0)
FRACTIONS_1D = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
#: (at least this many channels, multiple): grid widths are rounded up to the NCHWc blocks of
#: onnxruntime's CPU kernels (16 with AVX-512, 8 with AVX2; see onnxprune.planning.alignment), so the tables are
#: measured at the widths kernels are fast at — the widths ``--round-to`` produces.
ALIGN_STEPS = ((32, 16), (16, 8))
#: Wall-clock budget of one table's timed rounds, and the bounds on its round count.
TABLE_SECONDS, TABLE_ROUNDS = 0.3, (3, 15)
#: Same for a whole-model comparison (original vs pruned, interleaved).
CONFIRM_SECONDS, CONFIRM_ROUNDS = 3.0, (10, 60)
CACHE_ENV = "ONNXPRUNE_LATENCY_CACHE"



@dataclass(frozen=True)
class LatencySettings:
    """Where and how latency is measured; part of every cache key except ``cache`` and ``rounds``.

    ``tolerance`` is the band (absolute, on the latency ratio) the *measured* ratio of the chosen plan
    must fall in before the estimate is corrected; ``rounds`` bounds search + confirmation rounds.
    """

    threads: int = 1
    provider: str = DEFAULT_PROVIDER
    batch: int = 1
    cache: str | None = None
    tolerance: float = 0.05
    rounds: int = 3
    input_shapes: InputShapes | None = None  # layer shapes enter the cache key through Layer.signature

    def shapes_of(self, model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
        """Every input's shape to measure ``model`` at: ``input_shapes``, then ``batch`` for other symbols."""
        return counted_at(model, self.input_shapes, fill=self.batch).as_dict()

    def validate(self) -> None:
        if self.threads < 1:
            raise InputError(f"--latency-threads must be >= 1, got {self.threads}")
        if self.batch < 1:
            raise InputError(f"--latency-batch must be >= 1, got {self.batch}")
        available = ort.get_available_providers()
        if self.provider not in available:
            raise InputError(f"--latency-provider '{self.provider}' is not available in this onnxruntime "
                             f"(available: {', '.join(available)})")
        if not 0.0 < self.tolerance < 1.0 or self.rounds < 1:
            raise InputError(f"latency tolerance must be in (0, 1) and rounds >= 1, got {self.tolerance}, {self.rounds}")

    def cache_path(self) -> pathlib.Path:
        """The cache file: ``cache`` if given, else ``$XDG_CACHE_HOME`` or ``~/.cache``/onnxprune/latency.json."""
        if self.cache:
            return pathlib.Path(self.cache).expanduser()
        root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return pathlib.Path(root) / "onnxprune" / "latency.json"

    def environment(self) -> dict[str, Any]:
        """What a measurement depends on besides the layer: the cache key's second half."""
        return {"scheme": SCHEME, "provider": self.provider, "threads": self.threads,
                "onnxruntime": ort.__version__, "cpu": cpu_model()}


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what ``platform`` knows), for cache keys and reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# ---------------------------------------------------------------------------------------------------
# Layers: what is timed, and how a (pruned) model's node maps to table coordinates.
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One modelled node: its kind, the shapes of its single-op model at full width, its grid.

    ``full`` are the full widths of the table axes, ``grid`` the measured widths per axis (one point
    for an axis that cannot change).
    """

    node: str
    kind: str
    op: str
    attrs: tuple[tuple[str, Any], ...]
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    bias_shape: tuple[int, ...] | None
    full: tuple[int, ...]
    grid: tuple[tuple[int, ...], ...]
    opset: int

    def signature(self) -> dict[str, Any]:
        """Everything the single-op models depend on (no node name: identical layers share a table)."""
        return {"kind": self.kind, "op": self.op, "attrs": [list(a) for a in self.attrs], "x": list(self.x_shape),
                "w": list(self.w_shape), "bias": None if self.bias_shape is None else list(self.bias_shape),
                "grid": [list(g) for g in self.grid], "opset": self.opset}


def grid_widths(full: int, variable: bool, fractions: Sequence[float]) -> tuple[int, ...]:
    """Widths measured on one axis: aligned fractions of ``full`` (always including ``full``)."""
    if not variable or full <= 1:
        return (full,)
    step = next((multiple for least, multiple in ALIGN_STEPS if full >= least), 1)
    widths = {min(full, max(1, math.ceil(f * full / step) * step)) for f in fractions}
    return tuple(sorted(widths | {full, max(step, full // step * step)}))  # the widest aligned width too


def _attrs(node: onnx.NodeProto, drop: tuple[str, ...] = ()) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((a.name, helper.get_attribute_value(a)) for a in node.attribute
                        if a.name not in drop and a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS,
                                                             onnx.AttributeProto.FLOAT, onnx.AttributeProto.STRING)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class _Context:
    """What describing a node needs: shapes at the latency batch, constant weights, prunable axes."""

    shapes: Mapping[str, tuple[int, ...]]
    weights: Mapping[str, onnx.TensorProto]
    variable: frozenset[tuple[str, int]]  # (weight tensor, axis) that some prunable group cuts
    opset: int


def _input_name(node: onnx.NodeProto, index: int | None) -> str:
    """Name of input ``index`` ("" when the row has no such input or the node leaves it out)."""
    return node.input[index] if index is not None and index < len(node.input) else ""


def _conv_layer(node: onnx.NodeProto, ctx: _Context) -> Layer | None:
    """Conv with group 1 (2-D table over Cin, Cout) or depthwise (1-D over the group count)."""
    row = row_of(node)
    x, out = ctx.shapes.get(node.input[0]), ctx.shapes.get(node.output[0])
    w_name, b_name = _input_name(node, row.weight), _input_name(node, row.bias)
    weight = ctx.weights.get(w_name)
    if x is None or out is None or weight is None or len(x) < 3:
        return None
    w = tuple(weight.dims)
    group = row.layout.group(attributes(node))
    bias = tuple(ctx.weights[b_name].dims) if b_name in ctx.weights else None
    axes = weight_axes(node, len(w))
    if group == 1:
        full = (w[axes.inputs], w[axes.outputs])
        grid = tuple(grid_widths(f, (w_name, axis) in ctx.variable, FRACTIONS_2D)
                     for f, axis in zip(full, (axes.inputs, axes.outputs)))
        kind = "conv"
    elif w[axes.grouped] == 1 and x[1] == group:
        full = (group,)
        grid = (grid_widths(group, (w_name, axes.outputs) in ctx.variable, FRACTIONS_1D),)
        kind = "depthwise"
    else:
        return None  # grouped conv with several channels per group: part of the remainder
    return Layer(node.name, kind, "Conv", tuple((k, _jsonable(v)) for k, v in _attrs(node, ("group",))),
                 tuple(x), w, bias, full, grid, ctx.opset)


def _gemm_layer(node: onnx.NodeProto, ctx: _Context) -> Layer | None:
    """Gemm / MatMul whose second operand is a constant 2-D weight: 2-D table over (K, N)."""
    row = row_of(node)
    x, out = ctx.shapes.get(node.input[0]), ctx.shapes.get(node.output[0])
    w_name, b_name = _input_name(node, row.weight), _input_name(node, row.bias)
    weight = ctx.weights.get(w_name)
    if x is None or out is None or weight is None or len(weight.dims) != 2 or node.input[0] in ctx.weights:
        return None
    attrs = dict(_attrs(node))
    axes = weight_axes(node, 2)  # Gemm's transB
    k_axis, n_axis = axes.inputs, axes.outputs
    w = tuple(weight.dims)
    full = (w[k_axis], w[n_axis])
    grid = tuple(grid_widths(f, (w_name, axis) in ctx.variable, FRACTIONS_2D)
                 for f, axis in zip(full, (k_axis, n_axis)))
    bias = tuple(ctx.weights[b_name].dims) if b_name in ctx.weights else None
    if b_name and bias is None:
        return None  # a computed bias: not a layer we can time alone
    kind = "gemm" if node.op_type == "Gemm" else "matmul"
    return Layer(node.name, kind, node.op_type, tuple((k, _jsonable(v)) for k, v in attrs.items()), tuple(x), w,
                 bias, full, grid, ctx.opset)


#: a layer-table row's ``latency`` kind → describe(node, context) -> Layer | None (None: the node is part of
#: the remainder).  A new op timed like an existing kind is one row of the layer table.
LAYER_RULES: dict[str, Callable[[onnx.NodeProto, _Context], Layer | None]] = {
    "conv": _conv_layer, "gemm": _gemm_layer,
}


def widths_in(layer: Layer, node: onnx.NodeProto, weights: Mapping[str, onnx.TensorProto]) -> tuple[int, ...]:
    """Table coordinates of ``layer`` in a (pruned) model, read from its weight shape and ``group``."""
    weight = weights.get(_input_name(node, row_of(node).weight))
    if weight is None:
        return layer.full
    w = tuple(weight.dims)
    if layer.kind == "depthwise":
        return (layout_of(node).group(attributes(node)),)
    axes = _layer_axes(layer)
    return (w[axes.inputs], w[axes.outputs])


def _layer_axes(layer: Layer) -> WeightAxes:
    """The weight axes of a described layer (its op and attributes), from the layer table."""
    return LAYER_TABLE[("", layer.op)].layout.weight_axes(dict(layer.attrs), len(layer.w_shape))


# ---------------------------------------------------------------------------------------------------
# Single-op models.
# ---------------------------------------------------------------------------------------------------


def single_op_model(layer: Layer, widths: Sequence[int]) -> onnx.ModelProto:
    """The layer alone at ``widths``: one float input, random constant weights, the layer's attributes."""
    rng = np.random.default_rng(0)
    x, w, attrs = list(layer.x_shape), list(layer.w_shape), dict(layer.attrs)
    if layer.kind == "conv":
        x[1], w[1], w[0] = widths[0], widths[0], widths[1]
    elif layer.kind == "depthwise":
        multiplier = layer.w_shape[0] // layer.full[0]
        x[1], w[0], attrs["group"] = widths[0], widths[0] * multiplier, widths[0]
    else:
        axes, layout = _layer_axes(layer), LAYER_TABLE[("", layer.op)].layout
        x_axis = layout.input_axis(attrs, len(x))  # Gemm's transA; MatMul: the last axis
        x[x_axis], w[axes.inputs], w[axes.outputs] = widths[0], widths[0], widths[1]
    inits = [numpy_helper.from_array(rng.standard_normal(w).astype(np.float32) * np.float32(0.05), "w")]
    inputs = ["x", "w"]
    if layer.bias_shape is not None:
        inits.append(numpy_helper.from_array(rng.standard_normal(_bias_shape(layer, widths)).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node(layer.op, inputs, ["y"], **attrs)
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", layer.opset)])


def _bias_shape(layer: Layer, widths: Sequence[int]) -> list[int]:
    """The bias at ``widths``: per output channel/feature it follows the output width, else (broadcast) it stays."""
    assert layer.bias_shape is not None
    full_out = layer.w_shape[0] if layer.kind in ("conv", "depthwise") else layer.full[-1]
    if math.prod(layer.bias_shape) != full_out:
        return list(layer.bias_shape)
    out = widths[-1] * (layer.w_shape[0] // layer.full[0] if layer.kind == "depthwise" else 1)
    return [out] if len(layer.bias_shape) == 1 else [1] * (len(layer.bias_shape) - 1) + [out]


def _overhead_model(opset: int) -> onnx.ModelProto:
    """One Identity on one element: what a ``session.run`` costs besides the work."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "overhead",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _rounds(round_ms: float, seconds: float, bounds: tuple[int, int]) -> int:
    """Timed rounds that fit ``seconds`` (a round runs every model once), within ``bounds``."""
    return int(min(bounds[1], max(bounds[0], seconds * 1e3 / max(round_ms, 1e-3))))


def _time_models(models: Sequence[onnx.ModelProto], feeds: Sequence[dict[str, np.ndarray]],
                 settings: LatencySettings, seconds: float, bounds: tuple[int, int], where: str,
                 progress: Callable[[int, int], None] | None = None,
                 statistic: Callable[[np.ndarray], float] = np.median
                 ) -> tuple[list[float], int, dict[str, int] | None]:
    """``statistic`` of each model's ms, interleaved (:func:`onnxprune.measurement.bench.interleaved_ms`), the rounds,
    and how many nodes of the first model each provider runs (:func:`onnxprune.measurement.bench.nodes_by_provider`).

    One untimed warm-up round, then one timed round to size the run to ``seconds``.  Every session
    comes from :func:`onnxprune.measurement.bench.timing_session`, which refuses a ``settings.provider`` that does
    not actually run the model (onnxruntime would time its CPU fallback under the provider's name).
    """
    sessions = [timing_session(m, settings.threads, f"{where} #{i}", settings.provider) for i, m in enumerate(models)]
    calls = [lambda s=s, f=f, i=i: run_once(s, f, f"{where} #{i}") for i, (s, f) in enumerate(zip(sessions, feeds))]
    probe = interleaved_ms(calls, warmup=1, repeat=1)
    rounds = _rounds(sum(p[0] for p in probe), seconds, bounds)
    total = rounds + 1
    samples = interleaved_ms(calls, 0, rounds, None if progress is None else (lambda n: progress(n + 1, total)))
    values = [float(statistic(np.asarray(p + s))) for p, s in zip(probe, samples)]
    return values, rounds + 1, nodes_by_provider(sessions[0])


# ---------------------------------------------------------------------------------------------------
# Tables and their cache.
# ---------------------------------------------------------------------------------------------------


@dataclass
class Table:
    """Measured ms on a grid (axis 0 = first width), already made monotone."""

    grid: tuple[tuple[int, ...], ...]
    ms: np.ndarray

    def estimate(self, widths: Sequence[int]) -> float:
        """Bilinear in the grid; from (0, 0) to the first point below it; clamped at the full width.

        Every step is a convex combination of monotone values, so the estimate stays monotone.
        """
        values = self.ms
        for axis in reversed(range(len(self.grid))):
            xs = np.concatenate([[0.0], np.asarray(self.grid[axis], dtype=float)])
            rows = values.reshape(-1, values.shape[-1])
            values = np.array([np.interp(widths[axis], xs, np.concatenate([[0.0], row])) for row in rows])
            values = values.reshape(self.ms.shape[:axis])
        return float(values)


def monotone(ms: np.ndarray) -> np.ndarray:
    """Non-decreasing along every axis, from above: each point becomes the minimum over all points at
    least as wide (a narrower layer slower than a wider one is interference, which only adds time)."""
    out = np.asarray(ms, dtype=float)
    for axis in range(out.ndim):
        out = np.flip(np.minimum.accumulate(np.flip(out, axis), axis=axis), axis)
    return out


def cache_key(layer: Layer, settings: LatencySettings) -> str:
    """SHA-256 of the layer signature and the measuring environment."""
    text = json.dumps({"layer": layer.signature(), "env": settings.environment(), "batch": settings.batch},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def load_cache(path: pathlib.Path) -> dict[str, Any]:
    """The cache's entries; a missing or unparsable file is an empty cache (it is only a cache)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError) as err:
        if path.is_dir():
            raise InputError(f"latency cache '{path}' is a folder, not a file") from err
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def save_cache(path: pathlib.Path, new: Mapping[str, Any]) -> None:
    """Merge ``new`` into the file (re-read first: another run may have added entries) atomically."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"latency cache folder '{path.parent}' cannot be created ({err.strerror})") from err
    entries = load_cache(path) | dict(new)
    write_bytes(path, json.dumps({"format": 1, "entries": entries}, indent=0, sort_keys=True).encode())


def _measure_table(layer: Layer, settings: LatencySettings, overhead_ms: float) -> dict[str, Any]:
    """Time every grid point of ``layer`` (interleaved) and return the cache entry."""
    points = list(itertools.product(*layer.grid))
    models = [single_op_model(layer, p) for p in points]
    feeds = [random_feeds(m, batch=settings.batch, dynamic=settings.batch) for m in models]
    fastest, rounds, _ = _time_models(models, feeds, settings, TABLE_SECONDS, TABLE_ROUNDS,
                                      f"latency table of '{layer.node}'", statistic=np.min)
    ms = [max(m - overhead_ms, 0.0) for m in fastest]
    return {"grid": [list(g) for g in layer.grid], "ms": ms, "rounds": rounds, "overhead_ms": overhead_ms,
            "signature": layer.signature(), "env": settings.environment(),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _table(entry: Mapping[str, Any]) -> Table:
    grid = tuple(tuple(int(w) for w in g) for g in entry["grid"])
    ms = np.asarray(entry["ms"], dtype=float).reshape(tuple(len(g) for g in grid))
    return Table(grid, monotone(ms))


# ---------------------------------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------------------------------


@dataclass
class LatencyModel:
    """Tables of a model's layers plus the measured remainder; :meth:`estimate` prices a pruned model."""

    settings: LatencySettings
    layers: list[Layer]
    tables: dict[str, Table]  # by cache key
    keys: dict[str, str]  # node -> cache key
    sources: dict[str, str]  # node -> "cached" | "measured"
    original_ms: float
    remainder_ms: float
    stats: dict[str, Any] = field(default_factory=dict)

    def estimate(self, model: onnx.ModelProto) -> float:
        """Estimated ms of ``model`` (the original or a pruned copy of it: nodes are matched by name)."""
        nodes = {node.name: node for node in model.graph.node}
        weights = {init.name: init for init in model.graph.initializer}
        total = 0.0
        for layer in self.layers:
            node = nodes.get(layer.node)
            if node is not None:
                total += self.tables[self.keys[layer.node]].estimate(widths_in(layer, node, weights))
        full = self.full_ms
        return total + self.remainder_ms * (total / full if full > 0 else 1.0)

    @functools.cached_property
    def full_ms(self) -> float:
        """Sum of the layers' full-width estimates (what the tables say the original's layers cost); the
        tables are complete when the model is built, and every priced candidate needs this sum."""
        return sum(self.tables[self.keys[l.node]].estimate(l.full) for l in self.layers)

    def record(self) -> dict[str, Any]:
        """The table summary for reports: counts, where each layer's table came from, the remainder."""
        return {**self.stats, "original_ms": round(self.original_ms, 4), "layers_ms": round(self.full_ms, 4),
                "remainder_ms": round(self.remainder_ms, 4), "source": dict(self.sources)}


def describe_layers(prepared: Prepared, batch: int,
                    input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> list[Layer]:
    """The modelled layers of the prepared (normalized) model, with shapes at ``input_shapes`` and ``batch``."""
    model = prepared.normalized
    shapes = infer_static_shapes(model, symbol_value=batch, input_shapes=input_shapes)
    weights = {init.name: init for init in model.graph.initializer if init.data_type == TensorProto.FLOAT}
    variable = frozenset((p.tensor, p.axis) for group in prepared.analysis.prunable for p in group.params)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    ctx = _Context(shapes, weights, variable, opset)
    layers = []
    for node in model.graph.node:
        row = row_of(node)
        rule = LAYER_RULES.get(row.latency) if row is not None and row.latency and not row.domain else None
        layer = rule(node, ctx) if rule is not None and len(node.input) > 1 else None
        if layer is not None:
            layers.append(layer)
    return layers


def _table_task(shared: tuple[LatencySettings, float | None], layer: Layer) -> dict[str, Any]:
    """Task: one layer's table.  On another machine (overhead ``None``) the call overhead is that machine's."""
    settings, overhead = shared
    return _measure_table(layer, settings, _overhead_ms(settings, layer.opset) if overhead is None else overhead)


def build_latency_model(prepared: Prepared, settings: LatencySettings,
                        progress: Progress | None = None, executor: Executor | None = None) -> LatencyModel:
    """Tables for every modelled layer (from the cache or measured now), then the original's remainder.

    Each table to measure is one task of ``executor`` (default: in this process), reserving
    ``settings.threads`` CPUs; the coordinator writes the cache.  Tables timed side by side on one
    machine disturb each other: on a cluster, give each node one task at a time.
    """
    executor = executor or LOCAL
    settings.validate()
    started = time.perf_counter()
    layers = describe_layers(prepared, settings.batch, settings.shapes_of(prepared.normalized))
    keys = {layer.node: cache_key(layer, settings) for layer in layers}
    path = settings.cache_path()
    cached = load_cache(path)
    todo = {keys[l.node]: l for l in layers if keys[l.node] not in cached}
    new: dict[str, Any] = {}
    if todo:
        overhead = None if executor.remote else _overhead_ms(settings, layers[0].opset if layers else 17)
        tables = executor.map(_table_task, todo.values(), (settings, overhead), what="latency table",
                              num_cpus=settings.threads)
        for number, (key, entry) in enumerate(zip(todo, tables), 1):
            new[key] = entry
            save_cache(path, {key: new[key]})  # table by table: an interrupted run keeps what it measured
            if progress is not None:
                progress("latency tables", number, len(todo))
    entries = cached | new
    tables = {key: _table(entries[key]) for key in set(keys.values())}
    sources = {l.node: "measured" if keys[l.node] in new else "cached" for l in layers}
    table_seconds = time.perf_counter() - started
    model = LatencyModel(settings, layers, tables, keys, sources, 0.0, 0.0)
    model.stats = {"layers": len(layers), "signatures": len(tables), "measured": len(new),
                   "cached": len(tables) - len(new), "points_measured": sum(len(e["ms"]) for e in new.values()),
                   "table_seconds": round(table_seconds, 3), "cache": str(path)}
    _measure_remainder(model, prepared.original, progress)
    return model


def _measure_remainder(model: LatencyModel, original: onnx.ModelProto, progress: Progress | None) -> None:
    """Time the original interleaved with each distinct layer alone at full width (and the call-overhead
    probe); the remainder is the share of the original the layers do not account for, in table units.

    Why alongside and not against the tables: cached tables were timed under another load than the
    machine has now, and a whole model and a short single-op run do not slow down alike; timing them in
    the same rounds, with the same statistic (median), compares like with like.
    """
    settings = model.settings
    distinct = {model.keys[layer.node]: layer for layer in model.layers}
    counts = collections.Counter(model.keys.values())
    models = [original, _overhead_model(next(iter(distinct.values())).opset if distinct else 17)]
    models += [single_op_model(layer, layer.full) for layer in distinct.values()]
    feeds = [random_feeds(m, batch=settings.batch, dynamic=settings.batch,
                          shapes=settings.shapes_of(original) if m is original else None) for m in models]
    report = None if progress is None else (lambda done, total: progress("original model", done, total))
    medians, _, placed = _time_models(models, feeds, settings, CONFIRM_SECONDS, CONFIRM_ROUNDS, "original model",
                                      report)
    original_ms, overhead_ms, layer_ms = medians[0], medians[1], medians[2:]
    model.stats["nodes_by_provider"] = placed  # the original's: how much of it settings.provider runs
    layers_now = sum(counts[key] * max(ms - overhead_ms, 0.0) for key, ms in zip(distinct, layer_ms))
    work_now = max(original_ms - overhead_ms, 0.0)
    model.original_ms = original_ms
    model.stats["layers_now_ms"] = round(layers_now, 4)
    if layers_now <= 0.0:
        model.remainder_ms = work_now
        return
    model.remainder_ms = max(work_now / layers_now - 1.0, 0.0) * model.full_ms


def _overhead_ms(settings: LatencySettings, opset: int) -> float:
    model = _overhead_model(opset)
    fastest, _, _ = _time_models([model], [{"x": np.zeros(1, np.float32)}], settings, 0.05, (20, 200),
                                 "latency overhead probe", statistic=np.min)
    return fastest[0]


def measure_models(models: Sequence[onnx.ModelProto], settings: LatencySettings,
                   progress: Progress | None = None, phase: str = "latency check",
                   statistic: Callable[[np.ndarray], float] = np.median) -> dict[str, Any]:
    """Median (or ``statistic``) ms of whole models run interleaved on the same seeded input.

    Inputs take ``settings.input_shapes``, other symbolic dimensions ``settings.batch``, as in the tables.
    """
    feeds = random_feeds(models[0], batch=settings.batch, dynamic=settings.batch, shapes=settings.shapes_of(models[0]))
    report = None if progress is None else (lambda done, total: progress(phase, done, total))
    values, rounds, _ = _time_models(list(models), [feeds] * len(models), settings, CONFIRM_SECONDS, CONFIRM_ROUNDS,
                                     phase, report, statistic)
    return {"ms": values, "runs": rounds}
