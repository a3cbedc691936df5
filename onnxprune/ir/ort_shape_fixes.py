"""Corrections to onnxruntime's symbolic shape inference for contrib ops whose shape rule it gets wrong.

Why: the probe fills gaps after ``com.microsoft`` ops with that inference (:mod:`onnxprune.ir.shapes`), and
the run check compares a pruned model's output shapes with what inference says the original returns.  A
wrong claim there fails a correct model (or, worse, would hide a wrong one), so it is fixed here rather than
worked around at each reader.

* ``GroupQueryAttention``: onnxruntime's rule copies ``past_key``'s shape to ``present_key``/
  ``present_value`` (right only when the past buffer already has the maximum length, shared-buffer mode).
  The kernel returns ``max(past length, total_sequence_length)`` positions (onnxruntime
  ``group_query_attention_helper.h``); with ``total_sequence_length`` known (computed from shapes) that is
  the claim.  When it is a graph input (onnxruntime-genai's form) onnxruntime's claim stays: dropping it would
  leave the cache without a shape, and its head axis — what the analysis reads — is right either way; a wrong
  length can only make the run check fail loudly, never pass a wrong model.
"""

from __future__ import annotations

from typing import Any

from onnx import helper


def _int_value(value: Any) -> int | None:
    """An integer a shape computation holds (a scalar or one-element list, sympy or int), else None."""
    if isinstance(value, (list, tuple)):
        value = value[0] if len(value) == 1 else None
    try:
        return int(value) if value is not None and getattr(value, "is_number", True) else None
    except (TypeError, ValueError):
        return None


def corrected(engine: type) -> type:
    """A subclass of onnxruntime's ``SymbolicShapeInference`` with the corrections above."""

    class Corrected(engine):
        def _infer_GroupQueryAttention(self, node):  # noqa: N802 - onnxruntime's dispatch name
            super()._infer_GroupQueryAttention(node)
            past = self._try_get_shape(node, 3)
            if past is None or len(past) != 4:
                return
            total = _int_value(self.sympy_data_.get(node.input[6])) if len(node.input) > 6 else None
            if total is None or not isinstance(past[2], int):
                return
            for index in (1, 2):
                if index >= len(node.output) or not node.output[index]:
                    continue
                shape = list(past)
                shape[2] = max(past[2], total)
                vi = self.known_vi_[node.output[index]]
                vi.CopyFrom(helper.make_tensor_value_info(vi.name, vi.type.tensor_type.elem_type, shape))

    return Corrected
