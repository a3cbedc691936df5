"""Every method by name, and the plan ↔ method lookup the pipeline and front-ends use.

Why a table: a plan file records its method; reading it back, applying it, checking it and building its
oracle go through :func:`method_of` / :func:`load_plan`, so no caller branches on which method made a plan.
"""

from __future__ import annotations

import json
import os
from typing import Any

from onnxprune.errors import PlanError
from onnxprune.methods.base import Method, MethodPlan
from onnxprune.methods.depth import DepthMethod
from onnxprune.methods.sparsity.method import SparsityMethod
from onnxprune.methods.width import WidthMethod

#: name → method; a new method is one row here plus its module.
METHODS: dict[str, Method] = {method.name: method for method in (WidthMethod(), DepthMethod(), SparsityMethod())}

#: plans written before plans recorded their method are width plans
DEFAULT_METHOD = "width"


def method_named(name: str) -> Method:
    """The method called ``name`` (a PlanError listing the known ones otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise PlanError(f"unknown pruning method '{name}' (known: {', '.join(sorted(METHODS))})") from None


def method_of(plan: MethodPlan) -> Method:
    """The method that made ``plan`` and can apply it."""
    return method_named(plan.method)


def plan_from_dict(data: Any, where: str = "plan") -> MethodPlan:
    """A plan of any method, read from its JSON value."""
    if not isinstance(data, dict):
        raise PlanError(f"{where}: not an onnxprune plan")
    return method_named(str(data.get("method", DEFAULT_METHOD))).plan_from_dict(data, where)


def load_plan(path: str | os.PathLike[str]) -> MethodPlan:
    """Read a plan file of any method; unreadable or malformed content is a PlanError naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as err:
        raise PlanError(f"cannot read plan '{os.fspath(path)}': {err}") from err
    return plan_from_dict(data, os.fspath(path))
