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
