"""The ``onnxprune sparsify`` CLI command (registered by ``cli.py`` with its error guard)."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

import click

from onnxprune.runtime.calibration import DEFAULT_BATCH_SIZE
from onnxprune.reports.html import write_report
from onnxprune.io.files import load_model
from onnxprune.io.isolation import guard_files
from onnxprune.methods.sparsity.masks import PATTERNS
from onnxprune.methods.sparsity.plan import CRITERIA, SCOPES, SparsitySettings
from onnxprune.workflows.sparsify import SparsifyStep, format_sparsify, sparsify_to_file
from onnxprune.workflows.steps import calibration_for, command_report

_path = click.Path(dir_okay=False)


def add_sparsify_command(main: click.Group, guarded: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Add ``sparsify`` to ``main``; ``guarded`` turns OnnxPruneError into one line + exit code."""

    @main.command(name="sparsify")
    @click.argument("model", type=_path)
    @click.option("-o", "--output", required=True, type=_path, help="Sparsified model path.")
    @click.option("--sparsity", type=click.FloatRange(0.0, 1.0, max_open=True), default=None, metavar="S",
                  help="Fraction of each layer's weights to zero (unstructured; N:M patterns set it themselves).")
    @click.option("--pattern", default="unstructured", show_default=True, metavar="|".join(PATTERNS),
                  help="unstructured, or N:M along the input channels (2:4, 4:8: the layout TensorRT's sparse kernels need).")
    @click.option("--criterion", type=click.Choice(CRITERIA), default="magnitude", show_default=True,
                  help="|W|; Wanda |W|·‖X‖ (calibration); SparseGPT (calibration; OBS update of kept weights).")
    @click.option("--scope", type=click.Choice(SCOPES), default="layer", show_default=True,
                  help="layer: every layer gets S; global: per-layer sparsity from one |W| ranking (unstructured).")
    @click.option("--exclude", multiple=True, metavar="NAME|REGEX", help="Leave this node or weight dense (repeatable).")
    @click.option("--calib", "calib_path", type=click.Path(), default=None,
                  help=".npz (arrays named like the inputs) or a folder of .npz/.npy.")
    @click.option("--calib-random", type=click.IntRange(min=1), default=None, metavar="N",
                  help="Use N seeded random inputs (the report says so).")
    @click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--sparse-format", is_flag=True,
                  help="Store weights as ONNX sparse_initializer where smaller (disk only: onnxruntime densifies on load).")
    @click.option("--verify", "run_verify", is_flag=True,
                  help="Check the pattern, and the masked reference (or SparseGPT's promised reconstruction) before saving.")
    @click.option("--verify-calib", type=click.Path(), default=None,
                  help="Held-out data for SparseGPT's reconstruction check [default: the calibration data].")
    @click.option("--save-plan", type=_path, help="Write the plan (JSON, masks included).")
    @click.option("--plan", "plan_path", type=_path, help="Replay a saved plan (magnitude / wanda plans).")
    @click.option("--inplace", is_flag=True, help="Allow OUTPUT to be the input file.")
    @click.option("--report", "report_path", type=_path, help="Write a JSON report (.html: an HTML report).")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @guarded
    def sparsify_command(model: str, output: str, sparsity: float | None, pattern: str, criterion: str, scope: str,
                         exclude: tuple[str, ...], calib_path: str | None, calib_random: int | None, batch_size: int,
                         seed: int, sparse_format: bool, run_verify: bool, verify_calib: str | None,
                         save_plan: str | None, plan_path: str | None, inplace: bool, report_path: str | None,
                         as_json: bool) -> None:
        """Zero weights of Conv/Gemm/MatMul layers (unstructured or N:M); the output stays dense unless
        --sparse-format.  Prints zeros per layer and the gzip-compressed size."""
        settings = SparsitySettings(sparsity, pattern, criterion, scope, exclude, seed)
        calibrated = calib_path is not None or calib_random is not None
        guard_files([model], onnxruntime=True)
        calibration = calibration_for(load_model(model), calib_path, calib_random, batch_size, seed) if calibrated else None
        step = SparsifyStep(settings, run_verify, sparse_format, batch_size, verify_calib, plan_path, save_plan)
        results = sparsify_to_file(model, output, step, calibration, inplace=inplace)
        report = command_report("sparsify", {"model": model, "output": output, **settings.to_dict(),
                                             "calib": calib_path, "calib_random": calib_random, "batch_size": batch_size,
                                             "sparse_format": sparse_format, "verify": run_verify,
                                             "command": sys.argv}, results)
        if report_path:
            write_report(report_path, report, f"onnxprune sparsify {model}")
        click.echo(json.dumps(report, indent=1) if as_json else format_sparsify(results))
