"""Command line: ``onnxprune analyze | prune | verify``.

A thin layer over :mod:`onnxprune.pipeline`.  Results go to stdout, messages to stderr.  Exit codes:
0 success, 1 a check failed (verification), 2 bad input or usage, 3 a rewrite could not be made
consistent, 4 an internal error (a bug: please report it).  Every error is one line — never a raw
traceback (set ``ONNXPRUNE_DEBUG=1`` to see one).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Callable

import click

from onnxprune import __version__
from onnxprune.counting import count_model
from onnxprune.errors import OnnxPruneError
from onnxprune.importance import WEIGHT_CRITERIA
from onnxprune.io import load_model, save_model, write_json
from onnxprune.pipeline import PruneOptions, model_stats, prepare, prune, verify
from onnxprune.plan import check_plan, load_plan
from onnxprune.report import analysis_report, format_analysis, format_prune, prune_report

INTERNAL_ERROR = 4


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn onnxprune errors into one line + exit code; unexpected errors into exit 4."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OnnxPruneError as err:
            click.echo(f"onnxprune: error: {_one_line(err)}", err=True)
            sys.exit(err.exit_code)
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
exclude_option = click.option("--exclude", multiple=True, metavar="NAME|REGEX",
                              help="Leave groups touching this node or tensor alone (repeatable).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxprune")
def main() -> None:
    """Structured pruning of ONNX models: remove channels and neurons by rewriting the graph."""


@main.command()
@model_argument
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@exclude_option
@_guarded
def analyze(model: str, as_json: bool, exclude: tuple[str, ...]) -> None:
    """List every prune group (channels, params and FLOPs share) and why frozen groups are frozen."""
    prepared = prepare(load_model(model), exclude)
    report = analysis_report(prepared, model_stats(prepared, model))
    report["model"] = model
    click.echo(json.dumps(report, indent=1) if as_json else format_analysis(report))


@main.command(name="prune")
@model_argument
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Pruned model path.")
@click.option("--ratio", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0, show_default=True,
              help="Fraction of every prunable group's channels to remove.")
@click.option("--criterion", type=click.Choice(WEIGHT_CRITERIA), default="l2", show_default=True)
@click.option("--global", "global_ranking", is_flag=True, help="Rank channels across groups (normalized scores).")
@click.option("--min-keep", type=click.FloatRange(0.0, 1.0), default=0.1, show_default=True,
              help="With --global: fraction of each group always kept.")
@click.option("--round-to", type=click.IntRange(min=1), default=1, show_default=True,
              help="Keep channel counts multiples of N.")
@exclude_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random criterion.")
@click.option("--verify", "run_verify", is_flag=True, help="Check against the masked-reference oracle before saving.")
@click.option("--save-plan", type=click.Path(dir_okay=False), help="Write the plan (JSON).")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), help="Replay a saved plan.")
@click.option("--inplace", is_flag=True, help="Allow OUTPUT to be the input file.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write a JSON report.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_guarded
def prune_command(model: str, output: str, ratio: float, criterion: str, global_ranking: bool, min_keep: float,
                  round_to: int, exclude: tuple[str, ...], seed: int, run_verify: bool, save_plan: str | None,
                  plan_path: str | None, inplace: bool, report_path: str | None, as_json: bool) -> None:
    """Remove channels and write a smaller model; prints params, FLOPs and size before → after."""
    loaded = load_model(model)
    options = PruneOptions(ratio, criterion, global_ranking, round_to, exclude, seed, min_keep)
    plan = load_plan(plan_path) if plan_path else None
    if plan is not None:
        options = PruneOptions(**{k: v for k, v in plan.settings.items() if k in PruneOptions.__dataclass_fields__
                                  and k != "exclude"}, exclude=tuple(plan.settings.get("exclude", ())))
    result = prune(loaded, options, plan, run_verify)
    result.before = model_stats(result.prepared, model)
    provenance = {"source_sha256": result.prepared.model_sha256, "settings": result.plan.settings,
                  "plan_groups_pruned": sum(1 for g in result.plan.groups if g.kept and len(g.kept) < g.channels)}
    written = save_model(result.model, output, source_path=model, inplace=inplace, provenance=provenance)
    result.after = count_model(result.model, path=written)
    if save_plan:
        result.plan.save(save_plan)
    report = prune_report(result, os.fspath(written), sys.argv)
    if report_path:
        write_json(report_path, report)
    click.echo(json.dumps(report, indent=1) if as_json else format_prune(report))


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
    original = load_model(model)
    plan = load_plan(plan_path)
    prepared = prepare(original, tuple(plan.settings.get("exclude", ())))
    check_plan(plan, prepared.analysis, prepared.model_sha256, plan_path)
    result = verify(prepared, plan, load_model(pruned), tolerance=tolerance)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        worst = max((d["relative"] for d in result.diffs), default=0.0)
        click.echo(f"masked-reference oracle {'passed' if result.ok else 'FAILED'}: max relative error "
                   f"{worst:.2e} (tolerance {tolerance:g}) over {len(result.diffs)} comparisons")
    if not result.ok:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
