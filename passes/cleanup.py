"""Tidy a rewritten graph.

Assumes: any graph.
Guarantees: dead nodes and unused constants are removed, copies made by ``untie_shared`` that are
again identical to their original are merged back (so an unpruned model keeps its size), and nodes
are topologically sorted.  Graph inputs are kept even when unused (the model's interface is fixed).
Idempotent.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.ir.graph import stored_key
from onnxprune.passes import toposort
from onnxprune.passes.base import PassResult
from onnxprune.passes.untie_shared import UNTIED_MARK


def _retie(graph: gs.Graph) -> bool:
    tensors = graph.tensors()
    retied = False
    for node in graph.nodes:
        for index, tensor in enumerate(node.inputs):
            if not isinstance(tensor, gs.Constant) or UNTIED_MARK not in tensor.name:
                continue
            base = tensors.get(tensor.name.split(UNTIED_MARK)[0])
            if isinstance(base, gs.Constant) and _same(base, tensor):
                node.inputs[index] = base
                retied = True
    return retied


def _same(a: gs.Constant, b: gs.Constant) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if stored_key(a) is not None and stored_key(a) == stored_key(b):
        return True  # the same stored weight: no need to read (and page in) either
    return a._values is b._values or np.array_equal(np.asarray(a.values), np.asarray(b.values))


def run(graph: gs.Graph) -> PassResult:
    before = (len(graph.nodes), len(graph.tensors()))
    retied = _retie(graph)
    graph.cleanup(remove_unused_graph_inputs=False)
    sorted_ = toposort.run(graph)
    return PassResult(graph, retied or sorted_.modified or (len(graph.nodes), len(graph.tensors())) != before)
