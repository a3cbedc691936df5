"""Ridge least squares with an unpenalised intercept, accumulated batch by batch in the smaller of two forms.

Why a module of its own: LSQ recovery fits ``θ = [W′; δ] = argmin ‖[X 1] θ − Y‖² + λ‖W′‖²`` for every layer
that lost inputs.  The textbook route keeps the normal equations ``G = [X 1]ᵀ[X 1]`` (features² float64)
and ``H = [X 1]ᵀ Y`` — for a decoder's down projection with 8,806 kept inputs that is 620 MB for G alone,
and ``np.linalg.solve`` copies it twice more: about 2.7 GB and a 1-TFLOP solve per layer.  LLM calibration
sets are small (a few sequences of a few dozen tokens, so N ≪ features), and then the *dual* form is
exact and cheap: with the rows centred (the unpenalised intercept is then ``δ = ȳ − x̄ W′``),
``W′ = X_cᵀ (X_c X_cᵀ + λI)⁻¹ Y_c`` needs only the N stored rows and an N × N system (push-through
identity: ``(X_cᵀX_c + λI)⁻¹ X_cᵀ = X_cᵀ (X_c X_cᵀ + λI)⁻¹``).

:class:`RidgeSystem` therefore stores the rows while there are fewer of them than features and switches
to the normal equations the moment they would be larger; the switch replays the stored batches in their
order, so the primal sums are bit-identical to accumulating G and H from the start.  Memory is
``min(N, features) × (features + outputs)`` float64 either way.

``λ = ridge · trace(XᵀX) / features`` in both forms (``trace(XᵀX)`` is the sum of squares of X).
With λ = 0 the dual system is singular after centring (rank ≤ N − 1), so a zero ridge always uses the
normal equations, where an under-determined fit raises ``LinAlgError`` as it always did.
"""

from __future__ import annotations

import numpy as np


class RidgeSystem:
    """One layer's fit: ``add`` row batches (X without the ones column, Y), then ``solve`` and ``error``."""

    def __init__(self, features: int, outputs: int) -> None:
        self.features = features
        self.outputs = outputs
        self.rows = 0
        self.yy = 0.0
        self._batches: list[tuple[np.ndarray, np.ndarray]] | None = []  # row form while rows < features
        self._gram: np.ndarray | None = None
        self._cross: np.ndarray | None = None

    @property
    def form(self) -> str:
        """``"rows"`` (dual) or ``"normal"`` (primal): reported per layer so the choice is visible."""
        return "rows" if self._batches is not None else "normal"

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x = x.astype(np.float64)
        y = y.astype(np.float64)
        self.rows += x.shape[0]
        self.yy += float(np.sum(y * y))
        if self._batches is not None and self.rows < self.features:
            self._batches.append((x, y))
            return
        if self._batches is not None:
            self._switch_to_normal()
        self._accumulate(x, y)

    def _accumulate(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
        self._gram += x.T @ x
        self._cross += x.T @ y

    def _switch_to_normal(self) -> None:
        stored, self._batches = self._batches or [], None
        self._gram = np.zeros((self.features + 1, self.features + 1))
        self._cross = np.zeros((self.features + 1, self.outputs))
        for x, y in stored:
            self._accumulate(x, y)

    def _lambda(self, ridge: float) -> float:
        if self._batches is not None:
            trace = float(sum(np.sum(x * x) for x, _ in self._batches))
        else:
            trace = float(np.trace(self._gram[:self.features, :self.features]))
        return ridge * trace / max(self.features, 1)

    def solve(self, ridge: float) -> tuple[np.ndarray, float]:
        """θ ((features + 1) × outputs, the intercept last) and the λ used."""
        lam = self._lambda(ridge)
        if self._batches is not None and lam <= 0.0:
            self._switch_to_normal()
        if self._batches is None:
            system = self._gram.copy()  # λ on the weights' diagonal (not the intercept): no dense penalty
            system[np.arange(self.features), np.arange(self.features)] += lam
            return np.linalg.solve(system, self._cross), lam
        x = np.concatenate([b for b, _ in self._batches])
        y = np.concatenate([b for _, b in self._batches])
        x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
        x -= x_mean
        y -= y_mean
        kernel = x @ x.T
        kernel[np.diag_indices_from(kernel)] += lam
        weights = x.T @ np.linalg.solve(kernel, y)
        intercept = y_mean - x_mean @ weights
        return np.concatenate([weights, intercept[None, :]]), lam

    def error(self, theta: np.ndarray) -> float:
        """‖[X 1]θ − Y‖² over every row added."""
        if self._batches is None:
            return float(np.sum(theta * (self._gram @ theta)) - 2.0 * np.sum(theta * self._cross) + self.yy)
        return float(sum(np.sum((x @ theta[:-1] + theta[-1] - y) ** 2) for x, y in self._batches))
