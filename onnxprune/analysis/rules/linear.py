"""Gemm and MatMul with one constant operand: producers of output features, consumers of input features.

Gemm: ``Y[M, N] = A'[M, K] · B'[K, N] + C`` with ``A' = Aᵀ`` when ``transA`` and ``B' = Bᵀ`` when
``transB``.  The feature axis of ``A`` (K) is read by ``B``'s K axis; output features (N) are produced
by ``B``'s N axis and the broadcast bias ``C``.  The row axis (M) passes through to ``Y``.

MatMul: ``Y[..., M, N] = A[..., M, K] · B[..., K, N]`` with numpy broadcasting of the leading axes.
With a constant ``B`` (the usual ``x·W`` linear, W ``[in, out]``) K is consumed and N produced; with a
constant ``A`` (``W·x``) the roles mirror.  A product of two variable tensors (attention scores and
context) couples their batch axes — where attention heads live — and passes rows and columns through;
its contracted axis declines (see ``_matmul_variables``).

Which weight axis is K and which is N (``transB``, ``W·x``) comes from the layer table
(:mod:`onnxprune.ir.layer_table`).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.ir.layer_table import attributes, has_input, row_of, weight_axes
from onnxprune.analysis.rules.base import (Decline, Effects, Link, ParamSlice, Port, RuleContext, Slot, positions,
    register, require_shape)


def _gemm_bias(ctx: RuleContext, node: gs.Node, out_slot: Slot, channels: int, effects: Effects) -> None:
    """Slice or link the bias C along the output axis it broadcasts over."""
    index = row_of(node).bias
    if not has_input(node, index):
        return
    bias = node.inputs[index]
    shape = require_shape(ctx, bias)
    axis = out_slot.axis - (2 - len(shape))
    if axis < 0 or shape[axis] == 1:
        return
    if shape[axis] != channels:
        raise Decline(f"Gemm bias '{bias.name}' does not match {channels} channels")
    if isinstance(bias, gs.Constant):
        effects.params.append(ParamSlice(bias.name, axis, out_slot, positions(channels), "producer", node.name,
                                         index))
    else:
        effects.links.append(Link(Slot(bias.name, axis), out_slot))
        effects.ports.append(Port(True, index, axis))


def _gemm_seeds(ctx: RuleContext, node: gs.Node) -> list[Port]:
    return [Port(False, 0, 1)]


def _matmul_seeds(ctx: RuleContext, node: gs.Node) -> list[Port]:
    """The output feature axis: last axis for ``x·W``, second-to-last for ``W·x``."""
    shape = ctx.shape(node.outputs[0])
    if shape is None or len(shape) < 2:
        return []
    if isinstance(node.inputs[1], gs.Constant) and not isinstance(node.inputs[0], gs.Constant):
        return [Port(False, 0, len(shape) - 1)]
    if isinstance(node.inputs[0], gs.Constant) and not isinstance(node.inputs[1], gs.Constant):
        return [Port(False, 0, len(shape) - 2)]
    return []


@register("Gemm", role="producer", seeds=_gemm_seeds)
def gemm(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """Consumer on A's K axis, producer on Y's axis 1, pass-through between A's M axis and Y's axis 0."""
    row = row_of(node)
    weight = node.inputs[row.weight]
    if not isinstance(weight, gs.Constant):
        raise Decline(f"Gemm weight '{weight.name}' is not a constant initializer")
    if port.is_input and port.index != 0:
        raise Decline("channel axis reaches Gemm through its bias input")
    attrs = attributes(node)
    axes = row.layout.weight_axes(attrs, 2)  # transB: which axis of B is K and which is N
    a_name, y_name = node.inputs[0].name, node.outputs[0].name
    k_axis_a = row.layout.input_axis(attrs, 2)  # transA
    m_axis_a = 1 - k_axis_a
    if port.is_input and port.axis == k_axis_a:
        channels = require_shape(ctx, node.inputs[0])[k_axis_a]
        slot = Slot(a_name, k_axis_a)
        return Effects(ports=[Port(True, 0, k_axis_a)], params=[
            ParamSlice(weight.name, axes.inputs, slot, positions(channels), "consumer", node.name, row.weight)])
    y_axis = port.axis if not port.is_input else 0
    channels = require_shape(ctx, node.outputs[0])[y_axis]
    out_slot = Slot(y_name, y_axis)
    effects = Effects(ports=[Port(False, 0, y_axis)])
    if y_axis == 1:
        effects.params.append(ParamSlice(weight.name, axes.outputs, out_slot, positions(channels),
                                         "producer", node.name, row.weight))
    else:
        effects.links.append(Link(Slot(a_name, m_axis_a), out_slot))
        effects.ports.append(Port(True, 0, m_axis_a))
    _gemm_bias(ctx, node, out_slot, channels, effects)
    return effects


@register("MatMul", role="producer", seeds=_matmul_seeds)
def matmul(ctx: RuleContext, node: gs.Node, port: Port) -> Effects:
    """MatMul with exactly one constant operand (see module docstring)."""
    a, b = node.inputs[0], node.inputs[1]
    a_const, b_const = isinstance(a, gs.Constant), isinstance(b, gs.Constant)
    if a_const and b_const:
        raise Decline("MatMul of two constants")
    ra, rb = len(require_shape(ctx, a)), len(require_shape(ctx, b))
    ry = len(require_shape(ctx, node.outputs[0]))
    if min(ra, rb) < 2:
        raise Decline("MatMul with a rank-1 operand")
    if not a_const and not b_const:
        return _matmul_variables(ctx, node, port, ra, rb, ry)
    var_index = 1 if a_const else 0
    if port.is_input and port.index != var_index:
        raise Decline("channel axis reaches MatMul through its constant operand")
    y_axis = port.axis + (ry - (rb if a_const else ra)) if port.is_input else port.axis
    if port.is_input and port.axis == (ra - 1 if b_const else rb - 2):
        return _matmul_consumer(ctx, node, port, a_const, ra, rb)
    if y_axis == (ry - 1 if b_const else ry - 2):
        return _matmul_producer(ctx, node, y_axis, a_const, ra, rb)
    return _matmul_through(ctx, node, y_axis, var_index, ra if b_const else rb, ry, a_const, rb if b_const else ra)


def _matmul_consumer(ctx: RuleContext, node: gs.Node, port: Port, a_const: bool, ra: int, rb: int) -> Effects:
    """The contracted axis of the variable operand is read by the constant's K axis."""
    var = node.inputs[port.index]
    channels = require_shape(ctx, var)[port.axis]
    weight_index = 0 if a_const else 1
    weight = node.inputs[weight_index]
    weight_axis = weight_axes(node, ra if a_const else rb, weight_index).inputs
    return Effects(ports=[Port(True, port.index, port.axis)], params=[
        ParamSlice(weight.name, weight_axis, Slot(var.name, port.axis), positions(channels), "consumer",
                   node.name, weight_index)])


def _matmul_producer(ctx: RuleContext, node: gs.Node, y_axis: int, a_const: bool, ra: int, rb: int) -> Effects:
    """The constant's output axis produces this axis of Y."""
    channels = require_shape(ctx, node.outputs[0])[y_axis]
    weight_index = 0 if a_const else 1
    weight = node.inputs[weight_index]
    weight_axis = weight_axes(node, ra if a_const else rb, weight_index).outputs
    return Effects(ports=[Port(False, 0, y_axis)], params=[
        ParamSlice(weight.name, weight_axis, Slot(node.outputs[0].name, y_axis), positions(channels),
                   "producer", node.name, weight_index)])


def _matmul_through(ctx: RuleContext, node: gs.Node, y_axis: int, var_index: int, var_rank: int, ry: int,
                    a_const: bool, const_rank: int) -> Effects:
    """Non-contracted axes of the variable operand (rows, batch) pass straight to Y."""
    var = node.inputs[var_index]
    var_axis = y_axis - (ry - var_rank)
    if var_axis < 0:
        raise Decline("MatMul broadcasts the channel axis from the constant operand")
    const_axis = y_axis - (ry - const_rank)
    weight = node.inputs[0 if a_const else 1]
    if y_axis < ry - 2 and const_axis >= 0 and require_shape(ctx, weight)[const_axis] != 1:
        raise Decline("MatMul constant operand is batched along the channel axis")
    return Effects(links=[Link(Slot(var.name, var_axis), Slot(node.outputs[0].name, y_axis))],
                   ports=[Port(True, var_index, var_axis), Port(False, 0, y_axis)])


def _matmul_variables(ctx: RuleContext, node: gs.Node, port: Port, ra: int, rb: int, ry: int) -> Effects:
    """Product of two variables (attention): batch axes couple both operands, rows/columns pass through.

    The contracted axis cannot be followed: removing a channel there changes every output element,
    which zeroing consumer weights (the oracle) cannot express.  Attention heads are batch axes here
    (``[B, H, S, D]``), so whole heads pass.
    """
    shapes = [require_shape(ctx, t) for t in node.inputs[:2]]
    y_shape = require_shape(ctx, node.outputs[0])
    if port.is_input:
        rank = (ra, rb)[port.index]
        if port.axis == (ra - 1 if port.index == 0 else rb - 2):
            raise Decline("MatMul of two variable tensors contracts the channel axis")
        y_axis = port.axis + ry - rank
    else:
        y_axis = port.axis
    out_slot = Slot(node.outputs[0].name, y_axis)
    effects = Effects(ports=[Port(False, 0, y_axis)])
    if y_axis == ry - 2:
        sources = [(0, ra - 2)]
    elif y_axis == ry - 1:
        sources = [(1, rb - 1)]
    else:
        sources = [(0, y_axis - (ry - ra)), (1, y_axis - (ry - rb))]
    for index, axis in sources:
        if axis < 0 or shapes[index][axis] == 1 and y_shape[y_axis] != 1:
            if port.is_input and port.index == index:
                raise Decline(f"'{node.inputs[index].name}' is broadcast along the channel axis")
            continue
        effects.links.append(Link(Slot(node.inputs[index].name, axis), out_slot))
        effects.ports.append(Port(True, index, axis))
    return effects
