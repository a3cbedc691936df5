"""Static shapes for analysis and counting, even when the model has symbolic dimensions.

Why: rules must map a channel axis through Reshape/Flatten, which needs concrete dimensions, and
counting needs per-sample MACs.  Exports usually carry a symbolic batch (and sequence) dimension.
We substitute every symbolic or unknown *graph input* dimension by a concrete value and let ONNX
shape inference (with data propagation, so Shape→Gather→Reshape chains resolve) fill in the rest.

Two substitutions serve two purposes:

* ``symbol_value=1`` gives per-sample shapes for counting parameters and MACs;
* the *probe* gives each distinct symbol its own small prime (:data:`PROBE_PRIMES`), and then a second,
  different set (:data:`CHECK_PRIMES`).  A dimension is **static** only if it is the same in both probes
  (:meth:`ProbeShapes.static_axes`); anything that follows a symbol — ``ceil(W / 2)`` after a strided conv,
  ``S + P`` of a KV cache — changes between them.  Deciding by divisibility by the probe value, as
  earlier versions did, called ``ceil(10007 / 2) = 5004`` static and baked it into a run-time Reshape
  target (a wrong model at every other width).

Why a probe stays small: constant folding evaluates shape computations at the probe's values, and a
causal mask ``[S, S + P]`` or an ``Expand`` of the batch made from them is a real tensor (with values
near 10⁴ a KV-cache decoder needed 11.7 GB to analyze).  Values stay below a few hundred, and folding
never materialises a tensor above :data:`onnxprune.ir.shape_folding.MAX_FOLDED_ELEMENTS` — whatever the number of symbols.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np
import onnx

from onnxprune.errors import UnsupportedModelError
from onnxprune.ir.shape_dependence import dynamic_values, is_static
from onnxprune.ir.shape_folding import fold_shape_reads

Shape = tuple[int, ...]

#: Probe values of symbolic dims (assignment A): symbol i gets PROBE_PRIMES[i].  Small, so nothing the
#: probe materialises grows with the model's symbols; primes, so products of symbols stay distinct.
PROBE_PRIMES: tuple[int, ...] = (13, 17, 19, 23, 29, 31, 37, 41, 43, 47)

#: The second assignment (B): a dim equal in both probes is static.  Far above A, so that dims deep in a
#: network still differ: a Swin stage at stride 32 pads its map to a multiple of the 7-wide window, and
#: only a width above 7·32 puts B's map in another multiple than A's.
CHECK_PRIMES: tuple[int, ...] = (307, 311, 313, 317, 331, 337, 347, 349, 353, 359)

#: A and B for models that only accept sizes divisible by 32 (detectors), tried when A leaves tensors
#: untyped: every value a multiple of 32, B's still well apart from A's.
STRIDED_PRIMES: tuple[tuple[int, ...], tuple[int, ...]] = (tuple(32 * p for p in PROBE_PRIMES),
                                                           tuple(32 * p for p in (29, 31, 37, 41, 43, 47, 53, 59, 61, 67)))


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


def is_symbolic(dim: int, primes: tuple[int, ...] = PROBE_PRIMES) -> bool:
    """Whether a probe dimension comes from a symbolic (batch, sequence) dim: a multiple of a probe value."""
    return any(dim % prime == 0 for prime in primes)


class ProbeShapes(dict):
    """Shapes at probe assignment A, and which of their axes are static (the same at assignment B).

    Why: a rule or edit that must tell a static dim from one that depends on a symbol (batch, sequence,
    width) asks :meth:`static_axes`.  ``primes`` are the values A gave the symbols (not always
    :data:`PROBE_PRIMES`, see :func:`infer_static_shapes`), ``check_primes`` those of B and ``alt`` the
    shapes at B.  Without symbols every dim is static; without a B probe (too few values fit below a
    capping table) a dim is taken for symbolic when a probe value divides it, the conservative reading.
    """

    primes: tuple[int, ...] = PROBE_PRIMES
    check_primes: tuple[int, ...] = ()
    alt: "dict[str, Shape] | None" = None
    values: "dict[str, Any]" = {}  # small computed shape values that are the same at both assignments

    def static_axes(self, name: str) -> tuple[bool, ...] | None:
        """Per axis of tensor ``name``: whether its size is the same at every assignment of the symbols."""
        shape = self.get(name)
        if shape is None:
            return None
        if not self.primes:
            return (True,) * len(shape)
        if self.alt is None:
            return tuple(not is_symbolic(d, self.primes) for d in shape)
        other = self.alt.get(name)
        if other is None or len(other) != len(shape):
            return (False,) * len(shape)  # unknown at B: nothing can be called static
        return tuple(a == b for a, b in zip(shape, other))


class _Filler:
    """The concrete value of each symbolic dimension name: one constant, or one prime per symbol."""

    def __init__(self, symbol_value: int | None, primes: tuple[int, ...] = PROBE_PRIMES):
        self.symbol_value = symbol_value
        self.primes = primes
        self.assigned: dict[str, int] = {}

    def __call__(self, symbol: str) -> int:
        if self.symbol_value is not None:
            return self.symbol_value
        if symbol not in self.assigned:
            n = len(self.assigned)
            self.assigned[symbol] = self.primes[n % len(self.primes)] + 100 * (n // len(self.primes))
        return self.assigned[symbol]


def infer_static_shapes(model: onnx.ModelProto, symbol_value: int | None = 1,
                        primes: tuple[int, ...] | None = None,
                        check_primes: tuple[int, ...] | None = None,
                        input_shapes: Mapping[str, Shape] | None = None) -> ProbeShapes:
    """Concrete shapes of every tensor whose shape inference can determine fully.

    ``symbol_value=None`` selects the probe: one distinct prime per symbolic dim name (an unnamed
    unknown dim gets its own) at assignment A, then again at assignment B to learn which dims are static
    (:class:`ProbeShapes`).  Tensors whose shape stays partly unknown are omitted.  The input model is not
    modified.

    Probe values too large for the model: a learned position table (or a causal mask buffer) caps the
    sequence length, and a ``Slice``/``Gather`` of it with bounds computed from the probe sequence
    length clamps or overruns, so everything downstream is unknown.  Then both probes use primes below the
    smallest such table that divide no static dim of the graph inputs and outputs (A the largest), and
    the retry is kept unless it types fewer tensors.  Models that only accept sizes divisible by a stride
    (detectors: ``Upsample`` + ``Concat`` of strided maps) are retried with the values times 32.  Every
    choice depends only on what pruning never changes (table rows, graph interface), so a pruned model
    is probed with the same values.

    ``primes`` (with ``symbol_value=None``) probes with those values (and ``check_primes`` for B) and
    skips the search: the shape check of a rewrite passes the values its source was analysed with.
    ``input_shapes`` (with ``symbol_value`` only) fixes the whole shape of the graph inputs it names
    before ``symbol_value`` fills the remaining symbolic dims: counting and latency at the user's
    ``--input-shape`` (:mod:`onnxprune.runtime.input_shapes` checks the values against the model first).  The
    analysis probes never take it: they need two assignments of every symbol to tell static dims.
    """
    if input_shapes and symbol_value is None:
        raise ValueError("input_shapes needs a symbol_value (the analysis probe uses primes only)")
    if symbol_value is not None:
        shapes = _probe(model, _Filler(symbol_value), input_shapes)[0]
        shapes.primes, shapes.values = (), {}
        return shapes
    probes = _Probes(model)
    if primes is None:
        primes, check_primes = _choose_primes(model, probes)
    result, _, symbols = probes.at(primes)
    result.primes = primes if symbols else ()
    if symbols and check_primes:
        result.check_primes = check_primes
        result.alt = probes.at(check_primes)[0]
        dynamic = dynamic_values(model, result.static_axes)
        result.values = {name: value for name, value in result.values.items()
                         if name in result.alt.values and _same_array(value, result.alt.values[name])
                         and is_static(dynamic.get(name, True))}
    elif symbols:
        result.values = {}  # no second assignment: no value can be shown not to follow a symbol
    return result


class _Probes:
    """The probes of one model by their values, each run once (choosing the values probes A and B too)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.done: dict[tuple[int, ...], tuple[ProbeShapes, onnx.ModelProto, int]] = {}

    def at(self, primes: tuple[int, ...]) -> tuple["ProbeShapes", onnx.ModelProto, int]:
        if primes not in self.done:
            self.done[primes] = _probe(self.model, _Filler(None, primes))
        return self.done[primes]


def _same_array(a: Any, b: Any) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))


def _choose_primes(model: onnx.ModelProto, probes: _Probes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The values of assignments A and B for ``model`` (see :func:`infer_static_shapes`)."""
    shapes, probe, symbols = probes.at(PROBE_PRIMES)
    if not symbols:
        return PROBE_PRIMES, CHECK_PRIMES
    best, best_untyped = (PROBE_PRIMES, CHECK_PRIMES), len(_untyped_outputs(probe, shapes))
    cap = _table_cap(model, probe, shapes, probes.at(CHECK_PRIMES)[0])
    if cap is not None and cap <= max(PROBE_PRIMES[:symbols]):
        small = _small_primes(cap, 2 * symbols, _boundary_dims(model)) or \
            _small_primes(cap, symbols, _boundary_dims(model))
        if small:
            candidate = (small[:symbols], small[symbols:])
            retry, retry_probe, _ = probes.at(candidate[0])
            untyped = len(_untyped_outputs(retry_probe, retry))
            if untyped <= best_untyped:
                best, best_untyped = candidate, untyped
    if best_untyped and cap is None:
        retry, retry_probe, _ = probes.at(STRIDED_PRIMES[0])
        if len(_untyped_outputs(retry_probe, retry)) < best_untyped:
            best = STRIDED_PRIMES
    return best


def infer_shapes_at(model: onnx.ModelProto, input_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
    """Shapes of every tensor inference can determine when the graph inputs have exactly ``input_shapes``.

    Why: checking a rewrite at a real input shape needs the original's output shapes there; inference
    gives them without loading the weights into a runtime.
    """
    try:
        return _probe(model, _Filler(1), input_shapes)[0]
    except UnsupportedModelError:
        return {}


def _probe(model: onnx.ModelProto, fill: _Filler, input_shapes: Mapping[str, Shape] | None = None,
           ) -> tuple[ProbeShapes, onnx.ModelProto, int]:
    """Shapes of ``model`` with the inputs named in ``input_shapes`` set to those shapes and the other
    symbolic input dims set by ``fill``; also the probe copy and the number of distinct symbols."""
    probe = _without_large_weights(model)
    initializer_names = {init.name for init in probe.graph.initializer}
    unnamed = 0
    for value in probe.graph.input:
        if value.name in initializer_names or not value.type.HasField("tensor_type"):
            continue
        if input_shapes and value.name in input_shapes:
            value.type.tensor_type.shape.CopyFrom(onnx.TensorShapeProto(
                dim=[onnx.TensorShapeProto.Dimension(dim_value=int(d)) for d in input_shapes[value.name]]))
            continue
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            name = dim.dim_param if dim.HasField("dim_param") and dim.dim_param else f"?{unnamed}"
            unnamed += 0 if dim.dim_param else 1
            dim.Clear()
            dim.dim_value = fill(name)
    hints = _value_info_hints(probe, fill)
    del probe.graph.value_info[:]
    for out in probe.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    values: dict[str, Any] = {}
    shapes = _infer_and_fold(probe, _collect(_infer(probe)), values)
    if _untyped_outputs(probe, shapes) and _has_opaque_ops(probe):
        shapes = _fill_gaps(probe, shapes, hints)
    result = ProbeShapes(shapes)
    result.values = values
    return result, probe, len(fill.assigned)


#: Computed integer values larger than this are not recorded (shape vectors and bounds are tiny; a
#: folded mask or position table is not a shape value).
MAX_SHAPE_VALUE_ELEMENTS = 64


def _infer_and_fold(probe: onnx.ModelProto, shapes: dict[str, Shape], values: dict[str, Any]) -> dict[str, Shape]:
    """Fold run-time shape computations with the shapes known so far and re-infer, until a round types
    nothing new; ``values`` receives the small computed values the folding found."""
    computed = {out for node in probe.graph.node if node.op_type != "Constant" for out in node.output}
    folded = probe
    for _ in range(MAX_SHAPE_ROUNDS):
        result = fold_shape_reads(folded, shapes)  # each round starts from what the last one folded
        if result is None:
            break
        folded, constants = result
        found = {name: value for name, value in constants.items() if name in computed}
        values.update({name: value for name, value in found.items()
                       if value.size <= MAX_SHAPE_VALUE_ELEMENTS and value.dtype.kind in "iu"})
        try:
            more = _collect(_infer(folded))
        except UnsupportedModelError:
            break
        more.update({name: tuple(int(d) for d in value.shape) for name, value in found.items()})
        if not set(more) - set(shapes):
            break
        shapes = {**more, **shapes}
    return shapes


def _untyped_outputs(probe: onnx.ModelProto, shapes: dict[str, Shape]) -> list[str]:
    """Node outputs whose shape the probe could not determine."""
    return [name for node in probe.graph.node for name in node.output if name and name not in shapes]


# ---------------------------------------------------------------------------------------------
# Gaps after custom-domain ops: onnxruntime's symbolic shape inference, then the model's value_info.


Typed = dict[str, tuple[Shape, int]]  # tensor -> (shape, ONNX element type)


def _has_opaque_ops(probe: onnx.ModelProto) -> bool:
    """Whether some node has no ONNX schema (a custom domain such as ``com.microsoft``)."""
    return any(not onnx.defs.has(node.op_type, node.domain or "") for node in probe.graph.node)


def _value_info_hints(probe: onnx.ModelProto, fill: _Filler) -> Typed:
    """The model's own value_info shapes that are fully known once the graph inputs' symbols are set.

    Only dim values and the symbols of graph inputs (same name, same value) count; any other symbol
    leaves the tensor out.
    """
    hints: Typed = {}
    for value in probe.graph.value_info:
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            continue
        dims = []
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param") and dim.dim_param in fill.assigned:
                dims.append(fill.assigned[dim.dim_param])
            else:
                break
        else:
            hints[value.name] = (tuple(dims), value.type.tensor_type.elem_type)
    return hints


def _contradictions(known: dict[str, Shape], claimed: Typed) -> list[str]:
    return [f"'{name}': {list(shape)} against {list(known[name])}"
            for name, (shape, _) in claimed.items() if name in known and tuple(known[name]) != tuple(shape)]


def _fill_gaps(probe: onnx.ModelProto, shapes: dict[str, Shape], hints: Typed) -> dict[str, Shape]:
    """Type what ONNX inference left unknown (outputs of custom-domain ops and what follows).

    The outputs of nodes ONNX inference could not type are taken from onnxruntime's symbolic shape
    inference (it knows the ``com.microsoft`` ops) and seed a new ONNX inference of the rest.  They are
    used only if onnxruntime agrees with every shape ONNX inference determined, and with the model's
    own value_info wherever that value_info is itself consistent with ONNX inference; any disagreement
    leaves the gap unknown (frozen) with a warning.  The value_info alone is never a seed: a rewritten
    model does not keep it, so a shape known only from it could not be checked after pruning.
    """
    stale = _contradictions(shapes, hints)
    if stale:
        warnings.warn(f"the model's value_info is not used: it contradicts shape inference ({stale[0]})",
                      stacklevel=3)
        hints = {}
    claimed = _ort_symbolic_shapes(probe)
    untyped = {out for node in probe.graph.node if not any(o in shapes for o in node.output if o)
               for out in node.output if out}
    seeds = {name: typed for name, typed in claimed.items() if name in untyped and typed[1]}
    if not seeds:
        return shapes
    for other, what in ((shapes, "shape inference"), ({n: s for n, (s, _) in hints.items()}, "the model's value_info")):
        conflicts = _contradictions(other, claimed)
        if conflicts:
            warnings.warn(f"onnxruntime's shapes after custom-domain ops are not used: they contradict {what} "
                          f"({conflicts[0]})", stacklevel=3)
            return shapes
    seeded = onnx.ModelProto()
    seeded.CopyFrom(probe)
    for name, (shape, elem_type) in seeds.items():
        seeded.graph.value_info.append(onnx.helper.make_tensor_value_info(name, elem_type, list(shape)))
    try:
        more = _infer_and_fold(seeded, {**_collect(_infer(seeded)), **{n: s for n, (s, _) in seeds.items()}}, {})
    except UnsupportedModelError:
        return shapes
    conflicts = _contradictions(more, claimed) + _contradictions(more, hints)
    if conflicts:
        warnings.warn(f"shapes after custom-domain ops are not used: inference from them disagrees ({conflicts[0]})",
                      stacklevel=3)
        return shapes
    return {**more, **shapes}


def _ort_symbolic_shapes(probe: onnx.ModelProto) -> Typed:
    """Static shapes from onnxruntime's symbolic shape inference (needs sympy); empty when unavailable."""
    try:
        import logging

        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        from onnxprune.ir.ort_shape_fixes import corrected
    except Exception:  # noqa: BLE001 - onnxruntime without the tools or without sympy
        return {}
    logger = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        inferred = _run_symbolic_inference(corrected(SymbolicShapeInference), probe)
    except Exception:  # noqa: BLE001 - unknown ops make it give up; nothing learned
        return {}
    finally:
        logger.setLevel(level)
    if inferred is None:
        return {}
    shapes: Typed = {}
    for value in inferred.graph.value_info:
        shape = _static_shape(value)
        if shape is not None and all(d > 0 for d in shape):
            shapes[value.name] = (shape, value.type.tensor_type.elem_type)
    return shapes


def _run_symbolic_inference(engine: type, probe: onnx.ModelProto) -> onnx.ModelProto | None:
    """Drive onnxruntime's symbolic shape inference and return what it typed, complete or not.

    Why not ``SymbolicShapeInference.infer_shapes``: when inference is incomplete (the very case
    this fallback exists for) it saves the model as ``sym_shape_infer_temp.onnx`` plus a uuid-named
    ``.data`` file into the *current directory* before raising, which would litter the user's folder
    on every custom-op model.  The loop below is that method minus the save; any change in those
    private methods raises, and the caller treats that as "nothing learned".
    """
    if not any(entry.domain in ("", "ai.onnx") and entry.version >= 7 for entry in probe.opset_import):
        return None
    inference = engine(2**31 - 1, False, False, 0)
    inference._preprocess(probe)
    while inference.run_:
        inference._infer_impl()
    inference._update_output_from_vi()
    return inference.out_mp_


# ---------------------------------------------------------------------------------------------
# Probe values below a table that caps a symbolic dim.


def _table_cap(model: onnx.ModelProto, probe: onnx.ModelProto, shapes: dict[str, Shape],
               alt: dict[str, Shape]) -> int | None:
    """Size of the smallest constant-table axis that a ``Slice``/``Gather`` indexes with a value computed
    from ``Shape`` (a position table, a causal mask buffer): symbolic dims must stay below it.

    Tables are looked up in ``model`` (the probe declares large ones as inputs); ``axes`` constants are
    small and stay in the probe."""

    producers = {out: node for node in probe.graph.node for out in node.output}
    tables = {init.name: init for init in model.graph.initializer}
    tables.update({init.name: init for init in probe.graph.initializer})
    for node in probe.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tables[node.output[0]] = node.attribute[0].t
    caps = []
    for node in probe.graph.node:
        if node.op_type not in ("Slice", "Gather") or not node.input or node.input[0] not in tables:
            continue
        bounds = node.input[1:3] if node.op_type == "Slice" else node.input[1:2]
        if not any(_from_shape(name, producers, shapes, alt) for name in bounds if name):
            continue
        dims = [int(d) for d in tables[node.input[0]].dims]
        if node.op_type == "Gather":
            axes = [next((a.i for a in node.attribute if a.name == "axis"), 0)]
        elif len(node.input) > 3 and node.input[3] in tables and tables[node.input[3]].data_location != 1:
            axes = np.atleast_1d(onnx.numpy_helper.to_array(tables[node.input[3]])).astype(int).tolist()
        else:
            axes = list(range(len(dims)))
        caps.extend(dims[a] for a in axes if -len(dims) <= a < len(dims) and dims[a] > 1)
    return min(caps) if caps else None


def _from_shape(name: str, producers: dict[str, onnx.NodeProto], shapes: dict[str, Shape],
                alt: dict[str, Shape], depth: int = 24) -> bool:
    """Whether ``name`` is computed (within ``depth`` steps) from a ``Shape``/``Size`` of a tensor whose
    probe shape involves a symbolic dim (it differs between the two assignments) or is unknown."""
    stack, seen = [(name, 0)], set()
    while stack:
        current, level = stack.pop()
        node = producers.get(current)
        if node is None or current in seen or level > depth:
            continue
        seen.add(current)
        if node.op_type in ("Shape", "Size"):
            read = shapes.get(node.input[0]) if node.input else ()
            if read is None or alt.get(node.input[0]) != read:
                return True
            continue
        stack.extend((inp, level + 1) for inp in node.input if inp)
    return False


def _boundary_dims(probe: onnx.ModelProto) -> set[int]:
    """Static dims of the graph inputs and outputs: pruning never changes them, so primes chosen to
    avoid them are the same for a model and for every pruned version of it."""
    dims = set()
    for value in list(probe.graph.input) + list(probe.graph.output):
        shape = value.type.tensor_type.shape if value.type.HasField("tensor_type") else None
        for dim in shape.dim if shape is not None else ():
            if dim.HasField("dim_value") and dim.dim_value > 1:
                dims.add(int(dim.dim_value))
    return dims


def _small_primes(cap: int, count: int, static: set[int]) -> tuple[int, ...]:
    """The ``count`` largest primes below ``cap`` that divide no static dim (empty if there are too few)."""
    chosen: list[int] = []
    for candidate in range(cap - 1, 1, -1):
        if len(chosen) == count:
            break
        if all(candidate % k for k in range(2, int(candidate ** 0.5) + 1)) and \
                not any(d % candidate == 0 for d in static):
            chosen.append(candidate)
    return tuple(chosen) if len(chosen) == count else ()


#: How often run-time shape computations are folded and shapes re-inferred at most: each round reaches one
#: more chain that reads the shape of the previous one (a detector's C2f blocks nest one per stage); the
#: loop stops as soon as a round types nothing new.
MAX_SHAPE_ROUNDS = 64


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as err:  # onnx raises several unrelated types here
        raise UnsupportedModelError(f"shape inference failed: {err}".splitlines()[0]) from err


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
