"""Benchmark against peers: the trained MNIST CNN pruned at the same uniform ratios, no fine-tuning.

Run from the repository root (peers are a benchmark-only extra, never a runtime dependency)::

    pip install -e '.[bench-peers]'        # torch-pruning, onnxsim==0.8.1 (torch stays 2.13.0)
    python benchmarks/bench_peers_mnist.py [--out benchmarks/results_peers_mnist.md]

Methods, each at uniform ratios 0.3 / 0.5 / 0.7 (fraction of channels removed per layer):

* **Torch-Pruning** (``torch_pruning.MetaPruner``, ``MagnitudeImportance(p=2)``, uniform ratio, last Linear
  ignored) on the PyTorch original.  The PyTorch model is *rebuilt* from ``models/mnist_cnn.onnx``: the
  architecture of ``models/train_mnist_cnn.py`` with the BatchNorms left out and the ONNX (BN-folded)
  Conv/Gemm weights and biases loaded into it; the rebuilt model's logits are checked against onnxruntime.
  The pruned PyTorch model is exported to ONNX (dynamo=False) and evaluated with onnxruntime.
* **onnxsim 0.8.1**: ``apply_structured_pruning`` (L2, ``sparsity=ratio``), ``apply_structured_wanda_pruning``
  (500 calibration digits) and the latter followed by ``apply_pruning_finetune`` (onnxsim's training-free
  least-squares refit of surviving MatMul/Gemm layers).
* **onnxprune**: ``l2`` with no recovery (the plan the MACs are matched to), and the best settings of
  ``results_mnist_recovery.md`` (``fluctuation`` + ``lsq``, the calibrated default; ``reconstruction`` + ``lsq``).

MACs are counted by the same counter (``onnxprune.measurement.counting.count_model``) on every exported model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import traceback
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from onnxprune.runtime.calibration import load_calibration
from onnxprune.measurement.counting import count_model
from onnxprune.pipeline import PruneOptions, prune
from onnxprune.recovery.layers import RecoveryOptions
from onnxprune.runtime.sessions import make_session

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
RATIOS = (0.3, 0.5, 0.7)


def accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    session = make_session(model, optimized=True)
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: x[i:i + 250]})[0] for i in range(0, len(x), 250)])
    return float(np.mean(logits.argmax(1) == y))


# --------------------------------------------------------------------------------------------------
# Torch-Pruning


def rebuild_torch(model: onnx.ModelProto):
    """The generator's architecture without BN, with the ONNX (BN-folded) weights loaded."""
    import torch
    import torch.nn as nn

    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    layers = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    convs = [nn.Conv2d(cin, cout, 3, padding=1) for cin, cout in ((1, 16), (16, 32), (32, 32), (32, 64))]
    features = []
    for index, conv in enumerate(convs):
        features += [conv, nn.ReLU()] + ([nn.MaxPool2d(2)] if index else [])
    linears = [nn.Linear(576, 64), nn.Linear(64, 10)]
    net = nn.Sequential(nn.Sequential(*features), nn.Flatten(), linears[0], nn.ReLU(), linears[1])
    for module, node in zip(convs + linears, layers):
        w = weights[node.input[1]]
        if node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute):
            w = w.T
        module.weight.data = torch.from_numpy(np.ascontiguousarray(w))
        module.bias.data = torch.from_numpy(weights[node.input[2]])
    net.eval()
    return net, linears[1]


def export_torch(net, path: Path) -> onnx.ModelProto:
    import torch

    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), str(path), input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, dynamo=False, opset_version=17)
    return onnx.load(path)


def torch_pruning_rows(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, tmp: Path) -> list[dict]:
    import torch
    import torch_pruning as tp

    net, _ = rebuild_torch(model)
    with torch.no_grad():
        ours = net(torch.from_numpy(x[:100])).numpy()
    reference = make_session(model, optimized=False).run(None, {"input": x[:100]})[0]
    gap = float(np.max(np.abs(ours - reference)))
    rows = []
    for ratio in RATIOS:
        net, last = rebuild_torch(model)
        pruner = tp.pruner.MetaPruner(net, torch.zeros(1, 1, 28, 28), importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=[last])
        pruner.step()
        pruned = export_torch(net, tmp / f"tp_{ratio}.onnx")
        rows.append({"method": "Torch-Pruning MetaPruner, L2 magnitude", "ratio": ratio,
                     "accuracy": accuracy(pruned, x, y), "macs": count_model(pruned).macs})
    rows[0]["note"] = f"rebuilt PyTorch model vs onnxruntime: max |Δlogit| = {gap:.2e}"
    return rows


# --------------------------------------------------------------------------------------------------
# onnxsim


def onnxsim_rows(model: onnx.ModelProto, calib: np.ndarray, x: np.ndarray, y: np.ndarray) -> list[dict]:
    import onnxsim

    feeds = [{"input": calib[i:i + 50]} for i in range(0, len(calib), 50)]
    rows = []
    for ratio in RATIOS:
        l2 = onnxsim.apply_structured_pruning(model, sparsity=ratio)
        rows.append({"method": "onnxsim apply_structured_pruning (L2)", "ratio": ratio,
                     "accuracy": accuracy(l2, x, y), "macs": count_model(l2).macs})
        wanda = onnxsim.apply_structured_wanda_pruning(model, calibration_data=feeds, num_samples=len(feeds),
                                                       sparsity=ratio)
        rows.append({"method": "onnxsim apply_structured_wanda_pruning", "ratio": ratio,
                     "accuracy": accuracy(wanda, x, y), "macs": count_model(wanda).macs})
        tuned = onnxsim.apply_pruning_finetune(model, wanda, calibration_data=feeds, num_samples=len(feeds))
        rows.append({"method": "onnxsim structured wanda + apply_pruning_finetune", "ratio": ratio,
                     "accuracy": accuracy(tuned, x, y), "macs": count_model(tuned).macs})
    return rows


# --------------------------------------------------------------------------------------------------
# onnxprune


def onnxprune_rows(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> list[dict]:
    calib = load_calibration(MODELS / "mnist_calib.npz", model, 32)
    rows = []
    settings = (("l2", "none", "onnxprune l2, no recovery"),
                ("fluctuation", "lsq", "onnxprune fluctuation + lsq (calibrated default)"),
                ("reconstruction", "lsq", "onnxprune reconstruction + lsq"),
                ("reconstruction", "none", "onnxprune reconstruction, no recovery"))
    for criterion, recovery, label in settings:
        for ratio in RATIOS:
            result = prune(model, PruneOptions(ratio=ratio, criterion=criterion),
                           calibration=calib if (criterion != "l2" or recovery != "none") else None,
                           recovery=RecoveryOptions(recovery))
            rows.append({"method": label, "ratio": ratio, "accuracy": accuracy(result.model, x, y),
                         "macs": count_model(result.model).macs})
    return rows


def guarded(name: str, run) -> tuple[list[dict], str | None]:
    try:
        return run(), None
    except Exception as err:  # a peer that cannot run here: record the exact error
        traceback.print_exc()
        return [], f"{name}: {type(err).__name__}: {' '.join(str(err).split())[:400]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_peers_mnist.md"))
    args = parser.parse_args()
    model = onnx.load(MODELS / "mnist_cnn.onnx")
    test = np.load(MODELS / "mnist_test.npz")
    x, y = test["input"], test["y"]
    calib = np.load(MODELS / "mnist_calib.npz")["input"]
    tmp = ROOT / "build" / "bench_peers"
    tmp.mkdir(parents=True, exist_ok=True)
    base_macs, unpruned = count_model(model).macs, accuracy(model, x, y)
    rows, errors = [], []
    for name, run in (("onnxprune", lambda: onnxprune_rows(model, x, y)),
                      ("torch-pruning", lambda: torch_pruning_rows(model, x, y, tmp)),
                      ("onnxsim", lambda: onnxsim_rows(model, calib, x, y))):
        got, error = guarded(name, run)
        rows += got
        errors += [error] if error else []
        print(f"{name}: {len(got)} rows", file=sys.stderr, flush=True)
    versions = [f"onnxruntime {ort.__version__}"]
    for module in ("torch", "torch_pruning", "onnxsim"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except Exception as err:
            versions.append(f"{module} not importable ({type(err).__name__})")
    target = {r["ratio"]: r["macs"] for r in rows if r["method"] == "onnxprune l2, no recovery"}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = [f"# MNIST CNN: onnxprune vs Torch-Pruning vs onnxsim, no fine-tuning ({dt.date.today().isoformat()})", "",
             f"{', '.join(versions)}, numpy {np.__version__}, Python {platform.python_version()}, {platform.machine()}.",
             "", "Commands:", "", "```",
             "pip install --no-deps torch-pruning   # keeps torch 2.13.0; the extra: pip install -e '.[bench-peers]'",
             "pip install onnxsim==0.8.1", "python benchmarks/bench_peers_mnist.py", "```", "",
             f"Accuracy on the {len(y)} digits of `models/mnist_test.npz`; unpruned {100 * unpruned:.1f} %, "
             f"{base_macs / 1e6:.2f} M MACs per digit. Each cell: top-1 % (MACs per digit as × of unpruned; "
             "the onnxprune l2 row is the uniform plan the ratios refer to).", "",
             "| method | " + " | ".join(f"ratio {r}" for r in RATIOS) + " |", "|---|" + "---:|" * len(RATIOS)]
    for method in methods:
        cells = []
        for ratio in RATIOS:
            row = next((r for r in rows if r["method"] == method and r["ratio"] == ratio), None)
            cells.append("—" if row is None else f"{100 * row['accuracy']:.1f} ({row['macs'] / base_macs:.3f}×)")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Target MACs (onnxprune uniform plan): "
              + ", ".join(f"{r}: {m / 1e6:.2f} M" for r, m in target.items()) + "."]
    notes = [r["note"] for r in rows if "note" in r]
    if notes or errors:
        lines += ["", "## Notes and errors", ""] + [f"- {n}" for n in notes] + [f"- error: `{e}`" for e in errors]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
