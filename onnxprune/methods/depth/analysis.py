"""Find the residual blocks of a graph that can be removed whole: ``y = x + f(x)`` → ``y = x``.

A block is an ``Add`` of two variable tensors where one input, the *branch output* ``b``, is computed by
nodes that nothing else reads (the *branch*: every output of every branch node is consumed only by the
branch or by the ``Add``, none is a graph output), and the other input, the *stream* ``x``, is where the
branch starts (``x`` is an ancestor of what the branch reads).  Then deleting the branch and reading
``x`` where ``y`` was read is exactly the model with ``b`` multiplied by zero (the oracle,
:mod:`onnxprune.methods.depth.rewrite`) — provided ``y`` has ``x``'s shape at every input shape, which is
checked at both probe assignments of the symbolic dims.

Why exclusivity and not a pattern match (Conv-BN-Relu-Conv, LN-attention): the same test covers
ResNet basic and bottleneck blocks, MobileNetV2 inverted residuals and pre-/post-LN transformer
sub-blocks, and declines everything else with a reason naming the node.  An op after the ``Add``
(ResNet's ``Relu``, BERT's ``LayerNormalization``) stays: ``relu(x + f(x))`` becomes ``relu(x)``.

Not removable (each with the node and why): a projection shortcut (both inputs are computed from an
earlier tensor, so neither is the stream); a branch whose nodes feed anything outside it (KV-cache
``present`` outputs, a shared tensor); a branch with no weighted layer; an ``Add`` that broadcasts.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import onnx_graphsurgeon as gs

from onnxprune.ir.shapes import ProbeShapes

#: Ops whose constant input makes a branch a layer worth calling a block.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Block:
    """One removable residual block."""

    id: str  # the Add node's name: stable for a given model
    add: str  # the Add node
    stream: str  # x: the tensor the block adds onto
    branch_output: str  # b = f(x)
    output: str  # y = x + b
    stream_index: int  # which Add input is x
    nodes: tuple[str, ...]  # the branch: every node deleted with it
    weights: tuple[str, ...]  # weighted nodes of the branch, in graph order
    after: tuple[str, ...] = ()  # op types reading y (a Relu after a ResNet Add stays: relu(x + f(x)) → relu(x))
    side_inputs: tuple[str, ...] = ()  # variable tensors the branch reads besides x (attention masks, positions)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "add": self.add, "stream": self.stream, "branch_output": self.branch_output,
                "output": self.output, "nodes": len(self.nodes), "weights": list(self.weights),
                "after": list(self.after), "side_inputs": list(self.side_inputs)}


@dataclass(frozen=True)
class Join:
    """An Add of two variable tensors that is not a removable block, and why."""

    node: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"node": self.node, "reason": self.reason}


@dataclass(frozen=True)
class DepthAnalysis:
    """Removable blocks in graph order, and every other variable+variable Add with its reason."""

    blocks: tuple[Block, ...]
    joins: tuple[Join, ...] = field(default=())

    def block(self, block_id: str) -> Block:
        for block in self.blocks:
            if block.id == block_id:
                return block
        raise KeyError(block_id)

    def to_dict(self) -> dict[str, Any]:
        return {"blocks": [b.to_dict() for b in self.blocks], "not_removable": [j.to_dict() for j in self.joins]}


def find_blocks(graph: gs.Graph, shapes: ProbeShapes, exclude: Iterable[str] = ()) -> DepthAnalysis:
    """Every residual Add of ``graph`` (normalized, named, sorted), removable or with its reason."""
    order = {id(node): index for index, node in enumerate(graph.nodes)}
    outputs = {t.name for t in graph.outputs} | _captured(graph)  # kept as if graph outputs: read from outside
    patterns = [re.compile(p) for p in exclude]
    blocks, joins = [], []
    for node in graph.nodes:
        if node.op != "Add" or node.domain not in (None, "", "ai.onnx") or len(node.inputs) != 2:
            continue
        if not all(isinstance(t, gs.Variable) for t in node.inputs) or node.inputs[0] is node.inputs[1]:
            continue
        found = _classify(node, order, outputs, shapes)
        if isinstance(found, Block):
            hit = _excluded(found, patterns)
            if hit is None:
                blocks.append(found)
                continue
            found = Join(node.name, f"excluded by --exclude ({hit})")
        joins.append(found)
    return DepthAnalysis(tuple(blocks), tuple(joins))


def _captured(graph: gs.Graph) -> set[str]:
    """Names of tensors that nodes inside subgraphs (If/Loop/Scan bodies) read: a node producing one is never part
    of a branch.  (graphsurgeon also lists such readers among a tensor's consumers, and they are not top-level
    nodes, so the exclusivity test declines them already; this does not depend on that.)"""
    names: set[str] = set()
    stack = [value for node in graph.nodes for value in node.attrs.values() if isinstance(value, gs.Graph)]
    while stack:
        body = stack.pop()
        for node in body.nodes:
            names.update(t.name for t in node.inputs)
            stack.extend(value for value in node.attrs.values() if isinstance(value, gs.Graph))
    return names


def _excluded(block: Block, patterns: list[re.Pattern]) -> str | None:
    names = (block.add, block.output, *block.nodes)
    for pattern in patterns:
        hit = next((n for n in names if pattern.fullmatch(n) or n == pattern.pattern), None)
        if hit is not None:
            return hit
    return None


def _classify(add: gs.Node, order: dict[int, int], outputs: set[str], shapes: ProbeShapes) -> Block | Join:
    """A Block if one input is a branch computed from the other, else the most telling reason."""
    reasons = []
    computed = [_branch(add, tensor, order, outputs) for tensor in add.inputs]  # the nodes only that input needs
    for index in (0, 1):
        stream, branch = add.inputs[index], computed[1 - index]
        if isinstance(branch, str):
            reasons.append(branch)
            continue
        reads = {t.name for n in branch for t in n.inputs if isinstance(t, gs.Variable)} - {
            t.name for n in branch for t in n.outputs}
        if stream.name not in reads and not _reaches(stream, [t for n in branch for t in n.inputs
                                                              if t.name in reads], order):
            reasons.append(_not_from_stream(add, index, computed))
            continue
        weighted = [n.name for n in branch if n.op in WEIGHTED_OPS and any(isinstance(t, gs.Constant) for t in n.inputs)]
        if not weighted:
            reasons.append(f"branch '{add.inputs[1 - index].name}' has no weighted layer (Conv/Gemm/MatMul), "
                           "so it is not a block")
            continue
        mismatch = _shape_mismatch(add, stream, shapes)
        if mismatch:
            reasons.append(mismatch)
            continue
        return Block(add.name, add.name, stream.name, add.inputs[1 - index].name, add.outputs[0].name, index,
                     tuple(n.name for n in branch), tuple(weighted),
                     tuple(dict.fromkeys(c.op for c in add.outputs[0].outputs)),
                     tuple(sorted(reads - {stream.name})))
    return Join(add.name, _best(reasons))


def _best(reasons: list[str]) -> str:
    """The reason that says most: a projection shortcut, else one about the branch, else the first."""
    for marker in ("projection shortcut", "shape", "graph output", "also read"):
        for reason in reasons:
            if marker in reason:
                return reason
    return reasons[0]


def _branch(add: gs.Node, out: gs.Tensor, order: dict[int, int], outputs: set[str]) -> list[gs.Node] | str:
    """The nodes only ``out`` needs (graph order), or why ``out`` is not a branch output.

    Walks producers from the Add backwards in decreasing graph order, so every consumer of a node is
    decided before the node itself: a node joins when all its outputs feed only the branch (or the Add).
    """
    if out.name in outputs:
        return f"'{out.name}' is a graph output or read inside a subgraph"
    readers = [n for n in out.outputs if n is not add]
    if readers:
        return f"'{out.name}' is also read by node '{readers[0].name}' ({readers[0].op})"
    if not out.inputs:
        return f"'{out.name}' is a graph input, not a computed branch"
    first = out.inputs[0]
    if id(first) not in order or not _exclusive(first, {id(add)}, outputs):
        return f"'{out.name}' comes from node '{first.name}' ({first.op}), whose other outputs are read elsewhere"
    members: set[int] = set()  # not the Add: x's producer feeds the Add too, and is no branch node
    branch: list[gs.Node] = []
    heap = [(-order[id(first)], id(first), first)]
    seen = {id(first)}
    while heap:
        _, _, node = heapq.heappop(heap)
        if node is not first and not _exclusive(node, members, outputs):
            continue
        members.add(id(node))
        branch.append(node)
        for tensor in node.inputs:
            for producer in tensor.inputs:
                if id(producer) not in seen and id(producer) in order:
                    seen.add(id(producer))
                    heapq.heappush(heap, (-order[id(producer)], id(producer), producer))
    return sorted(branch, key=lambda n: order[id(n)])


def _exclusive(node: gs.Node, members: set[int], outputs: set[str]) -> bool:
    """Whether every output of ``node`` is read only by branch members (and is no graph output)."""
    if any(t.name in outputs for t in node.outputs):
        return False
    consumers = [c for t in node.outputs for c in t.outputs]
    return bool(consumers) and all(id(c) in members for c in consumers)


def _reaches(start: gs.Tensor, targets: list[gs.Tensor], order: dict[int, int]) -> bool:
    """Whether any of ``targets`` is computed (transitively) from ``start``: a backward walk from the targets
    that stops at nodes placed before ``start``'s producer."""
    floor = order.get(id(start.inputs[0]), -1) if start.inputs else -1
    stack, seen = list(targets), set()
    while stack:
        tensor = stack.pop()
        if tensor is start:
            return True
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        for producer in tensor.inputs:
            if order.get(id(producer), -1) > floor:
                stack.extend(producer.inputs)
    return False


def _not_from_stream(add: gs.Node, index: int, computed: list[list[gs.Node] | str]) -> str:
    """Why input ``index`` is not the stream.  When both inputs are computed by weighted layers only for this
    Add, it is a projection shortcut: the side with fewer weighted layers is named as the projection."""
    weighted = [[n for n in c if n.op in WEIGHTED_OPS] if not isinstance(c, str) else [] for c in computed]
    if all(weighted):
        side = 0 if len(weighted[0]) <= len(weighted[1]) else 1
        layer = weighted[side][-1]
        return (f"projection shortcut: '{add.inputs[side].name}' is computed by node '{layer.name}' ({layer.op}) "
                f"from an earlier tensor, not passed through, so removing the branch would not leave y = x")
    return f"'{add.inputs[1 - index].name}' is not computed from '{add.inputs[index].name}': not a residual join"


def _shape_mismatch(add: gs.Node, stream: gs.Tensor, shapes: ProbeShapes) -> str | None:
    """y must have x's shape at both probe assignments (an Add that broadcasts x is not y = x)."""
    y = add.outputs[0].name
    for probe in (shapes, getattr(shapes, "alt", None)):
        if probe is None:
            continue
        if stream.name not in probe or y not in probe:
            return f"the shape of '{stream.name}' or '{y}' at node '{add.name}' is unknown"
        if tuple(probe[stream.name]) != tuple(probe[y]):
            return (f"node '{add.name}' broadcasts: '{stream.name}' has shape {list(probe[stream.name])}, its "
                    f"output {list(probe[y])}")
    if stream.dtype is not None and add.outputs[0].dtype is not None and stream.dtype != add.outputs[0].dtype:
        return f"node '{add.name}' changes the element type"
    return None
