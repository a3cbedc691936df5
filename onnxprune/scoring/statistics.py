"""Per-channel activation statistics, reduced inside onnxruntime and streamed over calibration batches.

Why inside the session: the activations of every layer for every calibration sample would not fit in
memory for a real model.  A copy of the model gets, for each tapped slot (tensor, channel axis), a few
reduction nodes whose outputs are per-sample, per-channel vectors ``[batch, C]``: Σx, Σx², Σ|x| and
the count of exact zeros over every other axis (ReduceSum, ReduceSumSquare, ReduceL1), plus ``Shape(x)`` for the element count.  Python adds
those up in float64, so memory is independent of the number of batches and precision of the number of
samples (float32 only ever sums over one sample's positions).

From the sums: ``mean = Σx/n``, ``var = Σx²/n − mean²``, ``rms = √(Σx²/n)``, ``mean_abs = Σ|x|/n``,
``zero_fraction = zeros/n`` (APoZ after a ReLU), where ``n`` counts elements per channel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxprune.runtime.calibration import CalibrationSet
from onnxprune.errors import InputError
from onnxprune.analysis.groups import Analysis
from onnxprune.ir.graph import default_opset
from onnxprune.analysis.rules import Slot
from onnxprune.runtime.sessions import fetch_outputs
from onnxprune.runtime.executor import LOCAL, Executor, ShippedModel, forget, per_task, session_for

KINDS = ("sum", "sumsq", "sumabs", "zeros")
_PREFIX = "onnxprune_stat"


@dataclass
class ChannelStats:
    """Float64 sums over all calibration elements of one slot, one entry per channel position."""

    count: float
    sum: np.ndarray
    sumsq: np.ndarray
    sumabs: np.ndarray
    zeros: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1.0)

    @property
    def mean_abs(self) -> np.ndarray:
        return self.sumabs / max(self.count, 1.0)

    @property
    def var(self) -> np.ndarray:
        return np.maximum(self.sumsq / max(self.count, 1.0) - self.mean ** 2, 0.0)

    @property
    def rms(self) -> np.ndarray:
        return np.sqrt(self.sumsq / max(self.count, 1.0))

    @property
    def zero_fraction(self) -> np.ndarray:
        return self.zeros / max(self.count, 1.0)


@dataclass
class ActivationStats:
    """Statistics per slot, with how much data and time they took."""

    by_slot: dict[Slot, ChannelStats]
    samples: int = 0
    batches: int = 0
    seconds: float = 0.0  # total, including building the tapped model and its session
    stream_seconds: float = 0.0  # running the batches and adding up the sums
    notes: list[str] = field(default_factory=list)
    histograms: dict[Slot, "ChannelHistogram"] = field(default_factory=dict)  # criterion entropy
    grams: dict[tuple[str, int], Any] = field(default_factory=dict)  # criterion reconstruction (ConsumerGram)

    def get(self, slot: Slot) -> ChannelStats | None:
        return self.by_slot.get(slot)


def consumer_slots(analysis: Analysis) -> list[Slot]:
    """Inputs of consumer layers that touch a prunable group: what criteria and recovery read."""
    prunable = set(analysis.prunable_indices)
    slots: dict[Slot, None] = {}
    for param in analysis.params:
        if param.role != "consumer" or param.slot in slots:
            continue
        first, _ = analysis.slots[param.slot]
        if prunable.intersection(analysis.atom_group[first + param.index].tolist()):
            slots[param.slot] = None
    return list(slots)


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """Copy of ``model`` that also returns the named intermediate tensors (onnxruntime infers types)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    return copy


class _TapBuilder:
    """Adds reduction nodes to a model copy; reduction axes go in attributes or inputs by opset."""

    def __init__(self, model: onnx.ModelProto):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.opset = default_opset(model)
        self.types = _elem_types(model)
        self.nodes: list[onnx.NodeProto] = []
        self.outputs: list[str] = []
        self.constants: list[onnx.TensorProto] = []

    def reduce(self, op: str, x: str, axes: list[int], out: str) -> None:
        axes_as_input = self.opset >= 18 or (op == "ReduceSum" and self.opset >= 13)
        if axes_as_input:
            const = f"{out}_axes"
            self.constants.append(helper.make_tensor(const, TensorProto.INT64, [len(axes)], axes))
            self.nodes.append(helper.make_node(op, [x, const], [out], keepdims=0))
        else:
            self.nodes.append(helper.make_node(op, [x], [out], axes=axes, keepdims=0))

    def tap(self, index: int, slot: Slot, rank: int) -> dict[str, str]:
        """Nodes for one slot; returns kind → output name."""
        base = f"{_PREFIX}_{index}"
        x = slot.tensor
        if self.types.get(x, TensorProto.FLOAT) != TensorProto.FLOAT:
            self.nodes.append(helper.make_node("Cast", [x], [f"{base}_x"], to=TensorProto.FLOAT))
            x = f"{base}_x"
        axes = [a for a in range(rank) if a not in (0, slot.axis)]
        zero = f"{base}_zero"
        self.constants.append(helper.make_tensor(zero, TensorProto.FLOAT, [], [0.0]))
        self.nodes += [helper.make_node("Equal", [x, zero], [f"{base}_eq"]),
                       helper.make_node("Cast", [f"{base}_eq"], [f"{base}_iszero"], to=TensorProto.FLOAT),
                       helper.make_node("Shape", [x], [f"{base}_shape"])]
        names = {kind: f"{base}_{kind}" for kind in KINDS} | {"shape": f"{base}_shape"}
        if axes:
            self.reduce("ReduceSum", x, axes, names["sum"])
            self.reduce("ReduceSum", f"{base}_iszero", axes, names["zeros"])
            self.reduce("ReduceSumSquare", x, axes, names["sumsq"])
            self.reduce("ReduceL1", x, axes, names["sumabs"])
        else:  # [batch, C] already: nothing to reduce inside the session
            self.nodes += [helper.make_node("Identity", [x], [names["sum"]]),
                           helper.make_node("Identity", [f"{base}_iszero"], [names["zeros"]]),
                           helper.make_node("Mul", [x, x], [names["sumsq"]]),
                           helper.make_node("Abs", [x], [names["sumabs"]])]
        self.outputs += list(names.values())
        return names

    def build(self) -> onnx.ModelProto:
        graph = self.model.graph
        graph.node.extend(self.nodes)
        graph.initializer.extend(self.constants)
        if self.model.ir_version < 4:
            for const in self.constants:
                graph.input.append(helper.make_tensor_value_info(const.name, const.data_type, list(const.dims)))
        return with_outputs(self.model, self.outputs)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor shape inference can type (missing entries: assume float)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an untyped graph still gets statistics, with a Cast that may be redundant
        inferred = model
    types = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    return types


def stats_model(model: onnx.ModelProto, slots: Sequence[Slot], ranks: Mapping[str, int]
                ) -> tuple[onnx.ModelProto, dict[Slot, dict[str, str]]]:
    """The tapped model and, per slot, the output name of each sum."""
    builder = _TapBuilder(model)
    outputs = {slot: builder.tap(index, slot, ranks[slot.tensor]) for index, slot in enumerate(slots)}
    return builder.build(), outputs


Reduced = tuple[float, dict[str, np.ndarray]]  # one batch of one slot: element count per channel, float64 sums


def _reduce(values: dict[str, np.ndarray], axis: int) -> Reduced:
    """One batch's ``[batch, C]`` sums of one slot → per-channel float64 sums (and the element count)."""
    shape = values["shape"].astype(np.int64)
    count = float(np.prod(shape)) / max(int(shape[axis]), 1)
    sums = {kind: np.asarray(values[kind], dtype=np.float64) for kind in KINDS}
    if axis != 0:
        sums = {kind: v.reshape(-1, v.shape[-1]).sum(axis=0) for kind, v in sums.items()}
    return count, sums


def _merge(stats: ChannelStats | None, reduced: Reduced) -> ChannelStats:
    """Add one batch to the running sums; called in batch order, so every executor adds alike."""
    count, sums = reduced
    if stats is None:  # own copies: a Ray result is a read-only view of the object store
        return ChannelStats(count, *(np.array(sums[kind]) for kind in KINDS))
    stats.count += count
    stats.sum += sums["sum"]
    stats.sumsq += sums["sumsq"]
    stats.sumabs += sums["sumabs"]
    stats.zeros += sums["zeros"]
    return stats


@dataclass(frozen=True)
class _TapJob:
    """What a statistics task needs: the tapped model and, per slot, its output names and channel axis."""

    model: ShippedModel
    fetch: tuple[str, ...]
    taps: tuple[tuple[tuple[tuple[str, str], ...], int], ...]  # ((kind, output name)...), axis per slot


def _tap_job(executor: Executor, tapped: onnx.ModelProto, outputs: Mapping[Any, Any], axes: Sequence[int]) -> _TapJob:
    fetch = tuple(name for names in outputs.values() for name in _names(names))
    taps = tuple((tuple(names.items()) if isinstance(names, dict) else tuple(enumerate(names)), axis)
                 for names, axis in zip(outputs.values(), axes))
    return _TapJob(executor.ship(tapped), fetch, taps)


def _names(names: Any) -> Iterable[str]:
    return names.values() if isinstance(names, dict) else names


def _run_taps(job: _TapJob, item: tuple[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    number, batch = item
    fetch = list(job.fetch)
    return dict(zip(fetch, fetch_outputs(session_for(job.model), fetch, batch, f"calibration batch {number}")))


def _batch_sums(job: _TapJob, item: tuple[int, dict[str, np.ndarray]]) -> tuple[int, list[Reduced]]:
    """Task: one calibration batch → (samples, per slot the batch's per-channel float64 sums)."""
    values = _run_taps(job, item)
    reduced = [_reduce({kind: values[name] for kind, name in names}, axis) for names, axis in job.taps]
    return next(iter(item[1].values())).shape[0], reduced


def _numbered(calibration: CalibrationSet) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    return enumerate(calibration.batches())


def _per_task(executor: Executor, calibration: CalibrationSet) -> int:
    """Batches per task: a few per task on a cluster (a batch can be milliseconds of work), 1 here."""
    return per_task(executor, -(-calibration.used_samples() // calibration.batch_size))


def collect_statistics(model: onnx.ModelProto, slots: Sequence[Slot], calibration: CalibrationSet,
                       ranks: Mapping[str, int], executor: Executor | None = None) -> ActivationStats:
    """Stream ``calibration`` through ``model`` and return float64 sums for every slot.

    ``ranks`` gives each slot tensor's rank (the analysis' probe shapes have it).  Each batch is one
    task of ``executor`` (default: in this process); the per-batch sums are added in batch order, so
    any executor gives bit-identical statistics.
    """
    executor = executor or LOCAL
    start = time.perf_counter()
    tapped, outputs = stats_model(model, slots, ranks)
    job = _tap_job(executor, tapped, outputs, [slot.axis for slot in slots])
    result = ActivationStats({})
    streaming = time.perf_counter()
    try:
        for samples, reduced in executor.map(_batch_sums, _numbered(calibration), job, what="calibration batch",
                                             per_task=_per_task(executor, calibration)):
            for slot, sums in zip(outputs, reduced):
                result.by_slot[slot] = _merge(result.by_slot.get(slot), sums)
            result.samples += samples
            result.batches += 1
    finally:
        forget(job.model)
    result.stream_seconds = time.perf_counter() - streaming
    result.seconds = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------------------------------
# histograms (criterion ``entropy``): two streamed passes, both reduced inside onnxruntime

HISTOGRAM_BINS = 32


@dataclass
class ChannelHistogram:
    """Counts of ``bins`` equal-width bins over each channel position's [lo, hi] (float64 sums)."""

    lo: np.ndarray
    hi: np.ndarray
    counts: np.ndarray  # [C, bins]

    @property
    def entropy(self) -> np.ndarray:
        """Shannon entropy (nats) of each channel position's histogram; a constant channel has 0."""
        total = self.counts.sum(axis=1, keepdims=True)
        p = np.divide(self.counts, total, out=np.zeros_like(self.counts), where=total > 0)
        logs = np.log(p, out=np.zeros_like(p), where=p > 0)
        return -(p * logs).sum(axis=1)


def _broadcast_shape(rank: int, axis: int, size: int) -> list[int]:
    shape = [1] * rank
    shape[axis] = size
    return shape


def _per_channel(value: np.ndarray, axis: int, how: str) -> np.ndarray:
    """[batch, C] (or [C] when the channel axis is the batch axis) → [C]."""
    value = np.asarray(value, dtype=np.float64)
    if axis == 0 or value.ndim == 1:
        return value
    value = value.reshape(-1, value.shape[-1])
    return {"min": value.min(axis=0), "max": value.max(axis=0), "sum": value.sum(axis=0)}[how]


def _range_model(model: onnx.ModelProto, slots: Sequence[Slot], ranks: Mapping[str, int]):
    builder = _TapBuilder(model)
    names = {}
    for index, slot in enumerate(slots):
        base = f"{_PREFIX}_range_{index}"
        x = _float_input(builder, slot.tensor, base)
        axes = [a for a in range(ranks[slot.tensor]) if a not in (0, slot.axis)]
        names[slot] = (f"{base}_min", f"{base}_max")
        for op, out in zip(("ReduceMin", "ReduceMax"), names[slot]):
            if axes:
                builder.reduce(op, x, axes, out)
            else:
                builder.nodes.append(helper.make_node("Identity", [x], [out]))
            builder.outputs.append(out)
    return builder.build(), names


def _float_input(builder: _TapBuilder, tensor: str, base: str) -> str:
    if builder.types.get(tensor, TensorProto.FLOAT) == TensorProto.FLOAT:
        return tensor
    builder.nodes.append(helper.make_node("Cast", [tensor], [f"{base}_x"], to=TensorProto.FLOAT))
    return f"{base}_x"


def _histogram_model(model: onnx.ModelProto, slots: Sequence[Slot], ranks: Mapping[str, int],
                     ranges: Mapping[Slot, tuple[np.ndarray, np.ndarray]], bins: int):
    """Per slot: bin = clip(floor((x − lo) / width), 0, bins − 1); one Equal + ReduceSum per bin.

    Why one reduction per bin rather than a OneHot: the temporaries stay the size of the tapped tensor.
    """
    builder = _TapBuilder(model)
    names = {}
    for index, slot in enumerate(slots):
        base = f"{_PREFIX}_hist_{index}"
        rank = ranks[slot.tensor]
        lo, hi = ranges[slot]
        width = np.where(hi > lo, (hi - lo) / bins, 1.0)
        shape = _broadcast_shape(rank, slot.axis, len(lo))
        x = _float_input(builder, slot.tensor, base)
        consts = {"lo": lo.reshape(shape), "width": width.reshape(shape), "top": np.array(bins - 1.0),
                  "zero": np.array(0.0)}
        for key, value in consts.items():
            builder.constants.append(helper.make_tensor(f"{base}_{key}", TensorProto.FLOAT, list(value.shape),
                                                        value.astype(np.float32).ravel().tolist()))
        builder.nodes += [helper.make_node("Sub", [x, f"{base}_lo"], [f"{base}_shift"]),
                          helper.make_node("Div", [f"{base}_shift", f"{base}_width"], [f"{base}_scaled"]),
                          helper.make_node("Floor", [f"{base}_scaled"], [f"{base}_floor"]),
                          helper.make_node("Max", [f"{base}_floor", f"{base}_zero"], [f"{base}_low"]),
                          helper.make_node("Min", [f"{base}_low", f"{base}_top"], [f"{base}_bin"])]
        axes = [a for a in range(rank) if a not in (0, slot.axis)]
        outs = []
        for k in range(bins):
            const = f"{base}_k{k}"
            builder.constants.append(helper.make_tensor(const, TensorProto.FLOAT, [], [float(k)]))
            builder.nodes += [helper.make_node("Equal", [f"{base}_bin", const], [f"{const}_eq"]),
                              helper.make_node("Cast", [f"{const}_eq"], [f"{const}_is"], to=TensorProto.FLOAT)]
            out = f"{const}_count"
            if axes:
                builder.reduce("ReduceSum", f"{const}_is", axes, out)
            else:
                builder.nodes.append(helper.make_node("Identity", [f"{const}_is"], [out]))
            outs.append(out)
        builder.outputs += outs
        names[slot] = outs
    return builder.build(), names


def _batch_ranges(job: _TapJob, item: tuple[int, dict[str, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Task: one batch → per slot its per-channel (min, max)."""
    values = _run_taps(job, item)
    return [(_per_channel(values[names[0][1]], axis, "min"), _per_channel(values[names[1][1]], axis, "max"))
            for names, axis in job.taps]


def _batch_counts(job: _TapJob, item: tuple[int, dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Task: one batch → per slot, per bin, the per-channel count (float64)."""
    values = _run_taps(job, item)
    return [[_per_channel(values[out], axis, "sum") for _, out in names] for names, axis in job.taps]


def collect_histograms(model: onnx.ModelProto, slots: Sequence[Slot], calibration: CalibrationSet,
                       ranks: Mapping[str, int], bins: int = HISTOGRAM_BINS,
                       executor: Executor | None = None) -> dict[Slot, ChannelHistogram]:
    """Per-channel histograms of every slot, streamed in two passes (range, then counts).

    Memory is independent of the number of batches: only per-sample, per-channel vectors leave the
    session, and they are added up in float64 batch by batch (in batch order, on any ``executor``).
    """
    executor = executor or LOCAL
    if bins < 1:
        raise InputError(f"histogram bins must be >= 1, got {bins}")
    tapped, names = _range_model(model, slots, ranks)
    job = _tap_job(executor, tapped, names, [slot.axis for slot in names])
    ranges: dict[Slot, tuple[np.ndarray, np.ndarray]] = {}
    try:
        for found in executor.map(_batch_ranges, _numbered(calibration), job, what="calibration batch",
                                  per_task=_per_task(executor, calibration)):
            for slot, (lo, hi) in zip(names, found):
                if slot in ranges:
                    lo, hi = np.minimum(ranges[slot][0], lo), np.maximum(ranges[slot][1], hi)
                ranges[slot] = (lo, hi)
    finally:
        forget(job.model)
    if not ranges:
        return {}
    # the bin edges are computed in float32 inside the session: use the float32 range here too
    ranges = {slot: (lo.astype(np.float32).astype(np.float64), hi.astype(np.float32).astype(np.float64))
              for slot, (lo, hi) in ranges.items()}
    tapped, names = _histogram_model(model, slots, ranks, ranges, bins)
    job = _tap_job(executor, tapped, names, [slot.axis for slot in names])
    counts = {slot: np.zeros((len(ranges[slot][0]), bins)) for slot in names}
    try:
        for found in executor.map(_batch_counts, _numbered(calibration), job, what="calibration batch",
                                  per_task=_per_task(executor, calibration)):
            for slot, per_bin in zip(names, found):
                for k, vector in enumerate(per_bin):
                    counts[slot][:, k] += vector
    finally:
        forget(job.model)
    return {slot: ChannelHistogram(ranges[slot][0], ranges[slot][1], counts[slot]) for slot in names}
