"""Command line: ``onnxprune analyze | prune | verify``.

A thin layer over :mod:`onnxprune.pipeline`.  Results go to stdout, messages to stderr.  Exit codes:
0 success, 1 a check failed (verification), 2 bad input or usage, 3 a rewrite could not be made
consistent, 4 an internal error (a bug: please report it), 5 a model crashed or hung the ONNX checker or
onnxruntime in the isolated child process (:mod:`onnxprune.io.isolation`).  Running out of the memory budget
(``--memory-limit``, :mod:`onnxprune.io.memory_budget`) is exit 2 with one line, never a silent kill.  Every error is one line — never a raw
traceback (set ``ONNXPRUNE_DEBUG=1`` to see one).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from typing import Any, Callable

import click

from onnxprune.io import memory_budget
import numpy as np

from onnxprune.version import __version__
from onnxprune.errors import OnnxPruneError, InputError, InputError
from onnxprune.runtime.calibration import DEFAULT_BATCH_SIZE
from onnxprune.scoring.criteria import CRITERIA, DATA_CRITERIA
from onnxprune.runtime.executor import executor_for
from onnxprune.reports.html import sensitivity_png, write_report
from onnxprune.progress import terminal_progress
from onnxprune.io.files import load_model, write_bytes
from onnxprune.cli.guard import guard_files, start_guard
from onnxprune.io.isolation import DEFAULT_TIMEOUT, IsolationOptions
from onnxprune.pipeline import (CALIBRATED_CRITERION, CALIBRATED_RECOVERY, PruneOptions, verify,
    calibration_statistics, group_scores)
from onnxprune.methods.prepared import model_stats, prepare
from onnxprune.recovery.layers import RECOVERY_METHODS
from onnxprune.planning.alignment import AUTO, resolve as resolve_alignment
from onnxprune.planning.sensitivity import DEFAULT_RATIOS, load_labels, scan
from onnxprune.methods.registry import load_plan, method_of
from onnxprune.workflows.steps import (BUDGET_TYPES, budget_fields, input_shape_option, prune_runs_onnxruntime,
    PruneStep, calibration_for, prune_to_file, depth_options, depth_settings)
from onnxprune.runtime.input_shapes import (parse_input_shapes, resolve as resolve_shapes, FLAG as INPUT_SHAPE_FLAG)
from onnxprune.reports.prune_report import analysis_report, format_analysis, format_prune
from onnxprune.methods.depth import DepthMethod
from onnxprune.runtime.blockwise import (AUTO_FRACTION, BlockwiseSettings, quiet as quiet_blocks, stderr_log, use as use_blockwise)

INTERNAL_ERROR = 4
MEMORY_KEY = "onnxprune.memory_limit"


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn onnxprune errors into one line + exit code; unexpected errors into exit 4."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")  # stderr carries progress and one-line errors only
                return fn(*args, **kwargs)
        except OnnxPruneError as err:
            click.echo(f"onnxprune: error: {_one_line(err)}", err=True)
            sys.exit(err.exit_code)
        except MemoryError:
            limit = click.get_current_context().meta.get(MEMORY_KEY)
            click.echo(f"onnxprune: error: out of memory: the command needs more than {memory_budget.describe(limit)} "
                       "(--memory-limit GB sets it)", err=True)
            sys.exit(2)
        except (click.exceptions.Exit, click.ClickException, KeyboardInterrupt):
            raise
        except Exception as err:  # a bug: still one line, but a distinct exit code
            if os.environ.get("ONNXPRUNE_DEBUG"):
                raise
            click.echo(f"onnxprune: internal error: {type(err).__name__}: {_one_line(err)} "
                       "(set ONNXPRUNE_DEBUG=1 for a traceback)", err=True)
            sys.exit(INTERNAL_ERROR)

    return wrapper


model_argument = click.argument("model", type=click.Path(dir_okay=False))
ray_option = click.option("--ray", "ray_address", default=None, metavar="auto|ADDRESS",
                          help="Run calibration batches, sensitivity candidates and latency tables as Ray tasks "
                               "(pip install \"onnxprune[ray]\"): auto joins this machine's cluster or starts one, "
                               "ADDRESS joins that cluster. Same results as a local run.")


def _round_to_option(ctx: click.Context, param: click.Parameter, value: str | int) -> int | str:
    """``--round-to N|auto``: a positive integer or ``auto`` (onnxprune.planning.alignment), checked at parse time."""
    try:
        alignment = resolve_alignment(value)
    except InputError as err:
        raise click.BadParameter(str(err)) from err
    return AUTO if alignment.source != "explicit" else alignment.multiple

exclude_option = click.option("--exclude", multiple=True, metavar="NAME|REGEX",
                              help="Leave groups touching this node or tensor alone (repeatable).")
allow_io_option = click.option("--allow-io-change", is_flag=True,
                               help="Let pruning narrow KV-cache inputs/outputs (past_key_values.*, present.*): "
                                    "the model then needs a cache with fewer KV heads (recorded in its "
                                    "metadata_props and the report).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxprune")
@click.option("--no-isolation", is_flag=True, envvar="ONNXPRUNE_NO_ISOLATION",
              help="Let the ONNX checker and onnxruntime see input models in-process from the start "
                   "(default: first in a child process, so a crash or hang is a clear error, exit 5).")
@click.option("--isolation-timeout", type=click.FloatRange(0.0, min_open=True), default=DEFAULT_TIMEOUT,
              show_default=True, envvar="ONNXPRUNE_ISOLATION_TIMEOUT", metavar="SECONDS",
              help="Time the isolated first check of the input models may take.")
@click.option("--memory-limit", type=click.FloatRange(0.0, min_open=True), default=None, metavar="GB",
              help="Memory budget of the command; crossing it is a one-line error (exit 2) instead of the "
                   "kernel killing the process [default: 90% of the memory available at start].")
@click.option("--blockwise/--no-blockwise", default=None,
              help="Run onnxruntime on the model block by block, one block's session at a time (calibration, "
                   "recovery, verification) [default: when the weights exceed "
                   f"{AUTO_FRACTION:.0%} of the memory budget].")
@click.option("--block-size", type=click.FloatRange(0.0, min_open=True), default=None, metavar="GB",
              help="With blocks: weight gigabytes per block [default: 1/16 of the memory budget, at most 1].")
@click.pass_context
def main(ctx: click.Context, no_isolation: bool, isolation_timeout: float, memory_limit: float | None,
         blockwise: bool | None, block_size: float | None) -> None:
    """Structured pruning of ONNX models: remove channels and neurons by rewriting the graph."""
    ctx.meta[IsolationOptions.META_KEY] = IsolationOptions(not no_isolation, isolation_timeout)
    ctx.meta[MEMORY_KEY] = memory_budget.apply(None if memory_limit is None else int(memory_limit * 2**30))
    mode = "auto" if blockwise is None else "on" if blockwise else "off"
    log = stderr_log if sys.stderr.isatty() else None  # like progress: pipes keep stderr for one-line errors
    # for this command only (closed with the click context: CliRunner callers keep their own settings)
    ctx.with_resource(use_blockwise(BlockwiseSettings(mode, None if block_size is None else int(block_size * 2**30),
                                                      log=log)))


@main.command()
@model_argument
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@exclude_option
@allow_io_option
@input_shape_option
@_guarded
def analyze(model: str, as_json: bool, exclude: tuple[str, ...], allow_io_change: bool,
            input_shape: tuple[str, ...]) -> None:
    """List every prune group (channels, params and FLOPs share) and why frozen groups are frozen."""
    given = parse_input_shapes(input_shape)
    guard_files([model], onnxruntime=False)
    loaded = load_model(model, mmap_weights=True)  # external weights stay on disk
    shapes = resolve_shapes(loaded, given)
    prepared = prepare(loaded, exclude, allow_io_change, hash_model=False)  # an analysis needs no hash
    report = analysis_report(prepared, model_stats(prepared, model, shapes))
    report["model"] = model
    report["depth"] = DepthMethod(exclude).analyze(prepared).to_dict()  # residual blocks --remove-blocks can remove
    click.echo(json.dumps(report, indent=1) if as_json else format_analysis(report))


@main.command(name="prune")
@model_argument
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Pruned model path.")
@click.option("--ratio", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0, show_default=True,
              help="Fraction of every prunable group's channels to remove.")
@click.option("--head-ratio", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Fraction of attention heads to remove [default: --ratio].")
@click.option("--ffn-ratio", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Fraction of Gemm/MatMul neurons (FFN intermediates) to remove [default: --ratio].")
@click.option("--criterion", type=click.Choice(CRITERIA), default=None,
              help=f"Channel importance [default: l2; {CALIBRATED_CRITERION} with calibration data]. "
                   "activation, apoz, wanda, fluctuation, entropy and reconstruction need calibration data.")
@click.option("--global", "global_ranking", is_flag=True, help="Rank channels across groups (normalized scores).")
@click.option("--min-keep", type=click.FloatRange(0.0, 1.0), default=0.1, show_default=True,
              help="With --global or a target: fraction of each group always kept.")
@click.option("--round-to", default=AUTO, show_default=True, metavar="N|auto", callback=_round_to_option,
              help="Keep channel counts multiples of N; auto: the alignment of the --latency-provider a "
                   "--target-latency measures with, else of onnxruntime's CPU kernels (CPU 16, measured; CUDA/TensorRT "
                   "8, vendor guidance; narrow groups a finer power of two; relaxed if a FLOPs/params target needs "
                   "it). See onnxprune/planning/alignment.py.")
@exclude_option
@allow_io_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random criterion.")
@click.option("--verify", "run_verify", is_flag=True, help="Check against the masked-reference oracle before saving.")
@click.option("--save-plan", type=click.Path(dir_okay=False), help="Write the plan (JSON).")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), help="Replay a saved plan.")
@click.option("--inplace", is_flag=True, help="Allow OUTPUT to be the input file.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write a JSON report.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--calib", "calib_path", type=click.Path(), default=None,
              help="Calibration inputs: .npz (arrays named like the inputs; 'y' = labels) or a folder of .npz/.npy.")
@click.option("--calib-random", type=click.IntRange(min=1), default=None, metavar="N",
              help="Use N seeded random inputs as calibration data (the report says so).")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Calibration batch size.")
@click.option("--quiet", is_flag=True, help="No progress line or notes on stderr; results and errors stay.")
@click.option("--recover", type=click.Choice(RECOVERY_METHODS), default=None,
              help=f"Training-free recovery after the rewrite [default: none; {CALIBRATED_RECOVERY} with calibration "
                   "data]. --verify checks the rewrite before recovery.")
@click.option("--target-flops", type=BUDGET_TYPES["target_flops"], default=None, metavar="F",
              help="Keep this fraction of the original FLOPs (measured, within ±0.02); chooses per-group ratios.")
@click.option("--target-params", type=BUDGET_TYPES["target_params"], default=None, metavar="F",
              help="Keep this fraction of the original parameters (measured, within ±0.02).")
@click.option("--target-latency", type=BUDGET_TYPES["target_latency"], default=None, metavar="F",
              help="Keep this fraction of the original latency: estimated from cached per-layer onnxruntime "
                   "tables, then confirmed by timing both models; never writes a model that is not faster.")
@click.option("--latency-threads", type=BUDGET_TYPES["latency_threads"], default=None, metavar="N",
              help="With --target-latency: onnxruntime intra-op threads to measure with [default: 1].")
@click.option("--latency-provider", default=None, metavar="NAME",
              help="With --target-latency: execution provider to measure with [default: CPUExecutionProvider].")
@click.option("--latency-batch", type=BUDGET_TYPES["latency_batch"], default=None, metavar="N",
              help="With --target-latency: batch size (every symbolic dim) to measure at [default: 1].")
@click.option("--latency-cache", type=click.Path(dir_okay=False), default=None, envvar="ONNXPRUNE_LATENCY_CACHE",
              help="With --target-latency: per-layer table cache [default: $ONNXPRUNE_LATENCY_CACHE or "
                   "~/.cache/onnxprune/latency.json].")
@click.option("--max-ratio", type=BUDGET_TYPES["max_ratio"], default=1.0, show_default=True,
              help="With a target: never remove more than this fraction of a group.")
@click.option("--allocation", type=BUDGET_TYPES["allocation"], default=None,
              help="With a target: global score ranking, uniform ratio, or sensitivity-guided [default: global].")
@click.option("--sensitivity", "sensitivity_path", type=click.Path(dir_okay=False), default=None,
              help="With a target: guided allocation from a 'onnxprune sensitivity' file.")
@click.option("--guided", is_flag=True, help="With a target: guided allocation, scanning sensitivity on the calibration data.")
@ray_option
@depth_options
@input_shape_option
@_guarded
def prune_command(model: str, output: str, ratio: float, head_ratio: float | None, ffn_ratio: float | None,
                  criterion: str | None, global_ranking: bool, min_keep: float,
                  round_to: int | str, exclude: tuple[str, ...], allow_io_change: bool, seed: int, run_verify: bool,
                  save_plan: str | None,
                  plan_path: str | None, inplace: bool, report_path: str | None, as_json: bool,
                  calib_path: str | None, calib_random: int | None, batch_size: int, quiet: bool,
                  recover: str | None, input_shape: tuple[str, ...], ray_address: str | None,
                  depth_ratio: float | None,
                  remove_blocks: int | None, depth_criterion: str | None, **budget: Any) -> None:
    """Remove channels (and, with --depth-ratio/--remove-blocks, whole residual blocks first) and write a
    smaller model; prints params, FLOPs and size before → after."""
    quiet_blocks(quiet)
    step = PruneStep(ratio, head_ratio, ffn_ratio, criterion, global_ranking, min_keep, round_to, exclude, seed,
                     run_verify, recover, batch_size, budget_fields(budget), budget["sensitivity_path"],
                     parse_input_shapes(input_shape) or None,
                     depth=depth_settings(depth_ratio, remove_blocks, depth_criterion), allow_io_change=allow_io_change)
    executor = executor_for(ray_address)
    guard = start_guard([model], onnxruntime=prune_runs_onnxruntime(
        run_verify, bool(calib_path) or calib_random is not None, budget.get("target_latency")))
    report = prune_to_file(model, output, step, calib_path, calib_random, plan_path=plan_path, save_plan=save_plan,
                           inplace=inplace, progress=terminal_progress(quiet), command=sys.argv,
                           contributions=bool(report_path or as_json), where=INPUT_SHAPE_FLAG,
                           executor=executor, guard=guard)
    _note_latency_miss(report["settings"].get("budget") or {}, quiet)
    if report_path:
        write_report(report_path, report, f"onnxprune prune {model}")
    click.echo(json.dumps(report, indent=1) if as_json else format_prune(report))


def _note_latency_miss(budget: dict[str, Any], quiet: bool) -> None:
    """One stderr line when the measured latency ratio of the written model misses the target's band.

    Why not an error: the model is faster than the input (that is enforced), just not by as much as asked
    — typical of tiny models whose run time is mostly fixed per-run and per-op costs.
    """
    if budget.get("metric") == "latency" and not budget.get("within_tolerance", True) and not quiet:
        click.echo(f"onnxprune: note: measured latency ratio {budget['measured']:.3f} misses --target-latency "
                   f"{budget['target']:g} by more than ±{budget['measure_tolerance']:g} after {len(budget['rounds'])} "
                   "measured round(s); the closest faster model is written", err=True)


def _recovery_of(model) -> str | None:
    """The recovery method recorded in a model's onnxprune provenance (None if none was applied)."""
    for prop in model.metadata_props:
        if prop.key == "onnxprune.settings":
            try:
                recovery = json.loads(prop.value).get("recovery") or {}
            except (ValueError, AttributeError):
                return None
            return recovery.get("method") if recovery.get("status") == "applied" else None
    return None


@main.command(name="verify")
@model_argument
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--plan", "plan_path", required=True, type=click.Path(dir_okay=False),
              help="The plan PRUNED was made with (--save-plan).")
@click.option("--tolerance", type=float, default=1e-4, show_default=True, help="Max relative output error.")
@click.option("--json", "as_json", is_flag=True)
@_guarded
def verify_command(model: str, pruned: str, plan_path: str, tolerance: float, as_json: bool) -> None:
    """Check PRUNED against MODEL's masked reference for PLAN (exit 1 when it differs)."""
    guard_files([model, pruned], onnxruntime=True)
    original = load_model(model, mmap_weights=True)
    plan = load_plan(plan_path)
    exclude = tuple(plan.settings.get("exclude", ()))
    if plan.settings.get("depth"):  # depth first: the width plan was made for the depth-pruned model
        from onnxprune.planning.depth_stage import depth_source

        original, depth_check = depth_source(original, plan.settings["depth"], exclude)
        depth_check.require_ok("depth-pruned", "zero-branch reference")
    prepared = prepare(original, exclude, bool(plan.settings.get("allow_io_change", False)))
    method_of(plan).check(plan, prepared, plan_path)
    candidate = load_model(pruned, mmap_weights=True)
    result = verify(prepared, plan, candidate, tolerance=tolerance)
    recovered = _recovery_of(candidate)
    if not result.ok and recovered:
        click.echo(f"onnxprune: note: PRUNED was recovered with '{recovered}', which changes weights on purpose; "
                   "the oracle applies to the rewrite before recovery (prune --verify checks it)", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        worst = max((d["relative"] for d in result.diffs), default=0.0)
        click.echo(f"masked-reference oracle {'passed' if result.ok else 'FAILED'}: max relative error "
                   f"{worst:.2e} (tolerance {tolerance:g}) over {len(result.diffs)} comparisons")
    if not result.ok:
        sys.exit(1)


# validate / bench / quantize / run live in onnxprune/cli/commands.py (pipeline integration).
from onnxprune.cli.commands import add_pipeline_commands

add_pipeline_commands(main, _guarded)

# sparsify (element sparsity, a method of its own): onnxprune/cli/sparsify.py.
from onnxprune.cli.sparsify import add_sparsify_command

add_sparsify_command(main, _guarded)


@main.command(name="sensitivity")
@model_argument
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Sensitivity JSON.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Also write a CSV table.")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), default=None,
              help="Also plot the curves (needs the plot extra: pip install \"onnxprune[plot]\").")
@click.option("--calib", "calib_path", type=click.Path(), default=None,
              help="Calibration inputs (.npz: a 'y' array adds accuracy) or a folder of .npz/.npy.")
@click.option("--calib-random", type=click.IntRange(min=1), default=None, metavar="N",
              help="Use N seeded random inputs (the file says so).")
@click.option("--ratios", default=",".join(f"{r:g}" for r in DEFAULT_RATIOS), show_default=True,
              help="Comma-separated fractions of each group to remove.")
@click.option("--criterion", type=click.Choice(CRITERIA), default=CALIBRATED_CRITERION, show_default=True,
              help="Which units of a group are removed first.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@exclude_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress line on stderr (a terminal only shows it).")
@input_shape_option
@ray_option
@_guarded
def sensitivity_command(model: str, output: str, csv_path: str | None, png_path: str | None, calib_path: str | None,
                        calib_random: int | None, ratios: str, criterion: str, batch_size: int,
                        exclude: tuple[str, ...], seed: int, quiet: bool, input_shape: tuple[str, ...],
                        ray_address: str | None) -> None:
    """Prune each group alone at each ratio; write the output change (cosine, rel-MSE, top-1, accuracy)."""
    try:
        values = tuple(float(r) for r in ratios.split(",") if r.strip())
    except ValueError as err:
        raise InputError(f"--ratios must be comma-separated numbers, got '{ratios}'") from err
    given = parse_input_shapes(input_shape)
    executor = executor_for(ray_address)
    guard_files([model], onnxruntime=True)
    loaded = load_model(model)
    shapes = resolve_shapes(loaded, given)
    # no calibration progress: the scan's one line counts its steps; a line per calibration pass would break it up
    calibration = calibration_for(loaded, calib_path, calib_random, batch_size, seed, shapes)
    if calibration is None:
        raise InputError("sensitivity needs calibration data (--calib PATH or --calib-random N)")
    prepared = prepare(loaded, exclude)
    options = PruneOptions(criterion=criterion, seed=seed, exclude=exclude)
    stats = calibration_statistics(prepared, calibration, criterion, executor) if criterion in DATA_CRITERIA else None
    scores = group_scores(prepared, options, stats).by_group
    status = terminal_progress(quiet)
    step = status.steps("sensitivity", len(scores) * len(values)) if status else None
    result = scan(prepared, calibration, scores, criterion, values, load_labels(calib_path), step, shapes, executor)
    result.save(output)
    if csv_path:
        result.save_csv(csv_path)
    if png_path:
        image = sensitivity_png(result.rows)
        if image is None:
            click.echo("onnxprune: note: --png needs matplotlib (pip install \"onnxprune[plot]\"); no plot written",
                       err=True)
        else:
            write_bytes(png_path, image)
    click.echo(f"{len(scores)} groups × {len(values)} ratios on {calibration.used_samples()} samples → {output}")


if __name__ == "__main__":  # pragma: no cover
    main()
