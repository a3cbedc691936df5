"""Width pruning: apply a plan of removed channels/neurons/heads, and build its oracle (the masked reference).

Math: for every removed unit of every group, the rewrite drops the producer slices and the consumer
slices that read it; the masked reference keeps all tensors and zeroes the consumer slices instead. The
two must agree to float tolerance at every input shape (DESIGN.md §3).
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.methods.finish import finish_model
from onnxprune.analysis.io_change import IoChange
from onnxprune.passes import apply_plan as apply_plan_pass, mask_reference
from onnxprune.ir.graph import import_graph
from onnxprune.methods.plan import Plan, check_plan, plan_from_dict
from onnxprune.ir.shapes import infer_static_shapes
from onnxprune.io.weights import checkable
from onnxprune.errors import RewriteError
from onnxprune.analysis.groups import Analysis
from onnxprune.analysis.kept_channels import KeptChannels
from onnxprune.methods.prepared import Prepared


def apply_plan(prepared: Prepared, plan: Plan) -> onnx.ModelProto:
    """The pruned model (a new object; ``prepared`` is unchanged)."""
    check_plan(plan, prepared.analysis, prepared.model_sha256)
    removed = plan.removed(prepared.analysis)
    graph = import_graph(prepared.normalized)
    graph = apply_plan_pass.run(graph, prepared.analysis, removed).graph
    pruned = finish_model(graph, prepared.original, io_changes(prepared.original, prepared.analysis, removed))
    check_shapes(prepared, removed, pruned)
    try:
        onnx.checker.check_model(checkable(pruned))  # memory-mapped weights: checked as typed inputs
    except ValueError:
        pass  # too large for an in-memory check; verify() and save() still validate
    except MemoryError:
        raise  # the memory budget: reported as such by the CLI, not as a model fault
    except Exception as err:
        raise RewriteError(f"the rewritten model fails the ONNX checker: {err}".splitlines()[0]) from err
    return pruned



def check_shapes(prepared: Prepared, removed: dict[int, np.ndarray], pruned: onnx.ModelProto) -> None:
    """Every tensor must have exactly the shape the plan implies: slot axes shrink, nothing else moves,
    at both assignments of the symbolic dims the analysis probed.

    Why: a stale shape constant, a run-time shape computation the rules did not foresee, or a probe value
    baked into a run-time target shows up here as a tensor whose inferred shape differs from the plan's,
    before any runtime sees it.
    """
    view = KeptChannels(prepared.analysis, removed)
    weights = {init.name for init in prepared.normalized.graph.initializer}
    source = prepared.shapes
    actual = infer_static_shapes(pruned, symbol_value=None, primes=getattr(source, "primes", None) or None,
                                 check_primes=getattr(source, "check_primes", None) or None)
    produced = {name for node in pruned.graph.node for name in node.output if name}
    probes = [(source, actual)]
    if getattr(source, "alt", None) is not None:
        probes.append((source.alt, actual.alt or {}))
    for before, after in probes:
        expected = {name: list(shape) for name, shape in before.items() if name not in weights}
        for slot in prepared.analysis.slots:
            if slot.tensor in expected and view.changed(slot):  # a dynamic axis (B·H) keeps the same fraction
                probed = source[slot.tensor][slot.axis]
                expected[slot.tensor][slot.axis] = view.size(slot) * expected[slot.tensor][slot.axis] // probed
        for slot in prepared.analysis.counts:  # copy-count axes (GQA's n_rep) follow kept children / parents
            if slot.tensor in expected:
                expected[slot.tensor][slot.axis] = view.size_or(slot, expected[slot.tensor][slot.axis])
        for name in produced & set(expected):
            if name not in after:
                raise RewriteError(f"the shape of tensor '{name}' can no longer be inferred after pruning")
            if list(after[name]) != expected[name]:
                raise RewriteError(f"tensor '{name}' would have shape {list(after[name])}, the plan implies "
                                   f"{expected[name]}")



def masked_reference(prepared: Prepared, plan: Plan) -> onnx.ModelProto:
    """The oracle model for ``plan`` (DESIGN.md §3).

    Built from the normalized graph *before* static shape values became constants, so the oracle also
    judges that step: a value wrongly taken for static makes the pruned model differ from it.
    """
    graph = import_graph(prepared.unfrozen or prepared.normalized)
    graph = mask_reference.run(graph, prepared.analysis, plan.removed(prepared.analysis)).graph
    return finish_model(graph, prepared.original)



def io_changes(model: onnx.ModelProto, analysis: Analysis, removed: dict[int, np.ndarray]) -> dict[str, IoChange]:
    """The inputs and outputs of ``model`` whose channel axis ``removed`` narrows (empty for most plans)."""
    boundary = {v.name for v in (*model.graph.input, *model.graph.output)}
    view = KeptChannels(analysis, dict(removed))
    changes = {}
    for slot, (_, size) in analysis.slots.items():
        if slot.tensor in boundary and view.changed(slot):
            changes[slot.tensor] = IoChange(slot.tensor, slot.axis, view.kept(slot), int(size))
    return changes


class WidthMethod:
    """Channels, neurons, heads and hidden units removed group by group (the prune groups of the analysis)."""

    name = "width"

    def analyze(self, prepared: Prepared) -> Analysis:
        return prepared.analysis

    def plan_from_dict(self, data: dict, where: str = "plan") -> Plan:
        return plan_from_dict(data, where)

    def check(self, plan: Plan, prepared: Prepared, where: str = "plan") -> None:
        check_plan(plan, prepared.analysis, prepared.model_sha256, where)

    def apply(self, prepared: Prepared, plan: Plan) -> onnx.ModelProto:
        return apply_plan(prepared, plan)

    def reference(self, prepared: Prepared, plan: Plan) -> onnx.ModelProto:
        return masked_reference(prepared, plan)

    def interface_changes(self, prepared: Prepared, plan: Plan) -> dict:
        return io_changes(prepared.original, prepared.analysis, plan.removed(prepared.analysis))
