"""Graph passes, installed as ``onnxprune.passes``.

A pass is one module with one public entry point ``run(graph, ...) -> graph`` on an
onnx-graphsurgeon ``Graph`` and a docstring stating what it assumes and guarantees.  ``PASSES`` maps
pass names to entry points so pipelines can name them; ``NORMALIZE`` is the pipeline every model goes
through before analysis.
"""

from __future__ import annotations

from typing import Callable

import onnx_graphsurgeon as gs

from onnxprune.passes import (apply_plan, cleanup, fold_constants, freeze_shape_values, mask_reference, name_nodes,
                              recover_bias, recover_lsq, toposort, untie_shared)

PASSES: dict[str, Callable[..., gs.Graph]] = {
    "fold_constants": fold_constants.run,
    "freeze_shape_values": freeze_shape_values.run,
    "untie_shared": untie_shared.run,
    "toposort": toposort.run,
    "name_nodes": name_nodes.run,
    "apply_plan": apply_plan.run,
    "mask_reference": mask_reference.run,
    "cleanup": cleanup.run,
    "recover_bias": recover_bias.run,
    "recover_lsq": recover_lsq.run,
}

#: Normalization pipeline: constants visible as initializers, one user per constant, sorted nodes.
NORMALIZE: tuple[str, ...] = ("toposort", "name_nodes", "fold_constants", "untie_shared", "toposort")


def run_pipeline(graph: gs.Graph, names: tuple[str, ...] = NORMALIZE) -> gs.Graph:
    """Run the named passes in order."""
    for name in names:
        graph = PASSES[name](graph)
    return graph
