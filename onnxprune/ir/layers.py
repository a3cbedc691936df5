"""Weighted layers as matrices: the one place that knows how a Conv / Gemm / MatMul consumer reads its input.

Why here, below scoring and recovery: the reconstruction criterion (scoring) and the least-squares refit
(recovery) must see a layer identically — the same im2col rows for a Conv, the same effective weight
``alpha · op(B)`` for a Gemm with ``transB`` — or the criterion ranks channels for a fit that is not the one
recovery performs.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs



def conv_pads(node: gs.Node, spatial: tuple[int, ...], kernel: tuple[int, ...], strides: list[int],
               dilations: list[int]) -> list[tuple[int, int]]:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    n = len(spatial)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            pads.append((small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small))
        return pads
    if auto_pad == "VALID":
        return [(0, 0)] * n
    flat = [int(p) for p in node.attrs.get("pads", [0] * (2 * n))]
    return list(zip(flat[:n], flat[n:]))


def conv_patches(node: gs.Node, x: np.ndarray, kernel: tuple[int, ...], take: int | None, rng: np.random.Generator,
                 expected: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """im2col rows ``[R, C·∏k]`` of sampled output positions, with the positions (batch, spatial...)."""
    n = x.ndim - 2
    strides = [int(s) for s in node.attrs.get("strides", [1] * n)]
    dilations = [int(d) for d in node.attrs.get("dilations", [1] * n)]
    pads = conv_pads(node, x.shape[2:], kernel, strides, dilations)
    padded = np.pad(x, [(0, 0), (0, 0)] + pads)
    out_shape = tuple((padded.shape[2 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(n))
    if expected is not None and tuple(expected) != out_shape:
        raise ValueError(f"output spatial shape {list(expected)} differs from the computed {list(out_shape)}")
    total = x.shape[0] * int(np.prod(out_shape))
    flat = np.arange(total) if take is None or take >= total else np.sort(rng.choice(total, take, replace=False))
    position = np.unravel_index(flat, (x.shape[0],) + out_shape)
    batch, outs = position[0], position[1:]
    index = [batch.reshape((-1,) + (1,) * n)]
    for i in range(n):
        taps = outs[i][:, None] * strides[i] + dilations[i] * np.arange(kernel[i])[None, :]
        index.append(taps.reshape((-1,) + tuple(kernel[i] if j == i else 1 for j in range(n))))
    patches = padded[(index[0], slice(None), *index[1:])]  # [R, k..., C]: advanced indices first
    patches = np.moveaxis(patches, -1, 1).reshape(len(flat), -1)
    return patches, batch, tuple(outs)


def current_theta(node: gs.Node) -> np.ndarray:
    """[W_eff; 0] of the layer as it is now (δ = 0: the bias is unchanged)."""
    weight = np.asarray(node.inputs[1].values, dtype=np.float64)
    if node.op == "Conv":
        w = weight.reshape(weight.shape[0], -1).T
    elif node.op == "Gemm":
        w = float(node.attrs.get("alpha", 1.0)) * (weight.T if int(node.attrs.get("transB", 0)) else weight)
    else:
        w = weight
    return np.vstack([w, np.zeros((1, w.shape[1]))])


def output_axis(node: gs.Node) -> int:
    if node.op == "Gemm":
        return 0 if int(node.attrs.get("transB", 0)) else 1
    return 0 if node.op == "Conv" else 1


def not_refittable(node: gs.Node, input_index: int) -> str | None:
    """Why recovery cannot edit this consumer (None: it can)."""
    if node.op == "Conv":
        group = int(node.attrs.get("group", 1))
        if group != 1:
            return f"grouped convolution (group={group}): each output reads only its group's inputs"
        if len(node.inputs) > 2 and node.inputs[2].name and not isinstance(node.inputs[2], gs.Constant):
            return "bias is computed at run time"
        return None
    if node.op == "Gemm":
        if len(node.inputs) > 2 and node.inputs[2].name and not isinstance(node.inputs[2], gs.Constant):
            return "bias C is computed at run time"
        return None
    if node.op == "MatMul":
        if input_index != 1 or len(node.inputs[1].shape) != 2:
            return "only x·W with a 2-D constant W is supported"
        return None
    return f"{node.op} consumers are not supported"
