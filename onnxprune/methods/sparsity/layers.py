"""Which layers can be sparsified, and how each weight is seen as a matrix ``[outputs, reduction]``.

Why one matrix view: every criterion (magnitude, Wanda, SparseGPT) and every pattern (unstructured,
N:M) works on rows = output features and columns = the layer's reduction axis, the axis a dot product
runs over.  N:M hardware (TensorRT's sparse tensor cores) needs the groups of M to run along the
*input channels*, so the column order is chosen to make consecutive columns consecutive input channels:

* Conv ``W[O, C/g, k...]``: columns ordered ``(k..., c)`` — ``W.transpose(0, 2.., 1).reshape(O, -1)`` —
  so a group of M columns is M input channels at one kernel position (C/g must divide by M).
* Gemm ``B`` with ``transB=1`` is ``[N, K]`` already; with ``transB=0`` it is ``Bᵀ``.
* MatMul ``x · B`` with a 2-D constant ``B[K, N]``: ``Bᵀ``.

Anything else carrying a weight is recorded as skipped with the node and the reason, never guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


@dataclass(frozen=True)
class SparseLayer:
    """One sparsifiable weight: its node, the weight initializer, and the matrix view's geometry."""

    node: str
    op: str
    weight: str  # initializer name
    shape: tuple[int, ...]  # the weight's own ONNX shape
    input: str  # the activation tensor the layer reads
    transposed: bool  # Gemm transB=0 / MatMul: the matrix is the weight's transpose
    group: int = 1  # Conv groups

    @property
    def rows(self) -> int:
        return int(self.shape[0]) if self.op == "Conv" or not self.transposed else int(self.shape[1])

    @property
    def cols(self) -> int:
        return int(np.prod(self.shape)) // self.rows

    @property
    def channels(self) -> int:
        """Input channels one output reads (the axis N:M groups run along)."""
        if self.op == "Conv":
            return int(self.shape[1])
        return self.cols

    def to_dict(self) -> dict:
        return {"node": self.node, "op": self.op, "weight": self.weight, "shape": list(self.shape),
                "input": self.input, "transposed": self.transposed, "group": self.group}

    @classmethod
    def from_dict(cls, data: dict) -> "SparseLayer":
        return cls(data["node"], data["op"], data["weight"], tuple(int(d) for d in data["shape"]), data["input"],
                   bool(data["transposed"]), int(data.get("group", 1)))


@dataclass(frozen=True)
class Skipped:
    """A weighted node left dense, with the reason (always names the node)."""

    node: str
    op: str
    reason: str

    def to_dict(self) -> dict:
        return {"node": self.node, "op": self.op, "reason": self.reason}


@dataclass(frozen=True)
class SparsityAnalysis:
    """The sparsifiable layers of a normalized graph (topological order) and what was left dense."""

    layers: tuple[SparseLayer, ...]
    skipped: tuple[Skipped, ...]

    def to_dict(self) -> dict:
        return {"layers": [layer.to_dict() for layer in self.layers],
                "skipped": [s.to_dict() for s in self.skipped]}


def to_matrix(weight: np.ndarray, layer: SparseLayer) -> np.ndarray:
    """The weight as ``[rows, cols]`` with input channels running fastest along the columns (a view or copy;
    never written to)."""
    if layer.op == "Conv":
        order = (0, *range(2, weight.ndim), 1)
        return np.transpose(weight, order).reshape(layer.rows, layer.cols)
    return weight.T if layer.transposed else weight


def from_matrix(matrix: np.ndarray, layer: SparseLayer) -> np.ndarray:
    """Inverse of :func:`to_matrix`: a new array in the weight's own ONNX layout."""
    if layer.op == "Conv":
        kernel = layer.shape[2:]
        staged = matrix.reshape((layer.shape[0], *kernel, layer.shape[1]))
        order = (0, staged.ndim - 1, *range(1, staged.ndim - 1))
        return np.ascontiguousarray(np.transpose(staged, order))
    return np.ascontiguousarray(matrix.T if layer.transposed else matrix)


def column_channels(layer: SparseLayer) -> np.ndarray:
    """For each matrix column, the input channel (within the layer's group) it reads."""
    if layer.op == "Conv":
        return np.tile(np.arange(layer.shape[1]), int(np.prod(layer.shape[2:], dtype=np.int64)))
    return np.arange(layer.cols)


def _excluded(node: gs.Node, weight: str, patterns: list[re.Pattern]) -> str | None:
    for pattern in patterns:
        for name in (node.name, weight):
            if pattern.fullmatch(name) or name == pattern.pattern:
                return pattern.pattern
    return None


def _constant_weight(node: gs.Node, index: int) -> tuple[gs.Constant | None, str | None]:
    if len(node.inputs) <= index or not isinstance(node.inputs[index], gs.Constant):
        return None, f"input {index} is not a constant initializer"
    tensor = node.inputs[index]
    dtype = np.dtype(tensor.dtype) if tensor.dtype is not None else None
    if dtype not in [np.dtype(d) for d in FLOAT_DTYPES]:
        return None, f"weight '{tensor.name}' is {dtype}, not a float type"
    return tensor, None


def _layer(node: gs.Node) -> tuple[SparseLayer | None, str | None]:
    """The layer of one Conv/Gemm/MatMul, or the reason it is left dense."""
    index = 1
    weight, why = _constant_weight(node, index)
    if weight is None:
        return None, why
    shape = tuple(int(d) for d in weight.shape)
    if node.op == "Conv":
        if len(shape) < 3:
            return None, f"weight '{weight.name}' has rank {len(shape)}"
        return SparseLayer(node.name, "Conv", weight.name, shape, node.inputs[0].name, False,
                           int(node.attrs.get("group", 1))), None
    if len(shape) != 2:
        return None, f"weight '{weight.name}' is {len(shape)}-D (only 2-D weights are sparsified)"
    if node.op == "Gemm":
        return SparseLayer(node.name, "Gemm", weight.name, shape, node.inputs[0].name,
                           not int(node.attrs.get("transB", 0))), None
    return SparseLayer(node.name, "MatMul", weight.name, shape, node.inputs[0].name, True), None


def analyze_layers(graph: gs.Graph, exclude: tuple[str, ...] = ()) -> SparsityAnalysis:
    """Every Conv/Gemm/MatMul with a constant float weight in its weight input, in graph order.

    Why fail closed: a weight shared by another node, one read through a subgraph or a layer whose
    weight is computed would change things the masked reference does not model; those are skipped
    with the reason.  ``exclude`` holds regexes (or exact names) of nodes or weights to leave dense.
    """
    patterns = [re.compile(p) for p in exclude]
    readers: dict[str, int] = {}
    for node in graph.nodes:
        for tensor in node.inputs:
            readers[tensor.name] = readers.get(tensor.name, 0) + 1
    layers, skipped = [], []
    for node in graph.nodes:
        if node.op not in ("Conv", "Gemm", "MatMul") or node.domain not in ("", "ai.onnx", None):
            if node.op in ("ConvTranspose", "LSTM", "GRU", "RNN", "Einsum"):
                skipped.append(Skipped(node.name, node.op, f"{node.op} weights are not sparsified"))
            continue
        layer, why = _layer(node)
        if layer is not None and readers.get(layer.weight, 0) > 1:
            layer, why = None, f"weight '{layer.weight}' is read by more than one node"
        if layer is not None and (hit := _excluded(node, layer.weight, patterns)) is not None:
            layer, why = None, f"excluded by --exclude {hit}"
        if layer is None:
            skipped.append(Skipped(node.name, node.op, why or "not sparsifiable"))
        else:
            layers.append(layer)
    return SparsityAnalysis(tuple(layers), tuple(skipped))
