"""A ResNet-50-sized ONNX model built with ``onnx.helper`` + NumPy (no torch), for benchmarks.

Topology of torchvision's ResNet-50 (v1.5: the stride sits on the 3x3 conv of a bottleneck):
stem Conv 7x7/2 (64) + ReLU + MaxPool 3x3/2, bottleneck stages [3, 4, 6, 3] with widths
64/128/256/512 and expansion 4 (1x1 -> 3x3 -> 1x1), a 1x1 strided downsample Conv on the first block
of each stage, Add + ReLU, GlobalAveragePool, Flatten, Gemm 2048 -> 1000.  BatchNorm is folded into
conv biases (one bias per conv), so the model has 25,530,472 parameters (torchvision's 25,557,032
minus the 26,560 BN scales that folding absorbs) and ~4.09 GMACs per 224x224 image.

Weights are float32, He-normal (std = sqrt(2 / fan_in)); the last conv of each residual branch is
scaled by ``RESIDUAL_SCALE`` so activations stay in a sane range through 16 residual additions
(random weights only matter for timing, but inf/denormal values could distort it).  The batch
dimension is symbolic (``N``).

Usage: ``python benchmarks/resnet50.py OUT.onnx`` writes the model (~102 MB); nothing is checked in.
"""

from __future__ import annotations

import sys

import onnx

from synthetic import ConvNetBuilder

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride of first block)
EXPANSION = 4
NUM_CLASSES = 1000
RESIDUAL_SCALE = 0.2
EXPECTED_PARAMS = 25_530_472


class _Builder(ConvNetBuilder):
    """ResNet bottleneck blocks on the shared builder."""

    def bottleneck(self, x: str, name: str, cin: int, width: int, stride: int) -> str:
        cout = width * EXPANSION
        y = self.op("Relu", [self.conv(x, f"{name}.conv1", cin, width, 1)], f"{name}.relu1")
        y = self.op("Relu", [self.conv(y, f"{name}.conv2", width, width, 3, stride)], f"{name}.relu2")
        y = self.conv(y, f"{name}.conv3", width, cout, 1, scale=RESIDUAL_SCALE)
        shortcut = x
        if stride != 1 or cin != cout:
            shortcut = self.conv(x, f"{name}.downsample", cin, cout, 1, stride)
        return self.op("Relu", [self.op("Add", [y, shortcut], f"{name}.add")], f"{name}.relu3")


def build_resnet50(seed: int = 0) -> onnx.ModelProto:
    """The model described in the module docstring (deterministic for a given seed)."""
    b = _Builder(seed)
    x = b.op("Relu", [b.conv("input", "stem.conv", 3, 64, 7, 2)], "stem.relu")
    x = b.op("MaxPool", [x], "stem.maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, (width, blocks, stride) in enumerate(STAGES, start=1):
        for block in range(blocks):
            x = b.bottleneck(x, f"layer{stage}.{block}", cin, width, stride if block == 0 else 1)
            cin = width * EXPANSION
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x], "avgpool")], "flatten", axis=1)
    b.classifier(x, "fc", cin, NUM_CLASSES)
    return b.model("resnet50_synthetic", NUM_CLASSES)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/resnet50.py OUT.onnx")
    onnx.save(build_resnet50(), sys.argv[1])
