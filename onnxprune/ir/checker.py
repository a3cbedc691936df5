"""The ONNX checker and strict shape inference, with errors read back into node names.

Why: ``onnx.checker`` is not a semantic check, but its strict shape inference is the first place a
wrong rewrite shows; its messages are parsed so the CLI can name the node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx

from onnxprune.errors import VerificationError
from onnxprune.io.weights import checkable


def check_model(model: onnx.ModelProto) -> None:
    """Full ONNX checker (with shape inference); raises VerificationError with the first line."""
    try:
        full_check(model)
    except MemoryError:
        raise  # the memory budget: reported as such by the CLI, not as a model fault
    except Exception as err:
        raise VerificationError(f"onnx checker: {err}".splitlines()[0]) from err



def full_check(model: onnx.ModelProto) -> None:
    """``onnx.checker.check_model(model, full_check=True)``, minus the one verdict it cannot give.

    Why not the plain check: strict shape inference is what rejects a Transpose ``perm`` that is not a
    permutation, an initializer whose dims contradict its consumer, or a declared shape the graph cannot
    produce.  What it cannot judge: a standard op whose shape inference *is* its function body in onnx
    (no inference function of its own), where the body itself fails to infer -- onnx 1.23's
    MeanVarianceNormalization-13 references its optional ``axes`` attribute in a Constant and fails
    whenever the attribute is left at its default, although the model is valid and runs.  When every
    strict error is of that kind the structural check has already passed (it runs first), so the model
    is accepted; a single error of any other kind re-raises the checker's exception unchanged.
    Raises what the checker raises (``ValidationError``, ``InferenceError``; ``ValueError`` for a proto
    over 2 GB, which the checker can only read from a file).
    """
    try:
        onnx.checker.check_model(checkable(model), full_check=True)  # memory-mapped weights as typed inputs
    except onnx.shape_inference.InferenceError as err:
        entries = inference_error_entries(str(err))
        if not entries or not all(_inside_onnx_function(model, entry) for entry in entries):
            raise



@dataclass(frozen=True)
class InferenceErrorEntry:
    """One node's error in onnx's aggregated strict-inference message; ``nested`` when it comes from
    inside the node's subgraph or function body (the entry's text is itself an error list)."""

    op_type: str
    node: str
    text: str
    nested: bool



_ERRORS = "Inference error(s): "



_ENTRY = re.compile(r"\(op_type:([^,)]*)(?:, node name: ([^)]*))?\): ")



def inference_error_entries(message: str) -> list[InferenceErrorEntry]:
    """The top-level entries of onnx's aggregated strict-inference error, [] if it is not in that form.

    onnx writes ``[ShapeInferenceError] Inference error(s): `` followed by one ``(op_type:T[, node name:
    N]): <error>\\n`` per failing node, where ``<error>`` may itself be such a list (function bodies,
    subgraphs).  Parsed exactly; anything unexpected gives [] (callers then treat the error as real).
    """
    start = message.find(_ERRORS)
    if start < 0:
        return []
    entries, end = _parse_entries(message, start + len(_ERRORS))
    return entries if entries and message[end:].strip() == "" else []



def _parse_entries(message: str, pos: int) -> tuple[list[InferenceErrorEntry], int]:
    """Entries from ``pos`` up to the first character that does not start one; returns (entries, end)."""
    entries = []
    while (match := _ENTRY.match(message, pos)) is not None:
        body = match.end()
        newline = message.find("\n", body)
        newline = len(message) if newline < 0 else newline
        nested_at = message.find(_ERRORS, body, newline)
        if nested_at >= 0:  # a nested list: its entries each end in a newline, then this entry's own
            inner, after = _parse_entries(message, nested_at + len(_ERRORS))
            if not inner or not message.startswith("\n", after):
                return [], pos
            entries.append(InferenceErrorEntry(match.group(1), match.group(2) or "", message[body:after], True))
            pos = after + 1
        else:
            entries.append(InferenceErrorEntry(match.group(1), match.group(2) or "", message[body:newline], False))
            pos = newline + 1
    return entries, pos



def _inside_onnx_function(model: onnx.ModelProto, entry: InferenceErrorEntry) -> bool:
    """True when ``entry`` failed inside the function body onnx uses as a standard op's inference."""
    if not entry.nested:
        return False
    opsets = {o.domain or "": o.version for o in model.opset_import}
    nodes = [n for n in model.graph.node if n.op_type == entry.op_type and n.name == entry.node
             and (n.domain or "") in ("", "ai.onnx")]
    if not nodes or opsets.get("", opsets.get("ai.onnx")) is None:
        return False
    try:
        schema = onnx.defs.get_schema(entry.op_type, opsets.get("", opsets.get("ai.onnx")), "")
    except onnx.defs.SchemaError:
        return False
    has_body = schema.has_function or schema.has_context_dependent_function
    return has_body and not schema.has_type_and_shape_inference_function

