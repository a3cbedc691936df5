"""The LSQ ridge fit gives the same answer in its row (dual) and normal-equation (primal) forms.

Tolerances: both forms solve the same float64 problem, so θ agrees to 1e-9 relative to its size
(the systems here are well conditioned: λ = 1e-3 · mean squared feature).
"""

import numpy as np
import pytest

from onnxprune.recovery.ridge import RidgeSystem


def _direct(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Textbook solution of min ‖[X 1]θ − Y‖² + λ‖W‖² (intercept not penalised)."""
    a = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    penalty = np.eye(a.shape[1]) * lam
    penalty[-1, -1] = 0.0
    return np.linalg.solve(a.T @ a + penalty, a.T @ y)


def _fit(x: np.ndarray, y: np.ndarray, batch: int, ridge: float = 1e-3) -> tuple[RidgeSystem, np.ndarray, float]:
    system = RidgeSystem(x.shape[1], y.shape[1])
    for start in range(0, x.shape[0], batch):
        system.add(x[start:start + batch], y[start:start + batch])
    theta, lam = system.solve(ridge)
    return system, theta, lam


@pytest.mark.parametrize("rows, form", [(5, "rows"), (39, "rows"), (40, "normal"), (200, "normal")])
def test_both_forms_solve_the_same_problem(rows: int, form: str) -> None:
    rng = np.random.default_rng(rows)
    x = rng.normal(size=(rows, 40)) + 0.3
    y = x[:, :6] @ rng.normal(size=(6, 9)) + rng.normal(size=(rows, 9)) + 2.0
    system, theta, lam = _fit(x, y, batch=7)
    assert system.form == form and system.rows == rows
    assert lam == pytest.approx(1e-3 * np.sum(x * x) / 40, rel=1e-12)
    expected = _direct(x, y, lam)
    assert np.abs(theta - expected).max() <= 1e-9 * np.abs(expected).max()
    residual = np.concatenate([x, np.ones((rows, 1))], axis=1) @ theta - y
    assert system.error(theta) == pytest.approx(np.sum(residual ** 2), rel=1e-9, abs=1e-9)


def test_switch_replays_batches_bit_identically() -> None:
    """Crossing into the normal form gives the same bits as accumulating G and H from the first batch."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 12)), rng.normal(size=(60, 3))
    _, theta, _ = _fit(x, y, batch=5)
    gram, cross = np.zeros((13, 13)), np.zeros((13, 3))
    for start in range(0, 60, 5):
        a = np.concatenate([x[start:start + 5], np.ones((5, 1))], axis=1)
        gram += a.T @ a
        cross += a.T @ y[start:start + 5]
    lam = 1e-3 * float(np.trace(gram[:12, :12])) / 12
    gram[np.arange(12), np.arange(12)] += lam
    assert np.array_equal(theta, np.linalg.solve(gram, cross))


def test_zero_ridge_uses_the_normal_equations() -> None:
    """Centred rows have rank ≤ N − 1, so without a ridge the dual system is singular: fall back to G θ = H."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 10)), rng.normal(size=(30, 2))
    system = RidgeSystem(10, 2)
    system.add(x[:6], y[:6])
    assert system.form == "rows"
    system.add(x[6:9], y[6:9])
    theta, lam = system.solve(0.0)
    assert system.form == "normal" and lam == 0.0
    a = np.concatenate([x[:9], np.ones((9, 1))], axis=1)
    assert np.allclose(a.T @ (a @ theta - y[:9]), 0.0, atol=1e-8)  # the normal equations hold
