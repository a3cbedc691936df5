"""Typed errors of onnxprune.

Every error a user can provoke is an ``OnnxPruneError``: the CLI turns it into one line and an exit
code, so a message must name the file, node or tensor it is about.  Anything else escaping the CLI is
a bug in onnxprune, not a user mistake.
"""

from __future__ import annotations


class OnnxPruneError(Exception):
    """Base class: a clear, user-facing failure. ``exit_code`` is what the CLI returns."""

    exit_code = 2


class InputError(OnnxPruneError):
    """The input (file, option, plan, calibration data) is unusable as given."""


class ModelLoadError(InputError):
    """The model file cannot be read safely (missing, corrupt, unsafe external data...)."""


class PlanError(InputError):
    """A saved plan does not fit the model it is replayed on."""


class UnsupportedModelError(OnnxPruneError):
    """The model is valid but onnxprune cannot process it (e.g. it does not type-check)."""


class RewriteError(OnnxPruneError):
    """Applying a plan produced an inconsistent graph; nothing is written."""

    exit_code = 3


class VerificationError(OnnxPruneError):
    """A pruned model failed a check (checker, onnxruntime, masked-reference oracle)."""

    exit_code = 1


class IsolationError(OnnxPruneError):
    """A model crashed or hung native code (ONNX checker, onnxruntime) in the isolated child process.

    Its own exit code: the model may well be valid (a runtime bug) and the tool itself did nothing
    wrong; scripts can tell "this file takes the runtime down" from bad input (2) and from bugs (4).
    ``model``, ``stage`` (checker | session | run | "") and ``cause`` (a signal name, "timeout" or
    "exit N") say what happened for API callers.
    """

    exit_code = 5

    def __init__(self, message: str, *, model: str = "", stage: str = "", cause: str = "") -> None:
        super().__init__(message)
        self.model, self.stage, self.cause = model, stage, cause


class ExecutorError(OnnxPruneError):
    """Distributed work (``--ray``, :mod:`onnxprune.runtime.executor`) could not finish: the cluster is unreachable
    or a task failed after its retries.

    Its own exit code: neither the model nor the options are at fault, and nothing was written.
    """

    exit_code = 6
