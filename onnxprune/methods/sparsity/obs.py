"""SparseGPT (Frantar & Alistarh 2023): prune a layer's columns block by block and spread each removed
weight's error onto the columns not yet processed, with the inverse Hessian of the layer's input.

Math, per layer, W ``[rows, cols]`` (rows independent), X the layer's input rows, H = XᵀX + λI
(λ = ``damp`` · mean diag):  with U the upper Cholesky factor of H⁻¹, process column j in order:
the weight row entries chosen for removal q_j = w_j·[mask_j = 0] leave an error e = (w_j − q_j)/U_jj,
and the remaining columns move by ``W[:, j:] −= e ⊗ U[j, j:]`` — the optimal (OBS) compensation for
zeroing w_j given the columns after j are still free.  Inside a block of ``block`` columns the mask is
chosen up front from w²/U_jj² (unstructured: the block's lowest fraction; N:M: at the first column of
every group of M, the M − N lowest of the group), so the choice sees the updates of earlier blocks.
Columns whose input is always zero (H_jj = 0) are removed first and carry no error.

Everything is float64 numpy; memory is O(cols²) for H, which is what a layer's Gram matrix costs anyway.
"""

from __future__ import annotations

import numpy as np

from onnxprune.methods.sparsity.masks import Pattern

BLOCK = 128
DAMP = 0.01


def _inverse_cholesky(gram: np.ndarray, damp: float) -> np.ndarray:
    """Upper Cholesky factor U of (H + λI)⁻¹ (U ᵀU = H⁻¹), raising λ until H is positive definite."""
    h = gram.astype(np.float64, copy=True)
    mean = float(np.mean(np.diag(h))) or 1.0
    for scale in (1.0, 10.0, 100.0, 1000.0):
        try:
            lower = np.linalg.cholesky(h + damp * scale * mean * np.eye(h.shape[0]))
            inv = np.linalg.inv(lower)
            return np.linalg.cholesky(inv.T @ inv).T
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("the Gram matrix stays singular after damping")


def sparsegpt(weight: np.ndarray, gram: np.ndarray, pattern: Pattern, sparsity: float,
              block: int = BLOCK, damp: float = DAMP) -> tuple[np.ndarray, np.ndarray]:
    """(updated weight with zeros, keep mask) of one layer; ``weight`` is ``[rows, cols]``, never modified."""
    w = np.array(weight, dtype=np.float64)
    rows, cols = w.shape
    h = np.array(gram, dtype=np.float64)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    u = _inverse_cholesky(h, damp)
    if pattern.structured:
        block = max(pattern.m, block - block % pattern.m)
    keep = np.ones((rows, cols), dtype=bool)
    for start in range(0, cols, block):
        stop = min(start + block, cols)
        w1, u1 = w[:, start:stop].copy(), u[start:stop, start:stop]
        diag = np.diag(u1)
        errors = np.zeros_like(w1)
        mask1 = np.zeros_like(w1, dtype=bool)  # True = removed
        if not pattern.structured:
            score = w1 ** 2 / diag[None, :] ** 2
            drop = int(round(sparsity * score.size))
            mask1.ravel()[np.argsort(score, axis=None, kind="stable")[:drop]] = True
        for i in range(stop - start):
            if pattern.structured and i % pattern.m == 0:
                score = w1[:, i:i + pattern.m] ** 2 / diag[None, i:i + pattern.m] ** 2
                lowest = np.argsort(score, axis=1, kind="stable")[:, :pattern.m - pattern.n]
                np.put_along_axis(mask1[:, i:i + pattern.m], lowest, True, axis=1)
            column = w1[:, i]
            q = np.where(mask1[:, i], 0.0, column)
            err = (column - q) / u1[i, i]
            w1[:, i:] -= np.outer(err, u1[i, i:])
            w1[:, i] = q
            errors[:, i] = err
        w[:, start:stop] = w1
        w[:, stop:] -= errors @ u[start:stop, stop:]
        keep[:, start:stop] = ~mask1
    keep &= ~dead[None, :] | (w != 0)
    w[~keep] = 0.0
    return w, keep


def reconstruction_error(delta: np.ndarray, gram: np.ndarray) -> float:
    """‖ΔW X‖² = tr(ΔW G ΔWᵀ) for ``delta`` ``[rows, cols]`` and G = XᵀX."""
    d = np.asarray(delta, dtype=np.float64)
    return float(np.einsum("ij,jk,ik->", d, gram, d))
