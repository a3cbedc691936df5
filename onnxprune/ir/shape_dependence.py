"""Which elements of a run-time shape computation depend on a symbolic input dim.

Why: a shape value (a chunk bound, a head dim, a pad amount) may only become a constant if no input
shape can change it.  Comparing its value at two probe assignments is not proof: Swin's patch merging
pads by ``H % 2``, and every odd probe value gives the same 1.  This module follows the computation
itself: ``Shape(x)`` yields one flag per axis (dynamic where the axis follows a symbol), ``Gather`` and
``Slice`` with constant indices pick flags, ``Concat`` joins them, element-wise arithmetic combines
them, and any other op is dynamic as soon as one input element is.  A value is static when no element
is dynamic; :func:`onnxprune.ir.shapes.infer_static_shapes` also requires both probes to agree on it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

#: Flags of one tensor: one bool per element (flattened) where followed, else a single bool for all.
Flags = np.ndarray | bool

#: Ops whose output values are their first input's values, rearranged or retyped.
_PASS_VALUES = ("Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "CastLike")

#: Element-wise ops: each output element reads the same element of every (broadcast) input.
_ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Pow", "Neg", "Abs", "Ceil", "Floor", "Equal",
                "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Where", "Sqrt", "Sign",
                "Clip", "Relu")


def dynamic_values(model: onnx.ModelProto, static_axes: Callable[[str], tuple[bool, ...] | None]) -> dict[str, Flags]:
    """Flags of every node output of ``model`` (nodes in topological order): True where it may change
    with a symbolic input dim or with input data."""
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer
                 if init.data_location != onnx.TensorProto.EXTERNAL and _small(init.dims)}
    flags: dict[str, Flags] = {name: False for name in (init.name for init in model.graph.initializer)}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and _small(attr.t.dims):
                    constants[node.output[0]] = onnx.numpy_helper.to_array(attr.t)
            flags[node.output[0]] = False
            continue
        result = _node_flags(node, flags, constants, static_axes)
        for out in node.output:
            if out:
                flags[out] = result
    return flags


def is_static(flags: Flags) -> bool:
    return not bool(np.any(flags))


def _small(dims) -> bool:
    return int(np.prod([int(d) for d in dims], dtype=np.int64)) <= 4096


def _node_flags(node: onnx.NodeProto, flags: dict[str, Flags], constants: dict[str, np.ndarray],
                static_axes: Callable[[str], tuple[bool, ...] | None]) -> Flags:
    """The flags of ``node``'s outputs (all outputs alike)."""
    inputs = [flags.get(name, True) if name else False for name in node.input]
    op = node.op_type
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.domain not in ("", "ai.onnx") or not node.input:
        return True
    if op == "Shape":
        axes = static_axes(node.input[0])
        if axes is None:
            return True
        return ~np.array(axes, dtype=bool)[attrs.get("start", 0):attrs.get("end")]
    if op == "Size":
        axes = static_axes(node.input[0])
        return axes is None or not all(axes)
    if op in _PASS_VALUES:
        return inputs[0]
    if op == "Gather" and isinstance(inputs[0], np.ndarray) and node.input[1] in constants \
            and attrs.get("axis", 0) == 0:
        index = constants[node.input[1]].astype(np.int64)
        if np.all((index >= -len(inputs[0])) & (index < len(inputs[0]))):
            return np.asarray(inputs[0][index]).reshape(-1)
        return True
    if op == "Slice" and isinstance(inputs[0], np.ndarray) and all(n in constants for n in node.input[1:3]):
        bounds = [constants[n].astype(np.int64).reshape(-1) for n in node.input[1:]
                  if n in constants]
        axes = bounds[2] if len(bounds) > 2 else np.array([0])
        steps = bounds[3] if len(bounds) > 3 else np.array([1])
        if len(bounds[0]) == 1 and list(axes) in ([0], [-1]):
            return inputs[0][slice(int(bounds[0][0]), int(bounds[1][0]), int(steps[0]))]
        return _any(inputs)
    if op == "Concat" and all(isinstance(f, np.ndarray) and f.ndim == 1 for f in inputs):
        return np.concatenate(inputs)
    if op in _ELEMENTWISE:
        arrays = [f for f in inputs if isinstance(f, np.ndarray) and f.size > 1]
        if arrays and all(f.shape == arrays[0].shape for f in arrays) and \
                all(isinstance(f, np.ndarray) and f.size in (1, arrays[0].size) or f is False for f in inputs):
            scalars = [bool(np.any(f)) for f in inputs if not (isinstance(f, np.ndarray) and f.size > 1)]
            return np.logical_or.reduce(arrays) | any(scalars)
        return _any(inputs)
    return _any(inputs)


def _any(inputs: list[Flags]) -> bool:
    return any(bool(np.any(f)) for f in inputs)
