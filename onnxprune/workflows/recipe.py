"""Recipes: an ordered pipeline of steps (prune → sparsify → quantize → validate → bench) in one TOML file.

Why: a compression result is only reproducible when every step, option and data file is written
down.  A recipe is checked completely (version, keys, types, step types) before anything runs, so a
typo is refused up front naming the key instead of after ten minutes of pruning.

Paths: inputs (``model``, calibration ``path``, ``calib``, ``original``, ``candidate``, ``input``, ``models``)
are relative to the recipe's folder unless they name an output an earlier step wrote; ``output`` paths
are relative to ``out_dir`` (the CLI's ``--out-dir``, default the current directory).  ``prune``,
``sparsify`` and ``quantize`` read ``input`` (default: the latest model a step wrote, else the recipe's ``model``).
A ``validate`` step compares ``original`` (default: the recipe's ``model``) with ``candidate``
(default: the latest model a step wrote); a
``bench`` step measures ``models`` (default: the recipe's model and every model written so far).
A prune step's ``sensitivity`` and ``latency_cache`` files are relative to the recipe's folder as well.

Input shapes: ``input_shapes`` (top level, or per ``prune`` / ``validate`` / ``bench`` step, which wins) is the
CLI's ``--input-shape``: a table ``input_shapes = {images = [1, 3, 320, 320]}`` or a list of
``"NAME:D0,D1,..."`` strings.  Its syntax is checked with the recipe; names, ranks and fixed dims when the step
loads its model.

Ray: a top-level ``ray = "auto"`` (or a cluster address) is the CLI's ``--ray`` for every prune step: their
calibration batches, sensitivity candidates and latency tables run as Ray tasks (:mod:`onnxprune.runtime.executor`).

Isolation: the CLI's ``run`` probes the recipe's input models (:meth:`Recipe.input_models`: the files
that exist before the run, not what earlier steps write) once, before the first step, as every other
command does with its model files (:mod:`onnxprune.io.isolation`).
"""

from __future__ import annotations

import os
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any

import click

from onnxprune.planning.alignment import resolve as resolve_alignment
from onnxprune.measurement.bench import BenchOptions, bench_models
from onnxprune.runtime.calibration import DEFAULT_BATCH_SIZE
from onnxprune.measurement.compare import Thresholds, validate_models
from onnxprune.errors import InputError
from onnxprune.runtime.executor import Executor, executor_for
from onnxprune.runtime.input_shapes import from_recipe as shapes_from_recipe
from onnxprune.io.files import load_model
from onnxprune.planning.latency import CACHE_ENV
from onnxprune.workflows.quantize import QUANT_MODES, quantize_model
from onnxprune.workflows.steps import (BUDGET_TYPES, LATENCY_OPTIONS, TARGETS, PruneStep, budget_fields,
    calibration_for, command_report, depth_settings, prune_runs_onnxruntime, prune_to_file)
from onnxprune.workflows.sparsify import RECIPE_KEYS as SPARSIFY_KEYS, recipe_step as sparsify_step, sparsify_to_file

RECIPE_VERSION = 1

_NUM = (int, float)
_SHAPES = (dict, list)
_TOP_KEYS = {"version": int, "model": str, "calibration": dict, "steps": list, "name": str, "input_shapes": _SHAPES,
             "ray": str}  # ray: "auto" or a cluster address for every prune step (onnxprune.runtime.executor)
_CALIB_KEYS = {"path": str, "random": int, "batch_size": int, "seed": int}
_COMMON = {"type": str, "name": str}
STEP_KEYS: dict[str, dict[str, Any]] = {
    "prune": _COMMON | {"input": str, "output": str, "ratio": _NUM, "head_ratio": _NUM, "ffn_ratio": _NUM, "criterion": str,
                        "global": bool, "min_keep": _NUM, "round_to": (int, str), "exclude": list, "seed": int,
                        "verify": bool, "recover": str, "batch_size": int, "calib": str, "calib_random": int,
                        "target_flops": _NUM, "target_params": _NUM, "target_latency": _NUM, "latency_threads": int,
                        "latency_provider": str, "latency_batch": int, "latency_cache": str, "max_ratio": _NUM,
                        "allocation": str, "sensitivity": str, "guided": bool, "input_shapes": _SHAPES,
                        "depth_ratio": _NUM, "remove_blocks": int, "depth_criterion": str,
                        "allow_io_change": bool},
    "quantize": _COMMON | {"input": str, "output": str, "mode": str, "calib": str, "calib_random": int, "batch_size": int,
                           "seed": int},
    "sparsify": _COMMON | {"input": str, "output": str, "calib": str, "calib_random": int, "batch_size": int}
                | SPARSIFY_KEYS,
    "validate": _COMMON | {"original": str, "candidate": str, "calib": str, "calib_random": int, "atol": _NUM,
                           "rtol": _NUM, "min_cosine": _NUM, "min_top1": _NUM, "max_accuracy_drop": _NUM,
                           "seed": int, "batch_size": int, "input_shapes": _SHAPES},
    "bench": _COMMON | {"models": list, "threads": int, "batch": int, "warmup": int, "repeat": int,
                        "input_shapes": _SHAPES},
}
_REQUIRED = {"prune": ("output",), "quantize": ("output",), "sparsify": ("output",), "validate": (), "bench": ()}


@dataclass
class Recipe:
    """A checked recipe: where it came from, the data, the steps."""

    path: pathlib.Path
    data: dict[str, Any]

    @property
    def folder(self) -> pathlib.Path:
        return self.path.parent

    def input_path(self, value: str) -> str:
        """An input path as written in the recipe: relative to the recipe's folder."""
        path = pathlib.Path(value)
        return os.fspath(path if path.is_absolute() else self.folder / path)

    def calib_for(self, step: dict[str, Any]) -> tuple[str | None, int | None]:
        """(calibration path, random count) a step uses: its own ``calib``/``calib_random``, else ``[calibration]``."""
        if "calib" in step or "calib_random" in step:
            return (self.input_path(step["calib"]) if "calib" in step else None), step.get("calib_random")
        calib = self.data.get("calibration", {})
        return (self.input_path(calib["path"]) if "path" in calib else None), calib.get("random")

    def shapes_for(self, step: dict[str, Any]) -> dict[str, tuple[int, ...]] | None:
        """The ``input_shapes`` a step uses: its own, else the recipe's (None: none given)."""
        value = step.get("input_shapes", self.data.get("input_shapes"))
        return shapes_from_recipe(value, f"recipe '{self.path}'") or None if value is not None else None

    def calibrated(self, step: dict[str, Any]) -> bool:
        """Whether a step has calibration data (its own or the recipe's ``[calibration]``)."""
        return any(value is not None for value in self.calib_for(step))

    def prune_step(self, step: dict[str, Any]) -> PruneStep:
        """The PruneStep a ``prune`` table asks for (the same object for checking and for running)."""
        budget = {key: step.get(key) for key in (*TARGETS, *LATENCY_OPTIONS, "allocation")}
        if budget["latency_cache"] is None:  # as the CLI's --latency-cache (envvar)
            budget["latency_cache"] = os.environ.get(CACHE_ENV) or None
        else:
            budget["latency_cache"] = self.input_path(budget["latency_cache"])
        sensitivity = self.input_path(step["sensitivity"]) if "sensitivity" in step else None
        budget |= {"max_ratio": step.get("max_ratio", 1.0), "guided": step.get("guided", False),
                   "sensitivity_path": sensitivity}
        return PruneStep(step.get("ratio", 0.0), step.get("head_ratio"), step.get("ffn_ratio"),
                         step.get("criterion"), step.get("global", False), step.get("min_keep", 0.1),
                         step.get("round_to", "auto"), tuple(step.get("exclude", ())), step.get("seed", 0),
                         step.get("verify", False), step.get("recover"),
                         step.get("batch_size", self.data.get("calibration", {}).get("batch_size", DEFAULT_BATCH_SIZE)),
                         budget_fields(budget), sensitivity, self.shapes_for(step),
                         depth_settings(step.get("depth_ratio"), step.get("remove_blocks"), step.get("depth_criterion")),
                         allow_io_change=step.get("allow_io_change", False))

    def input_models(self, out_dir: str | os.PathLike[str] | None = None) -> list[str]:
        """The model files the steps read that exist before the run (outputs of earlier steps excluded), in order.

        Resolved exactly as running resolves them (:class:`_Runner`), without running anything.
        """
        return _Runner(self, pathlib.Path(out_dir) if out_dir is not None else pathlib.Path.cwd()).inputs()

    def runs_onnxruntime(self) -> bool:
        """Whether any step will run onnxruntime (so isolation creates and runs a session too), as the CLI decides
        per command: prune with ``verify``, calibration data or a latency target; quantize, validate and bench always."""
        for step in self.data["steps"]:
            if step["type"] != "prune":
                return True
            if prune_runs_onnxruntime(step.get("verify", False), self.calibrated(step), step.get("target_latency")):
                return True
        return False


@dataclass
class RecipeResult:
    """Every step's report, in order; ``ok`` is False when a validate step failed a threshold."""

    recipe: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    contents: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return all(step.get("ok", True) for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "ok": self.ok, "steps": self.steps}


def _toml_load(path: pathlib.Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError as err:
            raise InputError("recipes need Python >= 3.11 (tomllib) or the 'tomli' package") from err
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as err:
        raise InputError(f"cannot read recipe '{path}': {err.strerror or err}") from err
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"recipe '{path}' is not valid TOML: {err}") from err


def _check_keys(table: dict[str, Any], allowed: dict[str, Any], where: str) -> None:
    for key, value in table.items():
        if key not in allowed:
            raise InputError(f"{where}: unknown option '{key}' (allowed: {', '.join(sorted(allowed))})")
        expected = allowed[key]
        if isinstance(value, bool) and expected is not bool:
            raise InputError(f"{where}: option '{key}' must be {_type_name(expected)}, got a boolean")
        if not isinstance(value, expected):
            raise InputError(f"{where}: option '{key}' must be {_type_name(expected)}, got {type(value).__name__}")
        if key == "input_shapes":  # syntax and positive dims, before any step runs
            shapes_from_recipe(value, where)
        if key == "round_to":  # N or "auto": checked before any step runs
            try:
                resolve_alignment(value)
            except InputError as err:
                raise InputError(f"{where}: {err}") from err
        if key in BUDGET_TYPES:  # the CLI's own parameter types: the same values accepted and refused
            try:
                BUDGET_TYPES[key].convert(value, None, None)
            except click.BadParameter as err:
                raise InputError(f"{where}: option '{key}': {err.format_message()}") from err


_FLAG = re.compile(r"--([a-z][a-z0-9-]*)")


def _as_keys(message: str) -> str:
    """A CLI message in recipe words: ``--target-flops`` → ``'target_flops'`` (recipe keys are the flags, underscored)."""
    return _FLAG.sub(lambda match: f"'{match.group(1).replace('-', '_')}'", message)


def _type_name(expected: Any) -> str:
    return "a number" if expected == _NUM else {str: "a string", int: "an integer", bool: "true/false",
                                                 list: "a list", dict: "a table",
                                                 (int, str): "an integer or 'auto'",
                                                 _SHAPES: "a table or a list"}.get(expected, str(expected))


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and check a recipe (every key, type and step) without running anything."""
    where = pathlib.Path(path)
    data = _toml_load(where)
    _check_keys(data, _TOP_KEYS, f"recipe '{where}'")
    if data.get("version") != RECIPE_VERSION:
        raise InputError(f"recipe '{where}': key 'version' must be {RECIPE_VERSION}, got {data.get('version')!r}")
    for key in ("model", "steps"):
        if key not in data:
            raise InputError(f"recipe '{where}': missing key '{key}'")
    _check_keys(data.get("calibration", {}), _CALIB_KEYS, f"recipe '{where}': [calibration]")
    if "path" in data.get("calibration", {}) and "random" in data["calibration"]:
        raise InputError(f"recipe '{where}': [calibration] takes either 'path' or 'random', not both")
    if not data["steps"]:
        raise InputError(f"recipe '{where}': 'steps' is empty")
    for number, step in enumerate(data["steps"]):
        label = f"recipe '{where}': steps[{number}]"
        if not isinstance(step, dict):
            raise InputError(f"{label}: a step must be a table ([[steps]])")
        kind = step.get("type")
        if kind not in STEP_KEYS:
            raise InputError(f"{label}: unknown step type '{kind}' in key 'type' (choose from {', '.join(STEP_KEYS)})")
        _check_keys(step, STEP_KEYS[kind], f"{label} ({kind})")
        for key in _REQUIRED[kind]:
            if key not in step:
                raise InputError(f"{label} ({kind}): missing key '{key}'")
        if kind == "quantize" and step.get("mode", "dynamic") not in QUANT_MODES:
            raise InputError(f"{label} (quantize): key 'mode' must be one of {', '.join(QUANT_MODES)}")
    recipe = Recipe(where, data)
    for number, step in enumerate(data["steps"]):
        if step["type"] == "sparsify":  # pattern / criterion / sparsity combinations, as `onnxprune sparsify` refuses them
            try:
                if sparsify_step(step).settings.needs_calibration and not recipe.calibrated(step):
                    raise InputError(f"criterion '{step.get('criterion')}' needs calibration data ('calib', "
                                     "'calib_random' or [calibration])")
            except InputError as err:
                raise InputError(f"recipe '{where}': steps[{number}] (sparsify): {_as_keys(str(err))}") from err
        if step["type"] == "prune":  # budget combinations, as `onnxprune prune` refuses them
            try:
                recipe.prune_step(step).check(recipe.calibrated(step))
            except InputError as err:
                raise InputError(f"recipe '{where}': steps[{number}] (prune): {_as_keys(str(err))}") from err
    return recipe


class _Runner:
    """Runs a checked recipe step by step, threading the latest written model through."""

    def __init__(self, recipe: Recipe, out_dir: pathlib.Path) -> None:
        self.recipe = recipe
        self.out_dir = out_dir
        self.source = recipe.input_path(recipe.data["model"])
        self.current = self.source
        self.written: list[str] = []
        calib = recipe.data.get("calibration", {})
        self.calib = {"batch_size": calib.get("batch_size", DEFAULT_BATCH_SIZE), "seed": calib.get("seed", 0)}
        self.executor: Executor | None = None

    def _output(self, value: str) -> str:
        path = pathlib.Path(value)
        return os.fspath(path if path.is_absolute() else self.out_dir / path)

    def reads(self, step: dict[str, Any]) -> list[str]:
        """The models ``step`` reads, given the steps before it: one resolution for running and for isolation."""
        kind = step["type"]
        if kind in ("prune", "quantize", "sparsify"):
            return [self._model_ref(step.get("input"), self.current)]
        if kind == "validate":
            return [self._model_ref(step.get("original"), self.source), self._model_ref(step.get("candidate"),
                                                                                        self.current)]
        return [self._model_ref(m, m) for m in step["models"]] if "models" in step else [self.source, *self.written]

    def inputs(self) -> list[str]:
        """Walk the steps without running them: the models read that no earlier step writes, first use first."""
        found: list[str] = []
        for step in self.recipe.data["steps"]:
            found += [m for m in self.reads(step) if m not in self.written and m not in found]
            if "output" in step:
                self._wrote(self._output(step["output"]), {})
        return found

    def prune(self, step: dict[str, Any]) -> dict[str, Any]:
        calib, random_count = self.recipe.calib_for(step)
        (source,), output = self.reads(step), self._output(step["output"])
        if self.executor is None:  # made on the first prune step: joining a cluster takes seconds
            self.executor = executor_for(self.recipe.data.get("ray"))
        report = prune_to_file(source, output, self.recipe.prune_step(step), calib, random_count,
                               executor=self.executor)
        return self._wrote(output, {"input": source, "output": output, "ok": True, "results": report})

    def quantize(self, step: dict[str, Any]) -> dict[str, Any]:
        mode = step.get("mode", "dynamic")
        calib, random_count = self.recipe.calib_for(step) if mode == "static" else (None, None)
        (source,), output = self.reads(step), self._output(step["output"])
        calibration = calibration_for(load_model(source), calib, random_count,
                                      step.get("batch_size", self.calib["batch_size"]),
                                      step.get("seed", self.calib["seed"])) if mode == "static" else None
        result = quantize_model(source, output, mode, calibration)
        return self._wrote(output, {"input": source, "output": output, "ok": True, "results": result.to_dict()})

    def sparsify(self, step: dict[str, Any]) -> dict[str, Any]:
        calib, random_count = self.recipe.calib_for(step)
        (source,), output = self.reads(step), self._output(step["output"])
        plan = sparsify_step(step, self.calib["batch_size"])
        calibration = None
        if plan.settings.needs_calibration or plan.verify:
            calibration = calibration_for(load_model(source), calib, random_count, plan.batch_size, self.calib["seed"])
        results = sparsify_to_file(source, output, plan, calibration)
        return self._wrote(output, {"input": source, "output": output, "ok": True, "results": results})

    def validate(self, step: dict[str, Any]) -> dict[str, Any]:
        original, candidate = self.reads(step)
        thresholds = Thresholds(step.get("atol"), step.get("rtol"), step.get("min_cosine"), step.get("min_top1"),
                                step.get("max_accuracy_drop"))
        calib, random_count = (self.recipe.input_path(step["calib"]) if "calib" in step else None), step.get("calib_random")
        result = validate_models(original, candidate, calib=calib, calib_random=random_count, thresholds=thresholds,
                                 seed=step.get("seed", 0), batch_size=step.get("batch_size", DEFAULT_BATCH_SIZE),
                                 input_shapes=self.recipe.shapes_for(step))
        return {"original": original, "candidate": candidate, "ok": result.ok, "results": result.to_dict()}

    def bench(self, step: dict[str, Any]) -> dict[str, Any]:
        models = self.reads(step)
        options = BenchOptions(step.get("threads", 1), step.get("batch", 1), step.get("warmup", 5),
                               step.get("repeat", 50), input_shapes=self.recipe.shapes_for(step))
        return {"models": models, "ok": True, "results": bench_models(models, options).to_dict()}

    def _model_ref(self, value: str | None, default: str) -> str:
        """A model named in a step: an output written earlier (by its recipe path) or an input file."""
        if value is None:
            return default
        out = self._output(value)
        return out if out in self.written else self.recipe.input_path(value)

    def _wrote(self, output: str, record: dict[str, Any]) -> dict[str, Any]:
        self.current = output
        self.written.append(output)
        return record


def run_recipe(path: str | os.PathLike[str] | Recipe, out_dir: str | os.PathLike[str] | None = None) -> RecipeResult:
    """Run every step of the recipe at ``path`` (or an already checked :class:`Recipe`) in order; outputs go under
    ``out_dir`` (default: cwd)."""
    recipe = path if isinstance(path, Recipe) else load_recipe(path)
    target = pathlib.Path(out_dir) if out_dir is not None else pathlib.Path.cwd()
    if not target.is_dir():
        raise InputError(f"output folder '{target}' does not exist")
    runner = _Runner(recipe, target)
    result = RecipeResult(os.fspath(recipe.path), contents=recipe.data)
    for number, step in enumerate(recipe.data["steps"]):
        record = getattr(runner, step["type"])(step)
        result.steps.append({"index": number, "type": step["type"], "name": step.get("name", step["type"]), **record})
    return result


def recipe_report(result: RecipeResult, out_dir: str | None = None) -> dict[str, Any]:
    """ONE report for the whole run, in the shared envelope (the recipe itself is in ``settings``)."""
    settings = {"recipe": result.recipe, "out_dir": out_dir, "recipe_contents": result.contents}
    return command_report("run", settings, result.to_dict(), result.ok)
