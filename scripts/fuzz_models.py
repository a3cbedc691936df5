#!/usr/bin/env python3
"""Mutation fuzzer for ``onnxprune prune``: corrupt the shipped models and demand a clean answer.

Each case takes one model from ``models/*.onnx``, applies one to three seeded mutations — byte-level
(bit flips, truncation, overwritten or duplicated byte ranges) or protobuf-level (dims of initializers
and value infos, attribute values, op types, input/output names, opset and IR versions, data types,
initializer payloads, deleted/duplicated nodes) — and runs::

    onnxprune prune MUTATED -o OUT --ratio 0.3 --verify

in a child process (wall-clock timeout, address-space limit).  Every outcome is one of:

* ``success``      exit 0 and OUT passes the full ONNX checker, loads in onnxruntime and runs;
* ``clear-error``  exit 1, 2 or 3, stderr is exactly one line ``onnxprune: error: ...``, no OUT;
* ``UNEXPECTED``   anything else: a traceback, exit 4 (internal error), another exit code, death by a
  signal, a timeout, a multi-line error, a written model that fails the checker or onnxruntime, or an
  output left behind by a failed run.

UNEXPECTED cases are saved (mutated bytes + a JSON description with the repro command) under
``--save-dir`` (default ``/tmp/onnxprune-fuzz``), never in the repository.  Usage::

    python scripts/fuzz_models.py --runs 1000 --seed 1 --jobs 2 [--json summary.json]

Exit status: 0 when nothing was UNEXPECTED, 1 otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Callable

import onnx
from onnx import AttributeProto, ModelProto, TensorProto

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
DEFAULT_SAVE_DIR = pathlib.Path(tempfile.gettempdir()) / "onnxprune-fuzz"
#: Address-space cap of each child (bytes): a mutated dim must not be able to take the machine down.
MEMORY_LIMIT = 4 << 30
CLEAR_EXIT_CODES = (1, 2, 3)
OP_TYPES = ("Conv", "Relu", "Add", "Mul", "Concat", "Reshape", "Gemm", "MatMul", "Flatten", "Transpose",
            "Split", "Slice", "BatchNormalization", "GlobalAveragePool", "MaxPool", "Identity", "Sigmoid",
            "Softmax", "LayerNormalization", "ConvTranspose", "Squeeze", "Unsqueeze", "Resize", "Pad",
            "Loop", "If", "NoSuchOp", "")  # fmt: skip
INT_VALUES = (-(2**63), -(2**31), -7, -2, -1, 0, 1, 2, 3, 5, 7, 13, 64, 1000, 2**31 - 1, 2**40)
FLOAT_VALUES = (float("nan"), float("inf"), float("-inf"), -1.0, 0.0, 1e-30, 0.5, 1e30)


# --------------------------------------------------------------------------------------------------
# mutations: each takes (bytes, rng) and returns (new bytes, description)


def _bitflip(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    flips = [rng.randrange(len(out) * 8) for _ in range(rng.randint(1, 8))]
    for bit in flips:
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out), f"bitflip bits {flips}"


def _truncate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    cut = rng.randrange(1, len(data))
    return data[:cut], f"truncate to {cut} of {len(data)} bytes"


def _overwrite(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    start = rng.randrange(len(data))
    length = rng.randint(1, 64)
    junk = bytes(rng.randrange(256) for _ in range(length))
    return data[:start] + junk + data[start + length:], f"overwrite {length} bytes at {start}"


def _duplicate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    start = rng.randrange(len(data))
    length = rng.randint(1, 256)
    chunk = data[start:start + length]
    at = rng.randrange(len(data))
    return data[:at] + chunk + data[at:], f"duplicate {len(chunk)} bytes from {start} at {at}"


def _proto_mutation(edit: Callable[[ModelProto, random.Random], str]) -> Callable[[bytes, random.Random], tuple[bytes, str]]:
    """Lift a ModelProto edit to a byte mutation (a model that no longer parses is left as is)."""

    def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
        model = ModelProto()
        try:
            model.ParseFromString(data)
        except Exception:  # an earlier byte mutation broke the protobuf: nothing to edit
            return data, f"{edit.__name__.lstrip('_')}: skipped (unparsable)"
        description = edit(model, rng)
        return model.SerializeToString(), description

    mutate.__name__ = edit.__name__
    return mutate


def _all_nodes(model: ModelProto) -> list[onnx.NodeProto]:
    nodes: list[onnx.NodeProto] = []

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            nodes.append(node)
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    return nodes


def _edit_initializer_dims(model: ModelProto, rng: random.Random) -> str:
    inits = [i for i in model.graph.initializer if i.dims]
    if not inits:
        return "initializer dims: none"
    init = rng.choice(inits)
    axis = rng.randrange(len(init.dims))
    old = init.dims[axis]
    choice = rng.random()
    if choice < 0.5:
        init.dims[axis] = rng.choice((0, 1, old - 1, old + 1, old * 2, -1, 2**40))
        return f"initializer {init.name!r} dims[{axis}] {old} -> {init.dims[axis]} (payload unchanged)"
    if choice < 0.75:
        init.dims.append(1)
        return f"initializer {init.name!r} gains a trailing dim of 1"
    del init.dims[axis]
    return f"initializer {init.name!r} loses dim {axis}"


def _edit_value_dims(model: ModelProto, rng: random.Random) -> str:
    values = [v for v in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
              if v.type.HasField("tensor_type") and v.type.tensor_type.shape.dim]
    if not values:
        return "value dims: none"
    value = rng.choice(values)
    dims = value.type.tensor_type.shape.dim
    axis = rng.randrange(len(dims))
    choice = rng.random()
    if choice < 0.4:
        dims[axis].dim_value = rng.choice((0, 1, 2, 3, 7, 2**31))
        what = f"dim_value {dims[axis].dim_value}"
    elif choice < 0.7:
        dims[axis].dim_param = rng.choice(("N", "batch", "", "x y", "\n"))
        what = f"dim_param {dims[axis].dim_param!r}"
    elif choice < 0.85:
        dims.add().dim_value = rng.choice((1, 3))
        what = "extra trailing dim"
    else:
        del dims[axis]
        what = "dim removed"
    return f"value {value.name!r} dim {axis}: {what}"


def _edit_attribute(model: ModelProto, rng: random.Random) -> str:
    nodes = [n for n in _all_nodes(model) if n.attribute]
    if not nodes:
        return "attribute: none"
    node = rng.choice(nodes)
    attr = rng.choice(list(node.attribute))
    choice = rng.random()
    if choice < 0.15:
        node.attribute.remove(attr)
        return f"node {node.name!r} ({node.op_type}) attribute {attr.name!r} removed"
    if choice < 0.25:
        node.attribute.add().CopyFrom(onnx.helper.make_attribute("fuzz_unknown", rng.choice(INT_VALUES)))
        return f"node {node.name!r} ({node.op_type}) gains attribute 'fuzz_unknown'"
    if attr.type == AttributeProto.INT:
        attr.i = rng.choice(INT_VALUES)
        return f"node {node.name!r} ({node.op_type}) {attr.name}={attr.i}"
    if attr.type == AttributeProto.INTS and attr.ints:
        index = rng.randrange(len(attr.ints))
        attr.ints[index] = rng.choice(INT_VALUES)
        if rng.random() < 0.3:
            attr.ints.append(rng.choice(INT_VALUES))
        return f"node {node.name!r} ({node.op_type}) {attr.name}={list(attr.ints)}"
    if attr.type == AttributeProto.FLOAT:
        attr.f = rng.choice(FLOAT_VALUES)
        return f"node {node.name!r} ({node.op_type}) {attr.name}={attr.f}"
    if attr.type == AttributeProto.STRING:
        attr.s = rng.choice((b"", b"nonsense", b"\xff\xfe", b"NOTSET", b"linear"))
        return f"node {node.name!r} ({node.op_type}) {attr.name}={attr.s!r}"
    if attr.type == AttributeProto.TENSOR:
        attr.t.dims.append(2)
        return f"node {node.name!r} ({node.op_type}) tensor attribute {attr.name} gains a dim"
    attr.type = rng.choice((AttributeProto.INT, AttributeProto.FLOAT, AttributeProto.STRINGS))
    return f"node {node.name!r} ({node.op_type}) attribute {attr.name!r} type changed to {attr.type}"


def _edit_op_type(model: ModelProto, rng: random.Random) -> str:
    nodes = _all_nodes(model)
    if not nodes:
        return "op type: no nodes"
    node = rng.choice(nodes)
    old = node.op_type
    node.op_type = rng.choice(OP_TYPES)
    if rng.random() < 0.2:
        node.domain = rng.choice(("com.microsoft", "com.example.fuzz", "ai.onnx.ml", "ai.onnx"))
    return f"node {node.name!r} op {old} -> {node.op_type} (domain {node.domain!r})"


def _edit_names(model: ModelProto, rng: random.Random) -> str:
    nodes = _all_nodes(model)
    if not nodes:
        return "names: no nodes"
    node = rng.choice(nodes)
    names = [t for n in model.graph.node for t in list(n.input) + list(n.output)]
    names += [i.name for i in model.graph.initializer] + [i.name for i in model.graph.input]
    choice = rng.random()
    if choice < 0.35 and node.input:
        index = rng.randrange(len(node.input))
        node.input[index] = rng.choice(names)
        return f"node {node.name!r} input {index} rewired to {node.input[index]!r}"
    if choice < 0.5 and node.input:
        index = rng.randrange(len(node.input))
        node.input[index] = rng.choice(("dangling_fuzz", "", node.input[index] + "_x"))
        return f"node {node.name!r} input {index} renamed to {node.input[index]!r}"
    if choice < 0.6 and node.input:
        del node.input[rng.randrange(len(node.input))]
        return f"node {node.name!r} loses an input"
    if choice < 0.7:
        node.input.append(rng.choice(names))
        return f"node {node.name!r} gains input {node.input[-1]!r}"
    if choice < 0.85 and node.output:
        index = rng.randrange(len(node.output))
        node.output[index] = rng.choice(names)
        return f"node {node.name!r} output {index} renamed to existing {node.output[index]!r}"
    other = rng.choice(nodes)
    node.name = other.name
    return f"node name {node.name!r} duplicated"


def _edit_opset(model: ModelProto, rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.5 and model.opset_import:
        entry = rng.choice(list(model.opset_import))
        entry.version = rng.choice((1, 6, 7, 9, 10, 11, 12, 13, 14, 16, 18, 21, 23, 26, 99, -1, 0))
        return f"opset {entry.domain!r} -> {entry.version}"
    if choice < 0.65:
        model.opset_import.add(domain=rng.choice(("com.example.fuzz", "ai.onnx.ml", "")), version=rng.randint(1, 5))
        return f"opset import added {model.opset_import[-1].domain!r} v{model.opset_import[-1].version}"
    if choice < 0.8:
        model.ir_version = rng.choice((1, 2, 3, 4, 6, 7, 11, 12, 99))
        return f"ir_version -> {model.ir_version}"
    if model.opset_import:
        del model.opset_import[rng.randrange(len(model.opset_import))]
        return "an opset import removed"
    return "opset: nothing to remove"


def _edit_tensor_data(model: ModelProto, rng: random.Random) -> str:
    inits = list(model.graph.initializer)
    if not inits:
        return "tensor data: none"
    init = rng.choice(inits)
    choice = rng.random()
    if choice < 0.3:
        init.data_type = rng.choice((TensorProto.STRING, TensorProto.INT64, TensorProto.FLOAT16, TensorProto.BOOL,
                                     TensorProto.DOUBLE, TensorProto.UNDEFINED, 99))
        return f"initializer {init.name!r} data_type -> {init.data_type}"
    if choice < 0.55 and init.HasField("raw_data"):
        init.raw_data = init.raw_data[: rng.randrange(len(init.raw_data) + 1)]
        return f"initializer {init.name!r} raw_data truncated to {len(init.raw_data)}"
    if choice < 0.7:
        init.ClearField("raw_data")
        return f"initializer {init.name!r} payload removed"
    if choice < 0.85:
        init.data_location = TensorProto.EXTERNAL
        init.external_data.add(key="location", value=rng.choice(("weights.bin", "../etc/passwd", "/dev/zero")))
        return f"initializer {init.name!r} marked external ({init.external_data[-1].value})"
    init.name = rng.choice([i.name for i in inits] + ["renamed_fuzz"])
    return f"initializer renamed to {init.name!r}"


def _edit_structure(model: ModelProto, rng: random.Random) -> str:
    graph = model.graph
    choice = rng.random()
    if choice < 0.3 and graph.node:
        index = rng.randrange(len(graph.node))
        node = graph.node[index]
        del graph.node[index]
        return f"node {node.name!r} ({node.op_type}) deleted"
    if choice < 0.5 and graph.node:
        graph.node.add().CopyFrom(rng.choice(list(graph.node)))
        return f"node {graph.node[-1].name!r} duplicated (same outputs)"
    if choice < 0.65 and graph.node:
        nodes = list(graph.node)
        rng.shuffle(nodes)
        del graph.node[:]
        graph.node.extend(nodes)
        return "nodes shuffled"
    if choice < 0.8 and graph.output:
        del graph.output[rng.randrange(len(graph.output))]
        return "a graph output removed"
    if choice < 0.9 and graph.input:
        del graph.input[rng.randrange(len(graph.input))]
        return "a graph input removed"
    if graph.output:
        graph.output[0].name = rng.choice(("", "missing_fuzz", graph.input[0].name if graph.input else "x"))
        return f"graph output renamed to {graph.output[0].name!r}"
    return "structure: nothing to change"


BYTE_MUTATIONS = (_bitflip, _truncate, _overwrite, _duplicate)
PROTO_MUTATIONS = tuple(_proto_mutation(edit) for edit in (
    _edit_initializer_dims, _edit_value_dims, _edit_attribute, _edit_op_type, _edit_names, _edit_opset,
    _edit_tensor_data, _edit_structure))  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Case:
    """One fuzz case: which model, which seed, which mutations (recorded for the repro)."""

    index: int
    source: str
    seed: int
    mutations: tuple[str, ...]
    data: bytes = dataclasses.field(repr=False)


def sources() -> list[pathlib.Path]:
    return sorted(MODELS.glob("*.onnx"))


def make_case(index: int, seed: int, models: list[pathlib.Path]) -> Case:
    """Deterministic in (seed, index, list of models): the same command makes the same cases."""
    rng = random.Random(f"{seed}:{index}")
    source = rng.choice(models)
    data = source.read_bytes()
    applied = []
    # Mostly protobuf edits (they reach the pipeline); byte edits mostly exercise the loader.
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        pool = PROTO_MUTATIONS if rng.random() < 0.75 else BYTE_MUTATIONS
        mutation = rng.choice(pool)
        data, description = mutation(data, rng)
        applied.append(f"{mutation.__name__.lstrip('_')}: {description}")
    return Case(index, source.name, seed, tuple(applied), data)


# --------------------------------------------------------------------------------------------------
# running one case


def _entry_point() -> list[str]:
    # the script installed beside this interpreter first: PATH may point at another environment
    script = os.path.join(os.path.dirname(sys.executable), "onnxprune")
    script = script if os.path.exists(script) else (shutil.which("onnxprune") or script)
    return [script] if os.path.exists(script) else [sys.executable, "-m", "onnxprune.cli"]


#: Runs in a fresh interpreter: cap the address space, then exec the real command.  (``preexec_fn``
#: is not safe while other threads run, and the cases run from a thread pool.)
_LIMIT_AND_EXEC = (
    "import os, sys\n"
    "try:\n"
    "    import resource\n"
    "    limit = int(sys.argv[1])\n"
    "    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    "except (ImportError, ValueError, OSError):\n"
    "    pass\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def memory_limited(command: list[str], limit: int = MEMORY_LIMIT) -> list[str]:
    """``command`` run under an address-space cap (POSIX; elsewhere the command as is)."""
    if os.name != "posix":
        return command
    return [sys.executable, "-c", _LIMIT_AND_EXEC, str(limit), *command]


def check_written_model(path: pathlib.Path, source: pathlib.Path | None = None) -> str | None:
    """None when the output is a complete, valid, runnable model; else why not.

    The output runs on the inputs ``--verify`` uses (seed 0, batch 2).  When it fails to *run* there
    and ``source`` (the mutated input) fails the same way on the same inputs, the failure belongs to the
    input (e.g. a mutated dim that only fits some batch sizes), not to the rewrite.
    """
    try:
        from onnxprune.runtime.sessions import make_session
        from onnxprune.runtime.feeds import random_feeds

        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        sessions = [make_session(model, optimized=optimized) for optimized in (False, True)]
    except Exception as err:  # noqa: BLE001 - any failure is the finding
        return f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    try:
        feeds = random_feeds(model, seed=0)
        for session in sessions:
            session.run(None, feeds)
    except Exception as err:  # noqa: BLE001
        if source is not None and not _runs(source, feeds):
            return None
        return f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    return None


def _runs(source: pathlib.Path, feeds: dict) -> bool:
    """Whether the input model itself runs on ``feeds`` (ORT_DISABLE_ALL)."""
    try:
        from onnxprune.runtime.sessions import make_session

        make_session(onnx.load(str(source)), optimized=False).run(None, feeds)
    except Exception:  # noqa: BLE001
        return False
    return True


def classify(returncode: int | None, stderr: str, output: pathlib.Path, timed_out: bool,
             source: pathlib.Path | None = None) -> tuple[str, str]:
    """(outcome, reason): success, clear-error or UNEXPECTED."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if timed_out:
        return "UNEXPECTED", "timeout (hang)"
    if "Traceback" in stderr:
        return "UNEXPECTED", "traceback on stderr"
    if returncode is None or returncode < 0:
        return "UNEXPECTED", f"killed by signal {-returncode if returncode else '?'}"
    if returncode == 0:
        if not output.exists():
            return "UNEXPECTED", "exit 0 but no output written"
        problem = check_written_model(output, source)
        return ("success", "") if problem is None else ("UNEXPECTED", f"written model invalid: {problem}")
    if returncode == 4:
        return "UNEXPECTED", f"internal error: {lines[-1] if lines else ''}"
    if returncode not in CLEAR_EXIT_CODES:
        return "UNEXPECTED", f"exit code {returncode}: {lines[-1] if lines else ''}"
    if len(lines) != 1 or not lines[0].startswith("onnxprune: error: "):
        return "UNEXPECTED", f"error is not one line: {stderr[:300]!r}"
    if output.exists():
        return "UNEXPECTED", f"exit {returncode} but an output was written"
    return "clear-error", lines[0]


def run_case(case: Case, workdir: pathlib.Path, timeout: float) -> dict:
    """Run the CLI on the mutated bytes in a private folder and classify the outcome."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix=f"case{case.index}-", dir=workdir))
    model, output = folder / "model.onnx", folder / "pruned.onnx"
    model.write_bytes(case.data)
    command = [*_entry_point(), "prune", str(model), "-o", str(output), "--ratio", "0.3", "--verify"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("ONNXPRUNE_DEBUG", None)
    start = time.monotonic()
    try:
        proc = subprocess.run(memory_limited(command), capture_output=True, text=True, timeout=timeout, env=env)
        returncode, stderr, timed_out = proc.returncode, proc.stderr, False
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        returncode, timed_out = None, True
    seconds = time.monotonic() - start
    outcome, reason = classify(returncode, stderr, output, timed_out, model)
    shutil.rmtree(folder, ignore_errors=True)
    return {"index": case.index, "source": case.source, "seed": case.seed, "mutations": list(case.mutations),
            "outcome": outcome, "reason": reason, "returncode": returncode, "seconds": round(seconds, 2),
            "sha256": hashlib.sha256(case.data).hexdigest()}


def save_unexpected(case: Case, result: dict, save_dir: pathlib.Path) -> pathlib.Path:
    """Keep the mutated bytes and a JSON description (with the repro command) outside the repo."""
    save_dir.mkdir(parents=True, exist_ok=True)
    path = save_dir / f"seed{case.seed}-case{case.index}-{result['sha256'][:12]}.onnx"
    path.write_bytes(case.data)
    repro = f"onnxprune prune {path} -o /tmp/out.onnx --ratio 0.3 --verify"
    path.with_suffix(".json").write_text(json.dumps(result | {"repro": repro}, indent=1) + "\n")
    return path


def fuzz(runs: int, seed: int, jobs: int = 2, timeout: float = 120.0, save_dir: pathlib.Path | None = DEFAULT_SAVE_DIR,
         progress: Callable[[dict], None] | None = None) -> dict:
    """Run ``runs`` cases with ``jobs`` children at a time; returns counts, timings and every UNEXPECTED."""
    models = sources()
    if not models:
        raise SystemExit(f"no models in {MODELS}")
    start = time.monotonic()
    results: list[dict] = []
    unexpected: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="onnxprune-fuzz-work-") as work:
        workdir = pathlib.Path(work)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            cases = (make_case(index, seed, models) for index in range(runs))
            futures = {}
            for case in cases:
                futures[pool.submit(run_case, case, workdir, timeout)] = case
            for future in concurrent.futures.as_completed(futures):
                case, result = futures[future], future.result()
                if result["outcome"] == "UNEXPECTED" and save_dir is not None:
                    result["saved"] = str(save_unexpected(case, result, save_dir))
                results.append(result)
                if result["outcome"] == "UNEXPECTED":
                    unexpected.append(result)
                if progress:
                    progress(result)
    results.sort(key=lambda r: r["index"])
    unexpected.sort(key=lambda r: r["index"])
    counts = Counter(r["outcome"] for r in results)
    return {
        "runs": runs, "seed": seed, "jobs": jobs, "timeout": timeout,
        "seconds": round(time.monotonic() - start, 1),
        "counts": {k: counts.get(k, 0) for k in ("success", "clear-error", "UNEXPECTED")},
        "exit_codes": dict(sorted(Counter(str(r["returncode"]) for r in results).items())),
        "models": len(models), "unexpected": unexpected, "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mutation fuzzer for `onnxprune prune` (see module docstring).")
    parser.add_argument("--runs", type=int, default=100, help="Number of mutated models.")
    parser.add_argument("--seed", type=int, default=0, help="Seed: the same seed makes the same cases.")
    parser.add_argument("--jobs", type=int, default=2, help="Children run at a time.")
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds before a case counts as a hang.")
    parser.add_argument("--save-dir", type=pathlib.Path, default=DEFAULT_SAVE_DIR,
                        help="Where UNEXPECTED cases are saved (outside the repository).")
    parser.add_argument("--json", type=pathlib.Path, help="Write the full summary (every case) here.")
    parser.add_argument("--quiet", action="store_true", help="No per-case progress line.")
    args = parser.parse_args(argv)

    def progress(result: dict) -> None:
        if not args.quiet or result["outcome"] == "UNEXPECTED":
            print(f"[{result['index']:5d}] {result['outcome']:<11} {result['source']:<32} {result['seconds']:6.1f}s "
                  f"{result['reason'][:110]}", flush=True)

    summary = fuzz(args.runs, args.seed, args.jobs, args.timeout, args.save_dir, progress)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("runs", "seed", "jobs", "seconds", "counts", "exit_codes")}))
    for item in summary["unexpected"]:
        print(f"UNEXPECTED case {item['index']} ({item['source']}): {item['reason'][:200]}\n"
              f"    mutations: {item['mutations']}\n    saved: {item.get('saved')}")
    return 1 if summary["unexpected"] else 0


if __name__ == "__main__":
    sys.exit(main())
