"""Choosing which weights to zero from per-weight scores: unstructured (per layer or global) and N:M.

Pure numpy on the ``[rows, cols]`` matrix view of :mod:`onnxprune.methods.sparsity.layers`, where
consecutive columns are consecutive input channels.  A mask is boolean, True = the weight is kept.
Ties are broken by position (stable sorts), so a plan is reproducible bit for bit.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

from onnxprune.errors import InputError

PATTERNS = ("unstructured", "2:4", "4:8")


@dataclass(frozen=True)
class Pattern:
    """``unstructured`` (n = m = 0) or N:M: at most N of every M consecutive input channels stay nonzero."""

    name: str
    n: int = 0
    m: int = 0

    @property
    def structured(self) -> bool:
        return self.m > 0

    @property
    def sparsity(self) -> float:
        """The fraction of weights an N:M pattern zeroes (0 for unstructured: the setting decides)."""
        return 1.0 - self.n / self.m if self.m else 0.0


def parse_pattern(text: str) -> Pattern:
    """``unstructured`` or ``N:M`` with 0 < N < M."""
    if text == "unstructured":
        return Pattern(text)
    try:
        n, m = (int(part) for part in text.split(":"))
    except ValueError as err:
        raise InputError(f"unknown sparsity pattern '{text}' (use unstructured or N:M such as 2:4)") from err
    if not 0 < n < m:
        raise InputError(f"sparsity pattern '{text}': need 0 < N < M")
    return Pattern(text, n, m)


def unstructured(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep all but the ``round(sparsity · size)`` lowest-scoring weights."""
    drop = int(round(sparsity * scores.size))
    keep = np.ones(scores.size, dtype=bool)
    keep[np.argsort(scores, axis=None, kind="stable")[:drop]] = False
    return keep.reshape(scores.shape)


def per_row(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep all but the ``round(sparsity · cols)`` lowest scores of every row (Wanda compares weights per
    output: each output keeps the same share of its inputs)."""
    drop = int(round(sparsity * scores.shape[1]))
    keep = np.ones(scores.shape, dtype=bool)
    np.put_along_axis(keep, np.argsort(scores, axis=1, kind="stable")[:, :drop], False, axis=1)
    return keep


def global_unstructured(scores: list[np.ndarray], sparsity: float) -> list[np.ndarray]:
    """One ranking over every layer's scores (comparable only for magnitude): the lowest fraction goes."""
    flat = np.concatenate([s.ravel() for s in scores])
    keep = unstructured(flat, sparsity)
    out, start = [], 0
    for s in scores:
        out.append(keep[start:start + s.size].reshape(s.shape))
        start += s.size
    return out


def global_ratios(magnitudes: list[np.ndarray], sparsity: float) -> list[float]:
    """Per-layer sparsity that one global |W| ranking gives each layer (the allocation of ``scope=global``)."""
    return [float(1.0 - keep.mean()) if keep.size else 0.0 for keep in global_unstructured(magnitudes, sparsity)]


def n_of_m(scores: np.ndarray, pattern: Pattern) -> np.ndarray:
    """In every run of M consecutive columns of each row keep the N highest scores (cols must divide by M)."""
    rows, cols = scores.shape
    grouped = scores.reshape(rows, cols // pattern.m, pattern.m)
    order = np.argsort(grouped, axis=-1, kind="stable")
    keep = np.ones_like(grouped, dtype=bool)
    np.put_along_axis(keep, order[..., :pattern.m - pattern.n], False, axis=-1)
    return keep.reshape(rows, cols)


def holds(matrix: np.ndarray, pattern: Pattern) -> bool:
    """True when every group of M consecutive columns has at most N nonzeros."""
    if not pattern.structured:
        return True
    rows, cols = matrix.shape
    if cols % pattern.m:
        return False
    nonzero = (matrix.reshape(rows, cols // pattern.m, pattern.m) != 0).sum(axis=-1)
    return bool(np.all(nonzero <= pattern.n))


def pack(keep: np.ndarray) -> str:
    """A mask as base64 of its packed bits (row-major), for the plan's JSON."""
    return base64.b64encode(np.packbits(keep.ravel().astype(np.uint8)).tobytes()).decode("ascii")


def unpack(text: str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack`."""
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))
    size = int(np.prod(shape))
    if bits.size < size:
        raise InputError(f"sparsity plan: a mask holds {bits.size} bits, the layer needs {size}")
    return bits[:size].astype(bool).reshape(shape)
