"""The depth plan: which residual blocks go, for which model, by which scores.

Why a value of its own: like the width plan (:mod:`onnxprune.methods.plan`) it can be saved, reviewed and
replayed; a width plan made after depth pruning carries it in ``settings["depth"]`` so one ``--plan``
file replays both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from onnxprune.errors import InputError, PlanError
from onnxprune.methods.depth.analysis import DepthAnalysis
from onnxprune.methods.depth.scoring import CALIBRATED, CRITERIA

PLAN_FORMAT = "onnxprune.depth_plan"
PLAN_VERSION = 1
#: Order blocks by this when calibration data is given and no criterion was named
#: (measured on mnist_resnet: benchmarks/results_depth.md).
DEFAULT_CALIBRATED = "output"


@dataclass(frozen=True)
class DepthSettings:
    """What to remove: ``count`` blocks, or ``ratio`` of the removable ones (rounded down), ranked by
    ``criterion`` (None: ``output`` with calibration data, ``weight`` without)."""

    ratio: float | None = None
    count: int | None = None
    criterion: str | None = None

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.count is None):
            raise InputError("depth pruning needs exactly one of --depth-ratio F and --remove-blocks N")
        if self.ratio is not None and not 0.0 <= self.ratio <= 1.0:
            raise InputError(f"--depth-ratio must be in [0, 1], got {self.ratio:g}")
        if self.count is not None and self.count < 0:
            raise InputError(f"--remove-blocks must be >= 0, got {self.count}")
        if self.criterion is not None and self.criterion not in CRITERIA:
            raise InputError(f"unknown depth criterion '{self.criterion}' (choose from {', '.join(CRITERIA)})")

    def resolved_criterion(self, calibrated: bool) -> str:
        criterion = self.criterion or (DEFAULT_CALIBRATED if calibrated else "weight")
        if criterion in CALIBRATED and not calibrated:
            raise InputError(f"depth criterion '{criterion}' needs calibration data (--calib PATH or --calib-random N)")
        return criterion

    def how_many(self, removable: int) -> int:
        if self.count is not None:
            if self.count > removable:
                raise InputError(f"--remove-blocks {self.count}: the model has only {removable} removable "
                                 "block(s) (onnxprune analyze lists them)")
            return self.count
        return int(math.floor(self.ratio * removable + 1e-9))

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "count": self.count, "criterion": self.criterion}


@dataclass(frozen=True)
class DepthPlan:
    """Blocks removed (ids = their Add nodes, graph order) from the model with ``model_sha256``."""

    model_sha256: str
    removed: tuple[str, ...]
    criterion: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # block id → criterion → score
    settings: dict[str, Any] = field(default_factory=dict)
    method: str = "depth"

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "method": self.method,
                "model_sha256": self.model_sha256, "removed": list(self.removed), "criterion": self.criterion,
                "scores": {k: dict(v) for k, v in self.scores.items()}, "settings": dict(self.settings)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "depth plan") -> DepthPlan:
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT or data.get("method") != "depth":
            raise PlanError(f"{where}: not an onnxprune depth plan")
        if data.get("version") != PLAN_VERSION:
            raise PlanError(f"{where}: unsupported depth plan version {data.get('version')!r}")
        try:
            return cls(str(data["model_sha256"]), tuple(str(b) for b in data["removed"]), str(data["criterion"]),
                       {str(k): {str(c): float(s) for c, s in v.items()} for k, v in data.get("scores", {}).items()},
                       dict(data.get("settings", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise PlanError(f"{where}: malformed depth plan ({err})") from err

    def check(self, analysis: DepthAnalysis, model_sha256: str) -> None:
        """Refuse a plan for another model or one naming a block this analysis does not find removable."""
        if self.model_sha256 != model_sha256:
            raise PlanError(f"depth plan was made for another model (sha256 {self.model_sha256[:12]}…)")
        known = {b.id for b in analysis.blocks}
        for block in self.removed:
            if block not in known:
                raise PlanError(f"depth plan removes '{block}', which is not a removable block of this model")


def choose(analysis: DepthAnalysis, scores: dict[str, dict[str, float]], criterion: str, count: int
           ) -> tuple[str, ...]:
    """The ``count`` lowest-scoring blocks by ``criterion`` (ties: earlier block first), in graph order."""
    position = {b.id: i for i, b in enumerate(analysis.blocks)}
    ranked = sorted(position, key=lambda b: (scores[b][criterion], position[b]))
    return tuple(sorted(ranked[:count], key=position.__getitem__))
