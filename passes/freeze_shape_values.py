"""Replace run-time shape computations whose value never depends on the input shape by constants.

Why: exporters compute shape values at run time even when they are fixed — a C2f block's ``chunk(2)``
bounds ``Shape(x)[1] / 2``, the hidden size of an LSTM's zero initial state read with ``Shape(R)``, a
head dim ``Shape(x)[2] / H``.  Rules can follow constants (slice bounds, reshape targets) and rewrite
them; a value computed from a shape they must freeze.  The analysis probes every model at two
assignments of its symbolic dims (:mod:`onnxprune.ir.shapes`); a small shape value that is the same at
both is taken as the constant it is.  A value that follows a symbol (batch, sequence, width) differs
between the probes and stays computed, so no probe value ever reaches a run-time shape.

Assumes: ``values`` maps tensor names to the arrays both probes computed (:attr:`ProbeShapes.values`).
Guarantees: each such tensor (not a graph input or output) becomes a constant with that value and its
now-dead producers are removed; every other tensor keeps its producer.  The model computes the same
function at every input shape whose symbolic dims the two probes represent.  Run ``untie_shared``
afterwards: one constant may now feed several nodes.  Idempotent.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.passes.base import PassResult


def run(graph: gs.Graph, values: dict[str, np.ndarray]) -> PassResult:
    if not values:
        return PassResult(graph, False)
    boundary = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    changed = False
    for name, tensor in graph.tensors().items():
        if name not in values or name in boundary or not isinstance(tensor, gs.Variable) or not tensor.inputs:
            continue
        value = np.asarray(values[name])
        if tensor.dtype is not None and np.dtype(tensor.dtype) != value.dtype:
            continue  # the probe's value is of another type: leave the computation alone
        tensor.inputs.clear()
        tensor.to_constant(value)
        changed = True
    if changed:
        graph.cleanup()
    return PassResult(graph, changed)
