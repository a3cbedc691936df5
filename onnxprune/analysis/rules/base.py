"""Vocabulary shared by every op rule: slots, links, parameter slices, shape edits, the registry.

Why this shape: the analysis in :mod:`onnxprune.analysis.groups` knows nothing about op types.  Each op
declares, once, how a channel axis arriving at one of its ports relates to its other ports (links),
which constant tensors must be cut with it (parameter slices) and which attributes or shape constants
must be rewritten when the channel count changes (edits) — or it *declines* with a reason, which
freezes every channel that reached it.  Adding an op is a table entry plus a test.

Channel relations are expressed per channel ("atom"): a :class:`Link` unifies position ``i`` of one
slot with position ``j`` of another.  Identity, concatenation offsets, Flatten blocks and channel
shuffles are all just different index arrays, so one union-find handles every index map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.ir.shapes import Shape


@dataclass(frozen=True, order=True)
class Slot:
    """One channel axis of one tensor: the unit of coupling."""

    tensor: str
    axis: int

    def __str__(self) -> str:
        return f"{self.tensor}[axis {self.axis}]"


@dataclass(frozen=True)
class Port:
    """Where an analysis arrived at a node: input/output index and the tensor axis."""

    is_input: bool
    index: int
    axis: int


@dataclass
class Link:
    """Positions ``a_pos[k]`` of slot ``a`` and ``b_pos[k]`` of slot ``b`` are the same channel.

    ``None`` positions mean the identity over the whole slot (both slots then have equal size).
    """

    a: Slot
    b: Slot
    a_pos: np.ndarray | None = None
    b_pos: np.ndarray | None = None


@dataclass
class ParamSlice:
    """Constant ``tensor`` is cut along ``axis``; its index ``j`` carries channel ``index[j]`` of ``slot``.

    ``role`` says how the constant relates to the channel: ``producer`` (computes it),
    ``consumer`` (reads it: these are zeroed by the masked-reference oracle) or ``param``
    (per-channel parameter such as a BN scale).  ``kind`` tags special parameters
    (``bn_scale``) that importance criteria look for.  ``node``/``input_index`` identify the use.
    """

    tensor: str
    axis: int
    slot: Slot
    index: np.ndarray
    role: str
    node: str
    input_index: int
    kind: str = ""


class Edit(Protocol):
    """A change to an attribute or shape constant once channel counts are known."""

    node: str

    def apply(self, graph: gs.Graph, view: "KeptView") -> None: ...


class KeptView(Protocol):
    """What edits may ask of a plan: kept positions and new sizes of slots."""

    def kept(self, slot: Slot) -> np.ndarray: ...

    def size(self, slot: Slot) -> int: ...

    def size_or(self, slot: Slot, default: int) -> int: ...

    def changed(self, slot: Slot) -> bool: ...


@dataclass
class Effects:
    """Everything a rule says about one node for one arriving channel axis."""

    links: list[Link] = field(default_factory=list)
    params: list[ParamSlice] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    ports: list[Port] = field(default_factory=list)
    head_dims: dict[Slot, int] = field(default_factory=dict)  # slots that index attention heads → head dim
    #: copy relations: ``Link(parent, child, parent_pos, child_pos)`` — child position ``child_pos[k]`` is a
    #: broadcast copy of parent position ``parent_pos[k]`` (GQA's ``repeat_kv``: query head ↔ its KV head).
    #: Copies may go one by one as long as every parent keeps as many as the others; a parent goes with its
    #: last copy (:mod:`onnxprune.analysis.blocks`).
    nests: list[Link] = field(default_factory=list)
    #: copy-count axes: ``slot`` (an ``n_rep`` axis that is no channel) has size |kept child| / |kept parent|
    counts: dict[Slot, tuple[Slot, Slot]] = field(default_factory=dict)


class Decline(Exception):
    """Raised by a rule that cannot follow a channel axis through a node; the message is the reason."""


class RuleContext(Protocol):
    """Read-only facts about the graph that rules may consult."""

    opset: int

    def shape(self, tensor: gs.Tensor) -> Shape | None: ...

    def alt_shape(self, tensor: gs.Tensor) -> Shape | None: ...

    def static_axes(self, tensor: gs.Tensor) -> tuple[bool, ...] | None: ...

    def value(self, tensor: gs.Tensor) -> np.ndarray | None: ...


RuleFn = Callable[[RuleContext, gs.Node, Port], Effects]
SeedFn = Callable[[RuleContext, gs.Node], list[Port]]


@dataclass(frozen=True)
class Rule:
    """Registry entry: the op types it covers, its role (for reports and docs), the function."""

    op_types: tuple[str, ...]
    role: str
    apply: RuleFn
    domain: str = ""
    seeds: "SeedFn | None" = None


_REGISTRY: dict[tuple[str, str], Rule] = {}

ROLES = ("producer", "consumer", "pass-through", "coupler", "index-map", "shape-read", "barrier")


def register(*op_types: str, role: str, domain: str = "", seeds: SeedFn | None = None
             ) -> Callable[[RuleFn], RuleFn]:
    """Decorator: declare ``fn`` as the rule of ``op_types`` (one place per op, fail if duplicated).

    ``seeds`` (producers only) names the output ports whose channels the analysis starts from.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def wrap(fn: RuleFn) -> RuleFn:
        for op in op_types:
            key = (_norm_domain(domain), op)
            if key in _REGISTRY:
                raise ValueError(f"rule for {op} registered twice")
            _REGISTRY[key] = Rule(op_types=op_types, role=role, apply=fn, domain=domain, seeds=seeds)
        return fn

    return wrap


def _norm_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def lookup(node: gs.Node) -> Rule | None:
    """The rule for ``node`` or None (unknown ops are barriers: the caller freezes)."""
    return _REGISTRY.get((_norm_domain(node.domain or ""), node.op))


def registered_ops() -> dict[str, str]:
    """op type → role, for documentation and ``analyze`` output."""
    return {op: rule.role for (_, op), rule in sorted(_REGISTRY.items())}


# ---------------------------------------------------------------------------------------------
# Small helpers used by many rules.


def find_node(graph: gs.Graph, name: str) -> gs.Node:
    """The node an edit refers to (names are unique after the ``name_nodes`` pass)."""
    return next(n for n in graph.nodes if n.name == name)


def slot_of(node: gs.Node, port: Port) -> Slot:
    """The slot a port refers to."""
    tensor = node.inputs[port.index] if port.is_input else node.outputs[port.index]
    return Slot(tensor.name, port.axis)


def identity(a: Slot, b: Slot) -> Link:
    return Link(a, b)


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    """Normalize a possibly negative axis, declining when it is out of range."""
    if not -rank <= axis < rank:
        raise Decline(f"{what} {axis} out of range for rank {rank}")
    return axis % rank


def require_shape(ctx: RuleContext, tensor: gs.Tensor) -> Shape:
    """Static (probe) shape of a tensor or a decline naming it."""
    shape = ctx.shape(tensor)
    if shape is None:
        raise Decline(f"shape of '{tensor.name}' is unknown")
    return shape


def const_input(ctx: RuleContext, node: gs.Node, index: int, what: str) -> np.ndarray | None:
    """Value of an optional constant input; declines when it is present but computed at run time."""
    if len(node.inputs) <= index or node.inputs[index].name == "":
        return None
    value = ctx.value(node.inputs[index])
    if value is None:
        raise Decline(f"{what} ('{node.inputs[index].name}') is not a constant")
    return value


def int_list(ctx: RuleContext, node: gs.Node, attr: str, input_index: int) -> list[int] | None:
    """An int list given as attribute (old opsets) or as constant input (new opsets)."""
    if attr in node.attrs and node.attrs[attr] is not None:
        return [int(v) for v in np.atleast_1d(node.attrs[attr])]
    value = const_input(ctx, node, input_index, attr)
    return None if value is None else [int(v) for v in np.atleast_1d(value)]


#: Largest channel index map a rule materializes (a Flatten of 512×7×7 is 25k; 2²⁴ leaves ample room).
MAX_POSITIONS = 1 << 24


def positions(n: int) -> np.ndarray:
    """0..n-1 as an index map; declines absurd sizes (hostile shapes) instead of allocating them."""
    if n > MAX_POSITIONS:
        raise Decline(f"channel map of {n} positions exceeds the limit of {MAX_POSITIONS}")
    return np.arange(n, dtype=np.int64)


def through(node: gs.Node, axis: int) -> Effects:
    """Input 0 and output 0 share ``axis`` one-to-one (the common case of per-channel ops)."""
    return Effects(
        links=[Link(Slot(node.inputs[0].name, axis), Slot(node.outputs[0].name, axis))],
        ports=[Port(True, 0, axis), Port(False, 0, axis)],
    )


@dataclass
class SetAttrEdit:
    """Integer attribute ``attr`` ← new size of ``slot`` (a depthwise ``group``, an RNN ``hidden_size``)."""

    node: str
    attr: str
    slot: Slot

    def apply(self, graph: gs.Graph, view: KeptView) -> None:
        node = find_node(graph, self.node)
        node.attrs[self.attr] = int(view.size(self.slot))


@dataclass
class SetEntryEdit:
    """Entry ``entry`` of the integer constant ``tensor`` (a Reshape target, Resize sizes) ← new size of ``slot``."""

    node: str
    tensor: str
    entry: int
    slot: Slot

    def new_value(self, view: KeptView) -> int | None:
        """The entry's new value (None: leave the constant as it is)."""
        return view.size(self.slot)

    def apply(self, graph: gs.Graph, view: KeptView) -> None:
        value = self.new_value(view)
        if value is None:
            return
        constant = graph.tensors()[self.tensor]
        values = np.array(constant.values, copy=True)
        values[self.entry] = value
        constant.values = values
