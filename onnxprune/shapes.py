"""Static shapes for analysis and counting, even when the model has symbolic dimensions.

Why: rules must map a channel axis through Reshape/Flatten, which needs concrete dimensions, and
counting needs per-sample MACs.  Exports usually carry a symbolic batch (and sequence) dimension.
We substitute every symbolic or unknown *graph input* dimension by a concrete value and let ONNX
shape inference (with data propagation, so Shape→Gather→Reshape chains resolve) fill in the rest.

Two substitutions serve two purposes:

* ``symbol_value=1`` gives per-sample shapes for counting parameters and MACs;
* :data:`PROBE_PRIMES` gives each distinct symbol its own large prime, so a rule comparing products of
  dimensions can never confuse a dynamic dimension with a channel count by coincidence.
"""

from __future__ import annotations

from typing import Callable

import onnx

from onnxprune.errors import UnsupportedModelError

Shape = tuple[int, ...]

#: Distinct primes larger than any plausible channel count; symbol i gets PROBE_PRIMES[i].
PROBE_PRIMES: tuple[int, ...] = (10007, 10009, 10037, 10039, 10061, 10067, 10069, 10079, 10091, 10093)


#: Initializers above this many bytes are replaced by typed graph inputs in the probe copy: shape
#: inference only needs their shapes, and copying weights would multiply peak memory.
LARGE_WEIGHT_BYTES = 64 * 1024


def _without_large_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose large initializers are declared inputs (shape and type only)."""
    probe = onnx.ModelProto()
    graph = model.graph
    large = [init for init in graph.initializer
             if len(init.raw_data) > LARGE_WEIGHT_BYTES or init.data_location == onnx.TensorProto.EXTERNAL]
    if not large:
        probe.CopyFrom(model)
        return probe
    large_names = {init.name for init in large}
    shell = onnx.ModelProto()
    shell.ir_version = max(model.ir_version, 4)
    shell.opset_import.extend(model.opset_import)
    shell.functions.extend(model.functions)
    shell.graph.name = graph.name
    shell.graph.node.extend(graph.node)
    shell.graph.input.extend(graph.input)
    shell.graph.output.extend(graph.output)
    shell.graph.initializer.extend(init for init in graph.initializer if init.name not in large_names)
    listed = {value.name for value in graph.input}
    for init in large:
        if init.name not in listed:
            shell.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return shell


def _dim_filler(symbol_value: int | None) -> Callable[[str], int]:
    """Return a function giving the concrete value for a symbolic dimension name."""
    assigned: dict[str, int] = {}

    def fill(symbol: str) -> int:
        if symbol_value is not None:
            return symbol_value
        if symbol not in assigned:
            assigned[symbol] = PROBE_PRIMES[len(assigned) % len(PROBE_PRIMES)] + 100 * (
                len(assigned) // len(PROBE_PRIMES)
            )
        return assigned[symbol]

    return fill


def infer_static_shapes(model: onnx.ModelProto, symbol_value: int | None = 1) -> dict[str, Shape]:
    """Concrete shapes of every tensor whose shape inference can determine fully.

    ``symbol_value=None`` selects the probe primes (one distinct prime per symbolic dim name; an
    unnamed unknown dim gets its own).  Tensors whose shape stays partly unknown are omitted.  The
    input model is not modified.
    """
    probe = _without_large_weights(model)
    fill = _dim_filler(symbol_value)
    initializer_names = {init.name for init in probe.graph.initializer}
    unnamed = 0
    for value in probe.graph.input:
        if value.name in initializer_names or not value.type.HasField("tensor_type"):
            continue
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            name = dim.dim_param if dim.HasField("dim_param") and dim.dim_param else f"?{unnamed}"
            unnamed += 0 if dim.dim_param else 1
            dim.Clear()
            dim.dim_value = fill(name)
    del probe.graph.value_info[:]
    for out in probe.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    shapes = _collect(_infer(probe))
    for _ in range(MAX_SHAPE_ROUNDS):
        folded = _fold_shape_reads(probe, shapes)
        if folded is None:
            break
        try:
            more = _collect(_infer(folded))
        except UnsupportedModelError:
            break
        if not set(more) - set(shapes):
            break
        shapes = {**more, **shapes}
    return shapes


#: How often run-time shape computations are folded and shapes re-inferred (chains rarely nest deeper).
MAX_SHAPE_ROUNDS = 3


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as err:  # onnx raises several unrelated types here
        raise UnsupportedModelError(f"shape inference failed: {err}".splitlines()[0]) from err


def _fold_shape_reads(probe: onnx.ModelProto, shapes: dict[str, Shape]) -> onnx.ModelProto | None:
    """Replace ``Shape`` nodes whose input shape is known by constants and fold what follows.

    Why: exporters compute Reshape targets at run time (``Shape → Gather → Div → Concat``), which ONNX
    data propagation does not always follow.  With concrete probe dims the whole chain is constant,
    so folding it reveals the Reshape output shapes.  Returns None when there is nothing to fold.
    """
    import numpy as np
    import onnx_graphsurgeon as gs

    work = onnx.ModelProto()
    work.CopyFrom(probe)
    replaced = False
    for index, node in enumerate(work.graph.node):
        if node.op_type != "Shape" or node.input[0] not in shapes:
            continue
        dims = list(shapes[node.input[0]])
        attrs = {a.name: a.i for a in node.attribute}
        dims = dims[attrs.get("start", 0):attrs.get("end")]
        value = onnx.numpy_helper.from_array(np.array(dims, dtype=np.int64))
        work.graph.node[index].CopyFrom(onnx.helper.make_node("Constant", [], [node.output[0]], value=value,
                                                              name=node.name))
        replaced = True
    if not replaced:
        return None
    graph = gs.import_onnx(work)
    previous = gs.logger.G_LOGGER.severity
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.CRITICAL
    try:
        graph.fold_constants(error_ok=True, size_threshold=1 << 20, should_exclude_node=_is_table_lookup)
        graph.cleanup()
    except Exception:  # folding is a best effort; shapes found so far stand
        return None
    finally:
        gs.logger.G_LOGGER.severity = previous
    folded = gs.export_onnx(graph, do_type_check=False)
    del folded.graph.value_info[:]
    return folded


def _is_table_lookup(node) -> bool:
    """Gathers from float tables (embeddings): probe dims would index past the table, and their output
    shape follows from the indices' shape anyway."""
    import numpy as np
    import onnx_graphsurgeon as gs

    data = node.inputs[0] if node.inputs else None
    return node.op.startswith("Gather") and isinstance(data, gs.Constant) and np.dtype(data.dtype).kind == "f"


def _collect(inferred: onnx.ModelProto) -> dict[str, Shape]:
    """Fully known shapes of every value, initializer and Constant output of an inferred model."""
    shapes: dict[str, Shape] = {}
    for init in inferred.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        shape = _static_shape(value)
        if shape is not None:
            shapes[value.name] = shape
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(int(d) for d in attr.t.dims)
    return shapes


def _static_shape(value: onnx.ValueInfoProto) -> Shape | None:
    """The fully known shape of a value, or None when any dimension is unknown."""
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return None
    dims = []
    for dim in value.type.tensor_type.shape.dim:
        if not dim.HasField("dim_value"):
            return None
        dims.append(int(dim.dim_value))
    return tuple(dims)
