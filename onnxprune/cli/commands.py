"""CLI commands of the pipeline: ``validate``, ``bench``, ``quantize`` and ``run``.

They live outside ``cli.py`` so the pruning commands and these can evolve independently;
``cli.py`` calls :func:`register` with its click group and its error guard (exit codes as documented
there: 0 ok, 1 a check failed, 2 bad input).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

import click

from onnxprune.measurement.bench import BenchOptions, bench_models, format_bench
from onnxprune.runtime.calibration import DEFAULT_BATCH_SIZE
from onnxprune.measurement.compare import Thresholds, format_validate, validate_models
from onnxprune.reports.html import write_report
from onnxprune.progress import terminal_progress
from onnxprune.io.files import load_model
from onnxprune.io.isolation import guard_files
from onnxprune.workflows.quantize import QUANT_MODES, format_quantize, quantize_model
from onnxprune.workflows.recipe import load_recipe, recipe_report, run_recipe
from onnxprune.runtime.input_shapes import parse_input_shapes
from onnxprune.workflows.steps import calibration_for, command_report, input_shape_option

_path = click.Path(dir_okay=False)
_report_option = click.option("--report", "report_path", type=_path, help="Write a JSON report (versioned schema).")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")


def _calib_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--calib-random", type=click.IntRange(min=1), default=None, metavar="N",
                      help="Use N seeded random inputs.")(fn)
    fn = click.option("--calib", "calib_path", type=click.Path(), default=None,
                      help=".npz (arrays named like the inputs; 'y' = labels) or a folder of .npz/.npy.")(fn)
    return fn


def _emit(report: dict[str, Any], report_path: str | None, as_json: bool, text: str) -> None:
    if report_path:
        write_report(report_path, report)
    click.echo(json.dumps(report, indent=1) if as_json else text)


def _fail(message: str) -> None:
    click.echo(f"onnxprune: {message}", err=True)
    sys.exit(1)


def add_pipeline_commands(main: click.Group, guarded: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Add the pipeline commands to ``main``; ``guarded`` turns OnnxPruneError into one line + exit code."""

    @main.command(name="validate")
    @click.argument("original", type=_path)
    @click.argument("candidate", type=_path)
    @_calib_options
    @click.option("--atol", type=click.FloatRange(min=0), default=None, help="Absolute tolerance (allclose).")
    @click.option("--rtol", type=click.FloatRange(min=0), default=None, help="Relative tolerance (allclose).")
    @click.option("--min-cosine", type=float, default=None, help="Minimum cosine similarity per output.")
    @click.option("--min-top1", type=click.FloatRange(0, 1), default=None,
                  help="Minimum top-1 agreement (fraction) of classifier-like outputs.")
    @click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=None,
                  help="Maximum accuracy drop (fraction, needs labels 'y' in the .npz).")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
    @click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
    @_report_option
    @_json_option
    @input_shape_option
    @guarded
    def validate_command(original: str, candidate: str, calib_path: str | None, calib_random: int | None,
                         atol: float | None, rtol: float | None, min_cosine: float | None, min_top1: float | None,
                         max_accuracy_drop: float | None, seed: int, batch_size: int, report_path: str | None,
                         as_json: bool, input_shape: tuple[str, ...]) -> None:
        """Run ORIGINAL and CANDIDATE on the same inputs; exit 1 when a given threshold fails.

        --input-shape shapes the random inputs; --calib data keeps its own shapes."""
        given = parse_input_shapes(input_shape)
        guard_files([original, candidate], onnxruntime=True)
        thresholds = Thresholds(atol, rtol, min_cosine, min_top1, max_accuracy_drop)
        result = validate_models(original, candidate, calib=calib_path, calib_random=calib_random,
                                 thresholds=thresholds, seed=seed, batch_size=batch_size,
                                 input_shapes=given or None).to_dict()
        settings = {"original": original, "candidate": candidate, "calib": calib_path, "calib_random": calib_random,
                    "seed": seed, "batch_size": batch_size, **thresholds.to_dict(),
                    "input_shapes": {k: list(v) for k, v in given.items()} or None}
        _emit(command_report("validate", settings, result, result["ok"]), report_path, as_json,
              format_validate(result))
        if not result["ok"]:
            _fail("validation failed: " + "; ".join(result["failures"]))

    @main.command(name="bench")
    @click.argument("models", nargs=-1, required=True, type=_path)
    @click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Intra-op threads.")
    @click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size.")
    @click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
    @click.option("--repeat", type=click.IntRange(min=1), default=50, show_default=True)
    @_report_option
    @_json_option
    @click.option("--quiet", is_flag=True, help="No progress bar on stderr.")
    @input_shape_option
    @guarded
    def bench_command(models: tuple[str, ...], threads: int, batch: int, warmup: int, repeat: int,
                      report_path: str | None, as_json: bool, quiet: bool, input_shape: tuple[str, ...]) -> None:
        """Latency (median, p10/p90; interleaved, spinning off), params, MACs and size of MODELS."""
        options = BenchOptions(threads, batch, warmup, repeat, input_shapes=parse_input_shapes(input_shape) or None)
        guard_files(models, onnxruntime=True)
        status = terminal_progress(quiet)
        shown = (lambda number: status("bench", number, repeat)) if status else None  # number: repeats done
        result = bench_models(list(models), options, progress=shown).to_dict()
        report = command_report("bench", {"models": list(models), **options.to_dict()}, result)
        _emit(report, report_path, as_json, format_bench(result))

    @main.command(name="quantize")
    @click.argument("model", type=_path)
    @click.option("-o", "--output", required=True, type=_path, help="Quantized model path.")
    @click.option("--mode", type=click.Choice(QUANT_MODES), default="dynamic", show_default=True)
    @_calib_options
    @click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed of --calib-random.")
    @click.option("--inplace", is_flag=True, help="Allow OUTPUT to be the input file.")
    @_report_option
    @_json_option
    @guarded
    def quantize_command(model: str, output: str, mode: str, calib_path: str | None, calib_random: int | None,
                         batch_size: int, seed: int, inplace: bool, report_path: str | None, as_json: bool) -> None:
        """Post-training quantization with onnxruntime (dynamic, or static QDQ with calibration data)."""
        guard_files([model], onnxruntime=True)
        calibration = None
        if mode == "static" or calib_path is not None or calib_random is not None:
            calibration = calibration_for(load_model(model), calib_path, calib_random, batch_size, seed)
        result = quantize_model(model, output, mode, calibration if mode == "static" else None,
                                inplace=inplace).to_dict()
        settings = {"model": model, "output": output, "mode": mode, "calib": calib_path,
                    "calib_random": calib_random, "batch_size": batch_size, "seed": seed}
        _emit(command_report("quantize", settings, result), report_path, as_json, format_quantize(result))

    @main.command(name="run")
    @click.argument("recipe", type=_path)
    @click.option("--out-dir", type=click.Path(file_okay=False), default=None,
                  help="Folder for the recipe's output paths [default: current directory].")
    @_report_option
    @_json_option
    @guarded
    def run_command(recipe: str, out_dir: str | None, report_path: str | None, as_json: bool) -> None:
        """Run a RECIPE.toml (prune / sparsify / quantize / validate / bench steps); exit 1 when a validate step fails."""
        checked = load_recipe(recipe)  # every key and combination, before anything runs
        # The input models, once, before the first step (what earlier steps write is onnxprune's own output).
        guard_files(checked.input_models(out_dir), onnxruntime=checked.runs_onnxruntime())
        result = run_recipe(checked, out_dir)
        report = recipe_report(result, out_dir or os.getcwd())
        _emit(report, report_path, as_json, _format_run(report["results"]))
        if not result.ok:
            failed = [f"step {s['index']} ({s['name']}): " + "; ".join(s["results"]["failures"])
                      for s in result.steps if not s["ok"]]
            _fail("recipe failed: " + " | ".join(failed))


def _format_run(results: dict[str, Any]) -> str:
    lines = []
    for step in results["steps"]:
        lines.append(f"== step {step['index']}: {step['name']} ({step['type']}) "
                     f"{'ok' if step['ok'] else 'FAILED'}")
        body = step["results"]
        if step["type"] == "validate":
            lines.append(format_validate(body))
        elif step["type"] == "bench":
            lines.append(format_bench(body))
        elif step["type"] == "quantize":
            lines.append(format_quantize(body))
        elif step["type"] == "sparsify":
            from onnxprune.workflows.sparsify import format_sparsify
            lines.append(format_sparsify(body))
        else:
            from onnxprune.reports.prune_report import format_prune
            lines.append(f"pruned → {step['output']}")
            lines.append(format_prune(body))
    return "\n".join(lines)
