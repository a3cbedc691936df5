"""The sparsity method's settings and plan: frozen values, the plan JSON-serialisable with its masks.

Why masks in the plan: the plan is what a user reviews and replays; the mask of each layer (packed
bits of the ``[rows, cols]`` matrix view, :mod:`onnxprune.methods.sparsity.layers`) says exactly which
weights go.  A SparseGPT plan also carries the updated weights of the kept entries; those are arrays,
not JSON, so they live beside the plan (``updates``) and a plan read back from JSON without them can
only be applied as its masks (``apply`` refuses, saying so, rather than silently dropping the update).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from onnxprune.errors import InputError
from onnxprune.io.files import write_json
from onnxprune.methods.sparsity.layers import SparseLayer, Skipped
from onnxprune.methods.sparsity.masks import PATTERNS, Pattern, parse_pattern

METHOD = "sparsity"
CRITERIA = ("magnitude", "wanda", "sparsegpt")
SCOPES = ("layer", "global")
DATA_CRITERIA = ("wanda", "sparsegpt")


@dataclass(frozen=True)
class SparsitySettings:
    """What decides a sparsity plan (recorded in it and in the output's provenance)."""

    sparsity: float | None = None  # fraction of each layer's weights to zero; N:M patterns set it themselves
    pattern: str = "unstructured"
    criterion: str = "magnitude"
    scope: str = "layer"  # global: per-layer sparsity from one |W| ranking over all layers (unstructured only)
    exclude: tuple[str, ...] = ()
    seed: int = 0
    damp: float = 0.01  # SparseGPT: λ as a fraction of the mean diagonal of XᵀX
    block: int = 128  # SparseGPT: columns per block

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", tuple(self.exclude))
        self.validate()

    def validate(self) -> None:
        """Refuse combinations with one clear line (the CLI, recipes and the API share it)."""
        pattern = parse_pattern(self.pattern)
        if self.criterion not in CRITERIA:
            raise InputError(f"unknown sparsity criterion '{self.criterion}' (choose from {', '.join(CRITERIA)})")
        if self.scope not in SCOPES:
            raise InputError(f"unknown sparsity scope '{self.scope}' (choose from {', '.join(SCOPES)})")
        if pattern.structured:
            if self.sparsity is not None and abs(self.sparsity - pattern.sparsity) > 1e-9:
                raise InputError(f"pattern {self.pattern} zeroes {pattern.sparsity:g} of the weights; "
                                 f"drop --sparsity {self.sparsity:g} or give --sparsity {pattern.sparsity:g}")
            if self.scope == "global":
                raise InputError(f"--scope global ranks weights across layers; pattern {self.pattern} decides per group")
        elif self.sparsity is None or not 0.0 <= self.sparsity < 1.0:
            raise InputError("unstructured sparsity needs --sparsity S with 0 <= S < 1")

    @property
    def parsed(self) -> Pattern:
        return parse_pattern(self.pattern)

    @property
    def target(self) -> float:
        """The fraction of each sparsified layer's weights that is zeroed."""
        pattern = self.parsed
        return pattern.sparsity if pattern.structured else float(self.sparsity or 0.0)

    @property
    def needs_calibration(self) -> bool:
        return self.criterion in DATA_CRITERIA

    def to_dict(self) -> dict[str, Any]:
        return {"sparsity": self.target, "pattern": self.pattern, "criterion": self.criterion, "scope": self.scope,
                "exclude": list(self.exclude), "seed": self.seed, "damp": self.damp, "block": self.block}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SparsitySettings":
        pattern = str(data.get("pattern", "unstructured"))
        return cls(None if parse_pattern(pattern).structured else data.get("sparsity"), pattern,
                   data.get("criterion", "magnitude"), data.get("scope", "layer"), tuple(data.get("exclude", ())),
                   int(data.get("seed", 0)), float(data.get("damp", 0.01)), int(data.get("block", 128)))


@dataclass(frozen=True)
class LayerMask:
    """One layer's mask (packed, matrix view) and how it was chosen."""

    layer: SparseLayer
    criterion: str
    mask: str  # base64 packed bits, True = kept (masks.pack)
    zeros: int  # weights the mask removes
    note: str | None = None  # e.g. why a criterion fell back

    @property
    def total(self) -> int:
        return self.layer.rows * self.layer.cols

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer.to_dict(), "criterion": self.criterion, "mask": self.mask, "zeros": self.zeros,
                "total": self.total, "sparsity": self.zeros / self.total if self.total else 0.0, "note": self.note}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerMask":
        return cls(SparseLayer.from_dict(data["layer"]), data["criterion"], data["mask"], int(data["zeros"]),
                   data.get("note"))


@dataclass(frozen=True)
class SparsityPlan:
    """Which weights of which layers become zero; ``updates`` (not JSON) holds SparseGPT's new weights."""

    model_sha256: str
    settings: dict[str, Any]
    layers: tuple[LayerMask, ...]
    skipped: tuple[Skipped, ...]
    updated: bool = False  # SparseGPT changed kept weights (the plan needs ``updates`` to apply)
    updates: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    method: str = METHOD

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "model_sha256": self.model_sha256, "settings": self.settings,
                "layers": [layer.to_dict() for layer in self.layers],
                "skipped": [s.to_dict() for s in self.skipped], "updated": self.updated,
                "updates_sha256": updates_digest(self.updates) if self.updated else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SparsityPlan":
        if data.get("method") != METHOD:
            raise InputError(f"not a sparsity plan (method {data.get('method')!r})")
        skipped = tuple(Skipped(s["node"], s["op"], s["reason"]) for s in data.get("skipped", ()))
        return cls(data["model_sha256"], dict(data["settings"]), tuple(LayerMask.from_dict(m) for m in data["layers"]),
                   skipped, bool(data.get("updated", False)))

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "SparsityPlan":
        try:
            with open(path, encoding="utf-8") as handle:
                return cls.from_dict(json.load(handle))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"cannot read sparsity plan '{path}': {err}".splitlines()[0]) from err

    def summary(self) -> dict[str, Any]:
        """Totals over the sparsified layers (what reports print first)."""
        zeros = sum(m.zeros for m in self.layers)
        total = sum(m.total for m in self.layers)
        return {"layers": len(self.layers), "skipped": len(self.skipped), "zeros": zeros, "weights": total,
                "sparsity": zeros / total if total else 0.0}


def updates_digest(updates: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the update arrays in name order (the JSON records which updates a plan was made with)."""
    digest = hashlib.sha256()
    for name in sorted(updates):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(updates[name]).tobytes())
    return digest.hexdigest()


__all__ = ["CRITERIA", "DATA_CRITERIA", "LayerMask", "METHOD", "PATTERNS", "SCOPES", "SparsityPlan",
           "SparsitySettings", "updates_digest"]
