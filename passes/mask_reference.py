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
from onnxprune.ir.graph import derive_lazily
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
        masked = True
        if derive_lazily(tensor, tuple(tensor.shape), lambda values, d=drop, a=param.axis: _zeroed(values, d, a)):
            continue  # a stub: masked when a session reads it
        source = tensor.values
        tensor.values = _zeroed(source, drop, param.axis)
        weights.release(source)  # a memory-mapped original need not stay resident once copied
    return PassResult(graph, masked)


def _zeroed(values: np.ndarray, drop: np.ndarray, axis: int) -> np.ndarray:
    """A copy of ``values`` with the ``drop`` indices along ``axis`` set to zero."""
    out = np.array(values, copy=True)
    index = [slice(None)] * out.ndim
    index[axis] = drop
    out[tuple(index)] = 0
    return out
