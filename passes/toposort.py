"""Topological sort.

Assumes: an acyclic graph (possibly listed out of order, which ONNX forbids but exporters produce).
Guarantees: every node comes after the producers of its inputs; a cycle raises UnsupportedModelError.
Idempotent.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.passes.base import PassResult

from onnxprune.errors import UnsupportedModelError


def run(graph: gs.Graph) -> PassResult:
    before = [id(node) for node in graph.nodes]
    try:
        graph.toposort()
    except Exception as err:  # graphsurgeon raises a bare Exception on cycles
        raise UnsupportedModelError(f"graph cannot be sorted: {err}".splitlines()[0]) from err
    return PassResult(graph, [id(node) for node in graph.nodes] != before)
