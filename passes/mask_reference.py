"""Build the masked reference of a plan (the correctness oracle of DESIGN.md §3).

Assumes: the same inputs as ``apply_plan``.
Guarantees: the returned graph is the original with, for every removed channel, the *consumer-side*
weights that read it (Conv/ConvTranspose/Gemm/MatMul input slices) set to zero; nothing else changes.
A correct rewrite of the same plan must then compute the same outputs to float tolerance — a wrong
rule, a missed consumer or a stale shape constant shows up as a mismatch or a runtime error.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.io import weights
from onnxprune.passes.base import PassResult
from onnxprune.analysis.groups import Analysis
from onnxprune.passes.base import PassResult
from onnxprune.analysis.kept_channels import KeptChannels


def run(graph: gs.Graph, analysis: Analysis, removed: dict[int, np.ndarray]) -> PassResult:
    view = KeptChannels(analysis, removed)
    tensors = graph.tensors()
    masked = False
    for param in analysis.params:
        if param.role != "consumer":
            continue
        drop = np.flatnonzero(view.removed_mask(param.slot)[param.index])
        if len(drop) == 0:
            continue
        tensor = tensors[param.tensor]
        source = tensor.values
        values = np.array(source, copy=True)
        weights.release(source)  # a memory-mapped original need not stay resident once copied
        index = [slice(None)] * values.ndim
        index[param.axis] = drop
        values[tuple(index)] = 0
        tensor.values = values
        masked = True
    return PassResult(graph, masked)
