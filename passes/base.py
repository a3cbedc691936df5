"""The one protocol every pass follows: ``run(graph, ...) -> PassResult(graph, modified)``.

Why ``modified``: a pipeline (and a test) can tell a pass that did nothing from one that rewrote the
graph — an idempotent pass must report ``False`` the second time, and a plan that removes nothing must
leave the graph untouched — without comparing exported protos.  In the spirit of onnx-ir's
``PassResult(model, modified)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs


@dataclass(frozen=True)
class PassResult:
    """The graph a pass returns (the same object, changed in place) and whether it changed anything."""

    graph: gs.Graph
    modified: bool
