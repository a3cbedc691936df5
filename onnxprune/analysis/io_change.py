"""Model inputs and outputs whose channel axis pruning may change: KV caches, on explicit request.

Why: a decoder exported with a KV cache (``past_key_values.{i}.key`` in, ``present.{i}.key`` out, as optimum
and onnxruntime-genai name them) carries its KV heads across its interface.  Removing a KV group makes those
tensors narrower, so every caller must allocate the cache with the new head count: a change of the model's
contract that onnxprune never makes silently.  Without ``allow_io_change`` such a boundary freezes its group
with a reason that says how to allow it; with it, the rewrite narrows the declared shapes, and everything that
runs the pruned model next to the original (the oracle, the run check) feeds it the kept heads of the inputs
and compares the kept heads of the outputs.  Other inputs and outputs (logits, images) stay frozen: their
channel axes are what the model computes, not state it passes on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnx

#: Names of KV-cache inputs and outputs (optimum, onnxruntime-genai, older GPT-2 exports).
KV_CACHE_NAMES = (
    re.compile(r"^past_key_values[._]"),
    re.compile(r"^present[._]"),
    re.compile(r"^past[._]"),
    re.compile(r"(^|[._])(key|value)_cache([._]|$)"),
)

ALLOW_HINT = "pruning its heads changes the model's interface; allow it with --allow-io-change"


def is_kv_cache(name: str) -> bool:
    """Whether a model input/output name is a KV-cache tensor."""
    return any(pattern.search(name) for pattern in KV_CACHE_NAMES)


def boundary_reason(name: str, side: str, allow_io_change: bool) -> str | None:
    """Why the boundary tensor ``name`` (``side`` = "model input"/"model output") freezes its slot, or None
    when pruning may narrow it."""
    if not is_kv_cache(name):
        return side
    return None if allow_io_change else f"KV-cache {side}: {ALLOW_HINT}"


@dataclass(frozen=True)
class IoChange:
    """One interface tensor narrowed by a plan: positions ``kept`` of ``axis`` remain (of ``size``)."""

    name: str
    axis: int
    kept: np.ndarray
    size: int


def narrow(values: Mapping[str, np.ndarray], changes: Mapping[str, IoChange]) -> dict[str, np.ndarray]:
    """The kept positions of every changed tensor in ``values`` (feeds of the original -> feeds of the
    pruned model; outputs of the original -> what the pruned model must return)."""
    out = dict(values)
    for name, change in changes.items():
        if name in out:
            out[name] = np.take(out[name], change.kept, axis=change.axis)
    return out


def narrow_shape(name: str, shape, changes: Mapping[str, IoChange]):
    """An output shape of the original as the pruned model must give it."""
    change = changes.get(name)
    if change is None or shape is None:
        return shape
    shape = list(shape)
    shape[change.axis] = len(change.kept)
    return tuple(shape)


METADATA_KEY = "onnxprune_io_change"  # not "onnxprune.": provenance rewrites those keys


def record(model: onnx.ModelProto, changes: Mapping[str, IoChange]) -> dict[str, dict]:
    """Write the new sizes (KV heads per cache tensor) into ``metadata_props`` so a runtime config
    (``num_key_value_heads`` of a genai config) can be updated; returns what was written."""
    summary = {name: {"axis": c.axis, "before": c.size, "after": int(len(c.kept)),
                      "kept": [int(i) for i in c.kept]} for name, c in sorted(changes.items())}
    if summary:
        props = {p.key: p.value for p in model.metadata_props}
        props[METADATA_KEY] = json.dumps(summary, sort_keys=True)
        onnx.helper.set_model_props(model, props)
    return summary
