"""The layer table: one row per weighted (matrix-product) op, the single source of what its inputs mean.

Why one table: which input is the weight, which of its axes reads input channels and which writes output
channels (Gemm's ``transB``, ConvTranspose's swapped axes, a MatMul's ``W·x``), what ``alpha``/``beta``/
``group`` do, and which operands a MAC formula reads used to be written out again by the rules, the group
classification, the finite-weight check, counting, the latency tables, recovery and the reconstruction
criterion, each with its own copy of ``transB``.  Now they all ask this module, so they cannot disagree.

Where a new weighted op goes: one :class:`LayerRow` in :data:`LAYER_TABLE` (with an existing
:class:`Layout` when its weight reads like a Conv, Gemm or MatMul), its rule in
``onnxprune/analysis/rules/``, and its row's test in ``tests/test_layer_table.py`` (the table's views
checked against an onnxruntime session).  Counting, latency, recovery and reconstruction then follow the
row's fields; a field left at its default opts the op out of that stage.

The layouts speak in *attributes* (a plain mapping, :func:`attributes` reads one from an
onnx-graphsurgeon node or a ``NodeProto``) so graph-level code and proto-level code (counting, latency)
share them.  Numeric views of a layer (its effective ``[features, outputs]`` matrix, im2col rows, the
write-back of a refitted matrix) live in :mod:`onnxprune.ir.layers` and are built on these facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import onnx
import onnx_graphsurgeon as gs


def attributes(node: gs.Node | onnx.NodeProto) -> dict[str, Any]:
    """The node's attributes as a plain mapping, for either graph representation the stages use."""
    if isinstance(node, onnx.NodeProto):
        return {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}
    return dict(node.attrs)


@dataclass(frozen=True)
class WeightAxes:
    """Axes of the weight tensor: ``inputs`` is contracted with the input's channels / features,
    ``outputs`` produces the output's.  ``grouped`` (convolutions) is the axis holding only one group's
    share (``C/group``), None when every index of both axes is a full channel."""

    inputs: int
    outputs: int
    grouped: int | None = None


class Layout:
    """How a family of ops reads its weight.  Subclasses are stateless; rows share instances."""

    name = ""
    #: the activation axis a per-output bias broadcasts along: 1 (channels) or -1 (trailing features)
    output_feature_axis = -1

    def weight_axes(self, attrs: Mapping[str, Any], rank: int, weight_index: int = 1) -> WeightAxes:
        raise NotImplementedError

    def input_axis(self, attrs: Mapping[str, Any], rank: int) -> int:
        """Axis of the data input (input 0, or the variable operand) that carries channels / features."""
        raise NotImplementedError

    def group(self, attrs: Mapping[str, Any]) -> int:
        """Number of groups (1: every output reads every input channel)."""
        return 1

    def weight_scale(self, attrs: Mapping[str, Any]) -> float:
        """The factor the product is multiplied by (Gemm's ``alpha``)."""
        return 1.0

    def bias_scale(self, attrs: Mapping[str, Any]) -> float:
        """The factor the bias is multiplied by (Gemm's ``beta``)."""
        return 1.0

    def kernel(self, weight_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Spatial kernel extent (empty for matrix products)."""
        return ()

    def refit_limit(self, attrs: Mapping[str, Any], input_index: int, weight_index: int,
                    weight_rank: int) -> str | None:
        """Why the least-squares view does not cover this node (None: it does)."""
        return None


class ConvLayout(Layout):
    """Conv ``W[Cout, Cin/g, k...]``: output channels on axis 0, one group's input channels on axis 1."""

    name = "conv"
    output_feature_axis = 1

    def weight_axes(self, attrs: Mapping[str, Any], rank: int, weight_index: int = 1) -> WeightAxes:
        return WeightAxes(inputs=1, outputs=0, grouped=1)

    def input_axis(self, attrs: Mapping[str, Any], rank: int) -> int:
        return 1

    def group(self, attrs: Mapping[str, Any]) -> int:
        return int(attrs.get("group", 1))

    def kernel(self, weight_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(int(k) for k in weight_shape[2:])

    def refit_limit(self, attrs: Mapping[str, Any], input_index: int, weight_index: int,
                    weight_rank: int) -> str | None:
        group = self.group(attrs)
        if group != 1:
            return f"grouped convolution (group={group}): each output reads only its group's inputs"
        return None


class ConvTransposeLayout(ConvLayout):
    """ConvTranspose ``W[Cin, Cout/g, k...]``: the axes of a Conv swapped, the group share on the outputs."""

    name = "conv_transpose"

    def weight_axes(self, attrs: Mapping[str, Any], rank: int, weight_index: int = 1) -> WeightAxes:
        return WeightAxes(inputs=0, outputs=1, grouped=1)


class GemmLayout(Layout):
    """Gemm ``Y = alpha · A' · B' + beta · C``: ``B`` is ``[K, N]``, or ``[N, K]`` with ``transB``;
    ``A`` is ``[M, K]``, or ``[K, M]`` with ``transA``."""

    name = "gemm"
    output_feature_axis = 1

    def weight_axes(self, attrs: Mapping[str, Any], rank: int, weight_index: int = 1) -> WeightAxes:
        return WeightAxes(1, 0) if int(attrs.get("transB", 0)) else WeightAxes(0, 1)

    def input_axis(self, attrs: Mapping[str, Any], rank: int) -> int:
        return 0 if int(attrs.get("transA", 0)) else 1

    def weight_scale(self, attrs: Mapping[str, Any]) -> float:
        return float(attrs.get("alpha", 1.0))

    def bias_scale(self, attrs: Mapping[str, Any]) -> float:
        return float(attrs.get("beta", 1.0))


class MatMulLayout(Layout):
    """MatMul ``Y[..., M, N] = A[..., M, K] · B[..., K, N]``: with the weight ``B`` (``x·W``) K is its
    second-to-last axis and N its last; with the weight ``A`` (``W·x``) the roles mirror."""

    name = "matmul"

    def weight_axes(self, attrs: Mapping[str, Any], rank: int, weight_index: int = 1) -> WeightAxes:
        return WeightAxes(rank - 2, rank - 1) if weight_index == 1 else WeightAxes(rank - 1, rank - 2)

    def input_axis(self, attrs: Mapping[str, Any], rank: int) -> int:
        return rank - 1

    def refit_limit(self, attrs: Mapping[str, Any], input_index: int, weight_index: int,
                    weight_rank: int) -> str | None:
        if input_index != weight_index or weight_rank != 2:
            return "only x·W with a 2-D constant W is supported"
        return None


CONV, CONV_TRANSPOSE, GEMM, MATMUL = ConvLayout(), ConvTransposeLayout(), GemmLayout(), MatMulLayout()


@dataclass(frozen=True)
class LayerRow:
    """What the stages know about one op.  Defaults opt the op out of a stage.

    ``kind``: what the units it produces are called in reports ("channel", "neuron", "hidden").
    ``weight`` / ``bias``: input indices (``bias_label`` is ONNX's name for it, in messages).
    ``params``: inputs holding stored parameters, checked finite when a model is loaded.
    ``layout``: how the weight's axes map to input and output channels (None: no matrix view).
    ``macs``: the MAC formula (:mod:`onnxprune.measurement.counting`), ``mac_inputs`` the operands it reads.
    ``latency``: the single-op latency table kind (:mod:`onnxprune.planning.latency`), None: remainder.
    ``refit``: recovery (bias, lsq) and the reconstruction criterion can model it as a consumer.
    """

    op: str
    domain: str = ""
    kind: str | None = None
    weight: int | None = None
    bias: int | None = None
    bias_label: str = "bias"
    params: tuple[int, ...] = ()
    layout: Layout | None = None
    macs: str | None = None
    mac_inputs: tuple[int, ...] = ()
    latency: str | None = None
    refit: bool = False


_ROWS = (
    LayerRow("Conv", kind="channel", weight=1, bias=2, params=(1, 2), layout=CONV, macs="conv", mac_inputs=(1,),
             latency="conv", refit=True),
    LayerRow("ConvTranspose", kind="channel", weight=1, bias=2, params=(1, 2), layout=CONV_TRANSPOSE,
             macs="conv_transpose", mac_inputs=(0, 1)),
    LayerRow("Gemm", kind="neuron", weight=1, bias=2, bias_label="bias C", params=(0, 1, 2), layout=GEMM,
             macs="gemm", mac_inputs=(0, 1), latency="gemm", refit=True),
    LayerRow("MatMul", kind="neuron", weight=1, params=(0, 1), layout=MATMUL, macs="matmul", mac_inputs=(0, 1),
             latency="gemm", refit=True),
    LayerRow("LSTM", kind="hidden", weight=1, params=(1, 2, 3), macs="recurrent", mac_inputs=(0, 1, 2)),
    LayerRow("GRU", kind="hidden", weight=1, params=(1, 2, 3), macs="recurrent", mac_inputs=(0, 1, 2)),
    LayerRow("RNN", kind="hidden", weight=1, params=(1, 2, 3), macs="recurrent", mac_inputs=(0, 1, 2)),
    LayerRow("BatchNormalization", params=(1, 2, 3, 4)),
    # an embedding lookup: the rules make Gather a producer of features only when its data is a table
    LayerRow("Gather", kind="neuron"),
    # counted, not pruned: quantized and fused variants, and contractions
    LayerRow("ConvInteger", weight=1, layout=CONV, macs="conv", mac_inputs=(1,)),
    LayerRow("QLinearConv", weight=3, layout=CONV, macs="conv", mac_inputs=(3,)),
    LayerRow("FusedConv", domain="com.microsoft", weight=1, bias=2, layout=CONV, macs="conv", mac_inputs=(1,)),
    LayerRow("FusedGemm", domain="com.microsoft", weight=1, bias=2, layout=GEMM, macs="gemm", mac_inputs=(0, 1)),
    LayerRow("MatMulInteger", weight=1, layout=MATMUL, macs="matmul", mac_inputs=(0, 1)),
    LayerRow("QLinearMatMul", weight=3, layout=MATMUL, macs="matmul", mac_inputs=(0, 3)),
    LayerRow("Einsum", macs="einsum"),
)

#: (normalized domain, op type) → row.  The standard domain is ``""`` (:func:`row_of` maps ``ai.onnx``).
LAYER_TABLE: dict[tuple[str, str], LayerRow] = {(row.domain, row.op): row for row in _ROWS}


def normalized_domain(domain: str) -> str:
    """``""`` and ``"ai.onnx"`` both name the standard domain."""
    return "" if domain in ("", "ai.onnx") else domain


def row_of(node: gs.Node | onnx.NodeProto) -> LayerRow | None:
    """The node's row, None for ops the table does not describe."""
    if isinstance(node, onnx.NodeProto):
        return LAYER_TABLE.get((normalized_domain(node.domain), node.op_type))
    return LAYER_TABLE.get((normalized_domain(node.domain or ""), node.op))


def layout_of(node: gs.Node | onnx.NodeProto) -> Layout | None:
    row = row_of(node)
    return None if row is None else row.layout


def weight_axes(node: gs.Node | onnx.NodeProto, rank: int, weight_index: int | None = None) -> WeightAxes:
    """The weight's input / output axes for ``node`` (whose weight has ``rank`` dims)."""
    row = row_of(node)
    if row is None or row.layout is None:
        raise KeyError(f"{getattr(node, 'op', None) or node.op_type} has no weight layout in the layer table")
    return row.layout.weight_axes(attributes(node), rank, row.weight if weight_index is None else weight_index)


def has_input(node: gs.Node, index: int | None) -> bool:
    """Whether optional input ``index`` is present (not missing, not an empty name)."""
    return index is not None and len(node.inputs) > index and bool(node.inputs[index].name)
