"""Run a model larger than memory block by block ("sequential onloading"), one onnxruntime session at a time.

Why: calibration statistics, LSQ recovery, ``--verify`` and the output-error check all run onnxruntime on
the whole model.  A whole-model session touches every weight (resident file pages) and pre-packs the
MatMul weights (a second copy), so its peak memory is one to two times the model.  Here the graph is cut
into **blocks** at places where only activations cross (the residual stream between decoder layers),
and each block becomes its own small session built on an extracted subgraph whose weights are stubs
sharing the memory mapping (:mod:`onnxprune.io.weights`).  The activations of the calibration batches
are carried from block to block; after a block, its session is dropped and the pages of its weights
are released, so peak memory is about one block plus the activations.

How the cuts are found (:func:`plan_blocks`):

* Nodes that do not depend on any graph input (shape constants, a transposed weight) are never cut
  between: each block that reads one recomputes it from its initializers, so **no weight crosses a cut**.
* The other nodes are ordered by depth (longest path from the inputs; ties by position), which puts
  nodes added at the end of a graph (the statistics' reduction taps) right after what they read.
* At each position between two nodes the **live set** is the tensors produced before and read after;
  its cost is their estimated bytes (ONNX shape inference, symbolic dims at ``SYMBOL_SIZE``; graph inputs
  are free, they are held anyway).  Blocks collect about ``block_bytes`` of weights each; each cut is the
  cheapest position whose block would hold between half and one and a half times that.

Results equal the whole-graph run up to what onnxruntime's graph optimizations do differently when a
fusion would span a cut (with ``ORT_DISABLE_ALL`` every kernel sees the same inputs).

:class:`BlockwiseSession` offers the part of ``onnxruntime.InferenceSession`` the pipeline uses
(``run``, ``get_outputs``, ``get_inputs``) plus :meth:`BlockwiseSession.run_batches`, which runs each
block once for *all* batches (one session per block, not per block and batch).  Block outputs are
memoised by a hash chain (block proto bytes with its weight-store keys, the block before, the feeds),
so LSQ recovery, which asks again and again for activations of a model it changes one layer at a time,
re-runs only the blocks that changed.

When: :func:`wanted` — ``--blockwise`` forces it, ``--no-blockwise`` forbids it, and by default it is
used when a model's weights exceed ``AUTO_FRACTION`` of the memory budget (:mod:`onnxprune.io.memory_budget`).
The settings travel in a context variable the front end sets for one command (:func:`use`; the CLI ties it
to its click context); library calls get the automatic rule unless they wrap their work in :func:`use`.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import hashlib
import os
import resource
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import onnx
from onnx import helper

from onnxprune.io import memory_budget
from onnxprune.errors import InputError
from onnxprune.io.weights import release, stub_entry
from onnxprune.ir.node_reads import node_reads

#: By default blocks are used when the model's weights exceed this fraction of the memory budget
#: (a whole-model session peaks at 1-2x the weights, plus calibration activations).
AUTO_FRACTION = 0.2
#: Default weight bytes per block: this fraction of the budget, clamped to [MIN_BLOCK, MAX_BLOCK].
BLOCK_FRACTION = 1 / 16
MIN_BLOCK, MAX_BLOCK = 32 << 20, 1 << 30
#: Symbolic dims count as this size when estimating the bytes of tensors live across a cut.
SYMBOL_SIZE = 64
#: Memoised block outputs kept at most (bytes; least recently used dropped first).
CACHE_BYTES = 512 << 20


@dataclass(frozen=True)
class BlockwiseSettings:
    """``mode``: ``auto`` | ``on`` | ``off``; ``block_bytes``: weight bytes per block (None: from the budget);
    ``log``: receives one line per block run (the CLI's stderr unless ``--quiet``); ``memo=False``: block
    outputs are not memoised, runs are not recorded in :data:`RUNS` and only the youngest garbage is
    collected after a block (for checks that run each block once, :mod:`onnxprune.runtime.mapped_checks`:
    memoised activations would only add to their peak, and a full collection per small block to their time)."""

    mode: str = "auto"
    block_bytes: int | None = None
    log: Callable[[str], None] | None = field(default=None, compare=False)
    memo: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "on", "off"):
            raise InputError(f"blockwise mode must be auto, on or off, got {self.mode!r}")
        if self.block_bytes is not None and self.block_bytes < 1:
            raise InputError(f"block size must be positive, got {self.block_bytes}")


_SETTINGS: contextvars.ContextVar[BlockwiseSettings] = contextvars.ContextVar("onnxprune_blockwise",
                                                                              default=BlockwiseSettings())


@contextlib.contextmanager
def use(settings: BlockwiseSettings) -> Iterator[BlockwiseSettings]:
    """Run the enclosed work with ``settings`` (restored afterwards)."""
    token = _SETTINGS.set(settings)
    try:
        yield settings
    finally:
        _SETTINGS.reset(token)


def quiet(on: bool) -> None:
    """A command's ``--quiet``: no per-block lines."""
    if on:
        _SETTINGS.set(replace(current(), log=None))


def current() -> BlockwiseSettings:
    return _SETTINGS.get()


def budget_bytes() -> int | None:
    """The memory budget: the process's data limit when set, else the memory available now."""
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    available = memory_budget.available_bytes()
    limits = [v for v in (None if soft == resource.RLIM_INFINITY else soft, available) if v is not None]
    return min(limits) if limits else None


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the model's top-level initializers (stubs count what they stand for)."""
    total = 0
    for tensor in model.graph.initializer:
        found = stub_entry(tensor)
        total += found[0].nbytes(found[1]) if found else _tensor_bytes(tensor)
    return total


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        length = next((int(e.value) for e in tensor.external_data if e.key == "length"), None)
        if length is not None:
            return length
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 4
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def wanted(model: onnx.ModelProto, settings: BlockwiseSettings | None = None) -> bool:
    """Whether sessions of ``model`` run block by block under ``settings`` (default: the current ones)."""
    settings = settings or current()
    if settings.mode != "auto":
        return settings.mode == "on"
    budget = budget_bytes()
    return budget is not None and weight_bytes(model) > AUTO_FRACTION * budget


def wanted_for_bytes(nbytes: int, settings: BlockwiseSettings | None = None) -> bool:
    """:func:`wanted` for a model known only by its weight bytes (a file not loaded yet)."""
    settings = settings or current()
    if settings.mode != "auto":
        return settings.mode == "on"
    budget = budget_bytes()
    return budget is not None and nbytes > AUTO_FRACTION * budget


def file_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of a model file and the external data files it names (0 for what cannot be read: the load
    that follows reports it)."""
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
        folder = os.path.dirname(os.path.abspath(path))
        locations = {e.value for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                     for e in t.external_data if e.key == "location"}
        return os.path.getsize(path) + sum(os.path.getsize(os.path.join(folder, loc)) for loc in locations
                                           if os.path.isfile(os.path.join(folder, loc)))
    except Exception:  # noqa: BLE001 - a size estimate only
        return 0


def default_block_bytes(settings: BlockwiseSettings | None = None) -> int:
    settings = settings or current()
    if settings.block_bytes is not None:
        return settings.block_bytes
    budget = budget_bytes() or (8 << 30)
    return int(min(max(budget * BLOCK_FRACTION, MIN_BLOCK), MAX_BLOCK))


# --------------------------------------------------------------------------------------------------
# the graph as a sequence of nodes, and the cuts


@dataclass
class Schedule:
    """The model's nodes split into constant-only ones (recomputed where needed) and an ordered sequence."""

    model: onnx.ModelProto
    order: list[int]  # indices into model.graph.node of input-dependent nodes, in run order
    constant: set[int]  # nodes that read no graph input, directly or not
    producer: dict[str, int]  # tensor -> node index
    reads: list[list[str]]  # per node index
    initializers: dict[str, onnx.TensorProto]

    @property
    def inputs(self) -> set[str]:
        names = {v.name for v in self.model.graph.input}
        return names - set(self.initializers)


def schedule(model: onnx.ModelProto) -> Schedule:
    """Depth order of the input-dependent nodes (ties by position) and the constant-only node set."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    reads = [node_reads(node) for node in graph.node]
    producer = {name: index for index, node in enumerate(graph.node) for name in node.output if name}
    depth: dict[int, int] = {}
    constant: set[int] = set()
    for index in _topological(graph, reads, producer):
        parents = [producer[name] for name in reads[index] if name in producer]
        depth[index] = 1 + max((depth[p] for p in parents), default=0)
        from_input = any(name not in producer and name not in initializers for name in reads[index])
        if not from_input and all(p in constant for p in parents):
            constant.add(index)
    order = sorted((i for i in depth if i not in constant), key=lambda i: (depth[i], i))
    return Schedule(model, order, constant, producer, reads, initializers)


def _topological(graph: onnx.GraphProto, reads: list[list[str]], producer: dict[str, int]) -> list[int]:
    """Node indices in dependency order (Kahn; a sorted graph keeps its order)."""
    waiting = [sum(1 for name in set(reads[i]) if name in producer) for i in range(len(graph.node))]
    readers: dict[str, list[int]] = {}
    for index, names in enumerate(reads):
        for name in set(names):
            if name in producer:
                readers.setdefault(name, []).append(index)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    done: list[int] = []
    while ready:
        ready.sort(reverse=True)
        index = ready.pop()
        done.append(index)
        for name in graph.node[index].output:
            for reader in readers.get(name, []):
                waiting[reader] -= 1
                if waiting[reader] == 0:
                    ready.append(reader)
    if len(done) != len(graph.node):
        raise InputError("blockwise run: the graph has a cycle or reads a tensor nothing produces")
    return done


def constant_closure(sched: Schedule, names: Sequence[str]) -> set[int]:
    """Constant-only nodes needed to compute ``names`` (transitively)."""
    needed: set[int] = set()
    stack = [sched.producer[n] for n in names if n in sched.producer and sched.producer[n] in sched.constant]
    while stack:
        index = stack.pop()
        if index in needed:
            continue
        needed.add(index)
        stack += [sched.producer[n] for n in sched.reads[index] if n in sched.producer]
    return needed


def _estimated_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Bytes of each typed tensor with symbolic dims at SYMBOL_SIZE (shape inference; no weights read)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an estimate only: without it every live tensor costs the same
        inferred = model
    sizes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
            continue
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
        except (KeyError, TypeError, ValueError):
            itemsize = 4
        dims = [d.dim_value if d.HasField("dim_value") else SYMBOL_SIZE for d in tensor.shape.dim]
        sizes[value.name] = int(np.prod(dims, dtype=np.float64)) * itemsize
    return sizes


def plan_blocks(sched: Schedule, block_bytes: int) -> list[list[int]]:
    """Split ``sched.order`` into blocks of about ``block_bytes`` weight bytes at cheap cuts (see module doc)."""
    order = sched.order
    if not order:
        return [[]]
    weights = [_node_weight_bytes(sched, index) for index in order]
    prefix = np.concatenate([[0], np.cumsum(weights, dtype=np.float64)])
    cost = _cut_costs(sched)
    cuts, start, total = [], 0, prefix[-1]
    while total - prefix[start] > 1.5 * block_bytes:
        span = prefix - prefix[start]
        window = [i for i in range(start + 1, len(order)) if 0.5 * block_bytes <= span[i] <= 1.5 * block_bytes]
        if window:
            cut = min(window, key=lambda i: (cost[i], abs(span[i] - block_bytes)))
        else:  # one node holds more than 1.5 blocks: it is a block of its own
            cut = next((i for i in range(start + 1, len(order)) if span[i] >= 0.5 * block_bytes), len(order))
        if cut >= len(order):
            break
        cuts.append(cut)
        start = cut
    bounds = [0] + cuts + [len(order)]
    return [order[a:b] for a, b in zip(bounds, bounds[1:])]


def _node_weight_bytes(sched: Schedule, index: int) -> int:
    names = set(sched.reads[index])
    for const in constant_closure(sched, sched.reads[index]):
        names.update(sched.reads[const])
    return sum(weight_of(sched.initializers[n]) for n in names if n in sched.initializers)


def weight_of(tensor: onnx.TensorProto) -> int:
    found = stub_entry(tensor)
    return found[0].nbytes(found[1]) if found else _tensor_bytes(tensor)


def _cut_costs(sched: Schedule) -> list[float]:
    """cost[i]: estimated bytes live between ``order[i-1]`` and ``order[i]``."""
    order = sched.order
    position = {index: p for p, index in enumerate(order)}
    sizes = _estimated_bytes(sched.model)
    default = max(sizes.values(), default=1)
    last_read: dict[str, int] = {}
    for p, index in enumerate(order):
        for name in sched.reads[index]:
            if name in sched.producer and sched.producer[name] in position:
                last_read[name] = max(last_read.get(name, -1), p)
    delta = np.zeros(len(order) + 1)
    for name, last in last_read.items():
        born = position[sched.producer[name]] + 1
        if last >= born:
            delta[born] += sizes.get(name, default)
            delta[last + 1] -= sizes.get(name, default)
    return list(np.cumsum(delta))


# --------------------------------------------------------------------------------------------------
# block models


@dataclass
class Block:
    """One block: its scheduled nodes, and what it reads from outside (carried or graph inputs)."""

    number: int
    nodes: list[int]
    weight_bytes: int
    produced: set[str]
    external: list[str]  # tensors read but not produced here nor initializers
    carried_out: list[str]  # produced here, read by a later block


def build_blocks(sched: Schedule, groups: list[list[int]]) -> list[Block]:
    later_reads: list[set[str]] = [set() for _ in groups]
    reads_by_block = [set(n for i in g for n in sched.reads[i]) for g in groups]
    for b in range(len(groups) - 2, -1, -1):
        later_reads[b] = later_reads[b + 1] | reads_by_block[b + 1]
    blocks = []
    for number, group in enumerate(groups):
        produced = {name for i in group for name in sched.model.graph.node[i].output if name}
        constants = constant_closure(sched, sorted(reads_by_block[number]))
        inside = produced | {n for i in constants for n in sched.model.graph.node[i].output if n}
        external = sorted(n for n in reads_by_block[number] | {n for i in constants for n in sched.reads[i]}
                          if n not in inside and n not in sched.initializers)
        weight = sum(_node_weight_bytes(sched, i) for i in group)
        blocks.append(Block(number, group, weight, produced, external, sorted(produced & later_reads[number])))
    return blocks


def block_model(sched: Schedule, block: Block, outputs: Sequence[str], types: dict[str, int],
                extra_constants: Sequence[str] = ()) -> onnx.ModelProto:
    """A self-contained model of ``block`` returning ``outputs``; inputs typed from ``types`` (carried arrays)."""
    model, graph = sched.model, sched.model.graph
    reads = {n for i in block.nodes for n in sched.reads[i]} | set(extra_constants)
    constants = constant_closure(sched, sorted(reads))
    indices = sorted(set(block.nodes) | constants, key=_position_key(sched))
    nodes = [graph.node[i] for i in indices]
    used = {n for i in indices for n in sched.reads[i]}
    inits = [sched.initializers[n] for n in sorted(used) if n in sched.initializers]
    declared = {v.name: v for v in list(graph.input) + list(graph.value_info) + list(graph.output)}
    produced = {n for i in indices for n in graph.node[i].output if n}
    inputs = []
    for name in sorted(used - produced - set(sched.initializers)):
        known = declared.get(name)
        if known is not None and known.type.HasField("tensor_type") and known.type.tensor_type.elem_type:
            inputs.append(known)
        else:
            inputs.append(helper.make_tensor_value_info(name, types[name], None))
    value_info = [declared[n] for n in sorted(produced) if n in declared and n not in outputs
                  and declared[n].type.HasField("tensor_type") and declared[n].type.tensor_type.elem_type]
    block_graph = helper.make_graph(nodes, f"{graph.name or 'graph'}_block{block.number}", inputs,
                                    [onnx.ValueInfoProto(name=n) for n in outputs], inits, value_info=value_info)
    out = onnx.ModelProto()
    out.ir_version = max(model.ir_version, 4)  # initializers need not be listed as inputs
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    out.graph.CopyFrom(block_graph)
    return out


def _position_key(sched: Schedule) -> Callable[[int], tuple[int, int]]:
    rank = {index: p for p, index in enumerate(sched.order)}
    return lambda i: (rank.get(i, -1), i)  # constant-only nodes first, in their (sorted) graph order


# --------------------------------------------------------------------------------------------------
# the session


class _Cache:
    """Block outputs by hash-chain key, least recently used dropped beyond ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self.items: OrderedDict[str, tuple[list[dict[str, np.ndarray]], int]] = OrderedDict()

    def get(self, key: str) -> list[dict[str, np.ndarray]] | None:
        found = self.items.get(key)
        if found is None:
            return None
        self.items.move_to_end(key)
        return found[0]

    def put(self, key: str, values: list[dict[str, np.ndarray]]) -> None:
        size = sum(v.nbytes for batch in values for v in batch.values())
        if size > self.limit // 2:
            return
        self.items[key] = (values, size)
        self.used += size
        while self.used > self.limit and self.items:
            _, (_, dropped) = self.items.popitem(last=False)
            self.used -= dropped


_CACHE = _Cache(CACHE_BYTES)


def clear_cache() -> None:
    _CACHE.items.clear()
    _CACHE.used = 0


@dataclass(frozen=True)
class _Port:
    """What ``get_inputs``/``get_outputs`` hand out (the names are what callers read)."""

    name: str


@dataclass
class BlockRun:
    """Timing of one block run (what the benchmark and the log report)."""

    block: int
    blocks: int
    nodes: int
    weight_bytes: int
    batches: int
    seconds: float
    cached: bool


#: Every block run of the process, in order (benchmarks read it; a few dozen bytes each).
RUNS: list[BlockRun] = []


class BlockwiseSession:
    """``InferenceSession``-like runner of ``model`` block by block (see the module doc).

    ``factory(block_model)`` makes one onnxruntime session (fresh options each time: external
    initializers are added to the options).  ``tag`` tells cached runs of different option sets apart.
    """

    def __init__(self, model: onnx.ModelProto, factory: Callable[[onnx.ModelProto], Any], tag: str = "",
                 settings: BlockwiseSettings | None = None) -> None:
        self.settings = settings or current()
        self.model, self.factory, self.tag = model, factory, tag
        self.sched = schedule(model)
        for tensor in model.graph.initializer:  # weights computed from now on go to mapped files, not memory
            found = stub_entry(tensor)
            if found is not None:
                found[0].spill = True
        self.blocks = build_blocks(self.sched, plan_blocks(self.sched, default_block_bytes(self.settings)))
        self._block_of = {index: block.number for block in self.blocks for index in block.nodes}
        self._outputs = [_Port(v.name) for v in model.graph.output]
        self._inputs = [_Port(v.name) for v in model.graph.input if v.name not in self.sched.initializers]

    def get_outputs(self) -> list[_Port]:
        return list(self._outputs)

    def get_inputs(self) -> list[_Port]:
        return list(self._inputs)

    def run(self, fetch: Sequence[str] | None, feeds: dict[str, np.ndarray], run_options: Any = None
            ) -> list[np.ndarray]:
        """Outputs ``fetch`` (None: the graph outputs) for one batch."""
        return self.run_batches(fetch, [feeds])[0]

    def run_batches(self, fetch: Sequence[str] | None, batches: Sequence[dict[str, np.ndarray]]
                    ) -> list[list[np.ndarray]]:
        """``fetch`` for every batch, each block run once over all batches."""
        fetch = [o.name for o in self._outputs] if fetch is None else list(fetch)
        where = self._locate(fetch)
        states = [dict(feeds) for feeds in batches]
        found: list[dict[str, np.ndarray]] = [{} for _ in batches]
        for i, name in enumerate(fetch):
            if where[name] is None:  # a graph input or an initializer
                for b, feeds in enumerate(batches):
                    found[b][name] = feeds[name] if name in feeds else _initializer(self.sched, name)
        last = max((w for w in where.values() if w is not None), default=-1)
        chain = _feeds_key(batches, self.tag) if self.settings.memo else ""  # keys only serve the memo
        for block in self.blocks[:last + 1]:
            keep = _carried_after(self.blocks, block)
            outputs = list(dict.fromkeys(block.carried_out + [n for n in fetch if where[n] == block.number]))
            extra = [n for n in fetch if where[n] == block.number and n not in block.produced]
            chain, values = self._run_block(block, outputs, extra, states, chain)
            for state, got, result in zip(states, values, found):
                state.update(got)
                result.update({n: got[n] for n in fetch if n in got})
                for name in [n for n in state if n not in batches[0] and n not in keep]:
                    del state[name]
        return [[result[name] for name in fetch] for result in found]

    def _locate(self, fetch: Sequence[str]) -> dict[str, int | None]:
        """Block that yields each fetched tensor (None: a graph input or initializer)."""
        where: dict[str, int | None] = {}
        for name in fetch:
            index = self.sched.producer.get(name)
            if index is None:
                if name not in self.sched.inputs and name not in self.sched.initializers:
                    raise InputError(f"blockwise run: no tensor named '{name}' in the model")
                where[name] = None
            elif index in self.sched.constant:
                where[name] = 0  # recomputed in the first block
            else:
                where[name] = self._block_of[index]
        return where

    def _run_block(self, block: Block, outputs: list[str], extra: list[str], states: list[dict[str, np.ndarray]],
                   chain: str) -> tuple[str, list[dict[str, np.ndarray]]]:
        types = {n: helper.np_dtype_to_tensor_dtype(v.dtype) for n, v in states[0].items()}
        model = block_model(self.sched, block, outputs, types, extra)
        key = hashlib.sha256(chain.encode() + model.SerializeToString()).hexdigest() if self.settings.memo else ""
        cached = _CACHE.get(key) if self.settings.memo else None
        hit, start = cached is not None, time.perf_counter()
        if cached is None:
            session = self.factory(model)
            inputs = [v.name for v in model.graph.input]
            cached = []
            for state in states:
                values = session.run(outputs, {n: state[n] for n in inputs})
                # own copies: an output onnxruntime hands back can keep its session's whole arena alive,
                # and memoised outputs outlive the session (measured: +25 MB per block run, never freed)
                cached.append({name: np.array(value, copy=True) for name, value in zip(outputs, values)})
            del session
            gc.collect(2 if self.settings.memo else 0)  # a full collection costs ~50 ms; one-off checks run many blocks
            memory_budget.trim_heap()  # its freed buffers go back to the system, not kept as heap for the run
            for tensor in model.graph.initializer:
                release(tensor)  # drop this block's weight pages before the next block maps its own
            if self.settings.memo:
                _CACHE.put(key, cached)
        self._log(BlockRun(block.number, len(self.blocks), len(block.nodes), block.weight_bytes, len(states),
                           time.perf_counter() - start, hit))
        return key, cached

    def _log(self, run: BlockRun) -> None:
        if self.settings.memo:
            RUNS.append(run)
        if self.settings.log is not None:
            self.settings.log(f"block {run.block + 1}/{run.blocks}: {run.nodes} nodes, "
                              f"{run.weight_bytes / 2**20:.0f} MiB of weights, {run.batches} batch(es), "
                              f"{run.seconds:.1f} s" + (" (unchanged, reused)" if run.cached else ""))


def runs() -> list[dict[str, Any]]:
    """Every block run of the process so far, for reports (time per block, reused or not)."""
    return [{"block": r.block + 1, "blocks": r.blocks, "nodes": r.nodes, "weight_bytes": r.weight_bytes,
             "batches": r.batches, "seconds": round(r.seconds, 4), "reused": r.cached} for r in RUNS]


def _carried_after(blocks: list[Block], block: Block) -> set[str]:
    return set(block.carried_out).union(*(set(b.external) for b in blocks[block.number + 1:]))


def _initializer(sched: Schedule, name: str) -> np.ndarray:
    from onnxprune.io.weights import to_array

    return np.asarray(to_array(sched.initializers[name]))


def _feeds_key(batches: Sequence[dict[str, np.ndarray]], tag: str) -> str:
    digest = hashlib.sha256(tag.encode())
    for feeds in batches:
        for name in sorted(feeds):
            value = np.ascontiguousarray(feeds[name])
            digest.update(f"{name}|{value.dtype.str}|{value.shape}".encode())
            digest.update(value.view(np.uint8).reshape(-1).data if value.size else b"")
    return digest.hexdigest()


def stderr_log(line: str) -> None:
    """The CLI's per-block progress line."""
    print(f"onnxprune: {line}", file=sys.stderr, flush=True)
