"""Dependency analysis: from a graph to prune groups.

How: every producer (Conv, Gemm, MatMul with a constant weight...) seeds its output channel axis.
A breadth-first walk visits each node touching a known slot and asks the node's rule how the channel
axis continues (:mod:`onnxprune.analysis.rules`).  Links unify channel *positions* ("atoms") in a union-find,
so a residual Add, a Concat offset or a Flatten block all become plain equalities.  A connected set of
atoms is one *unit* — it is kept or removed as a whole.  Units touching exactly the same slots form a
*group* (e.g. the output channels of one conv and everything they flow through).

Fail closed: a slot that reaches a node without a rule, a node whose rule declines, a graph input or
output, or a tensor captured by a subgraph is *frozen*, and so is every unit touching it.  Each frozen
group records the node and the reason.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.analysis.blocks import Nesting, resolve_nesting
from onnxprune.analysis.io_change import boundary_reason
from onnxprune.analysis.rules import Decline, Effects, Link, ParamSlice, Port, Slot, lookup
from onnxprune.ir.shapes import Shape
from onnxprune.analysis.unionfind import UnionFind
from onnxprune.ir.layer_table import LAYER_TABLE


@dataclass(frozen=True)
class Freeze:
    """Why a slot cannot change: the node (or '' for graph boundaries), its op and the reason."""

    slot: Slot
    node: str
    op: str
    reason: str

    def to_dict(self) -> dict:
        return {"tensor": self.slot.tensor, "axis": self.slot.axis, "node": self.node, "op": self.op,
                "reason": self.reason}


@dataclass
class Group:
    """Units that touch the same slots: what ``--ratio`` prunes a fraction of."""

    id: str
    label: str
    members: list[tuple[Slot, int]]  # slot and how many of its positions this group owns
    units: int
    frozen: bool
    reasons: list[Freeze]
    params: list[ParamSlice] = field(default_factory=list)
    kind: str = "channel"  # channel (conv), neuron (Gemm/MatMul/embedding), head, hidden (LSTM/GRU/RNN)
    head_dim: int | None = None
    #: equal-size blocks of unit indices (query heads per KV head, :mod:`onnxprune.analysis.blocks`); every
    #: block keeps none or the same number of units.  Empty: units are independent.
    blocks: tuple[tuple[int, ...], ...] = ()
    #: why every block must keep at least one unit: freezes on slots only the blocks' parents (KV heads) touch,
    #: e.g. a KV cache at the interface without ``allow_io_change``; the units inside may still go
    fixed_blocks: list[Freeze] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "label": self.label, "channels": self.units, "frozen": self.frozen, "kind": self.kind,
            "head_dim": self.head_dim,
            **({"blocks": [list(b) for b in self.blocks]} if self.blocks else {}),
            **({"fixed_blocks": [r.to_dict() for r in self.fixed_blocks]} if self.fixed_blocks else {}),
            "members": [{"tensor": s.tensor, "axis": s.axis, "positions": n} for s, n in self.members],
            "params": sorted({p.tensor for p in self.params}),
            "reasons": [r.to_dict() for r in self.reasons],
        }


@dataclass
class Analysis:
    """Result of the walk: groups plus everything a rewrite needs (slices, edits, atom maps)."""

    groups: list[Group]
    slots: dict[Slot, tuple[int, int]]  # slot -> (first atom, size)
    atom_group: np.ndarray  # atom -> group index
    atom_unit: np.ndarray  # atom -> unit index within its group
    params: list[ParamSlice]
    edits: list
    freezes: list[Freeze]
    control_flow: list[dict] = field(default_factory=list)  # If/Loop/Scan nodes holding layers (not pruned)
    #: atom → block index within its group for *block atoms* (a KV head: removed with its block's last unit),
    #: -1 for ordinary atoms (whose ``atom_unit`` decides)
    atom_block: np.ndarray | None = None
    #: copy-count axes (``n_rep``): slot → (parent slot, child slot); size = kept children / kept parents
    counts: dict[Slot, tuple[Slot, Slot]] = field(default_factory=dict)

    def group(self, group_id: str) -> Group:
        for group in self.groups:
            if group.id == group_id:
                return group
        raise KeyError(group_id)

    def slot_units(self, slot: Slot) -> tuple[np.ndarray, np.ndarray]:
        """(group index, unit index) of every position of ``slot``."""
        first, size = self.slots[slot]
        return self.atom_group[first:first + size], self.atom_unit[first:first + size]

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups if not g.frozen and g.units > 1]

    @property
    def prunable_indices(self) -> list[int]:
        """Indices (into ``groups``) of the prunable groups, the keys of scores and plans."""
        return [i for i, g in enumerate(self.groups) if not g.frozen and g.units > 1]


class _Context:
    """What rules may read: probe shapes (at both assignments of the symbols), constant values, the
    default-domain opset."""

    def __init__(self, graph: gs.Graph, shapes: dict[str, Shape]):
        self.graph = graph
        self.shapes = shapes
        self.opset = int(graph.opset)

    def shape(self, tensor: gs.Tensor) -> Shape | None:
        if isinstance(tensor, gs.Constant):
            return tuple(int(d) for d in tensor.shape)
        return self.shapes.get(tensor.name)

    def alt_shape(self, tensor: gs.Tensor) -> Shape | None:
        """The shape at the second assignment of the symbols (the same as :meth:`shape` without one)."""
        alt = getattr(self.shapes, "alt", None)
        if isinstance(tensor, gs.Constant) or alt is None:
            return self.shape(tensor)
        return alt.get(tensor.name)

    def static_axes(self, tensor: gs.Tensor) -> tuple[bool, ...] | None:
        """Per axis: whether its size is the same at every assignment of the symbols."""
        if isinstance(tensor, gs.Constant) or not hasattr(self.shapes, "static_axes"):
            shape = self.shape(tensor)
            return None if shape is None else (True,) * len(shape)
        return self.shapes.static_axes(tensor.name)

    def value(self, tensor: gs.Tensor) -> np.ndarray | None:
        return np.asarray(tensor.values) if isinstance(tensor, gs.Constant) else None


class _Walker:
    """Breadth-first walk over slots; owns the union-find and the records."""

    def __init__(self, graph: gs.Graph, shapes: dict[str, Shape], allow_io_change: bool = False):
        self.graph = graph
        self.ctx = _Context(graph, shapes)
        self.tensors = graph.tensors()
        self.node_index = {id(n): i for i, n in enumerate(graph.nodes)}
        self.uf = UnionFind()
        self.slots: dict[Slot, tuple[int, int]] = {}
        self.queue: deque[Slot] = deque()
        self.visited: set[tuple[int, Port]] = set()
        self.params: list[ParamSlice] = []
        self.edits: list = []
        self.head_dims: dict[Slot, int] = {}
        self.nests: list[tuple[np.ndarray, np.ndarray]] = []  # (parent atoms, child atoms): broadcast copies
        self.counts: dict[Slot, tuple[Slot, Slot]] = {}
        self.node_ops = {n.name: n.op for n in graph.nodes}
        self.freezes: list[Freeze] = []
        self.boundary = {t.name: boundary_reason(t.name, side, allow_io_change)
                         for side, tensors in (("model input", graph.inputs), ("model output", graph.outputs))
                         for t in tensors}
        self.boundary = {name: reason for name, reason in self.boundary.items() if reason is not None}
        self.boundary.update({name: f"read inside the body of control-flow node '{node}' (bodies are not rewritten)"
                              for name, node in _captured_names(graph).items()})

    def run(self) -> None:
        for node in self.graph.nodes:
            rule = lookup(node)
            if rule is None or rule.seeds is None:
                continue
            output = node.outputs[0].name if node.outputs else ""
            if output and output not in self.ctx.shapes:
                self.freezes.append(Freeze(Slot(output, -1), node.name, node.op, f"shape of '{output}' is unknown"))
                continue
            for port in rule.seeds(self.ctx, node):
                slot = Slot(node.outputs[port.index].name, port.axis)
                if self._register(slot, node, port):
                    self._visit_node(node, port, slot)
        while self.queue:
            self._visit_slot(self.queue.popleft())

    def _register(self, slot: Slot, node: gs.Node | None = None, port: Port | None = None) -> bool:
        """Allocate atoms for a new slot (and queue it); False when its size is unknown."""
        if slot in self.slots:
            return True
        shape = self.ctx.shapes.get(slot.tensor)
        if shape is None or slot.axis >= len(shape):
            if node is not None:
                self.freezes.append(Freeze(slot, node.name, node.op, f"shape of '{slot.tensor}' is unknown"))
            return False
        self.slots[slot] = (self.uf.add(shape[slot.axis]), shape[slot.axis])
        self.queue.append(slot)
        return True

    def _freeze(self, slot: Slot, node: gs.Node | None, reason: str) -> None:
        self.freezes.append(Freeze(slot, node.name if node else "", node.op if node else "", reason))

    def _visit_slot(self, slot: Slot) -> None:
        if slot.tensor in self.boundary:
            self._freeze(slot, None, self.boundary[slot.tensor])
        tensor = self.tensors.get(slot.tensor)
        if tensor is None:
            return
        for node in list(tensor.inputs):
            if id(node) not in self.node_index:
                continue
            for index, out in enumerate(node.outputs):
                if out is tensor:
                    self._visit_node(node, Port(False, index, slot.axis), slot)
        for node in list(tensor.outputs):
            if id(node) not in self.node_index:  # a node inside a subgraph: frozen as "captured" above
                continue
            for index, inp in enumerate(node.inputs):
                if inp is tensor:
                    self._visit_node(node, Port(True, index, slot.axis), slot)

    def _visit_node(self, node: gs.Node, port: Port, slot: Slot) -> None:
        key = (self.node_index[id(node)], port)
        if key in self.visited:
            return
        self.visited.add(key)
        rule = lookup(node)
        if rule is None:
            domain = f" (domain '{node.domain}')" if node.domain else ""
            self._freeze(slot, node, f"no rule for op {node.op}{domain}")
            return
        if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
            self._freeze(slot, node, f"{node.op} has a subgraph")
            return
        try:
            effects = rule.apply(self.ctx, node, port)
            self._check(node, effects)
        except Decline as reason:
            self._freeze(slot, node, str(reason))
            return
        except Exception as err:  # a rule bug (or a hostile graph) must freeze, never crash or corrupt
            self._freeze(slot, node, f"internal: {node.op} rule failed ({type(err).__name__}: {err})".splitlines()[0])
            return
        self._apply(node, effects)

    def _check(self, node: gs.Node, effects: Effects) -> None:
        """Reject effects that do not fit the tensors (a rule bug must freeze, never corrupt)."""
        for link in effects.links + effects.nests:
            for s, pos in ((link.a, link.a_pos), (link.b, link.b_pos)):
                if isinstance(self.tensors.get(s.tensor), gs.Constant):
                    raise Decline(f"internal: link to constant '{s.tensor}'")
                if s.tensor in self.ctx.shapes and s.axis >= len(self.ctx.shapes[s.tensor]):
                    raise Decline(f"internal: axis {s.axis} out of range for '{s.tensor}'")
                if s.tensor in self.ctx.shapes and pos is not None and len(pos):
                    if pos.max() >= self.ctx.shapes[s.tensor][s.axis] or pos.min() < 0:
                        raise Decline(f"internal: link position out of range for '{s.tensor}'")
            if link.a_pos is None:
                sa, sb = self.ctx.shapes.get(link.a.tensor), self.ctx.shapes.get(link.b.tensor)
                if sa is None or sb is None or sa[link.a.axis] != sb[link.b.axis]:
                    raise Decline(f"'{link.a.tensor}' and '{link.b.tensor}' differ in channel count")
        for param in effects.params:
            tensor = self.tensors.get(param.tensor)
            if not isinstance(tensor, gs.Constant) or tensor.shape[param.axis] != len(param.index):
                raise Decline(f"parameter '{param.tensor}' does not match its channel axis")

    def _apply(self, node: gs.Node, effects: Effects) -> None:
        node_id = self.node_index[id(node)]
        for port in effects.ports:
            self.visited.add((node_id, port))
        for link in effects.links:
            if not (self._register(link.a, node) and self._register(link.b, node)):
                continue
            self._union(link)
        for nest in effects.nests:
            if self._register(nest.a, node) and self._register(nest.b, node):
                self.nests.append(self._atoms(nest))
        self.counts.update(effects.counts)
        self.params.extend(effects.params)
        self.edits.extend(effects.edits)
        self.head_dims.update(effects.head_dims)
        for param in effects.params:
            self._register(param.slot, node)

    def _union(self, link: Link) -> None:
        self.uf.union_many(*self._atoms(link))

    def _atoms(self, link: Link) -> tuple[np.ndarray, np.ndarray]:
        """The atoms a link relates, pairwise."""
        first_a, size_a = self.slots[link.a]
        first_b, _ = self.slots[link.b]
        a_pos = np.arange(size_a) if link.a_pos is None else link.a_pos
        b_pos = np.arange(size_a) if link.b_pos is None else link.b_pos
        return a_pos + first_a, b_pos + first_b


def _captured_names(graph: gs.Graph) -> dict[str, str]:
    """Names used inside subgraphs (If/Loop/Scan bodies) that the subgraph does not define itself, with
    the outer node whose body reads them."""
    captured: dict[str, str] = {}
    for node in graph.nodes:
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                defined = {t.name for t in value.inputs}
                for inner in value.nodes:
                    defined.update(t.name for t in inner.outputs)
                for inner in value.nodes:
                    captured.update((t.name, node.name) for t in inner.inputs if t.name and t.name not in defined)
                captured.update((name, node.name) for name in _captured_names(value))
    return captured


#: Ops that hold weights worth pruning (the layer table's weighted producers, and attention); a subgraph
#: containing one is reported by :func:`control_flow_layers`.
_LAYER_OPS = tuple(row.op for row in LAYER_TABLE.values() if row.kind and row.weight is not None and not row.domain) \
    + ("Attention", "MultiHeadAttention")


def control_flow_layers(graph: gs.Graph) -> list[dict]:
    """If/Loop/Scan nodes whose bodies hold layers, with what they hold and why it stays as it is.

    Why: a voice-activity detector whose LSTM lives in ``If`` branches otherwise shows "0 groups" and
    no reason.  Layers inside a body are never pruned: every branch (and every loop iteration's carried
    state) would have to change consistently, which no rule follows; tensors the body reads from outside
    freeze their groups ("read inside the body of control-flow node …").
    """
    found = []
    for node in graph.nodes:
        bodies = {name: value for name, value in node.attrs.items() if isinstance(value, gs.Graph)}
        layers: dict[str, int] = {}
        params = 0
        for body in bodies.values():
            for inner, weights in _layers_in(body):
                layers[inner] = layers.get(inner, 0) + 1
                params += weights
        if layers:
            held = ", ".join(f"{count} {op}" for op, count in sorted(layers.items()))
            found.append({"node": node.name, "op": node.op, "bodies": sorted(bodies), "layers": layers,
                          "params": params, "reason": f"{held} inside {node.op} {'/'.join(sorted(bodies))}: layers "
                          "in control-flow bodies are not pruned (every branch and iteration would have to "
                          "change alike)"})
    return found


def _layers_in(body: gs.Graph):
    """(op, parameter count) of every layer op in ``body`` and in the bodies nested in it."""
    for inner in body.nodes:
        if inner.op in _LAYER_OPS:
            yield inner.op, sum(int(np.prod(t.shape)) for t in inner.inputs
                                if isinstance(t, gs.Constant) and t.shape is not None)
        for value in inner.attrs.values():
            if isinstance(value, gs.Graph):
                yield from _layers_in(value)


def analyze_graph(graph: gs.Graph, shapes: dict[str, Shape], exclude: Iterable[str] = (),
                  allow_io_change: bool = False) -> Analysis:
    """Build the prune groups of a normalized graph (see module docstring).

    ``allow_io_change``: KV-cache inputs/outputs may be narrowed (:mod:`onnxprune.analysis.io_change`).
    """
    walker = _Walker(graph, shapes, allow_io_change)
    walker.run()
    return _build_groups(walker, list(exclude))


def _build_groups(walker: _Walker, exclude: list[str]) -> Analysis:
    nesting = resolve_nesting(walker.uf, walker.nests)
    roots = nesting.roots
    slot_order = list(walker.slots)
    root_slots: dict[int, list[int]] = {}
    for index, slot in enumerate(slot_order):
        first, size = walker.slots[slot]
        for root in np.unique(roots[first:first + size]).tolist():
            root_slots.setdefault(root, []).append(index)
    signatures = _signatures(root_slots, nesting)
    signature_group: dict[tuple[int, ...], int] = {}
    root_group: dict[int, int] = {}
    for root in _roots_in_order(roots):
        root_group[root] = signature_group.setdefault(signatures[root], len(signature_group))
    # per distinct root a value, then one lookup per atom: a ResNet-50 has ~10^5 atoms, too many for a
    # Python loop over them
    distinct, inverse = np.unique(roots, return_inverse=True)
    inverse = inverse.reshape(-1)
    distinct_roots = distinct.tolist()
    atom_group = np.array([root_group[r] for r in distinct_roots], dtype=np.int64)[inverse]
    unit_count = [0] * len(signature_group)
    root_unit: dict[int, int] = {}
    parents = nesting.parents()
    for root in _roots_in_order(roots):
        if root not in parents:
            group = root_group[root]
            root_unit[root] = unit_count[group]
            unit_count[group] += 1
    group_blocks, root_block = _number_blocks(nesting, root_group, root_unit)
    atom_unit = np.array([root_unit[r] for r in distinct_roots], dtype=np.int64)[inverse]
    atom_block = np.array([root_block.get(r, -1) for r in distinct_roots], dtype=np.int64)[inverse]
    groups = _describe_groups(walker, slot_order, signature_group, unit_count, exclude, atom_group)
    for index, blocks in group_blocks.items():
        groups[index].blocks = tuple(tuple(b) for b in blocks)
        _fix_blocks(groups[index], index, walker, atom_group, atom_block)
    for param in walker.params:
        first, size = walker.slots[param.slot]
        for g in np.unique(atom_group[first:first + size][param.index]).tolist():
            groups[g].params.append(param)
    for group in groups:
        _classify(group, walker)
    return Analysis(groups, dict(walker.slots), atom_group, atom_unit, walker.params, walker.edits, walker.freezes,
                    control_flow_layers(walker.graph), atom_block, dict(walker.counts))


def _signatures(root_slots: dict[int, list[int]], nesting: Nesting) -> dict[int, tuple[int, ...]]:
    """Root → the key of its group: the slots it touches, or for a block's roots the slots the whole block
    touches plus ``-n`` (n units per block), so blocks of one group are alike."""
    signatures = {root: tuple(slots) for root, slots in root_slots.items()}
    for parents, children in nesting.blocks:
        touched = sorted({i for r in parents + children for i in root_slots[r]})
        for root in parents + children:
            signatures[root] = tuple(touched) + (-len(children),)
    return signatures


def _fix_blocks(group: Group, index: int, walker: _Walker, atom_group: np.ndarray, atom_block: np.ndarray) -> None:
    """A group frozen only on slots that nothing but the blocks' parents touch stays prunable *inside* its
    blocks: no parent is removed while every block keeps a unit, so those slots never change (a KV-cache
    model without ``allow_io_change`` may still lose query heads inside its KV groups)."""
    if not group.frozen:
        return
    parents_only = set()
    for slot, _ in group.members:
        first, size = walker.slots[slot]
        mine = atom_group[first:first + size] == index
        if mine.any() and bool((atom_block[first:first + size][mine] >= 0).all()):
            parents_only.add(slot)
    if all(reason.slot in parents_only for reason in group.reasons):
        group.frozen, group.fixed_blocks, group.reasons = False, group.reasons, []


def _number_blocks(nesting: Nesting, root_group: dict[int, int], root_unit: dict[int, int]
                   ) -> tuple[dict[int, list[list[int]]], dict[int, int]]:
    """Per group its blocks (unit indices); parent roots get the block's first unit and its block index."""
    group_blocks: dict[int, list[list[int]]] = {}
    root_block: dict[int, int] = {}
    for parents, children in nesting.blocks:
        blocks = group_blocks.setdefault(root_group[children[0]], [])
        units = sorted(root_unit[c] for c in children)
        for root in parents:
            root_unit[root], root_block[root] = units[0], len(blocks)
        blocks.append(units)
    return group_blocks, root_block


#: what a producer's units are called, from the layer table (standard-domain rows with a kind), and the
#: com.microsoft int4 layer (analysis/rules/contrib_nbits.py)
KIND_OF_PRODUCER = {row.op: row.kind for row in LAYER_TABLE.values() if row.kind and not row.domain} | \
    {"MatMulNBits": "neuron"}


def _classify(group: Group, walker: _Walker) -> None:
    """What a group's units are, so reports and per-kind ratios (heads vs FFN neurons) can tell them apart."""
    head_dims = [walker.head_dims[s] for s, _ in group.members if s in walker.head_dims]
    if head_dims:
        group.kind, group.head_dim = "head", head_dims[0]
        return
    ops = {walker.node_ops.get(p.node, "") for p in group.params if p.role == "producer"}
    kinds = {KIND_OF_PRODUCER.get(op, "channel") for op in ops}
    group.kind = "hidden" if "hidden" in kinds else "channel" if "channel" in kinds else \
        "neuron" if kinds else "channel"


def _roots_in_order(roots: np.ndarray) -> list[int]:
    """Distinct roots ordered by their first atom: deterministic group and unit numbering."""
    _, first = np.unique(roots, return_index=True)
    return roots[np.sort(first)].tolist()


def _describe_groups(walker: _Walker, slot_order: list[Slot], signature_group: dict[tuple[int, ...], int],
                     unit_count: list[int], exclude: list[str], atom_group: np.ndarray) -> list[Group]:
    frozen_by_slot: dict[Slot, list[Freeze]] = {}
    for freeze in walker.freezes:
        frozen_by_slot.setdefault(freeze.slot, []).append(freeze)
    patterns = [re.compile(p) for p in exclude]
    groups: list[Group] = []
    for signature, index in sorted(signature_group.items(), key=lambda kv: kv[1]):
        members = [slot_order[i] for i in signature if i >= 0]  # a block's -n marker is no slot
        reasons = [f for s in members for f in frozen_by_slot.get(s, [])]
        reasons += _exclusions(walker, members, patterns)
        label = _label(walker, members)
        sizes = []
        for slot in members:
            first, size = walker.slots[slot]
            sizes.append((slot, int(np.count_nonzero(atom_group[first:first + size] == index))))
        groups.append(Group(f"g{index}", label, sizes, unit_count[index], bool(reasons), reasons))
    return groups


def _exclusions(walker: _Walker, members: list[Slot], patterns: list[re.Pattern]) -> list[Freeze]:
    """Freeze records for members whose tensor or adjacent node matches an --exclude pattern."""
    found = []
    for slot in members:
        tensor = walker.tensors.get(slot.tensor)
        names = [slot.tensor] + ([n.name for n in tensor.inputs] if tensor is not None else [])
        for pattern in patterns:
            hit = next((n for n in names if pattern.fullmatch(n) or n == pattern.pattern), None)
            if hit is not None:
                found.append(Freeze(slot, hit, "", f"excluded by --exclude {pattern.pattern}"))
    return found


def _label(walker: _Walker, members: list[Slot]) -> str:
    """Human name of a group: the nodes producing its first member tensors."""
    producers = []
    for slot in members:
        tensor = walker.tensors.get(slot.tensor)
        if tensor is not None and tensor.inputs:
            node = tensor.inputs[0]
            if node.op in ("Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "MultiHeadAttention",
                           "GroupQueryAttention", "MatMulNBits"):
                producers.append(node.name or node.op)
    return "+".join(dict.fromkeys(producers)) or members[0].tensor
