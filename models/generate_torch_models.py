"""Generate the PyTorch-exported test models (random, seeded weights).

Run from the repository root:  python models/generate_torch_models.py

Needs torch (2.13.0, CPU). Every model is exported with the TorchScript
exporter (``torch.onnx.export(..., dynamo=False)``) at opset 17 with a dynamic
batch axis ``N``; each file is full-checked and compared against torch in
onnxruntime on a batch of 2 before it is recorded in ``manifest.json``.

BatchNorm statistics and affine parameters are randomised (seeded) so that
folded BN is not an identity and channel importances differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

import _common as C

GENERATOR = "generate_torch_models.py"
SEED = 1234


# --------------------------------------------------------------------------- helpers


def randomize_bn(module: nn.Module, gen: torch.Generator) -> None:
    """Give every norm layer non-trivial running stats and affine params."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=gen))
        elif isinstance(m, nn.InstanceNorm2d) and m.affine:
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


# --------------------------------------------------------------------------- 1 vgg


class VGGChain(nn.Module):
    """Conv-BN-ReLU x5 with three MaxPools, Flatten -> Linear -> ReLU -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        cfg = [(3, 8), (8, 8), "M", (8, 16), (16, 16), "M", (16, 32), "M"]
        layers: list[nn.Module] = []
        for c in cfg:
            if c == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [*conv_bn(*c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# --------------------------------------------------------------------------- 2/3 resnets


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, cout, 3, stride)
        self.conv2, self.bn2 = conv_bn(cout, cout, 3, 1)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(*conv_bn(cin, cout, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.down is None else self.down(x)
        return F.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1, self.bn1 = conv_bn(cin, planes, 1)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3, stride)
        self.conv3, self.bn3 = conv_bn(planes, cout, 1)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(*conv_bn(cin, cout, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.down is None else self.down(x)
        return F.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, stem: int, blocks: list[nn.Module], feat: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, stem), nn.ReLU())
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(feat, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def resnet_basic() -> nn.Module:
    return ResNet(8, [BasicBlock(8, 8, 1), BasicBlock(8, 16, 2), BasicBlock(16, 32, 2)], 32)


def resnet_bottleneck() -> nn.Module:
    # 16 -> (4,4,16) identity shortcut; 16 -> (8,8,32) stride 2 with projection.
    return ResNet(16, [Bottleneck(16, 4, 1), Bottleneck(16, 8, 2), Bottleneck(32, 8, 1)], 32)


# --------------------------------------------------------------------------- 4 mobilenetv2


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*conv_bn(cin, hidden, 1), nn.ReLU6()]
        layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6()]
        layers += conv_bn(hidden, cout, 1)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn(3, 16, 3, 2),
            nn.ReLU6(),
            InvertedResidual(16, 8, 1, 1),
            InvertedResidual(8, 12, 2, 4),
            InvertedResidual(12, 12, 1, 4),
            InvertedResidual(12, 16, 2, 4),
            InvertedResidual(16, 16, 1, 4),
            *conv_bn(16, 32, 1),
            nn.ReLU6(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# --------------------------------------------------------------------------- 5 squeeze-excitation


class SEConv(nn.Module):
    """SE gate with 1x1 convs (GAP -> Conv -> ReLU -> Conv -> HardSigmoid -> Mul)."""

    def __init__(self, c: int, r: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))
        return x * s


class SELinear(nn.Module):
    """SE gate with Linear layers: GAP -> Flatten -> Gemm -> ReLU -> Gemm -> HardSigmoid -> Unsqueeze x2 -> Mul."""

    def __init__(self, c: int, r: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c, c // r)
        self.fc2 = nn.Linear(c // r, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s.unsqueeze(-1).unsqueeze(-1)


class SENet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 16, 3, 2), nn.Hardswish())
        self.conv1 = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.Hardswish())
        self.se1 = SEConv(16, 4)
        self.conv2 = nn.Sequential(*conv_bn(16, 32, 3, 2), nn.Hardswish())
        self.se2 = SELinear(32, 4)
        self.conv3 = nn.Sequential(nn.Conv2d(32, 32, 1), nn.Hardswish())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se1(self.conv1(self.stem(x)))
        x = self.conv3(self.se2(self.conv2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --------------------------------------------------------------------------- 6 densenet


class DenseLayer(nn.Module):
    """Pre-activation BN-ReLU-Conv3x3, output concatenated onto the input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class DenseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.block1 = nn.Sequential(DenseLayer(16, 8), DenseLayer(24, 8), DenseLayer(32, 8))
        self.trans = nn.Sequential(nn.BatchNorm2d(40), nn.ReLU(), nn.Conv2d(40, 16, 1, bias=False), nn.AvgPool2d(2))
        self.block2 = nn.Sequential(DenseLayer(16, 8), DenseLayer(24, 8))
        self.norm = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.trans(self.block1(self.stem(x))))
        x = F.relu(self.norm(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --------------------------------------------------------------------------- 7 inception


class Inception(nn.Module):
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(cin, c1, 1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(cin, c3r, 1), nn.ReLU(), nn.Conv2d(c3r, c3, 3, padding=1), nn.ReLU())
        self.b5 = nn.Sequential(nn.Conv2d(cin, c5r, 1), nn.ReLU(), nn.Conv2d(c5r, c5, 5, padding=2), nn.ReLU())
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, cp, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


class InceptionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 16), nn.ReLU(), nn.MaxPool2d(2))
        self.inc1 = Inception(16, 8, 6, 8, 4, 8, 8)  # -> 32
        self.inc2 = Inception(32, 8, 8, 12, 4, 6, 6)  # -> 32
        self.head = nn.Sequential(nn.Conv2d(32, 16, 1), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.inc2(self.inc1(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --------------------------------------------------------------------------- 8 shufflenetv2


def channel_shuffle(x: torch.Tensor, groups: int, c: int, h: int, w: int) -> torch.Tensor:
    """view(N, g, C/g, H, W) -> transpose(1, 2) -> view(N, C, H, W), batch as -1.

    c, h, w are Python ints fixed at construction, so the exporter writes the
    Reshape shapes as constants ([-1, 2, C/2, H, W] and [-1, C, H, W]).
    """
    x = x.view(-1, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(-1, c, h, w)


def channel_shuffle_dynamic(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's form: all dims read from x.size(), so Reshape shapes come from Shape ops."""
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, hw_out: int, dynamic_shuffle: bool) -> None:
        super().__init__()
        self.stride = stride
        self.cout, self.hw = cout, hw_out
        self.dynamic_shuffle = dynamic_shuffle
        half = cout // 2
        b2_in = cin if stride > 1 else cin // 2
        if stride > 1:
            self.branch1 = nn.Sequential(*conv_bn(cin, cin, 3, stride, groups=cin), *conv_bn(cin, half, 1), nn.ReLU())
        self.branch2 = nn.Sequential(
            *conv_bn(b2_in, half, 1),
            nn.ReLU(),
            *conv_bn(half, half, 3, stride, groups=half),
            *conv_bn(half, half, 1),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            # torch.split with an int size exports as Split(split=[C/2, C/2]);
            # x.chunk(2) would export as Shape-derived Slices instead.
            x1, x2 = torch.split(x, self.cout // 2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        if self.dynamic_shuffle:
            return channel_shuffle_dynamic(out, 2)
        return channel_shuffle(out, 2, self.cout, self.hw, self.hw)


class ShuffleNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 16, 3, 2), nn.ReLU())  # 16x16
        self.stage = nn.Sequential(
            ShuffleUnit(16, 32, 2, 8, dynamic_shuffle=False),
            ShuffleUnit(32, 32, 1, 8, dynamic_shuffle=False),
            ShuffleUnit(32, 32, 1, 8, dynamic_shuffle=True),
        )
        self.conv_last = nn.Sequential(*conv_bn(32, 32, 1), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_last(self.stage(self.stem(x)))
        return self.fc(x.mean([2, 3]))


# --------------------------------------------------------------------------- 9-11 flatten / mlps


class CNNFlattenGemm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.features(x)))


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- 15 op zoo


class OpZooCNN(nn.Module):
    """Many per-channel ops on an 8/16-channel map; see the manifest entry for the list."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.1)
        self.prelu = nn.PReLU(8, init=0.2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.conv_a = nn.Conv2d(8, 8, 1)
        self.conv_b = nn.Conv2d(8, 8, 1)
        self.gconv = nn.Conv2d(8, 16, 3, padding=1, groups=4)  # grouped, not depthwise
        self.register_buffer("mean_c", torch.linspace(-0.2, 0.2, 16).view(16, 1, 1))
        self.register_buffer("std_c", torch.linspace(0.8, 1.2, 16).view(16, 1, 1))
        self.conv4 = nn.Conv2d(16, 16, 3)  # valid conv after the Pad
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.deconv = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.nhwc_scale = nn.Parameter(torch.linspace(0.5, 1.5, 8))
        self.conv5 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.lrelu(self.conv1(x)))  # LeakyRelu, PRelu (per channel)
        x = F.elu(self.conv2(x))  # Elu
        x = F.selu(self.conv3(x))  # Selu
        x = self.inorm(x)  # InstanceNormalization (affine)
        a = F.softplus(self.conv_a(x))  # Softplus
        b = torch.tanh(self.conv_b(x))  # Tanh
        x = torch.maximum(a, b) - torch.minimum(a, b)  # Max, Min, Sub of two variables
        x = torch.sigmoid(self.gconv(x))  # grouped conv (groups=4), Sigmoid
        x = F.silu(x)  # SiLU -> x * Sigmoid(x)
        x = (x - self.mean_c) / self.std_c  # Sub / Div with per-channel [C,1,1] constants
        x = F.hardswish(F.hardsigmoid(x) + x)  # HardSigmoid, Add, HardSwish
        x = F.gelu(x)  # exact (erf) GELU
        x = F.pad(x, (1, 1, 1, 1))  # Pad on spatial dims
        x = self.conv4(x)  # 16x16
        x = F.avg_pool2d(x, 2)  # AveragePool -> 8x8
        x = self.up(x)  # Resize nearest x2 -> 16x16
        x = self.deconv(F.avg_pool2d(x, 2))  # ConvTranspose2d -> 16x16, 8 ch
        x = x / (torch.sigmoid(x) + 1.0)  # Div of two variables
        x = (x.permute(0, 2, 3, 1) * self.nhwc_scale).permute(0, 3, 1, 2)  # NHWC Transpose and back
        m = x.mean((2, 3), keepdim=True)  # ReduceMean keepdims
        g = torch.sigmoid(m.squeeze(-1).squeeze(-1))  # Squeeze
        x = (x - m) * g.unsqueeze(-1).unsqueeze(-1)  # Unsqueeze, Sub, Mul
        x = F.relu(self.conv5(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Spec:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    exercises: str
    keep_batchnorm: bool = False


SPECS: tuple[Spec, ...] = (
    Spec("vgg_chain", VGGChain, (1, 3, 32, 32),
         "VGG chain: Conv(+BN folded by exporter)-Relu x5, MaxPool x3, Flatten(4x4 map)->Gemm->Relu->Gemm."),
    Spec("vgg_chain_bn", VGGChain, (1, 3, 32, 32),
         "Same network as vgg_chain but exported with TrainingMode.PRESERVE on an eval module, so "
         "Conv(bias=False)->BatchNormalization(eval)->Relu is kept unfolded; Flatten->Gemm head.",
         keep_batchnorm=True),
    Spec("resnet_basic", resnet_basic, (1, 3, 32, 32),
         "ResNet basic blocks (BN folded): identity residual Add, two downsample shortcuts "
         "(1x1 Conv stride 2) joined by Add, GlobalAveragePool->Flatten->Gemm."),
    Spec("resnet_bottleneck", resnet_bottleneck, (1, 3, 32, 32),
         "Bottleneck blocks 1x1-3x3-1x1 expansion 4 (BN folded): identity shortcut Add, projection "
         "shortcut (1x1 Conv stride 2) Add, GlobalAveragePool->Flatten->Gemm."),
    Spec("mobilenetv2", MobileNetV2, (1, 3, 32, 32),
         "MobileNetV2: depthwise Conv (group=C), expand/project 1x1 Convs, ReLU6 as Clip(0,6) with "
         "constant min/max inputs, inverted residual Add, GlobalAveragePool->Flatten->Gemm (Dropout removed in eval)."),
    Spec("se_block", SENet, (1, 3, 32, 32),
         "Squeeze-excitation: (a) GlobalAveragePool->Conv1x1->Relu->Conv1x1->HardSigmoid->Mul onto the "
         "features; (b) GlobalAveragePool->Flatten->Gemm->Relu->Gemm->HardSigmoid->Unsqueeze x2->Mul; "
         "HardSwish activations; BN folded."),
    Spec("densenet_concat", DenseNet, (1, 3, 16, 16),
         "DenseNet: dense layers Concat(x, Conv(Relu(BN(x)))) along channels (16->24->32->40 and 16->24->32); "
         "pre-activation BatchNormalization on Concat outputs (not foldable, kept); transition Conv1x1 + "
         "AveragePool; GlobalAveragePool->Flatten->Gemm."),
    Spec("inception_concat", InceptionNet, (1, 3, 32, 32),
         "Inception: two modules of 4 parallel branches (1x1; 1x1->3x3; 1x1->5x5; MaxPool3x3 s1->1x1) "
         "Concat along channels, then a 1x1 Conv consumer; GlobalAveragePool->Flatten->Gemm."),
    Spec("shufflenetv2", ShuffleNetV2, (1, 3, 32, 32),
         "ShuffleNetV2: stride-2 unit (two branches, depthwise Conv stride 2, Concat), stride-1 units "
         "(channel Split into halves, depthwise-conv branch, Concat); channel shuffle as Reshape->Transpose"
         "(perm 0,2,1,3,4)->Reshape with constant shapes [-1,2,C/2,H,W] (first two units) and with shapes "
         "built from Shape/Gather/Concat (third unit, torchvision style); ReduceMean head -> Gemm."),
    Spec("cnn_flatten_gemm", CNNFlattenGemm, (1, 3, 16, 16),
         "Conv->Relu->MaxPool x2 then Flatten of a 16x4x4 map feeding Gemm (each channel owns 16 Gemm columns)."),
    Spec("mlp_gemm", lambda: mlp([64, 32, 16, 10]), (1, 64),
         "MLP of nn.Linear exported as Gemm(transB=1) with Relu between, 2D input [N,64]."),
    Spec("mlp_matmul", lambda: mlp([32, 24, 16, 4]), (1, 8, 32),
         "MLP on 3D input [N,8,32]: each Linear exported as MatMul with a transposed [in,out] weight "
         "initializer followed by Add of the bias, Relu between."),
    Spec("op_zoo_cnn", OpZooCNN, (1, 3, 16, 16),
         "Per-channel op zoo: LeakyRelu, PRelu (slope [C,1,1]), Elu, Selu, InstanceNormalization (affine), "
         "Softplus, Tanh, Max/Min/Sub of two variables, grouped Conv (groups=4, 8->16), Sigmoid, SiLU as "
         "Sigmoid+Mul, Sub/Div by [C,1,1] constants, HardSigmoid, HardSwish, exact GELU as Div/Erf/Add/Mul, "
         "Pad (spatial; its pads input is an unfolded constant-only subgraph ConstantOfShape/Concat/Reshape/"
         "Slice/Transpose/Cast as the TorchScript exporter emits it, constant_value input empty), AveragePool, "
         "Resize (nearest, scales x2 as Constant, empty roi), ConvTranspose (stride 2), Div of two "
         "variables, Transpose to NHWC * [C] constant and back, ReduceMean(keepdims) over H,W, Squeeze, "
         "Unsqueeze, GlobalAveragePool->Flatten->Gemm."),
)  # fmt: skip


def build_one(spec: Spec) -> dict:
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    module = spec.build()
    with torch.no_grad():
        randomize_bn(module, gen)
    module.eval()
    model = C.export_torch(module, torch.randn(*spec.input_shape), keep_batchnorm=spec.keep_batchnorm)
    path = C.save_model(model, spec.name, doc=spec.exercises, generator=GENERATOR)

    def reference(feed: dict) -> list:
        with torch.no_grad():
            return [module(torch.from_numpy(feed["input"])).numpy()]

    hist = C.verify(path, reference=reference)
    C.report(spec.name, path, hist)
    return C.manifest_entry(spec.name, path, source="pytorch", exporter=C.torch_exporter_string(),
                            exercises=spec.exercises, generator=GENERATOR, frameworks=("torch",))  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    entries = [build_one(spec) for spec in SPECS]
    C.update_manifest(entries)


if __name__ == "__main__":
    main()
