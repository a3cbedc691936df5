"""The method seam: one interface every way of making a model smaller implements.

A *method* (width today: channels, neurons, heads, hidden units; depth and element sparsity next) owns
the mechanical half of a prune: what it can touch in a prepared model (``analyze``), how a plan of it is
read back from JSON (``plan_from_dict``), refused for another model (``check``), applied (``apply``) and
judged (``reference``: the model the applied plan must match — the method's oracle, DESIGN.md §3).
Choosing *how much to cut where* is planning's half (``onnxprune.planning``); it produces a method's plan.

Why a protocol and a registry instead of branches: the pipeline, the CLI, recipes, budgets and reports
handle any plan through :func:`onnxprune.methods.registry.method_of` (plans record their method), so a new
method is one module plus one registry row, not an ``if`` in every front-end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import onnx

if TYPE_CHECKING:
    from onnxprune.methods.prepared import Prepared


@runtime_checkable
class MethodPlan(Protocol):
    """A frozen, JSON-serialisable plan of one method, tied to the model it was made for."""

    @property
    def method(self) -> str: ...

    model_sha256: str

    def to_dict(self) -> dict[str, Any]: ...


class Method(Protocol):
    """analyze → (planning makes a plan) → check → apply, judged against reference."""

    name: str

    def analyze(self, prepared: Prepared) -> Any:
        """What this method can remove in ``prepared``; anything it cannot touch carries node + reason."""

    def plan_from_dict(self, data: dict[str, Any], where: str = "plan") -> MethodPlan:
        """Read a plan of this method back (a PlanError naming ``where`` when malformed)."""

    def check(self, plan: MethodPlan, prepared: Prepared, where: str = "plan") -> None:
        """Refuse a plan made for another model or not legal for this analysis (PlanError)."""

    def apply(self, prepared: Prepared, plan: MethodPlan) -> onnx.ModelProto:
        """The smaller model (a new object; ``prepared`` is unchanged)."""

    def reference(self, prepared: Prepared, plan: MethodPlan) -> onnx.ModelProto:
        """The oracle: a model of the original's structure that ``apply``'s result must match numerically."""
