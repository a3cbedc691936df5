"""Give every use of a shared constant its own copy.

Assumes: constants folded (``fold_constants``).
Guarantees: each constant tensor feeds exactly one (node, input) pair, so slicing a weight for one user
never changes another.  Copies share the NumPy buffer (passes never write arrays in place) and are
named ``<name>__untied<k>``; ``cleanup`` merges copies that end up identical to their original again,
so an unpruned model keeps its original size.  Idempotent.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.passes.base import PassResult

UNTIED_MARK = "__untied"


def run(graph: gs.Graph) -> PassResult:
    names = set(graph.tensors())
    untied = 0
    for tensor in list(graph.tensors().values()):
        if not isinstance(tensor, gs.Constant):
            continue
        uses = [(node, i) for node in list(tensor.outputs) for i, t in enumerate(node.inputs) if t is tensor]
        for k, (node, index) in enumerate(uses[1:], start=1):
            name = f"{tensor.name}{UNTIED_MARK}{k}"
            while name in names:
                name += "_"
            names.add(name)
            # A loaded array, not the lazy proto: graphsurgeon exports a lazy tensor by renaming its
            # underlying TensorProto in place, which would rename the original as well.
            node.inputs[index] = gs.Constant(name, tensor.values, data_location=tensor.data_location)
            untied += 1
    return PassResult(graph, untied > 0)
