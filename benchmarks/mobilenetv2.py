"""A MobileNetV2-sized ONNX model built with ``onnx.helper`` + NumPy (no torch), for benchmarks.

Topology of torchvision's ``mobilenet_v2`` at width 1.0 for 224x224 inputs: stem Conv 3x3/2 (32) +
ReLU6, inverted residual blocks with (expansion t, width c, repeats n, stride s) =
(1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1) — expand 1x1 (when
t > 1) + ReLU6, depthwise 3x3 (``group`` = channels) + ReLU6, linear project 1x1, residual Add when
stride 1 and widths match — then Conv 1x1 320 -> 1280 + ReLU6, GlobalAveragePool, Flatten and
Gemm 1280 -> 1000 (Dropout is the identity at inference and is left out).  ReLU6 is ``Clip(x, 0, 6)``
with constant min/max inputs, as the PyTorch exporter writes it.

BatchNorm is folded into conv biases (one bias per conv), so the model has 3,487,816 weights and
biases (torchvision's 3,504,872 parameters minus the 17,056 BN scales that folding absorbs; the folded
bias replaces BN's shift) plus the two scalar Clip bounds that ``onnxprune.measurement.counting`` also counts:
3,487,818, and ~300.8 M MACs per image.  Weights are float32 He-normal; the project
conv of each residual block is scaled by ``RESIDUAL_SCALE`` so activations stay in range (values only
matter for timing, but inf/denormals could distort it).  The batch dimension is symbolic (``N``).

Usage: ``python benchmarks/mobilenetv2.py OUT.onnx`` writes the model (~14 MB); nothing is checked in.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

from synthetic import ConvNetBuilder

# (expansion t, output width c, repeats n, stride of the first repeat s): torchvision's table.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))
STEM, LAST, NUM_CLASSES = 32, 1280, 1000
RESIDUAL_SCALE = 0.2
EXPECTED_PARAMS = 3_487_818


class _Builder(ConvNetBuilder):
    """Inverted residual blocks with ReLU6 (``Clip`` with shared constant bounds) on the shared builder."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.nodes += [helper.make_node("Constant", [], ["relu6.min"], name="relu6.min",
                                        value=numpy_helper.from_array(np.array(0.0, np.float32))),
                       helper.make_node("Constant", [], ["relu6.max"], name="relu6.max",
                                        value=numpy_helper.from_array(np.array(6.0, np.float32)))]

    def relu6(self, x: str, name: str) -> str:
        out = f"{name}_out"
        self.nodes.append(helper.make_node("Clip", [x, "relu6.min", "relu6.max"], [out], name=name))
        return out

    def inverted_residual(self, x: str, name: str, cin: int, cout: int, stride: int, expand: int) -> str:
        hidden = cin * expand
        y = x
        if expand != 1:
            y = self.relu6(self.conv(y, f"{name}.expand", cin, hidden, 1), f"{name}.relu_expand")
        y = self.relu6(self.conv(y, f"{name}.dw", hidden, hidden, 3, stride, group=hidden), f"{name}.relu_dw")
        residual = stride == 1 and cin == cout
        y = self.conv(y, f"{name}.project", hidden, cout, 1, scale=RESIDUAL_SCALE if residual else 1.0)
        if not residual:
            return y
        out = f"{name}.add_out"
        self.nodes.append(helper.make_node("Add", [x, y], [out], name=f"{name}.add"))
        return out


def build_mobilenetv2(seed: int = 0) -> onnx.ModelProto:
    """The model described in the module docstring (deterministic for a given seed)."""
    b = _Builder(seed)
    x = b.relu6(b.conv("input", "stem.conv", 3, STEM, 3, 2), "stem.relu")
    cin, index = STEM, 1
    for expand, width, repeats, stride in SETTINGS:
        for repeat in range(repeats):
            x = b.inverted_residual(x, f"features.{index}", cin, width, stride if repeat == 0 else 1, expand)
            cin, index = width, index + 1
    x = b.relu6(b.conv(x, "last.conv", cin, LAST, 1), "last.relu")
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x], "avgpool")], "flatten", axis=1)
    b.classifier(x, "classifier", LAST, NUM_CLASSES)
    return b.model("mobilenetv2_synthetic", NUM_CLASSES)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/mobilenetv2.py OUT.onnx")
    onnx.save(build_mobilenetv2(), sys.argv[1])
