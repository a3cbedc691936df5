"""Folding a probe's run-time shape computations once its ``Shape`` reads are known.

Why: exporters compute Reshape targets at run time (``Shape → Gather → Div → Concat``), which ONNX data
propagation does not always follow.  With concrete probe dims the whole chain is constant, so folding it
reveals the Reshape output shapes (:func:`onnxprune.ir.shapes.infer_static_shapes` alternates folding and
inference until nothing new is typed).

Why only the constant cone goes to graphsurgeon: its ``fold_constants`` imports, copies and exports the
graph it is given, and a Swin-like graph of 3,000 nodes needs eight rounds per probe -- 11 s of a 13 s
``prepare``, spent on the nodes that cannot fold.  Only the nodes whose inputs are all constant (the
cone) can fold, so graphsurgeon folds a model made of those alone, with the same options and
exclusions, and its results are put back into the probe.  A control-flow node with constant inputs
(graphsurgeon inlines an ``If`` whose condition folds) sends the round to the whole-graph fold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from onnxprune.io.weights import float_type
from onnxprune.ir.node_reads import node_reads

Shape = tuple[int, ...]

#: Ops that can make a large tensor from small inputs (a mask ``[B, 1, S, S + P]`` from a shape).
_GROWING_OPS = ("ConstantOfShape", "Expand", "Range", "Tile", "Resize", "Upsample", "OneHot", "Pad", "Trilu")

#: Folded tensors above this many elements are never computed: the probe needs shape values, not data.
MAX_FOLDED_ELEMENTS = 1 << 16

#: Tensors above this many bytes are left unfolded (graphsurgeon's ``size_threshold``).
FOLD_SIZE_THRESHOLD = 1 << 20



def fold_shape_reads(probe: onnx.ModelProto, shapes: dict[str, Shape]) -> tuple[onnx.ModelProto, dict[str, Any]] | None:
    """Replace ``Shape`` nodes whose input shape is known by constants and fold what follows.

    Returns the folded model and every tensor folding made constant (also those only dead code read,
    such as a detector's anchor grid folded whole), or None when there is nothing to fold.
    """
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
    cone = _constant_cone(work, shapes)
    if cone is None:
        return _fold_whole_graph(work, shapes)
    return _fold_cone(work, cone, shapes)


def _fold_whole_graph(work: onnx.ModelProto, shapes: dict[str, Shape]) -> tuple[onnx.ModelProto, dict[str, Any]] | None:
    """graphsurgeon's ``fold_constants`` over all of ``work`` (its ``Shape`` reads already constants)."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(work)
    constants = _fold(graph, shapes)
    if constants is None:
        return None
    graph.cleanup()
    folded = gs.export_onnx(graph, do_type_check=False)
    del folded.graph.value_info[:]
    return folded, constants


def _fold(graph: Any, shapes: dict[str, Shape]) -> dict[str, Any] | None:
    """Fold ``graph`` (graphsurgeon) in place; the values of every tensor it made constant, or None on failure."""
    import onnx_graphsurgeon as gs

    previous = gs.logger.G_LOGGER.severity
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.CRITICAL
    try:
        graph.fold_constants(error_ok=True, size_threshold=FOLD_SIZE_THRESHOLD,
                             should_exclude_node=lambda node: _is_table_lookup(node) or _may_be_large(node, shapes))
        return {name: tensor.values for name, tensor in graph.tensors().items()
                if isinstance(tensor, gs.Constant) and not isinstance(tensor._values, gs.ir.tensor.LazyValues)}
    except Exception:  # folding is a best effort; shapes found so far stand
        return None
    finally:
        gs.logger.G_LOGGER.severity = previous


def _constant_cone(work: onnx.ModelProto, shapes: dict[str, Shape]) -> list[int] | None:
    """Indices of the nodes whose inputs are all constant once the cone before them is (in any node
    order), minus those folding excludes; None when a control-flow node has constant inputs."""
    constant = {init.name for init in work.graph.initializer}
    constant.update(out for node in work.graph.node if node.op_type == "Constant" for out in node.output)
    # float tables as graphsurgeon sees them (a numpy float dtype: _is_table_lookup)
    floats = {init.name for init in work.graph.initializer if float_type(init.data_type)}
    floats.update(node.output[0] for node in work.graph.node if node.op_type == "Constant"
                  and any(a.name == "value" and float_type(a.t.data_type) for a in node.attribute))
    cone: list[int] = []
    waiting = [i for i, node in enumerate(work.graph.node) if node.op_type != "Constant"]
    while True:
        still, grew = [], False
        for index in waiting:
            node = work.graph.node[index]
            if not all(not name or name in constant for name in node.input):
                still.append(index)
                continue
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
                return None
            if _proto_table_lookup(node, floats) or _proto_may_be_large(node, shapes):
                continue  # not folded: what reads it is not constant either
            cone.append(index)
            constant.update(out for out in node.output if out)
            grew = True
        if not grew:
            return sorted(cone)
        waiting = still


def _fold_cone(work: onnx.ModelProto, cone: list[int], shapes: dict[str, Shape]
               ) -> tuple[onnx.ModelProto, dict[str, Any]] | None:
    """Fold the cone's nodes in a model of their own, then put what folded back into ``work``."""
    import onnx_graphsurgeon as gs

    nodes = work.graph.node
    produced = {out for index in cone for out in nodes[index].output if out}
    needed = {name for index in cone for name in nodes[index].input if name and name not in produced}
    part = onnx.ModelProto()
    part.ir_version, part.producer_name = work.ir_version, work.producer_name
    part.opset_import.extend(work.opset_import)
    part.functions.extend(work.functions)
    part.graph.name = work.graph.name
    part.graph.initializer.extend(init for init in work.graph.initializer if init.name in needed)
    part.graph.node.extend(node for node in nodes if node.op_type == "Constant" and node.output[0] in needed)
    part.graph.node.extend(nodes[index] for index in cone)
    part.graph.output.extend(onnx.ValueInfoProto(name=name) for name in sorted(produced))
    found = _fold(gs.import_onnx(part), shapes)
    if found is None:
        return None
    # what the whole-graph fold reports: folded tensors something reads (a dead leaf is not kept there)
    read = {out.name for out in work.graph.output} | {name for node in nodes for name in node_reads(node)}
    values = {name: value for name, value in found.items() if name in produced and name in read}
    folded_nodes = {index for index in cone if all(not out or out in found for out in nodes[index].output)}
    folded = onnx.ModelProto()
    folded.CopyFrom(work)
    del folded.graph.node[:]
    folded.graph.node.extend(node for index, node in enumerate(nodes) if index not in folded_nodes)
    folded.graph.initializer.extend(onnx.numpy_helper.from_array(np.asarray(found[out]), out)
                                    for index in sorted(folded_nodes) for out in nodes[index].output if out)
    return folded, values


def _may_be_large(node: Any, shapes: dict[str, Shape]) -> bool:
    """Whether folding ``node`` (graphsurgeon) could materialise a large tensor (issue 18: a probe must stay small)."""
    return _large(node.op, [out.name for out in node.outputs], shapes)


def _proto_may_be_large(node: onnx.NodeProto, shapes: dict[str, Shape]) -> bool:
    return _large(node.op_type, [out for out in node.output if out], shapes)


def _large(op: str, outputs: list[str], shapes: dict[str, Shape]) -> bool:
    """A node whose outputs have known shapes is folded only if they are small; a growing op with an output
    of unknown shape is not folded at all (shape inference types it from its now-constant inputs)."""
    known = [shapes.get(name) for name in outputs]
    if all(shape is not None for shape in known):
        return any(int(np.prod(shape, dtype=np.float64)) > MAX_FOLDED_ELEMENTS for shape in known)
    return op in _GROWING_OPS


def _is_table_lookup(node: Any) -> bool:
    """Gathers from float tables (embeddings): probe dims would index past the table, and their output
    shape follows from the indices' shape anyway."""
    import onnx_graphsurgeon as gs

    data = node.inputs[0] if node.inputs else None
    return node.op.startswith("Gather") and isinstance(data, gs.Constant) and np.dtype(data.dtype).kind == "f"


def _proto_table_lookup(node: onnx.NodeProto, floats: set[str]) -> bool:
    return node.op_type.startswith("Gather") and bool(node.input) and node.input[0] in floats
