"""The depth rewrite and its oracle.

Rewrite (:func:`remove_blocks`): for each removed block ``y = Add(x, b)``, every reader of ``y`` reads ``x``
instead and the Add loses its inputs, so the branch computing ``b`` is dead and ``cleanup`` drops it (its
nodes had no other readers: :mod:`onnxprune.methods.depth.analysis`).  When ``y`` is a graph output (or a
subgraph reads it) its name must survive, so the Add becomes ``Identity(x) → y``.  Blocks are rewired in
graph order, so a later block's stream that was an earlier block's output already reads the earlier
stream; a block inside an already removed branch is gone with it.  Nothing depends on input shapes: no
shape constant is written.

Oracle (:func:`zero_branches`): the original with each removed block's branch output multiplied by a
scalar zero, ``y = x + 0·b``.  The two are equal wherever ``b`` is finite.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.errors import PlanError
from onnxprune.methods.depth.analysis import Block


def _node(graph: gs.Graph, name: str) -> gs.Node | None:
    return next((n for n in graph.nodes if n.name == name), None)


def remove_blocks(graph: gs.Graph, blocks: Iterable[Block]) -> gs.Graph:
    """``graph`` with each block's branch gone and its output read from the stream (clean up afterwards)."""
    outputs = {id(t) for t in graph.outputs}
    for block in blocks:
        add = _node(graph, block.add)
        if add is None or not add.inputs:
            continue  # inside the branch of a block removed before it
        stream, out = add.inputs[block.stream_index], add.outputs[0]
        readers = list(out.outputs)
        if id(out) in outputs or any(_node(graph, r.name) is not r for r in readers):
            add.op, add.attrs = "Identity", {}
            add.inputs.clear()
            add.inputs.append(stream)
            continue
        for reader in readers:
            for index, tensor in enumerate(reader.inputs):
                if tensor is out:
                    reader.inputs[index] = stream
        add.inputs.clear()
        add.outputs.clear()
    return graph


def zero_branches(graph: gs.Graph, blocks: Iterable[Block]) -> gs.Graph:
    """``graph`` with ``x + 0·b`` at each block's Add (found by its output and branch tensor names)."""
    tensors = graph.tensors()
    for block in blocks:
        branch, out = tensors.get(block.branch_output), tensors.get(block.output)
        add = out.inputs[0] if out is not None and out.inputs else None
        if branch is None or add is None or add.op != "Add" or branch not in add.inputs:
            raise PlanError(f"block '{block.id}': the reference graph has no Add of '{block.branch_output}'")
        dtype = branch.dtype if branch.dtype is not None else np.float32
        zero = gs.Constant(f"{block.branch_output}_depth_zero", np.zeros((), dtype=dtype))
        zeroed = gs.Variable(f"{block.branch_output}_depth_zeroed", dtype=branch.dtype, shape=branch.shape)
        graph.nodes.append(gs.Node("Mul", f"{block.add}_depth_zero", inputs=[branch, zero], outputs=[zeroed]))
        add.inputs[add.inputs.index(branch)] = zeroed
    graph.toposort()
    return graph
