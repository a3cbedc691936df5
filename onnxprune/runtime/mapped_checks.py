"""Checks of a model whose weights are memory-mapped external data run it block by block, in small blocks.

Why: the oracle (``prune --verify``, ``onnxprune verify``) runs the masked reference and the candidate on a
few batches.  A whole-model onnxruntime session costs about two copies of the weights: onnxruntime copies
every initializer given to it as an ``OrtValue`` (``add_external_initializers``; measured with onnxruntime
1.32, with and without ``session.disable_prepacking``), and the reference's masked weights are computed
copies besides.  Memoised block outputs and the process heap add more, so a ResNet-50 with external data
peaked at 4.7x its size (benchmarks/results_tool_cost.md).  In blocks of 1/:data:`BLOCKS` of the weights
(:mod:`onnxprune.runtime.blockwise`), only one block's copies exist at a time, its pages are released after
it, nothing is memoised (each block runs once per batch), and freed heap is handed back to the system
(:func:`onnxprune.io.memory_budget.trim_heap`).

What stays the same: the batches, the comparisons and the tolerances of the oracle.  With
``ORT_DISABLE_ALL`` block outputs are bit-identical to the whole-model run; with onnxruntime's
optimizations a fusion cannot span a cut, so those outputs may differ in the last bits (tests/test_mapped_checks.py).

When: the command's blockwise mode is ``auto`` (``--blockwise``/``--no-blockwise`` and ``--block-size`` are
obeyed as given), the model's weights come from external data files, and the model is not already
large enough for the budget's blocks (:func:`onnxprune.runtime.blockwise.wanted`).  Single-file models keep
whole-model sessions: their weights are in memory anyway.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import onnx

from onnxprune.io.weights import store_of
from onnxprune.runtime import blockwise

#: The weights are cut into about this many blocks.
BLOCKS = 16
#: Blocks hold at least this many weight bytes (below it, session overheads dominate).
MIN_BLOCK = 1 << 20


def settings_for(model: onnx.ModelProto) -> blockwise.BlockwiseSettings | None:
    """The blockwise settings a check of ``model`` runs under, or None to keep the current ones."""
    settings = blockwise.current()
    store = store_of(model)
    if settings.mode != "auto" or store is None or not store.from_files or blockwise.wanted(model, settings):
        return None
    size = settings.block_bytes or max(MIN_BLOCK, blockwise.weight_bytes(model) // BLOCKS)
    return replace(settings, mode="on", block_bytes=size, memo=False, log=None)


class MappedChecks:
    """``with MappedChecks(model) as blocks:`` runs the enclosed checks of ``model`` (and of models made from its
    weights) block by block when :func:`settings_for` says so; ``blocks`` tells whether it does.

    Why a class: it keeps the settings and the weight store, not the model (a generator-based context
    manager keeps its arguments), so the caller decides how long the model lives.  The store's spill flag
    (set by block sessions) is restored on exit: it serves block runs only.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self.settings = settings_for(model)
        self.store = store_of(model) if self.settings is not None else None
        self._spill = self.store.spill if self.store is not None else False
        self._scope: contextlib.AbstractContextManager | None = None

    def __enter__(self) -> bool:
        if self.settings is None:
            return False
        self._scope = blockwise.use(self.settings)
        self._scope.__enter__()
        return True

    def __exit__(self, *exc: object) -> None:
        if self._scope is not None:
            self._scope.__exit__(*exc)
            self._scope = None
            self.store.spill = self._spill
