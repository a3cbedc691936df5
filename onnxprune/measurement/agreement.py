"""Output agreement between two runs: per output, the largest difference relative to the output's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np



@dataclass(frozen=True)
class OutputDiff:
    """How far one output is from its reference; ``relative`` is max |a-b| over max |reference|."""

    name: str
    max_abs: float
    relative: float
    ok: bool

    def to_dict(self) -> dict:
        return {"name": self.name, "max_abs": self.max_abs, "relative": self.relative, "ok": self.ok}



def compare_outputs(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], tolerance: float) -> list[OutputDiff]:
    """Per-output agreement; integer outputs must match exactly, float ones within ``tolerance``."""
    diffs = []
    for name, expected in reference.items():
        got = actual.get(name)
        if got is None or got.shape != expected.shape:
            diffs.append(OutputDiff(name, float("inf"), float("inf"), False))
            continue
        if not np.issubdtype(expected.dtype, np.floating):
            mismatch = float(np.count_nonzero(got != expected))
            diffs.append(OutputDiff(name, mismatch, mismatch, mismatch == 0))
            continue
        diffs.append(_float_diff(name, expected.astype(np.float64), got.astype(np.float64), tolerance))
    return diffs



def _float_diff(name: str, expected: np.ndarray, got: np.ndarray, tolerance: float) -> OutputDiff:
    """Relative error over finite positions; NaN/inf must sit at the same places with the same values."""
    finite = np.isfinite(expected) & np.isfinite(got)
    same_special = np.array_equal(np.where(finite, 0.0, np.nan_to_num(expected, nan=7.0, posinf=8.0, neginf=9.0)),
                                  np.where(finite, 0.0, np.nan_to_num(got, nan=7.0, posinf=8.0, neginf=9.0)))
    exp, act = expected[finite], got[finite]
    max_abs = float(np.max(np.abs(exp - act))) if exp.size else 0.0
    scale = max(float(np.max(np.abs(exp))) if exp.size else 0.0, 1e-12)
    relative = max_abs / scale if same_special else float("inf")
    return OutputDiff(name, max_abs if same_special else float("inf"), relative,
                      bool(same_special and relative <= tolerance))

