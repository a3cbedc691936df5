"""Weighted layers as matrices: the one place that knows how a Conv / Gemm / MatMul consumer reads its input.

Why here, below scoring and recovery: the reconstruction criterion (scoring) and the least-squares refit
(recovery) must see a layer identically — the same im2col rows for a Conv, the same effective weight
``alpha · op(B)`` for a Gemm with ``transB`` — or the criterion ranks channels for a fit that is not the one
recovery performs.  Which input is the weight, which of its axes are inputs and outputs and what the
attributes do come from the layer table (:mod:`onnxprune.ir.layer_table`); this module turns those facts
into arrays.  A new layout (not Conv-, Gemm- or MatMul-like) adds its branch to the views here.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.ir.layer_table import CONV, attributes, has_input, layout_of, row_of, weight_axes


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


def kernel_of(node: gs.Node) -> tuple[int, ...]:
    """The node's spatial kernel, read from its weight (empty for matrix products)."""
    row = row_of(node)
    return row.layout.kernel(np.asarray(node.inputs[row.weight].values).shape)


def samples_patches(node: gs.Node) -> bool:
    """Whether the layer's rows are im2col patches of output positions (so they may be sampled)."""
    return layout_of(node) is CONV


def matrix(node: gs.Node, weight: np.ndarray) -> np.ndarray:
    """The effective weight ``[features, outputs]`` of a refittable layer: ``Y = rows(X) · matrix`` + bias.

    Conv: ``W.reshape(Cout, -1)ᵀ`` (features channel-major, like :func:`conv_patches`); Gemm:
    ``alpha · op(B)``; MatMul ``x·W``: W.
    """
    layout, attrs = layout_of(node), attributes(node)
    if layout is CONV:
        return weight.reshape(weight.shape[0], -1).T
    w = weight.T if layout.weight_axes(attrs, weight.ndim).inputs == 1 else weight
    return layout.weight_scale(attrs) * w


def from_matrix(node: gs.Node, w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`matrix`: the weight tensor (of ``shape``) whose effective matrix is ``w``."""
    layout, attrs = layout_of(node), attributes(node)
    if layout is CONV:
        return w.T.reshape(shape)
    w = w / layout.weight_scale(attrs)
    return w.T if layout.weight_axes(attrs, len(shape)).inputs == 1 else w


def channel_matrix(node: gs.Node, weight: np.ndarray) -> np.ndarray:
    """``[input channels, outputs]`` without the product's scale: a Conv's kernel taps summed (what a
    constant input channel contributes to each output per unit)."""
    if layout_of(node) is CONV:
        return weight.reshape(weight.shape[0], weight.shape[1], -1).sum(axis=2).T
    axes = layout_of(node).weight_axes(attributes(node), weight.ndim)
    return weight.T if axes.inputs == 1 else weight


def weight_scale(node: gs.Node) -> float:
    return layout_of(node).weight_scale(attributes(node))


def layer_rows(node: gs.Node, x: np.ndarray, take: int | None, rng: np.random.Generator,
               y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows ``[R, features]`` of the layer's input as :func:`matrix` reads them, and the matching rows
    ``[R, outputs]`` of ``y`` (an activation of the layer's output layout; None: not wanted).

    Conv: im2col patches of ``take`` sampled output positions (None: all); Gemm: A, transposed with
    ``transA``; MatMul: every leading axis flattened into rows.
    """
    layout = layout_of(node)
    if layout is CONV:
        expected = None if y is None else tuple(y.shape[2:])
        patches, batch, outs = conv_patches(node, x, kernel_of(node), take, rng, expected=expected)
        return patches, None if y is None else y[(batch, slice(None)) + tuple(outs)]
    axis = layout.input_axis(attributes(node), x.ndim)  # Gemm's transA: A is [K, M]
    return np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis]), None if y is None else y.reshape(-1, y.shape[-1])


def bias_term(node: gs.Node, ndim: int) -> np.ndarray | None:
    """What the bias adds to an output of rank ``ndim`` (float64, broadcastable), None without a bias."""
    row = row_of(node)
    if not has_input(node, row.bias):
        return None
    bias = np.asarray(node.inputs[row.bias].values, dtype=np.float64)
    if row.layout is CONV:
        return bias.reshape((1, -1) + (1,) * (ndim - 2))
    return row.layout.bias_scale(attributes(node)) * bias  # Gemm: C broadcasts to [M, N]


def current_theta(node: gs.Node) -> np.ndarray:
    """[W_eff; 0] of the layer as it is now (δ = 0: the bias is unchanged)."""
    w = matrix(node, np.asarray(node.inputs[row_of(node).weight].values, dtype=np.float64))
    return np.vstack([w, np.zeros((1, w.shape[1]))])


def output_axis(node: gs.Node) -> int:
    """The weight axis holding the layer's outputs."""
    row = row_of(node)
    return weight_axes(node, len(node.inputs[row.weight].shape)).outputs


def input_features(node: gs.Node) -> int:
    """Size of the weight axis that reads the input channels / features."""
    row = row_of(node)
    shape = np.asarray(node.inputs[row.weight].values).shape
    return shape[row.layout.weight_axes(attributes(node), len(shape)).inputs]


def not_refittable(node: gs.Node, input_index: int) -> str | None:
    """Why recovery cannot edit this consumer (None: it can)."""
    row = row_of(node)
    if row is None or not row.refit:
        return f"{node.op} consumers are not supported"
    weight = node.inputs[row.weight]
    limit = row.layout.refit_limit(attributes(node), input_index, row.weight, len(weight.shape or ()))
    if limit is not None:
        return limit
    if has_input(node, row.bias) and not isinstance(node.inputs[row.bias], gs.Constant):
        return f"{row.bias_label} is computed at run time"
    return None
