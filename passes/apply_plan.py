"""Apply a plan: remove the channels of every removed unit.

Assumes: ``graph`` is the normalized graph the ``analysis`` was computed on; ``removed`` maps a group
index to the unit indices to remove (never all units of a group).
Guarantees: every parameter slice of the analysis is cut along its axis, every edit (``group``
attributes, Reshape/Split/Slice/Resize constants) is applied, and the known shapes of changed tensors
are updated.  Conflicting slices of one tensor raise RewriteError instead of producing a wrong model.

Math: for a slice (tensor ``W``, axis ``a``, index map ``idx`` into slot ``s``) the result is
``take(W, {j : channel idx[j] of s is kept}, axis=a)``.  Because rules only link positions that are
the same channel, keeping a channel in one slot keeps it everywhere, and the pruned model equals the
original with the removed channels' consumer weights zeroed (DESIGN.md §3).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.io import weights
from onnxprune.passes.base import PassResult
from onnxprune.errors import RewriteError
from onnxprune.analysis.groups import Analysis
from onnxprune.analysis.kept_channels import KeptChannels


def slice_masks(analysis: Analysis, view: KeptChannels) -> dict[tuple[str, int], np.ndarray]:
    """Kept indices per (constant, axis); raises when two slices of one axis disagree."""
    masks: dict[tuple[str, int], np.ndarray] = {}
    for param in analysis.params:
        keep = view.param_keep(param)
        key = (param.tensor, param.axis)
        if key in masks and not np.array_equal(masks[key], keep):
            raise RewriteError(f"conflicting channel slices for '{param.tensor}' axis {param.axis}")
        masks[key] = keep
    return masks



def run(graph: gs.Graph, analysis: Analysis, removed: dict[int, np.ndarray]) -> PassResult:
    view = KeptChannels(analysis, removed)
    tensors = graph.tensors()
    for (name, axis), keep in slice_masks(analysis, view).items():
        tensor = tensors[name]
        if len(keep) != tensor.shape[axis]:
            old = tensor.values
            tensor.values = np.take(np.asarray(old), keep, axis=axis)
            weights.release(old)  # a memory-mapped source need not stay resident once sliced
    for edit in analysis.edits:
        edit.apply(graph, view)
    for slot in analysis.slots:
        tensor = tensors.get(slot.tensor)
        if isinstance(tensor, gs.Variable) and tensor.shape is not None and view.changed(slot):
            shape = list(tensor.shape)
            if slot.axis < len(shape):
                shape[slot.axis] = view.size(slot)
                tensor.shape = shape
    return PassResult(graph, any(len(units) for units in removed.values()))

