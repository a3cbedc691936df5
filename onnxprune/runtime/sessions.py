"""onnxruntime sessions on memory-mapped weights, under both optimization levels.

Why both levels: onnxruntime's default graph optimizations (NCHWc layout rewrites) can execute a Conv
whose weights expect more input channels than it receives and still return numbers.  A rewritten model
is therefore always also run with ``ORT_DISABLE_ALL``, which validates shapes strictly.  ``onnx.checker``
alone is not a semantic check either (a Reshape with a wrong element count passes it).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.errors import InputError, VerificationError
from onnxprune.runtime import blockwise
from onnxprune.io import memory_budget
from onnxprune.io.weights import ort_session


ort.set_default_logger_severity(4)  # only fatal: onnxprune reports failures itself, in one line



def make_session(model: onnx.ModelProto, optimized: bool = True, threads: int = 1,
                 prepack: bool = True, weights: Mapping[str, np.ndarray] | None = None
                 ) -> ort.InferenceSession | blockwise.BlockwiseSession:
    """CPU session from memory; ``optimized=False`` disables every graph optimization.

    ``prepack=False``: kernels read the weights where they are instead of keeping re-laid-out copies
    (slower per run, one copy of the weights less): for checks that run a model a few times.
    ``weights``: arrays for the model's stub initializers when their store is in another process
    (a Ray worker, :mod:`onnxprune.runtime.executor`).
    A model whose weights are too large for one session (:func:`onnxprune.runtime.blockwise.wanted`) gets a
    :class:`~onnxprune.runtime.blockwise.BlockwiseSession` with the same interface, one block session at a time.
    """
    if weights is None and blockwise.wanted(model):
        # each block session runs once (over all batches): pre-packed copies of its weights would not pay off
        return blockwise.BlockwiseSession(model, lambda block: _session(block, optimized, threads, prepack=False),
                                          tag=f"{optimized}/{threads}")
    return _session(model, optimized, threads, prepack, weights)


def _session(model: onnx.ModelProto, optimized: bool, threads: int, prepack: bool,
             weights: Mapping[str, np.ndarray] | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort_session(model, options, providers=["CPUExecutionProvider"], weights=weights)  # mapped weights as OrtValues
    except MemoryError:
        raise  # the memory budget: reported as such by the CLI, not as a model fault
    except Exception as err:  # onnxruntime raises its own exception hierarchy
        raise VerificationError(f"onnxruntime cannot load the model: {err}".splitlines()[0]) from err



def shape_check_threads() -> int:
    """Intra-op threads for runs whose outputs are compared by shape only (the run check of every prune).

    Why more than one: the run check executes the whole pruned model at two input shapes, the largest single
    cost of a plain ``prune`` of a CNN; its values are never compared, so thread-dependent rounding cannot
    change a verdict (checks that compare values keep one thread: the same numbers on every machine).
    One under a tight ``--memory-limit`` (:func:`onnxprune.io.memory_budget.room_for_threads`).
    """
    if not memory_budget.room_for_threads():
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cpus))


class Runner:
    """Runs one model at any number of input shapes; a session per optimization level, made on first use.

    Why: checks that run a model at several input shapes would otherwise load (and pre-pack) its
    weights once per shape.  ``threads``: intra-op threads, more than one only where outputs are judged by
    shape, never by value (:func:`shape_check_threads`).
    """

    def __init__(self, model: onnx.ModelProto, threads: int = 1) -> None:
        self.model = model
        self.threads = threads
        self._sessions: dict[bool, ort.InferenceSession] = {}

    def _session(self, optimized: bool) -> Any:
        """This model's session at one optimization level, made on first use."""
        if optimized not in self._sessions:
            self._sessions[optimized] = make_session(self.model, optimized, self.threads, prepack=False)
        return self._sessions[optimized]

    def run(self, feeds: dict[str, np.ndarray], optimized: bool = True) -> dict[str, np.ndarray]:
        """Outputs by name."""
        session = self._session(optimized)
        names = [o.name for o in session.get_outputs()]
        try:
            values = session.run(names, feeds)
        except MemoryError:
            raise  # the memory budget: reported as such by the CLI, not as a model fault
        except Exception as err:
            raise VerificationError(f"onnxruntime failed to run the model: {err}".splitlines()[0]) from err
        return dict(zip(names, values))

    def run_each(self, batches: list[dict[str, np.ndarray]], optimized: bool = True
                 ) -> list[dict[str, np.ndarray] | VerificationError]:
        """Outputs by name per batch, or the VerificationError onnxruntime raised for that batch.

        Why: a model run block by block then runs each block once for all batches (one small session per
        block, not per block and batch); if that fails, it runs batch by batch so each gets its own outcome.
        """
        session = self._session(optimized)
        if isinstance(session, blockwise.BlockwiseSession) and len(batches) > 1:
            names = [o.name for o in session.get_outputs()]
            try:
                return [dict(zip(names, values)) for values in session.run_batches(names, batches)]
            except MemoryError:
                raise
            except Exception:  # noqa: BLE001 - onnxruntime's errors: each batch's own outcome below
                pass
        found: list[dict[str, np.ndarray] | VerificationError] = []
        for batch in batches:
            try:
                found.append(self.run(batch, optimized))
            except VerificationError as err:
                found.append(err)
        return found



def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimized: bool = True) -> dict[str, np.ndarray]:
    """Outputs by name."""
    return Runner(model).run(feeds, optimized)


def fetch_outputs(session: Any, fetch: list[str], feeds: dict[str, np.ndarray], what: str) -> list[np.ndarray]:
    """``session.run`` with onnxruntime's failure turned into one InputError line naming ``what``.

    Why InputError: the model already ran in analysis and verification, so a failure here is almost
    always calibration data the model cannot take (e.g. a sequence longer than a position table).
    """
    try:
        return session.run(fetch, feeds)
    except Exception as err:  # onnxruntime raises its own exception hierarchy
        text = " ".join(str(err).split())[:300]
        raise InputError(f"onnxruntime failed on {what}: {text}") from err

