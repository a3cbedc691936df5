"""The plan: a frozen, JSON-serialisable record of what a prune keeps.

Why a separate value: a pipeline can save the plan (``--save-plan``), have a person review it, and
replay it (``--plan``) later with exactly the same result.  A plan names the model it was made for (a
SHA-256 of the model) and, per group, its members and kept units; replaying checks both, so a plan can
never be applied to a model whose structure differs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxprune.errors import PlanError
from onnxprune.analysis.blocks import check_blocks
from onnxprune.analysis.groups import Analysis
from onnxprune.io.files import write_json

PLAN_FORMAT = "onnxprune.methods.plan"
PLAN_VERSION = 1


@dataclass(frozen=True)
class PlanGroup:
    """One group: identity (id, members), size, kept units (None: untouched) and freeze reasons."""

    id: str
    label: str
    channels: int
    members: tuple[tuple[str, int], ...]
    kept: tuple[int, ...] | None
    frozen: bool
    reasons: tuple[dict, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "channels": self.channels,
                "members": [{"tensor": t, "axis": a} for t, a in self.members],
                "kept": None if self.kept is None else list(self.kept), "frozen": self.frozen,
                "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Plan:
    """What to keep, for which model, made with which settings."""

    model_sha256: str
    settings: dict[str, Any]
    groups: tuple[PlanGroup, ...]

    #: the method that applies this plan (``onnxprune.methods.registry``)
    method = "width"

    def removed(self, analysis: Analysis) -> dict[int, np.ndarray]:
        """Group index → removed unit indices, for the rewrite passes."""
        index = {g.id: i for i, g in enumerate(analysis.groups)}
        out = {}
        for group in self.groups:
            if group.kept is None:
                continue
            mask = np.ones(group.channels, dtype=bool)
            mask[list(group.kept)] = False
            if mask.any():
                out[index[group.id]] = np.flatnonzero(mask)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "method": self.method, "model_sha256": self.model_sha256,
                "settings": self.settings, "groups": [g.to_dict() for g in self.groups]}

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a plan."""
        write_json(path, self.to_dict())


def make_plan(analysis: Analysis, kept: dict[int, np.ndarray], model_sha256: str, settings: dict) -> Plan:
    """Record ``kept`` (group index → kept units) for every group of ``analysis``."""
    groups = []
    for index, group in enumerate(analysis.groups):
        chosen = kept.get(index)
        groups.append(PlanGroup(
            id=group.id, label=group.label, channels=group.units,
            members=tuple((s.tensor, s.axis) for s, _ in group.members),
            kept=None if chosen is None else tuple(int(k) for k in chosen),
            frozen=group.frozen, reasons=tuple(r.to_dict() for r in group.reasons)))
    return Plan(model_sha256, dict(settings), tuple(groups))


def plan_from_dict(data: Any, where: str = "plan") -> Plan:
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise PlanError(f"{where}: not an onnxprune plan")
    if data.get("method", "width") != "width":
        raise PlanError(f"{where}: a '{data.get('method')}' plan is not a width plan")
    if data.get("version") != PLAN_VERSION:
        raise PlanError(f"{where}: unsupported plan version {data.get('version')!r}")
    try:
        groups = tuple(PlanGroup(
            id=str(g["id"]), label=str(g.get("label", "")), channels=int(g["channels"]),
            members=tuple((str(m["tensor"]), int(m["axis"])) for m in g["members"]),
            kept=None if g.get("kept") is None else tuple(int(k) for k in g["kept"]),
            frozen=bool(g.get("frozen", False)), reasons=tuple(g.get("reasons", ())))
            for g in data["groups"])
        return Plan(str(data["model_sha256"]), dict(data.get("settings", {})), groups)
    except (KeyError, TypeError, ValueError) as err:
        raise PlanError(f"{where}: malformed plan ({err})") from err


def check_plan(plan: Plan, analysis: Analysis, model_sha256: str, where: str = "plan") -> None:
    """Refuse a plan made for another model, or one whose kept sets are not legal for this analysis."""
    if plan.model_sha256 != model_sha256:
        raise PlanError(f"{where} was made for another model (sha256 {plan.model_sha256[:12]}…)")
    groups = {g.id: g for g in analysis.groups}
    for entry in plan.groups:
        group = groups.get(entry.id)
        if group is None or group.units != entry.channels or \
                tuple((s.tensor, s.axis) for s, _ in group.members) != entry.members:
            raise PlanError(f"{where}: group {entry.id} does not match the model's analysis")
        if entry.kept is None:
            continue
        kept = list(entry.kept)
        if group.frozen and len(kept) != group.units:
            raise PlanError(f"{where}: group {entry.id} is frozen but the plan removes channels")
        if not kept or kept != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= group.units:
            raise PlanError(f"{where}: group {entry.id} has invalid kept indices")
        unequal = check_blocks(group.blocks, kept, group.fixed_blocks)
        if unequal:
            raise PlanError(f"{where}: group {entry.id} {unequal}")
