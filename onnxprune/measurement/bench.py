"""Latency, params, MACs and file size of one or more models, measured so ratios are fair.

Why interleaved: measuring model A for a minute and then model B lets CPU frequency, caches and
neighbours drift between them.  Here every repeat runs each model once in turn (round robin), so
slow phases hit all models alike.  Thread-pool spinning is disabled
(``session.intra_op.allow_spinning = 0``): spinning workers burn the cores the next model needs and
make small models look faster than they are under load.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail as OrtFail

from onnxprune.measurement.counting import count_model, format_bytes, format_count
from onnxprune.errors import InputError, VerificationError
from onnxprune.runtime.input_shapes import InputShapes, coerce as coerce_shapes, counted_at, resolve as resolve_shapes
from onnxprune.io.files import load_model
from onnxprune.runtime.feeds import random_feeds
from onnxprune.io.weights import ort_session

#: The execution provider timings and sessions use unless told otherwise.
DEFAULT_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class BenchOptions:
    """How to measure: intra-op threads, batch size of the seeded random input, runs."""

    threads: int = 1
    batch: int = 1
    warmup: int = 5
    repeat: int = 50
    seed: int = 0
    input_shapes: InputShapes | None = None  # --input-shape: inputs and MACs at these (batch then fills the rest)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shapes", coerce_shapes(self.input_shapes))

    def validate(self) -> None:
        if self.threads < 1 or self.batch < 1 or self.warmup < 0 or self.repeat < 1:
            raise InputError(f"bench needs threads >= 1, batch >= 1, warmup >= 0, repeat >= 1; got {self}")

    def to_dict(self) -> dict[str, Any]:
        return {"threads": self.threads, "batch": self.batch, "warmup": self.warmup, "repeat": self.repeat,
                "seed": self.seed, "input_shapes": self.input_shapes.to_dict() if self.input_shapes else None}


@dataclass
class ModelBench:
    """Numbers of one model; latencies in milliseconds per run of one batch."""

    path: str
    params: int
    macs: int
    size_bytes: int
    samples_ms: list[float] = field(default_factory=list, repr=False)
    shapes: dict[str, list[int]] = field(default_factory=dict)  # what the model ran at (MACs: see macs_label)
    macs_label: str = ""

    def stats(self) -> dict[str, float]:
        values = np.asarray(self.samples_ms)
        return {"median_ms": float(np.median(values)), "p10_ms": float(np.percentile(values, 10)),
                "p90_ms": float(np.percentile(values, 90)), "mean_ms": float(values.mean())}


@dataclass
class BenchResult:
    """All models, in the order given; ratios are to the first model."""

    options: BenchOptions
    models: list[ModelBench]

    def to_dict(self) -> dict[str, Any]:
        base = self.models[0]
        base_median = base.stats()["median_ms"]
        rows = []
        for bench in self.models:
            stats = bench.stats()
            rows.append({"path": bench.path, "params": bench.params, "macs": bench.macs,
                         "size_bytes": bench.size_bytes, **stats, "input_shapes": bench.shapes,
                         "macs_at": bench.macs_label,
                         "ratio": {"latency": stats["median_ms"] / base_median if base_median else None,
                                   "params": _ratio(bench.params, base.params),
                                   "macs": _ratio(bench.macs, base.macs),
                                   "size_bytes": _ratio(bench.size_bytes, base.size_bytes)}})
        return {"options": self.options.to_dict(), "onnxruntime": ort.__version__, "models": rows}


def _ratio(value: int, base: int) -> float | None:
    return value / base if base else None




def timing_session(model: onnx.ModelProto, threads: int, where: str,
                   provider: str = DEFAULT_PROVIDER) -> ort.InferenceSession:
    """The session every latency number of onnxprune is measured with (bench, latency tables, targets).

    Why one function: a latency table measured with other session options than the model it predicts
    would compare different things.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.add_session_config_entry(ASSIGNMENT_KEY, "1")  # for check_provider; recorded once, at load
    try:
        session = ort_session(model, options, providers=[provider])  # memory-mapped weights as OrtValues
    except Exception as err:
        raise VerificationError(f"{where}: onnxruntime cannot load the model: {str(err).splitlines()[0]}") from err
    check_provider(session, provider, where)
    return session


#: Session config entry that makes onnxruntime record which provider runs each node (recent versions; 1.32 here).
ASSIGNMENT_KEY = "session.record_ep_graph_assignment_info"


def nodes_by_provider(session: ort.InferenceSession) -> dict[str, int] | None:
    """How many nodes of the optimized graph each execution provider runs, as onnxruntime assigned them.

    None when this onnxruntime cannot tell (older than the assignment API, or a session made without
    :data:`ASSIGNMENT_KEY`): then only the registered providers are known.
    """
    try:
        subgraphs = session.get_provider_graph_assignment_info()
    except (AttributeError, OrtFail):  # no such API, or assignment was not recorded
        return None
    counts: dict[str, int] = {}
    for subgraph in subgraphs:
        counts[subgraph.ep_name] = counts.get(subgraph.ep_name, 0) + len(subgraph.get_nodes())
    return {name: count for name, count in counts.items() if count}


def check_provider(session: ort.InferenceSession, provider: str, where: str) -> None:
    """Refuse (:class:`InputError`) a session in which ``provider`` does not actually run the model.

    Why refuse rather than record the provider that did run: onnxruntime silently falls back to its
    CPU provider, both when a provider fails to load (CUDA without its libraries: it is missing from
    ``session.get_providers()``) and when a provider that loads claims none of the nodes
    (``AzureExecutionProvider``, listed by ``get_available_providers()``, only runs its own remote
    operators: ``get_providers()`` still names it first, only the node assignment shows the CPU doing
    the work).  Timings from such a session are the CPU's.  Recording "CPU" instead would still give
    the user a plan tuned for hardware they did not ask for, and store CPU tables in the cache under the
    requested provider's key; a one-line error lets them choose.  A provider that runs some nodes and
    leaves others (shape ops, say) to the CPU is how that provider deploys the model, so it is accepted.
    With an onnxruntime too old to report node assignment only the registration is checked.
    """
    registered = session.get_providers()
    if provider not in registered:
        raise InputError(f"{where}: execution provider '{provider}' did not load, onnxruntime fell back to "
                         f"{', '.join(registered)}; measure with a provider that runs the model")
    counts = nodes_by_provider(session)
    if counts and provider not in counts:
        ran = ", ".join(f"{name} ({count} node{'s' if count > 1 else ''})" for name, count in counts.items())
        raise InputError(f"{where}: execution provider '{provider}' runs none of the model's nodes, onnxruntime "
                         f"assigned them to {ran}; the timings would not be {provider}'s, so nothing is measured")


def bench_models(paths: list[str | os.PathLike[str]], options: BenchOptions | None = None,
                 progress: Callable[[int], None] | None = None) -> BenchResult:
    """Measure ``paths`` interleaved (module docstring); all get the same seeded input batch shape.

    ``progress`` (front ends) is called after every round-robin repeat with the repeat number.
    """
    options = options or BenchOptions()
    options.validate()
    if not paths:
        raise InputError("bench needs at least one model")
    runners, benches = [], []
    for path in paths:
        model = load_model(path)
        shapes = resolve_shapes(model, options.input_shapes)
        stats = count_model(model, path=path, input_shapes=shapes)
        session = timing_session(model, options.threads, os.fspath(path))
        feeds = random_feeds(model, batch=options.batch, seed=options.seed, shapes=shapes.as_dict() if shapes else None)
        runners.append((session, feeds, os.fspath(path)))
        label = stats.counted_at.label() if shapes or counted_at(model).symbolic else ""
        benches.append(ModelBench(os.fspath(path), stats.params, stats.macs, stats.size_bytes,
                                  shapes={k: list(v.shape) for k, v in feeds.items()}, macs_label=label))
    calls = [functools.partial(run_once, session, feeds, where) for session, feeds, where in runners]
    for bench, samples in zip(benches, interleaved_ms(calls, options.warmup, options.repeat, progress)):
        bench.samples_ms.extend(samples)
    return BenchResult(options, benches)


def interleaved_ms(calls: Sequence[Callable[[], Any]], warmup: int, repeat: int,
                   progress: Callable[[int], None] | None = None) -> list[list[float]]:
    """Milliseconds of ``repeat`` round-robin runs of every call (after ``warmup`` rounds), one list per call.

    Why round robin: slow phases of a noisy machine then hit every call alike (module docstring), so
    ratios of medians stay fair even when absolute numbers drift.
    """
    for _ in range(warmup):
        for call in calls:
            call()
    samples: list[list[float]] = [[] for _ in calls]
    for number in range(repeat):
        for call, into in zip(calls, samples):
            start = time.perf_counter()
            call()
            into.append((time.perf_counter() - start) * 1e3)
        if progress is not None:
            progress(number + 1)
    return samples


def run_once(session: ort.InferenceSession, feeds: dict[str, np.ndarray], where: str) -> None:
    """One run; onnxruntime failures become a one-line :class:`VerificationError` naming ``where``."""
    try:
        session.run(None, feeds)
    except Exception as err:
        raise VerificationError(f"{where}: onnxruntime failed to run the model: {str(err).splitlines()[0]}") from err


def format_bench(result: dict[str, Any]) -> str:
    """A table; the ratio column is median latency relative to the first model."""
    header = f"{'model':<40} {'params':>9} {'MACs':>9} {'size':>10} {'median ms':>10} {'p10':>8} {'p90':>8} {'ratio':>7}"
    lines = [header, "-" * len(header)]
    for row in result["models"]:
        name = row["path"] if len(row["path"]) <= 40 else "…" + row["path"][-39:]
        ratio = row["ratio"]["latency"]
        lines.append(f"{name:<40} {format_count(row['params']):>9} {format_count(row['macs']):>9} "
                     f"{format_bytes(row['size_bytes']):>10} {row['median_ms']:>10.3f} {row['p10_ms']:>8.3f} "
                     f"{row['p90_ms']:>8.3f} {(f'{ratio:.3f}×' if ratio is not None else '-'):>7}")
    opts = result["options"]
    lines.append(f"threads {opts['threads']}, batch {opts['batch']}, warmup {opts['warmup']}, repeat "
                 f"{opts['repeat']} (interleaved, spinning off); ratio = median latency / first model's")
    first = result["models"][0] if result["models"] else {}
    if first.get("input_shapes"):
        shapes = " ".join(f"{k}[{','.join(map(str, v))}]" for k, v in first["input_shapes"].items())
        lines.append(f"run at {shapes}" + (f"; MACs {first['macs_at']}" if first.get("macs_at") else ""))
    return "\n".join(lines)
