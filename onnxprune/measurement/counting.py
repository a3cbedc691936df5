"""Parameters, MACs/FLOPs and serialized size of an ONNX model: the numbers every command reports.

Why one module: ``prune`` targets a FLOPs or params budget, ``report`` prints before/after, ``verify``
checks that a rewrite shrank what it claimed to.  If each computed its own numbers they would drift
apart; here they are defined once.

Definitions (the contract every caller relies on):

* **params** — elements of the stored weights that nodes read: floating-point initializers and
  floating-point ``Constant`` tensors consumed by at least one node (also inside If/Loop/Scan
  bodies), plus integer initializers/Constants read at a *quantized weight* input
  (``DequantizeLinear`` x, ``QLinearConv``/``ConvInteger`` w, ``QLinearMatMul``/``MatMulInteger`` b),
  so a QDQ model does not report only its scales.  Integer shape constants (Reshape targets, axes)
  are not parameters.  A tensor read by several nodes counts once, for its first consumer in graph
  order; unconsumed initializers count zero, which is what cleanup will remove anyway.
  BatchNormalization statistics count (they are stored floats), unlike ``torch``'s ``parameters()``.
* **macs** — multiply-accumulates of the matrix-product ops for one run of the model at stated input
  shapes (``input_shapes``: ``--input-shape`` or the calibration data's, :mod:`onnxprune.runtime.input_shapes`),
  every remaining symbolic dimension set to 1 (:func:`onnxprune.ir.shapes.infer_static_shapes` with
  ``symbol_value=1``), through shape inference of the whole graph.  Exports carry a symbolic batch, so
  without shapes this is *per sample*; a symbolic image size or sequence length set to 1 makes the
  figure meaningless, and :attr:`ModelStats.counted_at` says so (its ``label()`` is printed with every
  figure).  A model with a fixed batch of 8 is counted for its whole batch, consistently across all ops.
  Modelled ops (rows of :data:`onnxprune.ir.layer_table.LAYER_TABLE` with a MAC formula): Conv,
  ConvTranspose, Gemm, MatMul (any operand constant or not), their integer/QLinear and
  ``com.microsoft`` Fused variants, LSTM/GRU/RNN (the gate matrix products) and two-operand Einsum; the
  ``com.microsoft`` attention ops and MatMulNBits (:mod:`onnxprune.measurement.counting_contrib`, which also
  lists the fused element-wise and normalization ops as cheap).  Bias additions are not MACs.
* Everything else in the standard domain is treated as *cheap*: elementwise, normalization, pooling,
  resizing, reductions and data movement cost O(elements) and are ignored, as in most MAC counters.
  What we know is heavy but do not model (:data:`_HEAVY_UNMODELLED`), ops with subgraphs
  (If/Loop/Scan), ops of custom domains (cost unknown) and modelled ops whose shapes could not be
  inferred are listed in ``uncounted_ops`` so a report can say its MACs are a lower bound.
* **size_bytes** — bytes on disk: the file plus its external-data files when ``path`` is given,
  else the serialized proto plus the bytes its external-data references declare.

Model-local functions are inlined first so their bodies are counted like any other nodes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import onnx
import onnx.inliner

from onnxprune.errors import InputError, ModelLoadError, UnsupportedModelError
from onnxprune.runtime.input_shapes import CountedAt, InputShapes, counted_at
from onnxprune.io import weights
from onnxprune.measurement.counting_contrib import (CHEAP as _CHEAP_CONTRIB, attention_macs,
    group_query_attention_macs, matmul_nbits_macs, multi_head_attention_macs)
from onnxprune.ir.layer_table import LAYER_TABLE, attributes, layout_of, normalized_domain
from onnxprune.ir.shapes import Shape, infer_static_shapes
from onnxprune.ir.graph import subgraphs

ShapeMap = Mapping[str, Shape]
MacRule = Callable[[onnx.NodeProto, ShapeMap], "int | None"]


@dataclass(frozen=True)
class ModelStats:
    """Counts for one model; the dicts are keyed like :func:`_node_keys` and must not be mutated."""

    params: int
    macs: int
    size_bytes: int
    node_macs: dict[str, int]
    node_params: dict[str, int]
    uncounted_ops: tuple[str, ...]
    counted_at: CountedAt | None = None  # the input shapes the MACs hold for (None: not recorded)

    @property
    def flops(self) -> int:
        """FLOPs as 2 × MACs (one multiply plus one add), the convention of papers and of fvcore."""
        return 2 * self.macs

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy, so reports and plans can embed the counts verbatim (the shapes they
        hold for are ``counted_at.to_dict()``; reports add them, :func:`onnxprune.reports.prune_report.shape_fields`)."""
        return {
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "size_bytes": self.size_bytes,
            "node_macs": dict(self.node_macs),
            "node_params": dict(self.node_params),
            "uncounted_ops": list(self.uncounted_ops),
        }


# --------------------------------------------------------------------------------------------
# MAC rules: one function per op family; each returns None when a needed shape is unknown.
# --------------------------------------------------------------------------------------------


def _input_shape(node: onnx.NodeProto, index: int, shapes: ShapeMap) -> Shape | None:
    """Static shape of input ``index``, None when absent or unknown."""
    if index >= len(node.input) or not node.input[index]:
        return None
    return shapes.get(node.input[index])


def _output_shape(node: onnx.NodeProto, shapes: ShapeMap) -> Shape | None:
    """Static shape of the first output, None when unknown."""
    return shapes.get(node.output[0]) if node.output and node.output[0] else None


def _conv_macs(node: onnx.NodeProto, shapes: ShapeMap, w_index: int = 1) -> int | None:
    """Each output element reads Cin/group × prod(kernel) inputs; W is (Cout, Cin/group, *kernel)."""
    weight, out = _input_shape(node, w_index, shapes), _output_shape(node, shapes)
    if weight is None or out is None or len(weight) < 2:
        return None
    return math.prod(out) * math.prod(weight[1:])


def _conv_transpose_macs(node: onnx.NodeProto, shapes: ShapeMap, x_index: int = 0, w_index: int = 1) -> int | None:
    """Each input element scatters into Cout/group × prod(kernel) outputs; W is (Cin, Cout/group, *k).

    Counting from the input is exact whatever the strides, pads and output_padding.
    """
    x, weight = _input_shape(node, x_index, shapes), _input_shape(node, w_index, shapes)
    if x is None or weight is None or len(weight) < 2:
        return None
    return math.prod(x) * math.prod(weight[1:])


def _gemm_macs(node: onnx.NodeProto, shapes: ShapeMap, a_index: int = 0, b_index: int = 1) -> int | None:
    """M×N×K with transA/transB; M is the (symbolic → 1) batch for a Linear layer.

    transA cannot change the product M·K, only transB decides which dim of B is N; both are read
    (through the layer table's layout) so the code states the operator's definition rather than
    relying on that coincidence.
    """
    a, b = _input_shape(node, a_index, shapes), _input_shape(node, b_index, shapes)
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return None
    layout, attrs = layout_of(node), attributes(node)
    k_axis = layout.input_axis(attrs, 2)
    m, k = a[1 - k_axis], a[k_axis]
    n = b[layout.weight_axes(attrs, 2).outputs]
    return m * n * k


def _matmul_macs(node: onnx.NodeProto, shapes: ShapeMap, a_index: int = 0, b_index: int = 1) -> int | None:
    """numpy matmul semantics: broadcast(batch dims) × M × N × K, 1-D operands promoted and dropped."""
    a, b = _input_shape(node, a_index, shapes), _input_shape(node, b_index, shapes)
    if not a or not b:
        return None
    a = (1, *a) if len(a) == 1 else a
    b = (*b, 1) if len(b) == 1 else b
    try:
        batch = np.broadcast_shapes(a[:-2], b[:-2])
    except ValueError:
        return None
    return math.prod(batch) * a[-2] * b[-1] * a[-1]


def _recurrent_macs(node: onnx.NodeProto, shapes: ShapeMap, *_: int) -> int | None:
    """seq × batch × directions × (gates·hidden) × (input + hidden): the W·x and R·h products per step.

    X is (seq, batch, input) or, with layout=1, (batch, seq, input): the product of its first two
    dims is the same.  W is (directions, gates·hidden, input), R is (directions, gates·hidden, hidden),
    so the gate count (LSTM 4, GRU 3, RNN 1) needs no op-specific code.  Peepholes and the
    elementwise gate arithmetic are ignored like other cheap ops.
    """
    x, w, r = (_input_shape(node, i, shapes) for i in range(3))
    if x is None or w is None or r is None or len(x) != 3 or len(w) != 3 or len(r) != 3:
        return None
    return x[0] * x[1] * w[0] * w[1] * (w[2] + r[2])


def _einsum_letter_sizes(equation: str, operand_shapes: list[Shape]) -> dict[str, int] | None:
    """Size of every index letter (``"..."`` as one pseudo-letter per broadcast dim), None if inconsistent."""
    sizes: dict[str, int] = {}
    terms = equation.replace(" ", "").split("->")[0].split(",")
    ellipses: list[Shape] = []
    for term, shape in zip(terms, operand_shapes):
        head, dots, tail = term.partition("...")
        n_ell = len(shape) - len(head) - len(tail)
        if n_ell < 0 or (n_ell and not dots):
            return None
        labelled = list(zip(head, shape[: len(head)])) + list(zip(tail, shape[len(shape) - len(tail) :]))
        ellipses.append(shape[len(head) : len(head) + n_ell])
        for letter, dim in labelled:
            if sizes.get(letter, 1) not in (1, dim) and dim != 1:
                return None
            sizes[letter] = max(sizes.get(letter, 1), dim)
    try:
        broadcast = np.broadcast_shapes(*ellipses)
    except ValueError:
        return None
    sizes.update({f"...{i}": int(d) for i, d in enumerate(broadcast)})
    return sizes


def _einsum_macs(node: onnx.NodeProto, shapes: ShapeMap, *_: int) -> int | None:
    """A two-operand contraction multiplies once per combination of all its index letters.

    One operand (transpose/trace/reduction) is cheap; three or more depend on the contraction order
    onnxruntime picks, so they are reported as uncounted rather than guessed.
    """
    equation = next((a.s.decode() for a in node.attribute if a.name == "equation"), "")
    operands = [_input_shape(node, i, shapes) for i in range(len(node.input))]
    if len(operands) == 1:
        return 0
    if len(operands) != 2 or any(shape is None for shape in operands):
        return None
    sizes = _einsum_letter_sizes(equation, operands)  # type: ignore[arg-type]
    return None if sizes is None else math.prod(sizes.values())


#: MAC formula (a layer-table row's ``macs``) → rule, called with the row's ``mac_inputs``.  A new op
#: with an existing formula is one row of :data:`onnxprune.ir.layer_table.LAYER_TABLE`; a new formula
#: is one entry here, plus a test.
_MAC_FORMULAS: dict[str, Callable[..., "int | None"]] = {
    "conv": _conv_macs,
    "conv_transpose": _conv_transpose_macs,
    "gemm": _gemm_macs,
    "matmul": _matmul_macs,
    "recurrent": _recurrent_macs,
    "einsum": _einsum_macs,
}

#: Fused ``com.microsoft`` ops with their own formulas (not weighted layers of the table).
_CONTRIB_MAC_RULES: dict[tuple[str, str], MacRule] = {
    ("com.microsoft", "Attention"): attention_macs,
    ("com.microsoft", "MultiHeadAttention"): multi_head_attention_macs,
    ("com.microsoft", "GroupQueryAttention"): group_query_attention_macs,
    ("com.microsoft", "MatMulNBits"): matmul_nbits_macs,
}


@cache
def _mac_rule(domain: str, op_type: str) -> MacRule | None:
    """The MAC rule of a (normalized domain, op type), from its layer-table row; None: not modelled."""
    row = LAYER_TABLE.get((domain, op_type))
    if row is None or row.macs is None:
        return _CONTRIB_MAC_RULES.get((domain, op_type))
    formula, operands = _MAC_FORMULAS[row.macs], row.mac_inputs
    return lambda node, shapes: formula(node, shapes, *operands)


#: Standard ops whose cost rivals a matrix product but which are not modelled: listed as uncounted.
_HEAVY_UNMODELLED: frozenset[str] = frozenset({"Attention", "DeformConv", "DFT", "STFT"})

#: (op type, input index) where an *integer* constant is a weight (quantized models), see module doc.
_QUANT_WEIGHT_SLOTS: frozenset[tuple[str, int]] = frozenset(
    {("DequantizeLinear", 0), ("QLinearConv", 3), ("ConvInteger", 1), ("QLinearMatMul", 3), ("MatMulInteger", 1)}
)

_SUBGRAPH_ATTRS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


_norm_domain = normalized_domain


def _node_macs(node: onnx.NodeProto, shapes: ShapeMap) -> tuple[int, str | None]:
    """MACs of one top-level node and, when they are not (fully) known, the label to report."""
    domain = _norm_domain(node.domain)
    label = f"{domain}.{node.op_type}" if domain else node.op_type
    if any(attr.type in _SUBGRAPH_ATTRS for attr in node.attribute):
        return 0, label
    rule = _mac_rule(domain, node.op_type)
    if rule is not None:
        macs = rule(node, shapes)
        return (0, label) if macs is None else (int(macs), None)
    if domain == "com.microsoft" and node.op_type in _CHEAP_CONTRIB:
        return 0, None
    if domain or node.op_type in _HEAVY_UNMODELLED:
        return 0, label
    return 0, None


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


def _is_float_type(data_type: int) -> bool:
    """Every floating-point element type, including the float8/float6/float4 families."""
    name = onnx.TensorProto.DataType.Name(data_type)
    return name.startswith("FLOAT") or name in ("DOUBLE", "BFLOAT16")


def _is_int_type(data_type: int) -> bool:
    """Integer element types that can hold quantized weights (not BOOL/STRING/COMPLEX)."""
    return onnx.TensorProto.DataType.Name(data_type).startswith(("INT", "UINT"))


def _constant_source(node: onnx.NodeProto) -> tuple[int, bool] | None:
    """(elements, is_float) of a Constant node's value; None for non-numeric values."""
    for attr in node.attribute:
        if attr.name == "value":
            return math.prod(attr.t.dims), _is_float_type(attr.t.data_type)
        if attr.name == "sparse_value":
            return math.prod(attr.sparse_tensor.dims), _is_float_type(attr.sparse_tensor.values.data_type)
        if attr.name == "value_float":
            return 1, True
        if attr.name == "value_floats":
            return len(attr.floats), True
        if attr.name in ("value_int", "value_ints"):
            return (1 if attr.name == "value_int" else len(attr.ints)), False
    return None


def _param_sources(graph: onnx.GraphProto) -> dict[str, tuple[int, bool]]:
    """Tensor name → (elements, is_float) for every stored numeric constant defined in ``graph``."""
    sources: dict[str, tuple[int, bool]] = {}
    for init in graph.initializer:
        if _is_float_type(init.data_type) or _is_int_type(init.data_type):
            sources[init.name] = (math.prod(init.dims), _is_float_type(init.data_type))
    for sparse in graph.sparse_initializer:
        sources[sparse.values.name] = (math.prod(sparse.dims), _is_float_type(sparse.values.data_type))
    for node in graph.node:
        if node.op_type == "Constant" and _norm_domain(node.domain) == "" and node.output:
            source = _constant_source(node)
            if source is not None:
                sources[node.output[0]] = source
    return sources


def _names_read_by(graph: onnx.GraphProto) -> Iterator[str]:
    """Every tensor name read by a node of ``graph`` or of its nested subgraphs (outer scope included)."""
    for node in graph.node:
        yield from node.input
        for sub in subgraphs(node):
            yield from _names_read_by(sub)


def _params_per_node(graph: onnx.GraphProto) -> list[int]:
    """Params charged to each node of ``graph``: constants it is the first to read, plus its bodies'.

    Outer-scope constants read inside a body are charged to the node owning the body; constants
    defined inside a body are charged there too, so the sum over top-level nodes is the model total.
    """
    sources = _param_sources(graph)
    claimed: set[str] = set()
    per_node: list[int] = []
    for node in graph.node:
        total = 0
        reads = [(name, (node.op_type, i) in _QUANT_WEIGHT_SLOTS) for i, name in enumerate(node.input)]
        for sub in subgraphs(node):
            reads.extend((name, False) for name in _names_read_by(sub))
            total += sum(_params_per_node(sub))
        for name, weight_slot in reads:
            source = sources.get(name)
            if source is None or name in claimed or not (source[1] or weight_slot):
                continue
            claimed.add(name)
            total += source[0]
        per_node.append(total)
    return per_node


def _node_keys(nodes: list[onnx.NodeProto]) -> list[str]:
    """Unique, stable keys: the node name, else ``<op_type>_<index>``.

    Real names win: a generated key that equals some node's real name, or a duplicated real name,
    gets ``#<index>`` appended, so no two nodes ever share (and silently sum into) one entry.
    """
    real = {node.name for node in nodes if node.name}
    used: set[str] = set()
    keys: list[str] = []
    for index, node in enumerate(nodes):
        key = node.name or f"{node.op_type}_{index}"
        while key in used or (not node.name and key in real):
            key = f"{key}#{index}"
        used.add(key)
        keys.append(key)
    return keys


# --------------------------------------------------------------------------------------------
# Size
# --------------------------------------------------------------------------------------------

_SUB_BYTE_BITS = {"INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4, "INT2": 2, "UINT2": 2, "FLOAT6E2M3": 6, "FLOAT6E3M2": 6}


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and attribute tensors of ``graph`` and its subgraphs: everything that may be external."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
        for sub in subgraphs(node):
            yield from _all_tensors(sub)


def _external_refs(model: onnx.ModelProto, in_file: bool = True) -> list[tuple[str, int]]:
    """(location, byte length) of every tensor stored outside the proto.

    ``length`` is written by every onnx saver; when absent we derive it from dims and element size.
    ``in_file=False`` leaves out stubs of weights that live inside a single ``.onnx`` file (mapped by
    :mod:`onnxprune.io.inline_weights`): the file's own size already counts them.
    """
    refs: list[tuple[str, int]] = []
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        if not in_file and weights.in_file_stub(tensor):
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        if "length" in info:
            length = int(info["length"])
        else:
            name = onnx.TensorProto.DataType.Name(tensor.data_type)
            bits = _SUB_BYTE_BITS.get(name) or 8 * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            length = (math.prod(tensor.dims) * bits + 7) // 8
        refs.append((info.get("location", ""), length))
    return refs


def _file_size(path: Path) -> int:
    """Size of a file the caller named, as a typed error when it cannot be read."""
    try:
        return path.stat().st_size
    except OSError as err:
        raise InputError(f"{path}: cannot read the model file size ({err.strerror})") from err


def _size_on_disk(model: onnx.ModelProto, path: Path) -> int:
    """The model file plus each distinct external-data file it references inside its folder.

    When the caller loaded the external data into ``model`` the references are gone from it; the file
    is then smaller than the proto, and we re-read just its header (tensors stay on disk) to find them.
    A reference we cannot stat safely (missing, or outside the model folder) counts its declared length.
    """
    size = _file_size(path)
    refs = _external_refs(model, in_file=False)
    if not refs and size < model.ByteSize():
        try:
            refs = _external_refs(onnx.load(os.fspath(path), load_external_data=False))
        except Exception as err:  # protobuf raises several unrelated types
            raise ModelLoadError(f"{path}: cannot parse the model file: {err}".splitlines()[0]) from err
    base = path.resolve().parent
    by_location: dict[str, int] = {}
    for location, length in refs:
        by_location[location] = by_location.get(location, 0) + length
    for location, declared in sorted(by_location.items()):
        target = (base / location).resolve()
        inside = bool(location) and target.is_relative_to(base) and target.is_file()
        size += target.stat().st_size if inside else declared
    return size


def model_size(model: onnx.ModelProto, path: str | os.PathLike[str] | None = None) -> int:
    """Bytes the model occupies: on disk when a path is known, else proto plus external payloads.

    Why public: a caller that already holds the counts of a model (the pipeline counts before and after
    once) only needs the file's size, and re-counting would re-run shape inference of the whole graph."""
    if path is not None:
        return _size_on_disk(model, Path(path))
    return model.ByteSize() + sum(length for _, length in _external_refs(model))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _densified(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every ``sparse_initializer`` as a dense initializer: shape inference does not read sparse
    ones, so the layers using them (``onnxprune sparsify --sparse-format``) would count no MACs."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for sparse in copy.graph.sparse_initializer:
        values = onnx.numpy_helper.to_array(sparse.values)
        dense = np.zeros([int(d) for d in sparse.dims], dtype=values.dtype)
        indices = onnx.numpy_helper.to_array(sparse.indices).astype(np.int64)
        if indices.ndim == 2:  # [NNZ, rank] coordinates; otherwise linear positions
            indices = np.ravel_multi_index(tuple(indices.T), dense.shape) if indices.size else indices.ravel()
        dense.ravel()[indices] = values
        copy.graph.initializer.append(onnx.numpy_helper.from_array(dense, sparse.values.name))
    del copy.graph.sparse_initializer[:]
    return copy


def count_model(model: onnx.ModelProto, *, path: str | os.PathLike[str] | None = None,
                input_shapes: InputShapes | None = None) -> ModelStats:
    """Count params, MACs at ``input_shapes`` (per sample without) and size of ``model`` (see the module
    docstring for definitions).

    ``path`` is where ``model`` lives on disk; it only serves ``size_bytes`` (the model is not
    re-loaded from it), so a report states the real file footprint including external data.
    ``input_shapes`` must have been checked against the model (:func:`onnxprune.runtime.input_shapes.resolve`);
    a pruned model keeps its inputs, so before and after are counted at the same shapes.
    The input model is not modified.
    """
    size = model_size(model, path)
    if len(model.functions):
        try:
            model = onnx.inliner.inline_local_functions(model)
        except Exception as err:  # the inliner raises onnx's C++ exceptions as several types
            raise UnsupportedModelError(f"cannot inline model-local functions: {err}".splitlines()[0]) from err
    if len(model.graph.sparse_initializer):
        model = _densified(model)
    at = counted_at(model, input_shapes)
    shapes = infer_static_shapes(model, symbol_value=1, input_shapes=at.as_dict())
    nodes = list(model.graph.node)
    keys = _node_keys(nodes)
    node_params = dict(zip(keys, _params_per_node(model.graph)))
    node_macs: dict[str, int] = {}
    uncounted: set[str] = set()
    for key, node in zip(keys, nodes):
        node_macs[key], label = _node_macs(node, shapes)
        if label is not None:
            uncounted.add(label)
    return ModelStats(
        params=sum(node_params.values()),
        macs=sum(node_macs.values()),
        size_bytes=size,
        node_macs=node_macs,
        node_params=node_params,
        uncounted_ops=tuple(sorted(uncounted)),
        counted_at=at,
    )


def _scaled(value: float, base: float, units: tuple[str, ...], digits: Callable[[float], int]) -> tuple[str, str]:
    """Pick the unit after rounding, so 999_999 prints as "1.00M" rather than "1000.00K"."""
    index = 0
    while True:
        shown = value / base**index
        text = f"{shown:.{digits(abs(shown))}f}"
        if abs(float(text)) < base or index == len(units) - 1:
            return text, units[index]
        index += 1


def format_count(n: int | float) -> str:
    """Human-readable count with decimal prefixes (1234 → "1.23K"), for params, MACs and FLOPs.

    Integers below 1000 print exactly; everything else gets two decimals.
    """
    if isinstance(n, (int, np.integer)) and abs(n) < 1000:
        return str(int(n))
    text, unit = _scaled(float(n), 1000.0, ("", "K", "M", "G", "T", "P", "E"), lambda _: 2)
    return f"{text}{unit}"


def _three_significant(value: float) -> int:
    """Decimals giving three significant digits after rounding (9.996 → "10.0", not "10.00")."""
    for decimals, limit in ((2, 10.0), (1, 100.0)):
        if round(value, decimals) < limit:
            return decimals
    return 0


def format_bytes(n: int) -> str:
    """Binary-prefixed size with three significant digits ("12.3 KiB", "4.00 MiB"), as file managers show."""
    if abs(n) < 1024:
        return f"{int(n)} B"
    text, unit = _scaled(float(n), 1024.0, ("B", "KiB", "MiB", "GiB", "TiB", "PiB"), _three_significant)
    return f"{text} {unit}"


def _ratio(before: int, after: int) -> float | None:
    """after / before: the fraction kept.  Undefined (None) when growing from nothing."""
    if before == 0:
        return 1.0 if after == 0 else None
    return after / before


def compare_stats(before: ModelStats, after: ModelStats) -> dict[str, dict[str, Any]]:
    """Before/after/ratio per metric, the shape every report and budget check consumes.

    ``ratio`` is ``after / before`` (0.25 means a quarter remains), ``None`` when ``before`` is zero
    and ``after`` is not, so JSON output never carries ``inf``/``NaN``.
    """
    result: dict[str, dict[str, Any]] = {}
    for metric in ("params", "macs", "flops", "size_bytes"):
        old, new = getattr(before, metric), getattr(after, metric)
        result[metric] = {"before": old, "after": new, "ratio": _ratio(old, new)}
    return result
