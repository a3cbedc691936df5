"""What a node reads: its inputs and the outer-scope names its subgraphs capture.

Why one module below the stages that ask: cutting a model into blocks (:mod:`onnxprune.runtime.blockwise`)
and telling which folded shape values something still reads (:mod:`onnxprune.ir.shape_folding`) both need
every tensor a node depends on, and an ``If``/``Loop`` body reads outer tensors without listing them as
inputs.
"""

from __future__ import annotations

import onnx


def node_reads(node: onnx.NodeProto) -> list[str]:
    """Every tensor a node reads: its inputs and the outer-scope names its subgraphs capture."""
    names = [name for name in node.input if name]
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            names += _captured(graph)
    return names


def _captured(graph: onnx.GraphProto) -> list[str]:
    """Outer-scope names a (sub)graph reads: by its nodes, or as an output it passes through unchanged."""
    defined = {v.name for v in graph.input} | {i.name for i in graph.initializer}
    defined |= {i.values.name for i in graph.sparse_initializer}
    found = []
    for node in graph.node:
        for name in node_reads(node):
            if name not in defined:
                found.append(name)
        defined.update(node.output)
    found += [out.name for out in graph.output if out.name and out.name not in defined]
    return found
