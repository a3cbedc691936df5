"""A model made ready for every method: checked, normalized (constants visible, shared constants untied,
sorted, static shape values frozen) and analysed once.

Why one object: every method, budget search and check reads the same normalized graph and shapes, so the
expensive steps (folding, the shape probe, the analysis) run once per model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.passes import fold_constants, freeze_shape_values, name_nodes, toposort, untie_shared
from onnxprune.measurement.counting import ModelStats, count_model, model_size
from onnxprune.analysis.groups import Analysis, analyze_graph
from onnxprune.runtime.input_shapes import (InputShapes)
from onnxprune.io.files import model_sha256
from onnxprune.ir.graph import export_graph, import_graph
from onnxprune.ir.shapes import infer_static_shapes
from onnxprune.io.weights import float_type, is_stub, release, to_array
from onnxprune.ir.checker import full_check
from onnxprune.ir.layer_table import LAYER_TABLE
from onnxprune.errors import InputError


@dataclass
class Prepared:
    """A model made ready for pruning: the normalized graph and its analysis."""

    original: onnx.ModelProto
    folded: onnx.ModelProto
    normalized: onnx.ModelProto
    shapes: dict
    analysis: Analysis
    sha256: str | None  # None: computed on first use of :attr:`model_sha256` (``analyze`` never needs it)
    unfrozen: onnx.ModelProto | None = None  # ``normalized`` before its static shape values became constants
    # the graph ``normalized`` was exported from and ``analysis`` describes, for passes that only read it
    # (scoring); a pass that rewrites must work on its own import of ``normalized``
    graph: gs.Graph | None = field(default=None, repr=False, compare=False)
    # counts of ``folded`` by the input shapes they were counted at (:func:`model_stats`: count once per run)
    counts: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def model_sha256(self) -> str:
        """SHA-256 of the original model, weights included (:func:`onnxprune.io.files.model_sha256`).

        Why it may be lazy (``prepare(hash_model=False)``): hashing reads every weight once (a tenth of a
        second per 100 MB); plans, sensitivity files and provenance need it, an analysis does not.
        """
        if self.sha256 is None:
            self.sha256 = model_sha256(self.original)
        return self.sha256


def prepare(model: onnx.ModelProto, exclude: tuple[str, ...] = (), allow_io_change: bool = False,
            hash_model: bool = True) -> Prepared:
    """Normalize (constants visible, shared constants untied, sorted) and analyze.

    ``allow_io_change``: KV-cache inputs/outputs may be narrowed (:mod:`onnxprune.analysis.io_change`).
    ``hash_model=False``: leave :attr:`Prepared.model_sha256` to its first use (``analyze`` has none).
    The hash is taken here, at the end, otherwise: preparing names the tensors of ``Constant`` nodes in
    ``model`` (graphsurgeon's import), and plans made so far carry the hash of the model so named.

    The model with constants folded but nothing untied (``folded``) is what "before" numbers are
    counted on: computed weights (``ConstantOfShape → Mul``) are real parameters, and shapes that
    only folding reveals make the MAC count complete.
    """
    check_input(model)
    graph = fold_constants.run(name_nodes.run(toposort.run(import_graph(model)).graph).graph).graph
    folded = export_graph(graph, like=model)
    graph = toposort.run(untie_shared.run(graph).graph).graph
    normalized = export_graph(graph, like=model)
    shapes = infer_static_shapes(normalized, symbol_value=None)
    unfrozen = None
    if shapes.values:  # shape computations that no input shape changes: constants rules can follow
        unfrozen = normalized
        graph = freeze_shape_values.run(graph, shapes.values).graph
        graph = toposort.run(untie_shared.run(graph).graph).graph
        normalized = export_graph(graph, like=model)
        for init in normalized.graph.initializer:
            shapes.setdefault(init.name, tuple(int(d) for d in init.dims))
    analysis = analyze_graph(graph, shapes, exclude, allow_io_change)
    return Prepared(model, folded, normalized, shapes, analysis, model_sha256(model) if hash_model else None, unfrozen,
                    graph)



def check_input(model: onnx.ModelProto) -> None:
    """Refuse a model the ONNX checker rejects, before any pass sees it (a broken input would otherwise
    surface later as a failed verification of *our* output, or worse, be written back out)."""
    newest = onnx.defs.onnx_opset_version()
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version > newest:
            raise InputError(f"model uses opset {entry.version}; the installed onnx supports up to {newest}")
    if not model.graph.output:
        raise InputError("model has no outputs")
    _check_payloads(model)
    _check_finite_weights(model)
    try:
        full_check(model)  # strict shape inference too: a Transpose perm [0,2,3,3] is an input error
    except ValueError:
        return  # over 2 GB in memory: the checker needs a file; io.load_model validated external data
    except MemoryError:
        raise  # the memory budget: reported as such by the CLI, not as a model fault
    except Exception as err:  # onnx.checker.ValidationError and friends
        if "topologically sorted" in str(err):
            _check_sorted_copy(model)  # unsorted nodes are repaired by the toposort pass, not refused
            return
        raise InputError(f"invalid model: {err}".splitlines()[0]) from err



#: standard op → inputs holding stored parameters, from the layer table
WEIGHT_OPS = {row.op: row.params for row in LAYER_TABLE.values() if row.params and not row.domain}



def _check_finite_weights(model: onnx.ModelProto) -> None:
    """NaN/inf in a layer's weights is a broken model, and it would make every pruned channel look wrong
    to the oracle (NaN·0 is NaN).  Masks with -inf live in Add/Where constants and are not checked."""
    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        for index in WEIGHT_OPS.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ():
            init = initializers.get(node.input[index]) if index < len(node.input) else None
            if init is None or not float_type(init.data_type) or (init.data_location == 1 and not is_stub(init)):
                continue
            with np.errstate(all="ignore"):
                try:
                    values = to_array(init)  # a stub: a read-only view of the mapped file
                except (ValueError, TypeError) as err:
                    raise InputError(f"weight '{init.name}' cannot be read ({err})".splitlines()[0]) from err
                finite = bool(np.all(np.isfinite(values)))
                release(init)  # drop the mapped pages this read touched
                if not finite:
                    raise InputError(f"weight '{init.name}' of node '{node.name}' ({node.op_type}) holds "
                                     "non-finite values (NaN or inf)")



def _check_payloads(model: onnx.ModelProto) -> None:
    """Raw initializer bytes must match dims × element size exactly (the checker only catches too few)."""
    for init in model.graph.initializer:
        if not init.raw_data or init.data_type not in onnx.helper.get_all_tensor_dtypes():
            continue
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            continue
        expected = int(np.prod(init.dims, dtype=np.int64)) * itemsize
        if init.data_type in (onnx.TensorProto.STRING,) or itemsize == 0:
            continue
        if len(init.raw_data) != expected and init.data_type not in _PACKED_TYPES:
            raise InputError(f"initializer '{init.name}' holds {len(init.raw_data)} bytes, its dims "
                             f"{list(init.dims)} need {expected}")



_PACKED_TYPES = tuple(getattr(onnx.TensorProto, name) for name in ("INT4", "UINT4", "INT2", "UINT2", "FLOAT4E2M1")
                      if hasattr(onnx.TensorProto, name))



def _check_sorted_copy(model: onnx.ModelProto) -> None:
    """Check a copy whose nodes are in dependency order (Kahn's algorithm over tensor names)."""
    graph = model.graph
    ready = {v.name for v in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = [n for n in pending if not set(n.input) <= ready]
        done = [n for n in pending if set(n.input) <= ready]
        if not done:
            raise InputError(f"invalid model: node '{rest[0].name}' ({rest[0].op_type}) is part of a cycle "
                             "or reads a tensor nothing produces")
        for node in done:
            ordered.append(node)
            ready.update(node.output)
        pending = rest
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.node[:]
    copy.graph.node.extend(ordered)
    try:
        full_check(copy)
    except MemoryError:
        raise  # the memory budget: reported as such by the CLI, not as a model fault
    except Exception as err:
        raise InputError(f"invalid model: {err}".splitlines()[0]) from err



def model_stats(prepared: Prepared, path: str | None = None, input_shapes: InputShapes | None = None) -> ModelStats:
    """Params and MACs (at ``input_shapes``) of the folded model, size of the file (or of the proto when no path).

    The folded model is counted once per input shapes and run (``prepared.counts``): prune, budgets,
    sensitivity and the report all ask for the same "before" figures.
    """
    if input_shapes not in prepared.counts:
        prepared.counts[input_shapes] = count_model(prepared.folded, input_shapes=input_shapes)
    return replace(prepared.counts[input_shapes], size_bytes=model_size(prepared.original, path))

