"""Make every weight visible as a constant tensor.

Assumes: a graph that onnxruntime can evaluate piecewise.
Guarantees: ``Constant`` nodes, ``Identity`` chains on constants and constant subgraphs (e.g.
``ConstantOfShape → Mul``) are replaced by constant tensors (initializers on export), so rules see
weights however the exporter wrote them; shapes that are static are folded too.  Folded tensors larger
than ``size_threshold`` bytes are left as computed, to bound memory.  Idempotent.

Math: none — this evaluates nodes whose inputs are all constant, with onnxruntime, exactly as the model
would at run time.

Memory-mapped weights (``onnxprune.io.weights``): graphsurgeon hands the constant subgraph to onnxruntime as
a serialized proto, which cannot resolve a stub, so the stub inputs of nodes that may fold are loaded
first (read-only views; only those are copied into the folding proto).  Every other weight stays unread.
"""

from __future__ import annotations

import logging

import onnx_graphsurgeon as gs

from onnxprune.passes.base import PassResult
from onnxprune.errors import UnsupportedModelError
from onnxprune.ir.graph import StoredValues

DEFAULT_SIZE_THRESHOLD = 256 * 1024 * 1024


def _load_fold_inputs(graph: gs.Graph) -> None:
    """Load the stub constants read by nodes whose inputs are all constant (directly or through other
    such nodes): exactly the ones graphsurgeon may give onnxruntime.  Nodes are in topological order."""
    constant_like: set[str] = set()
    for node in graph.nodes:
        inputs = [t for t in node.inputs if t.name]
        if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
            continue
        if all(isinstance(t, gs.Constant) or t.name in constant_like for t in inputs):
            constant_like.update(t.name for t in node.outputs)
            for tensor in inputs:
                if isinstance(tensor, gs.Constant) and isinstance(tensor._values, StoredValues):
                    tensor.values  # noqa: B018  (loads the read-only view)


def run(graph: gs.Graph, size_threshold: int = DEFAULT_SIZE_THRESHOLD) -> PassResult:
    before = (len(graph.nodes), len(graph.tensors()))
    _load_fold_inputs(graph)
    gs_logger = logging.getLogger("onnx_graphsurgeon")
    previous = gs.logger.G_LOGGER.severity
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR
    try:
        # fold_shapes=False: graphsurgeon folds Shape(start=, end=) to the full shape (wrong for opset 15+);
        # flatten_subgraphs=False: inlining a constant-condition If can drop a branch output read inside
        # the branch.  onnxprune's shape probe evaluates Shape chains itself (shapes._fold_shape_reads).
        graph.fold_constants(fold_shapes=False, flatten_subgraphs=False, error_ok=True, size_threshold=size_threshold)
        graph.cleanup(remove_unused_graph_inputs=False)
    except Exception as err:  # graphsurgeon crashes on some value kinds (e.g. constant Sequences)
        raise UnsupportedModelError(f"constant folding failed: {type(err).__name__}: {err}".splitlines()[0]) from err
    finally:
        gs.logger.G_LOGGER.severity = previous
    del gs_logger
    return PassResult(graph, (len(graph.nodes), len(graph.tensors())) != before)
