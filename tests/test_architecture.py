"""The package's shape, checked: stages import only downward, no import cycles, one pass protocol.

Why tests: the layering is what lets a new method or op land in one place (docs/ARCHITECTURE.md); a
single upward import quietly re-creates the circles issue 14 removed.
"""

from __future__ import annotations

import ast
import functools
import pathlib

import numpy as np
import onnx
import pytest

from onnxprune.ir.graph import import_graph
from onnxprune.io.files import load_model
from onnxprune.methods.prepared import prepare
from onnxprune.methods.width import WidthMethod
from onnxprune.methods.registry import METHODS, method_of
from onnxprune.passes import (apply_plan, cleanup, fold_constants, freeze_shape_values, mask_reference, name_nodes,
                              toposort, untie_shared)
from onnxprune.passes.base import PassResult

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"

#: stages from the bottom up (docs/ARCHITECTURE.md); a module may import its own stage or lower ones
STAGES = ("errors", "progress", "version", "io", "ir", "runtime", "measurement", "analysis", "passes", "scoring", "recovery",
          "methods", "planning", "pipeline", "reports", "workflows", "cli", "api", "__main__", "__init__")


@functools.lru_cache(maxsize=1)
def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in sorted((ROOT / "onnxprune").rglob("*.py")):
        parts = path.relative_to(ROOT / "onnxprune").with_suffix("").parts
        found[".".join(p for p in parts if p != "__init__") or "__init__"] = path
    for path in sorted((ROOT / "passes").glob("*.py")):
        found["passes" + ("" if path.stem == "__init__" else "." + path.stem)] = path
    return found


def _type_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` — annotations only, never executed, so they can neither
    run an upper stage's code nor close an import cycle."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skip |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skip


def _imports(path: pathlib.Path) -> set[str]:
    """Modules ``path`` imports at run time (``from pkg import submodule`` counts as the submodule)."""
    known = _modules()
    out = set()
    tree = ast.parse(path.read_text())
    type_only = _type_only(tree)
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("onnxprune."):
            module = node.module[len("onnxprune."):]
            subs = {f"{module}.{alias.name}" for alias in node.names} & set(known)
            out |= subs or {module}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "onnxprune":
            # submodules by name, anything else from the package facade (which imports every stage)
            subs = {alias.name for alias in node.names} & set(known)
            out |= subs if len(subs) == len(node.names) else subs | {"__init__"}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import (the stage layout uses absolute imports)")
    return out


def _stage(module: str) -> int:
    top = module.split(".")[0]
    assert top in STAGES, f"module onnxprune.{module} belongs to no stage; add it to docs/ARCHITECTURE.md and STAGES"
    return STAGES.index(top)


def test_every_import_goes_to_the_same_or_a_lower_stage() -> None:
    upward = []
    for module, path in _modules().items():
        if module == "__init__":
            continue  # the package facade re-exports the API
        for target in _imports(path):
            if _stage(target) > _stage(module):
                upward.append(f"onnxprune.{module} imports onnxprune.{target}")
    assert not upward, "\n".join(upward)


def test_no_import_cycles_between_modules() -> None:
    modules = _modules()
    graph = {m: {t for t in _imports(p) if t in modules} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


PASS_MODULES = (toposort, name_nodes, untie_shared, cleanup, fold_constants)


@pytest.mark.parametrize("name", ["mnist_cnn", "shared_initializers", "constant_weights"])
def test_normalizing_passes_report_changes_and_are_idempotent(name: str) -> None:
    graph = import_graph(load_model(MODELS / f"{name}.onnx"))
    for module in PASS_MODULES:
        first = module.run(graph)
        assert isinstance(first, PassResult) and first.graph is graph
        second = module.run(graph)
        assert second.modified is False, f"{module.__name__} changed the graph a second time"


def test_untie_reports_a_shared_constant_and_cleanup_reties_it() -> None:
    graph = import_graph(load_model(MODELS / "shared_initializers.onnx"))
    assert untie_shared.run(graph).modified is True
    assert cleanup.run(graph).modified is True  # untouched copies are tied again


def test_plan_passes_report_nothing_for_an_empty_plan_and_something_for_a_removal() -> None:
    prepared = prepare(load_model(MODELS / "mnist_cnn.onnx"))
    analysis = prepared.analysis
    assert freeze_shape_values.run(import_graph(prepared.normalized), {}).modified is False
    assert apply_plan.run(import_graph(prepared.normalized), analysis, {}).modified is False
    assert mask_reference.run(import_graph(prepared.normalized), analysis, {}).modified is False
    group = analysis.prunable_indices[0]
    removed = {group: np.array([0])}
    assert apply_plan.run(import_graph(prepared.normalized), analysis, removed).modified is True
    assert mask_reference.run(import_graph(prepared.normalized), analysis, removed).modified is True


def test_a_plan_reaches_its_method_through_the_registry() -> None:
    from onnxprune.methods.plan import make_plan

    prepared = prepare(load_model(MODELS / "mnist_cnn.onnx"))
    plan = make_plan(prepared.analysis, {}, prepared.model_sha256, {})
    assert plan.to_dict()["method"] == "width"
    assert isinstance(method_of(plan), WidthMethod) and METHODS["width"] is method_of(plan)
    model = method_of(plan).apply(prepared, plan)
    onnx.checker.check_model(model)


def test_every_registered_method_reads_back_its_own_plans() -> None:
    """A plan's JSON names its method; the registry hands it back to that method (and no other)."""
    from onnxprune.methods.registry import plan_from_dict
    from onnxprune.methods.sparsity.plan import SparsitySettings

    prepared = prepare(load_model(MODELS / "mnist_cnn.onnx"))
    method = METHODS["sparsity"]
    analysis = method.analyze(prepared)
    plan = method.plan(prepared, analysis, SparsitySettings(0.5, "unstructured", "magnitude", "layer", (), 0))
    again = plan_from_dict(plan.to_dict())
    assert again.method == "sparsity" and method_of(again) is method
    method_of(again).check(again, prepared)
    onnx.checker.check_model(method_of(again).apply(prepared, again))


def test_a_depth_plan_reads_back_through_the_registry() -> None:
    from onnxprune.methods.depth import DepthSettings
    from onnxprune.methods.registry import plan_from_dict

    prepared = prepare(load_model(MODELS / "resnet_basic.onnx"))
    method = METHODS["depth"]
    plan = method.plan(prepared, method.analyze(prepared), DepthSettings(count=1))
    again = plan_from_dict(plan.to_dict())
    assert method_of(again) is method and again.removed == plan.removed
    method_of(again).check(again, prepared)
    onnx.checker.check_model(method_of(again).apply(prepared, again))


def test_every_package_is_installed_by_pyproject() -> None:
    """``pip install .`` (the README's first command) installs only the packages pyproject lists."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("onnxprune",) + p.parent.relative_to(ROOT / "onnxprune").parts)
             for p in (ROOT / "onnxprune").rglob("__init__.py")} | {"onnxprune.passes"}
    assert found == listed, f"missing: {sorted(found - listed)}, stale: {sorted(listed - found)}"
