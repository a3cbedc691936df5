"""``com.microsoft.MatMulNBits``: block-quantized linear layers, pruned by whole output rows and whole input blocks.

Why: int4 models (onnxruntime's ``MatMulNBitsQuantizer``, onnxruntime-genai) store every linear layer as
``Y = A · dequant(B)ᵀ + bias`` with ``dequant(B)[n, k] = (q[n, k] - zero_point[n, k // bs]) · scale[n, k // bs]``
(attributes ``K``, ``N``, ``bits``, ``block_size`` = bs).  The packed layout is, per the contrib op schema:
B ``uint8 [N, k_blocks, bs·bits/8]`` (each block its own blob), scales ``[N, k_blocks]`` (or flat),
zero points packed ``uint8 [N, ceil(k_blocks·bits/8)]`` (bits LSB-first along k_blocks) or unpacked
``[N, k_blocks]``, bias ``[N]``.

* Output features (rows n): slicing B, scales, zero points and bias along N is exact; ``N`` shrinks.
* Input features: a block shares one scale and zero point, so only whole blocks can go — the rule links
  the ``bs`` positions of each block of A's feature axis into one unit (the upstream group then prunes in
  blocks).  B and scales lose the block's column; packed zero points are re-packed (:class:`RepackZeroPoints`);
  ``K`` shrinks.  The masked reference zeroes the removed blocks' *scales* (role ``consumer``), which zeroes
  exactly their dequantized weights, so the oracle needs nothing new.

Declined: ``g_idx`` (act-order), pre-packed weights, a partial last block (K not a multiple of bs),
non-constant quantization tensors, flat scales/zero points on the input side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.analysis.rules.base import (Decline, Effects, KeptView, Link, ParamSlice, Port, RuleContext,
    SetAttrEdit, Slot, positions, register, require_shape)

MS = "com.microsoft"


@dataclass(frozen=True)
class Layout:
    """Validated attributes and constant inputs of one MatMulNBits node."""

    k: int
    n: int
    bits: int
    block: int
    blocks: int
    scales: gs.Constant
    zero_points: gs.Constant | None
    bias: gs.Constant | None


def _constant(node: gs.Node, index: int, what: str) -> gs.Constant | None:
    if index >= len(node.inputs) or not node.inputs[index].name:
        return None
    tensor = node.inputs[index]
    if not isinstance(tensor, gs.Constant):
        raise Decline(f"MatMulNBits {what} '{tensor.name}' is not a constant")
    return tensor


def layout(node: gs.Node) -> Layout:
    """The node's quantization layout, or a decline naming what does not fit the schema."""
    k, n = int(node.attrs.get("K", 0)), int(node.attrs.get("N", 0))
    bits, block = int(node.attrs.get("bits", 4)), int(node.attrs.get("block_size", 0))
    if int(node.attrs.get("weight_prepacked", 0) or 0):
        raise Decline("MatMulNBits weights are pre-packed for a kernel")
    if _constant(node, 4, "g_idx") is not None:
        raise Decline("MatMulNBits with g_idx (act-order) maps features to blocks out of order")
    weight = _constant(node, 1, "weight")
    blocks = -(-k // block) if block > 0 else 0
    if weight is None or tuple(weight.shape) != (n, blocks, block * bits // 8) or np.dtype(weight.dtype) != np.uint8:
        raise Decline(f"MatMulNBits weight is not uint8 [N, k_blocks, blob] = [{n}, {blocks}, {block * bits // 8}]")
    scales = _constant(node, 2, "scales")
    if scales is None or tuple(scales.shape) not in ((n, blocks), (n * blocks,)):
        raise Decline("MatMulNBits scales do not hold one value per (row, block)")
    zero_points = _constant(node, 3, "zero_points")
    if zero_points is not None:
        packed = -(-blocks * bits // 8)
        per_row = int(np.prod(zero_points.shape)) // n if n else 0
        if per_row * n != int(np.prod(zero_points.shape)) or per_row not in (blocks, packed) \
                or len(zero_points.shape) == 2 and zero_points.shape[0] != n \
                or per_row != blocks and np.dtype(zero_points.dtype) != np.uint8:
            raise Decline(f"MatMulNBits zero points {list(zero_points.shape)} are neither [N, k_blocks] nor packed "
                          f"uint8 [N, {packed}]")
    bias = _constant(node, 5, "bias")
    if bias is not None and tuple(bias.shape) != (n,):
        raise Decline("MatMulNBits bias is not [N]")
    return Layout(k, n, bits, block, blocks, scales, zero_points, bias)


def _rows(tensor: gs.Constant, n: int) -> np.ndarray:
    """Index map of axis 0 of a per-row tensor, 2-D [N, x] or flat [N·x]: entry j belongs to row j // x."""
    size = int(tensor.shape[0])
    return positions(n) if len(tensor.shape) == 2 else positions(size) // (size // n)


def _nbits_seeds(ctx: RuleContext, node: gs.Node) -> list[Port]:
    shape = ctx.shape(node.outputs[0])
    return [Port(False, 0, len(shape) - 1)] if shape else []


@register("MatMulNBits", role="producer", domain=MS, seeds=_nbits_seeds)
def matmul_nbits(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Producer of output rows, consumer of whole input blocks (module docstring)."""
    spec = layout(node)
    rank_a, rank_y = len(require_shape(ctx, node.inputs[0])), len(require_shape(ctx, node.outputs[0]))
    if port.is_input and port.index == 0 and port.axis == rank_a - 1:
        return _consumer(node, spec, Slot(node.inputs[0].name, port.axis))
    if not port.is_input and port.index == 0 and port.axis == rank_y - 1:
        return _producer(node, spec, Slot(node.outputs[0].name, port.axis))
    if port.is_input and port.index != 0:
        raise Decline(f"channel axis reaches MatMulNBits through input {port.index}")
    axis = port.axis if port.is_input else port.axis - (rank_y - rank_a)
    return Effects(links=[Link(Slot(node.inputs[0].name, axis), Slot(node.outputs[0].name, axis + rank_y - rank_a))],
                   ports=[Port(True, 0, axis), Port(False, 0, axis + rank_y - rank_a)])


def _producer(node: gs.Node, spec: Layout, out: Slot) -> Effects:
    """Output row n is row n of B, scales, zero points and bias."""
    weight = node.inputs[1]
    params = [ParamSlice(weight.name, 0, out, positions(spec.n), "producer", node.name, 1),
              ParamSlice(spec.scales.name, 0, out, _rows(spec.scales, spec.n), "producer", node.name, 2)]
    if spec.zero_points is not None:
        params.append(ParamSlice(spec.zero_points.name, 0, out, _rows(spec.zero_points, spec.n), "param", node.name, 3))
    if spec.bias is not None:
        params.append(ParamSlice(spec.bias.name, 0, out, positions(spec.n), "producer", node.name, 5))
    return Effects(params=params, edits=[SetAttrEdit(node.name, "N", out)], ports=[Port(False, 0, out.axis)])


def _consumer(node: gs.Node, spec: Layout, inp: Slot) -> Effects:
    """Input blocks: one unit per block of A's features; B/scales/zero points lose whole block columns."""
    if spec.k != spec.blocks * spec.block:
        raise Decline(f"MatMulNBits K = {spec.k} is not a multiple of block_size {spec.block} (partial last block)")
    if len(spec.scales.shape) != 2:
        raise Decline("MatMulNBits scales are stored flat [N·k_blocks]: input blocks cannot be sliced out")
    pos = positions(spec.k)
    first = positions(spec.blocks) * spec.block  # block j ↔ its first input feature
    weight = node.inputs[1]
    effects = Effects(links=[Link(inp, inp, pos, (pos // spec.block) * spec.block)], ports=[Port(True, 0, inp.axis)],
                      params=[ParamSlice(weight.name, 1, inp, first, "param", node.name, 1),
                              ParamSlice(spec.scales.name, 1, inp, first, "consumer", node.name, 2)],
                      edits=[SetAttrEdit(node.name, "K", inp)])
    zero_points = spec.zero_points
    if zero_points is None:
        return effects
    if len(zero_points.shape) != 2:
        raise Decline("MatMulNBits zero points are stored flat: input blocks cannot be sliced out")
    if zero_points.shape[1] == spec.blocks:  # unpacked, or 8-bit packed: one entry per block
        effects.params.append(ParamSlice(zero_points.name, 1, inp, first, "param", node.name, 3))
    else:
        effects.edits.append(RepackZeroPoints(node.name, zero_points.name, inp, spec.block, spec.bits, spec.blocks))
    return effects


@dataclass
class RepackZeroPoints:
    """Packed zero points ``uint8 [N, ceil(k_blocks·bits/8)]`` keep only the kept blocks' ``bits``-bit fields.

    Runs after the parameter slices (rows may already be cut); the fields are copied, never reinterpreted:
    unpack LSB-first, drop the removed blocks' fields, pack again (the tail padding becomes 0).
    """

    node: str
    tensor: str
    slot: Slot
    block: int
    bits: int
    blocks: int

    def apply(self, graph: gs.Graph, view: KeptView) -> None:
        constant = graph.tensors()[self.tensor]
        values = np.asarray(constant.values, dtype=np.uint8)
        kept_blocks = np.unique(view.kept(self.slot) // self.block)
        if len(kept_blocks) == self.blocks:
            return
        fields = np.unpackbits(values, axis=1, bitorder="little")[:, :self.blocks * self.bits]
        fields = fields.reshape(len(values), self.blocks, self.bits)[:, kept_blocks].reshape(len(values), -1)
        constant.values = np.packbits(fields, axis=1, bitorder="little")
