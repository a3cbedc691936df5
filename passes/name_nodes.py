"""Give every node a unique name.

Assumes: any graph.
Guarantees: nodes without a name get ``<op>_<n>``; duplicated names get a ``__<k>`` suffix.  Edits and
reports refer to nodes by name, and ``--exclude`` matches names, so names must identify nodes; existing
unique names are kept unchanged.  Idempotent.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.passes.base import PassResult


def run(graph: gs.Graph) -> PassResult:
    taken = {n.name for n in graph.nodes if n.name}
    seen: set[str] = set()
    renamed = 0
    for index, node in enumerate(graph.nodes):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = node.name or f"{node.op}_{index}"
        name, k = base, 1
        while name in taken or name in seen:
            name, k = f"{base}__{k}", k + 1
        node.name = name
        renamed += 1
        seen.add(name)
        taken.add(name)
    return PassResult(graph, renamed > 0)
