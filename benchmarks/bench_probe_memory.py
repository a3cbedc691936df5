"""Issue #18: the shape probe must stay small. Peak RSS and wall time of `analyze` / `prune --ratio 0`.

For each model, each measurement runs in a fresh child and reports its own peak RSS (``VmHWM`` of
``/proc/self/status`` at exit, see ``bench_core``: ``ru_maxrss`` would inherit the parent's):

* **baseline** — ``onnx.load(path)`` + ``onnxruntime.InferenceSession(path)`` (CPU provider, default
  options): what the issue compares the tool's time with;
* **analyze** — ``python -m onnxprune.cli analyze MODEL``;
* **prune 0** — ``python -m onnxprune.cli prune MODEL --ratio 0 -o OUT``.

Ratios: time / baseline time (whole child, start-up and imports included, and the command alone after
its imports) and peak RSS / file size. Runs are interleaved (every repeat visits every model and every
command, in an order that rotates) and timings are medians; peak RSS is the maximum over repeats.

``--before REV`` also measures the code before the fix: a temporary ``git worktree`` at REV (default
``3d4b4f7``) whose CLI runs with ``PYTHONPATH`` set to it, under a hard address-space cap (``RLIMIT_AS``,
8 GB by default) and a timeout, so a runaway probe is reported as "over the cap", not an OOM-killed
machine. The worktree is removed at the end (also on error, Ctrl-C or SIGTERM).

Part 2 times the run check of a plain ``prune`` (``pipeline.check_runs``: the pruned model run at two
input shapes) in-process: ``pipeline.prune(model, PruneOptions(ratio=0.3, round_to="auto"))`` (what
``onnxprune prune --ratio 0.3`` does, check included), then ``check_runs(result.prepared, result.model)``
again on its own; its share of the prune time is the cost of the check.

Large models are built torch-free (``models/onnx_builders.py``) into a temporary directory.

    python benchmarks/bench_probe_memory.py [--repeats 3] [--before 3d4b4f7 | --no-before] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from repo_paths import HERE, MODELS, ROOT, run_json_child, worktree_at  # noqa: E402,F401 - the onnxprune next to this script, not an installed copy

import onnx  # noqa: E402

from bench_core import machine_info  # noqa: E402
from onnx_builders import build_bert_encoder, build_llama_kv_decoder  # noqa: E402

DEFAULT_BEFORE = "3d4b4f7"
RSS_BUDGET_MIB = 600  # the bound for the decoders
ENCODER_FACTOR = 3.0  # the bound for the ~90 MB encoder: peak RSS <= 3x the file

_CHILD = r"""
import json, resource, sys, time
out, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]
t0 = time.perf_counter()
code = 0
if mode == "baseline":
    import onnx, onnxruntime
    t1 = time.perf_counter()
    model = onnx.load(args[0])
    session = onnxruntime.InferenceSession(args[0], providers=["CPUExecutionProvider"])
    where = onnxruntime.__version__
else:
    import onnxprune
    from onnxprune.cli import main
    where = onnxprune.__file__
    t1 = time.perf_counter()
    if args:
        try:
            main(args=args, prog_name="onnxprune", standalone_mode=True)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
t2 = time.perf_counter()
with open("/proc/self/status") as status:
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
with open(out, "w") as handle:
    json.dump({"import_s": t1 - t0, "run_s": t2 - t1, "vmhwm_kib": hwm, "exit": code, "where": where}, handle)
"""


@dataclass
class Cell:
    """One (code, model, command): samples of one fresh child each."""

    code: str
    model: str
    command: str
    process_s: list[float] = field(default_factory=list)
    run_s: list[float] = field(default_factory=list)
    peak_kib: list[int] = field(default_factory=list)
    failure: str = ""

    def median(self, key: str) -> float:
        values = getattr(self, key)
        return statistics.median(values) if values else float("nan")

    @property
    def peak_mib(self) -> float:
        return max(self.peak_kib) / 1024 if self.peak_kib else float("nan")


def run_child(cell: Cell, mode: str, args: list[str], pythonpath: Path, cwd: Path, scratch: Path,
              cap_bytes: int, timeout: float) -> None:
    """One fresh child under an address-space cap and a timeout; appends its sample or records why it failed."""
    if cell.failure:
        return  # a command that blew the cap once is not run again

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))

    start = time.perf_counter()
    proc, data = run_json_child(_CHILD, scratch / "child.json", [mode, *args], pythonpath, cwd, timeout,
                                preexec_fn=limit)
    if proc is None:
        cell.failure = f"timeout after {timeout:.0f} s"
        return
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or data is None or data["exit"] != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        over = "MemoryError" in proc.stderr or "bad_alloc" in proc.stderr or "Failed to allocate" in proc.stderr \
            or proc.returncode in (-9, 137)
        cell.failure = (f"over the {cap_bytes / 1e9:.0f} GB cap ({tail[:80]})" if over
                        else f"exit {proc.returncode}: {tail[:120]}")
        return
    if mode == "cli" and not str(data["where"]).startswith(str(pythonpath)):
        raise SystemExit(f"child imported onnxprune from {data['where']}, not from {pythonpath}")
    cell.process_s.append(elapsed)
    cell.run_s.append(data["run_s"])
    cell.peak_kib.append(data["vmhwm_kib"])


def build_models(folder: Path) -> dict[str, Path]:
    """The models, by label: committed ones from models/, large ones built into ``folder``."""
    llama32k = build_llama_kv_decoder(folder / "llama_kv_decoder_32k.onnx", vocab=32000)
    bert = build_bert_encoder(folder / "bert_encoder_90mb.onnx", target_mb=90)
    ext_dir = folder / "ext"
    ext_dir.mkdir()
    bert_ext = ext_dir / "bert_encoder_90mb.onnx"
    onnx.save(onnx.load(str(bert)), str(bert_ext), save_as_external_data=True, all_tensors_to_one_file=True,
              location="bert_encoder_90mb.onnx.data", size_threshold=1024)
    return {
        "llama_kv_decoder (vocab 256)": MODELS / "llama_kv_decoder.onnx",
        "llama_kv_decoder, vocab 32000": llama32k,
        "bert encoder ~90 MB (one file)": bert,
        "bert encoder ~90 MB (external data)": bert_ext,
        "gpt_block_dynamic": MODELS / "gpt_block_dynamic.onnx",
        "swin_t_reduced": MODELS / "swin_t_reduced.onnx",
    }


def file_size(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


COMMANDS = ("baseline", "analyze", "prune 0")
CHECK_RUNS_MODELS = ("llama_kv_decoder (vocab 256)", "llama_kv_decoder, vocab 32000", "gpt_block_dynamic",
                     "bert encoder ~90 MB (external data)")


def measure(models: dict[str, Path], codes: dict[str, Path], repeats: dict[str, int], scratch: Path,
            cap_bytes: int, timeout: float) -> tuple[dict[tuple[str, str, str], Cell], dict[str, float]]:
    """Every (code, model, command) ``repeats[code]`` times, interleaved with a rotating order."""
    cells = {(c, m, k): Cell(c, m, k) for c in codes for m in models for k in COMMANDS
             if not (k == "baseline" and c != "after")}
    imports = {c: Cell(c, "-", "import onnxprune.cli.app") for c in codes}
    jobs = sorted(cells)
    for r in range(max(repeats.values())):
        for code, cell in imports.items():
            if r < repeats[code]:
                run_child(cell, "cli", [], codes[code], scratch, scratch, cap_bytes, timeout)
        shift = r % len(jobs)
        for key in jobs[shift:] + jobs[:shift]:
            code, label, command = key
            if r >= repeats[code]:
                continue
            path = str(models[label])
            args = {"baseline": [path], "analyze": ["analyze", path],
                    "prune 0": ["prune", path, "--ratio", "0", "-o", str(scratch / "pruned.onnx")]}[command]
            mode = "baseline" if command == "baseline" else "cli"
            # cwd = scratch: `python -c` puts the cwd first on sys.path, so a child started in ROOT would
            # import ROOT's onnxprune whatever PYTHONPATH says (run_child checks where it came from)
            run_child(cells[key], mode, args, codes[code], scratch, scratch, cap_bytes, timeout)
            print(f"  [{r + 1}] {code:6} {command:8} {label}: "
                  + (cells[key].failure or f"{cells[key].process_s[-1]:.1f} s, {cells[key].peak_kib[-1] / 1024:.0f} MiB"),
                  flush=True)
    return cells, {c: cell.peak_mib for c, cell in imports.items()}


def check_runs_cost(models: dict[str, Path], labels: list[str], repeats: int) -> list[dict]:
    """In-process: plain prune --ratio 0.3 (run check included) and check_runs alone, interleaved."""
    from onnxprune import pipeline
    from onnxprune.io.files import load_model

    loaded = {label: load_model(models[label], mmap_weights=True) for label in labels}
    samples: dict[str, list[tuple[float, float, int]]] = {label: [] for label in labels}
    for r in range(repeats):
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        for label in order:
            t0 = time.perf_counter()
            result = pipeline.prune(loaded[label], pipeline.PruneOptions(ratio=0.3, round_to="auto"))
            t1 = time.perf_counter()
            checked = pipeline.check_runs(result.prepared, result.model)
            t2 = time.perf_counter()
            samples[label].append((t1 - t0, t2 - t1, len(checked)))
            print(f"  [{r + 1}] check_runs {label}: prune {t1 - t0:.2f} s, check {t2 - t1:.2f} s", flush=True)
    rows = []
    for label in labels:
        prune_s = statistics.median(s[0] for s in samples[label])
        check_s = statistics.median(s[1] for s in samples[label])
        rows.append({"model": label, "prune_s": prune_s, "check_s": check_s, "shapes": samples[label][0][2],
                     "fraction": statistics.median(s[1] / s[0] for s in samples[label])})
    return rows


def _fmt(value: float, digits: int = 1) -> str:
    return "—" if value != value else f"{value:.{digits}f}"


def render(sizes: dict[str, int], cells: dict, import_mib: dict[str, float], check_rows: list[dict],
           machine: dict[str, str], command: str, repeats: dict[str, int], before: str | None, cap_bytes: int,
           timeout: float, total_s: float) -> str:
    out = ["# Shape probe memory (issue #18)", "",
           f"Generated by `{command}` in {total_s / 60:.1f} min. Do not edit: rerun the script.", ""]
    out += ["## Machine", ""] + [f"* {k}: {v}" for k, v in machine.items()] + \
           [f"* load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", ""]
    out += ["## Method", "",
            "Each cell is a fresh child (`python -c`, `PYTHONPATH` = the code measured) that reports its own peak RSS "
            "(`VmHWM` at exit). *baseline* = `onnx.load(path)` + `onnxruntime.InferenceSession(path)` (CPU provider, "
            "default options); *analyze* = `python -m onnxprune.cli analyze MODEL`; *prune 0* = "
            "`python -m onnxprune.cli prune MODEL --ratio 0 -o OUT`. "
            f"Every child runs under `RLIMIT_AS` = {cap_bytes / 1e9:.0f} GB and a {timeout:.0f} s timeout. "
            f"After the fix: median of {repeats['after']} interleaved runs (rotating order)"
            + (f"; before the fix (`{before}`, a temporary worktree): {repeats['before']} run(s)" if before else "")
            + "; peak RSS is the maximum over runs.", "",
            "* *process s* — the child's wall time as the parent sees it (interpreter start-up and imports included); "
            "*× base* divides it by the baseline's.",
            "* *command s* — the command alone, after its imports (`import onnxprune.cli.app` / `import onnx, onnxruntime`); "
            "*× base* likewise.",
            "* *peak / file* — peak RSS over the file size (model plus external data).",
            f"* Import only (`import onnxprune.cli.app`, no command): "
            + ", ".join(f"{code} {_fmt(mib, 0)} MiB" for code, mib in import_mib.items()) + ".", ""]
    base = {label: cells[("after", label, "baseline")] for label in sizes}
    out += ["## 1. Peak RSS and time", "",
            "| model | file MiB | code | command | process s | × base | command s | × base | peak RSS MiB | peak / file |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    codes = ["after"] + (["before"] if before else [])
    for label, size in sizes.items():
        for code in codes:
            for cmd in COMMANDS:
                cell = cells.get((code, label, cmd))
                if cell is None:
                    continue
                name = f"`{before}`" if code == "before" else "fixed"
                if cell.failure:
                    out.append(f"| {label} | {size / 2**20:.1f} | {name} | {cmd} | {cell.failure} | | | | | |")
                    continue
                b = base[label]
                out.append(
                    f"| {label} | {size / 2**20:.1f} | {name if cmd != 'baseline' else '—'} | {cmd} "
                    f"| {_fmt(cell.median('process_s'), 2)} | {_fmt(cell.median('process_s') / b.median('process_s'), 2)} "
                    f"| {_fmt(cell.median('run_s'), 2)} | {_fmt(cell.median('run_s') / b.median('run_s'), 2)} "
                    f"| {_fmt(cell.peak_mib, 0)} | {_fmt(cell.peak_mib * 2**20 / size, 1)} |")
    out += ["", "## The issue's claims, read from the table", ""]
    out += claims(sizes, cells)
    if check_rows:
        out += ["", "## 2. Cost of the run check of a plain prune", "",
                "`pipeline.prune(model, PruneOptions(ratio=0.3, round_to='auto'))` (= `onnxprune prune --ratio 0.3`, "
                "whose result is run at two input shapes by `pipeline.check_runs`) timed in-process, then "
                f"`check_runs(result.prepared, result.model)` alone; medians of {repeats['check']} interleaved runs. "
                "*share* = check time / prune time (the prune includes one check, so prune without it ≈ prune − check).",
                "", "| model | prune --ratio 0.3 s | check_runs s | shapes run | share of prune |",
                "|---|---:|---:|---:|---:|"]
        for row in check_rows:
            out.append(f"| {row['model']} | {row['prune_s']:.2f} | {row['check_s']:.3f} | {row['shapes']} "
                       f"| {100 * row['fraction']:.0f} % |")
    return "\n".join(out) + "\n"


def claims(sizes: dict[str, int], cells: dict) -> list[str]:
    lines = []
    for label in ("llama_kv_decoder (vocab 256)", "llama_kv_decoder, vocab 32000"):
        if label not in sizes:
            continue
        b = cells[("after", label, "baseline")]
        for cmd in ("analyze", "prune 0"):
            c = cells[("after", label, cmd)]
            if c.failure:
                lines.append(f"* {label}, {cmd}: failed ({c.failure}) ✗")
                continue
            rss_ok = c.peak_mib <= RSS_BUDGET_MIB
            proc, run = c.median("process_s") / b.median("process_s"), c.median("run_s") / b.median("run_s")
            lines.append(f"* {label}, {cmd}: peak {c.peak_mib:.0f} MiB (≤ {RSS_BUDGET_MIB} MB: {'✓' if rss_ok else '✗'}); "
                         f"time {proc:.2f}× the baseline as whole processes, {run:.2f}× command alone "
                         f"(≤ 3×: {'✓' if proc <= 3 else '✗'} / {'✓' if run <= 3 else '✗'})")
    for label in ("bert encoder ~90 MB (one file)", "bert encoder ~90 MB (external data)"):
        if label not in sizes:
            continue
        c = cells[("after", label, "analyze")]
        if c.failure:
            lines.append(f"* {label}, analyze: failed ({c.failure}) ✗")
            continue
        factor = c.peak_mib * 2**20 / sizes[label]
        lines.append(f"* {label}, analyze: peak {factor:.1f}× the file (≤ {ENCODER_FACTOR:g}×: "
                     f"{'✓' if factor <= ENCODER_FACTOR else '✗'})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell of the fixed code (median)")
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git revision before the fix (temporary worktree)")
    parser.add_argument("--no-before", action="store_true", help="skip the before-the-fix measurements")
    parser.add_argument("--before-repeats", type=int, default=1, help="runs per cell of the code before the fix")
    parser.add_argument("--cap-gb", type=float, default=8.0, help="RLIMIT_AS of every child, GB")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per child")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="measure only models whose label contains TEXT (repeatable; for trying the script)")
    parser.add_argument("--out", default=str(HERE / "results_probe_memory.md"))
    args = parser.parse_args()
    command = "python benchmarks/bench_probe_memory.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    machine = machine_info()
    cap = int(args.cap_gb * 1e9)
    before = None if args.no_before else args.before
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_probe_memory_") as tmp:
        scratch = Path(tmp)
        (scratch / "models").mkdir()
        models = build_models(scratch / "models")
        if args.only:
            models = {k: v for k, v in models.items() if any(t in k for t in args.only)}
        sizes = {label: file_size(path) for label, path in models.items()}
        with worktree_at(before, scratch / "before") as worktree:
            codes = {"after": ROOT} | ({"before": worktree} if worktree else {})
            repeats = {"after": args.repeats, "before": args.before_repeats, "check": args.repeats}
            cells, import_mib = measure(models, codes, repeats, scratch, cap, args.timeout)
            check_rows = check_runs_cost(models, [label for label in CHECK_RUNS_MODELS if label in models],
                                         args.repeats)
    text = render(sizes, cells, import_mib, check_rows, machine, command, repeats, before, cap, args.timeout,
                  time.perf_counter() - start)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
