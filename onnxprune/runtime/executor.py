"""Where independent pieces of work run: in this process in order, or as Ray tasks on a cluster.

Why one seam: calibration statistics (an item per batch), a sensitivity scan (an item per group ×
ratio) and latency tables (an item per layer) are each *a map of one function over independent items,
then a merge on the coordinator*.  Ray groups consecutive small items into one task
(:func:`per_task`, bounded by :data:`TASK_BYTES` of data); results stay per item.  Both executors run the same task functions on the same items and
hand the results back **in submission order**, and the coordinator merges them in that order — so a sum
over batches is the same sequence of float64 additions whether the batches ran here or on ten machines,
and a Ray run writes bit-identical statistics, scores, plans and output files (``tests/test_ray.py``).

The task contract (what makes a function safe to ship):

* a module-level function ``fn(shared, item) -> result`` (pickled by reference);
* it reads the model from ``shared`` (which travels through Ray's object store once per map and is
  deserialized once per worker; a :class:`ShippedModel` opens as a cached session) and data from
  ``item`` or a path every machine sees;
* it writes no files and returns small values (per-channel vectors, a table row, a latency table); only
  the coordinator writes, atomically as always, so a run that fails writes nothing.

Ray is an optional extra (``pip install onnxprune[ray]``): nothing here imports it unless a Ray executor
is asked for, and asking without it installed is one :class:`~onnxprune.errors.InputError` line.
A task whose worker dies is retried (Ray's ``max_retries``); one that still cannot finish, or a cluster
that cannot be reached, is an :class:`ExecutorError` line (exit 6).  An onnxprune error raised inside a
task (bad calibration data, say) reaches the user as the same error it would be locally.
"""

from __future__ import annotations

import collections
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, TypeVar

import numpy as np
import onnx

from onnxprune.errors import ExecutorError, InputError, OnnxPruneError
from onnxprune.io.weights import stub_entry

T = TypeVar("T")
R = TypeVar("R")

#: Retries of a task whose worker process or node died (application errors are never retried).
DEFAULT_RETRIES = 3
#: How long joining a cluster waits for its address to answer.
CONNECT_SECONDS = 5.0
#: A task's items are closed once their arrays reach this many bytes (calibration batches in flight).
TASK_BYTES = 16 << 20
#: Sessions (and shared values) a worker keeps: one map uses one; two let consecutive maps overlap.
_SESSION_CACHE = 2


@dataclass(frozen=True)
class ShippedModel:
    """A model a task can build an onnxruntime session for, here or on another machine.

    Locally it is the proto itself (``model``).  For Ray it is the serialized proto plus, for a model
    whose weights are memory-mapped (:mod:`onnxprune.io.weights` stubs), those weights as arrays: the proto
    keeps its stubs and the session receives the arrays as external initializers, exactly as a local
    session receives the mapped ones, so no 2 GiB protobuf limit applies.
    """

    token: str
    model: onnx.ModelProto | None = None
    proto: bytes = b""
    weights: Mapping[str, np.ndarray] = field(default_factory=dict)


_SESSIONS: "collections.OrderedDict[tuple[str, bool], Any]" = collections.OrderedDict()


def session_for(shipped: ShippedModel, optimized: bool = True) -> Any:
    """The onnxruntime session of ``shipped`` (built once per process and kept for the next tasks).

    Same options as :func:`onnxprune.runtime.sessions.make_session` on either side (one intra-op thread), so a
    batch gives the same numbers on every worker.
    """
    from onnxprune.runtime.sessions import make_session

    key = (shipped.token, optimized)
    if key in _SESSIONS:
        _SESSIONS.move_to_end(key)
        return _SESSIONS[key]
    if shipped.model is not None:
        session = make_session(shipped.model, optimized=optimized)
    else:
        session = make_session(onnx.ModelProto.FromString(shipped.proto), optimized=optimized,
                               weights=shipped.weights)
    _SESSIONS[key] = session
    while len(_SESSIONS) > _SESSION_CACHE:
        _SESSIONS.popitem(last=False)
    return session


def forget(shipped: ShippedModel) -> None:
    """Drop this process's sessions of ``shipped`` (the coordinator, when its map is done)."""
    for optimized in (False, True):
        _SESSIONS.pop((shipped.token, optimized), None)


class Executor(Protocol):
    """Runs ``fn(shared, item)`` for every item and yields the results in the items' order."""

    name: str
    remote: bool  # tasks run in other processes (maybe other machines): models must be shipped

    def workers(self) -> int:
        """CPUs the executor can run tasks on (1 for the local executor)."""

    def ship(self, model: onnx.ModelProto) -> ShippedModel:
        """``model`` in the form tasks of this executor can open."""

    def map(self, fn: Callable[[Any, T], R], items: Iterable[T], shared: Any = None, *, what: str = "task",
            num_cpus: float = 1.0, per_task: int = 1) -> Iterator[R]:
        """Results of ``fn(shared, item)``, in the order of ``items``; ``per_task`` consecutive items share a
        task where tasks are remote (amortizes the per-task cost of small items; results are per item)."""


class LocalExecutor:
    """The default: an ordered map in this process (no copies of the model, no dependencies)."""

    name = "local"
    remote = False

    def workers(self) -> int:
        return 1

    def ship(self, model: onnx.ModelProto) -> ShippedModel:
        return ShippedModel(secrets.token_hex(8), model=model)

    def map(self, fn: Callable[[Any, T], R], items: Iterable[T], shared: Any = None, *, what: str = "task",
            num_cpus: float = 1.0, per_task: int = 1) -> Iterator[R]:
        for item in items:
            yield fn(shared, item)


LOCAL = LocalExecutor()


_SHARED: "collections.OrderedDict[str, Any]" = collections.OrderedDict()


def _run_task(fn: Callable[[Any, Any], Any], shared: list[Any], items: list[Any]) -> list[Any]:
    """What a Ray worker executes: the task function on each item of a chunk, in order.

    ``shared`` is ``[ObjectRef]``: a nested reference Ray does not resolve, so a worker deserializes the
    shared value (a prepared model, say) once per map instead of once per task.
    """
    import ray  # noqa: PLC0415  (only ever runs on a Ray worker)

    key = shared[0].hex()
    if key not in _SHARED:
        _SHARED[key] = ray.get(shared[0])
        while len(_SHARED) > _SESSION_CACHE:
            _SHARED.popitem(last=False)
    return [fn(_SHARED[key], item) for item in items]


def _chunks(items: Iterable[T], size: int, max_bytes: int = TASK_BYTES) -> Iterator[list[T]]:
    """Consecutive items, ``size`` at most per chunk, closed early once its arrays reach ``max_bytes``."""
    chunk: list[T] = []
    held = 0
    for item in items:
        chunk.append(item)
        held += _array_bytes(item)
        if len(chunk) >= size or held >= max_bytes:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


def _array_bytes(value: Any) -> int:
    """Bytes of the numpy arrays inside an item (tuples, lists and dicts are walked; anything else is 0)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(_array_bytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(_array_bytes(v) for v in value)
    return 0


def per_task(executor: "Executor", items: int, most: int = 64) -> int:
    """Items per task so each worker gets about four tasks, at most ``most``.

    Why not one item per task: Ray costs about a millisecond per task round trip, as much as a small
    calibration batch takes to run.  What a chunk holds in flight is bounded by bytes where the items carry
    data (:data:`TASK_BYTES`, applied by :meth:`RayExecutor.map`), not by a fixed small count.
    """
    return max(1, min(most, -(-items // (4 * executor.workers())))) if executor.remote else 1


class RayExecutor:
    """Ray tasks, at most ``window`` in flight, results gathered in submission order.

    ``address``: ``None`` joins the cluster this machine belongs to (``ray start`` / ``RAY_ADDRESS``) or
    starts a local one; ``"ray://host:10001"`` or ``"host:6379"`` joins that cluster.  ``num_cpus`` only
    applies when a local instance is started (tests use 2).  A process already connected to Ray (an API
    caller's own ``ray.init``) keeps that connection.
    """

    name = "ray"
    remote = True

    def __init__(self, address: str | None = None, num_cpus: int | None = None, retries: int = DEFAULT_RETRIES,
                 window: int | None = None) -> None:
        self._ray = _import_ray()
        self.address, self.retries = address, retries
        if not self._ray.is_initialized():
            if address is not None:
                _check_reachable(address)
            try:
                self._ray.init(address=address, num_cpus=num_cpus if address is None else None,
                               include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            except Exception as err:  # ConnectionError, RuntimeError, ValueError: one line either way
                where = address or "auto"
                raise ExecutorError(f"cannot start or join a Ray cluster at '{where}': "
                                    f"{_first_line(err)}") from err
        self.window = window or max(2 * self.workers(), 2)
        self._task = self._ray.remote(_run_task)

    def workers(self) -> int:
        return max(int(self._ray.cluster_resources().get("CPU", 1)), 1)

    def ship(self, model: onnx.ModelProto) -> ShippedModel:
        weights = {}
        for tensor in model.graph.initializer:
            found = stub_entry(tensor)
            if found is not None:
                weights[tensor.name] = np.ascontiguousarray(found[0].array(found[1]))
        return ShippedModel(secrets.token_hex(8), proto=model.SerializeToString(), weights=weights)

    def map(self, fn: Callable[[Any, T], R], items: Iterable[T], shared: Any = None, *, what: str = "task",
            num_cpus: float = 1.0, per_task: int = 1) -> Iterator[R]:
        ray = self._ray
        shared_ref = ray.put(shared)  # once per map: every task reads the same copy from the object store
        task = self._task.options(num_cpus=num_cpus, max_retries=self.retries, retry_exceptions=False)
        pending: collections.deque = collections.deque()
        try:
            first = 0  # index of the chunk's first item (chunks closed by bytes vary in length)
            for chunk in _chunks(items, max(per_task, 1)):
                pending.append((first, task.remote(fn, [shared_ref], chunk)))
                first += len(chunk)
                if len(pending) >= self.window:
                    yield from self._result(*pending.popleft(), what)
            while pending:
                yield from self._result(*pending.popleft(), what)
        finally:
            for _, ref in pending:  # an error or an early stop: nothing left running for this map
                ray.cancel(ref, force=True)

    def _result(self, number: int, ref: Any, what: str) -> list[Any]:
        exceptions = self._ray.exceptions
        try:
            return self._ray.get(ref)
        except exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, (OnnxPruneError, MemoryError)):
                raise cause from err  # the same error a local run gives (exit code included)
            detail = f"{type(cause).__name__}: {_first_line(cause)}" if cause is not None else _first_line(err)
            raise ExecutorError(f"Ray task for {what} {number} failed: {detail}") from err
        except exceptions.RayError as err:  # worker or node died beyond the retries, object lost, ...
            raise ExecutorError(f"Ray task for {what} {number} could not finish after {self.retries} retries: "
                                f"{type(err).__name__}: {_first_line(err)}") from err


def _check_reachable(address: str) -> None:
    """Refuse an address nothing listens on, in seconds (Ray itself keeps retrying for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray '{address}': expected 'auto', HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as err:
        raise ExecutorError(f"cannot reach a Ray cluster at '{address}': {err.strerror or err}") from err


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__


def _import_ray() -> Any:
    try:
        import ray  # noqa: PLC0415  (optional extra)
    except ImportError as err:
        raise InputError("--ray needs Ray, which is not installed: pip install 'onnxprune[ray]'") from err
    return ray


def executor_for(ray: str | None, num_cpus: int | None = None) -> Executor:
    """The executor ``--ray`` asks for: local without it, else Ray at ``auto`` or an address."""
    if ray is None:
        return LOCAL
    address = ray.strip()
    if not address:
        raise InputError("--ray needs 'auto' or a cluster address (host:port or ray://host:port)")
    return RayExecutor(None if address == "auto" else address, num_cpus=num_cpus)
