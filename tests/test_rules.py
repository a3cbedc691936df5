"""Every op rule, one table entry each: analysis verdict, rewrite, masked-reference oracle, edited constants.

Each case is a tiny model, usually ``x[N,4,8,8] → Conv c0 (8 out) → <op under test> → Conv c1 (6 out) →
GlobalAveragePool → Flatten → Gemm``, built by :mod:`graphs`.  For every case:

* the analysis says the groups of ``c0``'s output channels are prunable — or, for a *barrier* case,
  frozen by the expected node with the expected reason;
* for ratios 0.25 / 0.5 and criteria l1 / random the pruned model passes the full ONNX checker, runs in
  onnxruntime with default optimizations and with ``ORT_DISABLE_ALL``, and matches the masked reference
  (``pipeline.masked_reference``) to a relative error ≤ 1e-4 (max |a-b| / max |ref|) on seeded random
  inputs of batch 3;
* the first producer's weight really shrinks (barrier cases: stays, and another group is pruned), and
  edited constants (Reshape targets, Split sizes, Slice bounds, Resize sizes, ``group``, per-channel
  constants) hold exactly the values the kept channels imply.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import contrib_graphs as cg
from conftest import assert_matches_oracle
from graphs import contrib_mlp
from graphs import FLOAT, G, chain
from onnxprune.errors import PlanError, RewriteError
from onnxprune.analysis.kept_channels import KeptChannels
from onnxprune.methods.prepared import Prepared, prepare
from onnxprune.pipeline import PruneOptions, plan_prune, prune
from onnxprune.methods.width import apply_plan
from onnxprune.methods.plan import Plan
from onnxprune.analysis.rules import Slot, registered_ops

TOLERANCE = 1e-4  # relative: max |pruned - masked reference| / max |masked reference|
INT64_MAX = np.iinfo(np.int64).max


# ---------------------------------------------------------------------------------------------
# The table.


@dataclass(frozen=True)
class Case:
    """One model and what must hold for it.

    ``first``: (tensor, axis) of the first producer's output channels; ``weight``: (initializer, axis)
    that carries them.  ``barrier``: (node name, reason fragment) that must freeze ``first``'s group
    ('' as node name for graph boundaries).  ``check``: assertions on the edited constants.
    ``runnable``: False when onnxruntime cannot execute the model (custom domains): analysis only.
    """

    id: str
    build: Callable[[], onnx.ModelProto]
    ops: tuple[str, ...]
    first: tuple[str, int] = ("c0_out", 1)
    weight: tuple[str, int] = ("c0_W", 0)
    barrier: tuple[str, str] | None = None
    check: Callable[["Edited"], None] | None = None
    runnable: bool = True


CASES: list[Case] = []


def case(id: str, ops: str | tuple[str, ...], build: Callable[[], onnx.ModelProto], **kw) -> None:
    CASES.append(Case(id, build, (ops,) if isinstance(ops, str) else tuple(ops), **kw))


def body(op: str, *consts, opset: int = 17, pre: str | None = None, **attrs) -> Callable[[], onnx.ModelProto]:
    """``c0 → [pre] → op(t, *consts) → head``; consts are numpy arrays (become initializers) or ''."""

    def fn(g: G, t: str) -> str:
        if pre:
            t = g.node(pre, [t], name="pre")
        names = ["" if isinstance(c, str) else g.const(c, f"k{i}", dtype=np.asarray(c).dtype)
                 for i, c in enumerate(consts)]
        return g.node(op, [t, *names], name="op", **attrs)

    return lambda: chain(fn, opset=opset)


def branch(g: G, name: str = "c0b", cout: int = 8) -> str:
    """A second variable branch from the input: another conv with ``cout`` channels."""
    return g.conv("x", 4, cout, name=name)


def f32(*shape: int, low: float = -1.0, high: float = 1.0, seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


SCALAR = np.float32(0.7)
PER_CHANNEL = f32(8, 1, 1, low=0.5, high=1.5)  # positive: safe divisor, exponent base, Mod divisor


# ---------------------------------------------------------------------------------------------
# Edited-constant checks.


class Edited:
    """What a check may look at: the pruned model's constants and attributes and the kept channels."""

    def __init__(self, prepared: Prepared, plan: Plan, pruned: onnx.ModelProto):
        self.view = KeptChannels(prepared.analysis, plan.removed(prepared.analysis))
        self.params = prepared.analysis.params
        self.before = {i.name: numpy_helper.to_array(i) for i in prepared.normalized.graph.initializer}
        self.after = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
        self.nodes = {n.name: n for n in pruned.graph.node}

    def kept(self, tensor: str = "c0_out", axis: int = 1) -> np.ndarray:
        return self.view.kept(Slot(tensor, axis))

    def k(self, tensor: str = "c0_out", axis: int = 1) -> int:
        return len(self.kept(tensor, axis))

    def attr(self, node: str, name: str):
        found = [a for a in self.nodes[node].attribute if a.name == name]
        return helper.get_attribute_value(found[0]) if found else None

    def input_value(self, node: str, index: int) -> np.ndarray:
        return self.after[self.nodes[node].input[index]]

    def assert_values(self, name: str, expected) -> None:
        np.testing.assert_array_equal(self.after[name], np.asarray(expected), err_msg=name)

    def assert_sliced(self, name: str, axis: int, kept: np.ndarray) -> None:
        """``name`` is the original constant restricted to ``kept`` along ``axis``.

        Its other axes may carry another group (a conv weight's output axis): those are cut as the
        analysis' own slices of them say, so only ``axis`` is under test here.
        """
        expected = np.take(self.before[name], kept, axis=axis)
        for other in sorted({p.axis for p in self.params if p.tensor == name and p.axis != axis}):
            param = next(p for p in self.params if p.tensor == name and p.axis == other)
            expected = np.take(expected, self.view.param_keep(param), axis=other)
        np.testing.assert_array_equal(self.after[name], expected, err_msg=name)


def sliced(*names: str, axis: int = 0, tensor: str = "c0_out", slot_axis: int = 1):
    def check(e: Edited) -> None:
        for name in names:
            e.assert_sliced(name, axis, e.kept(tensor, slot_axis))
    return check


def unchanged(*names: str):
    def check(e: Edited) -> None:
        for name in names:
            np.testing.assert_array_equal(e.after[name], e.before[name], err_msg=name)
    return check


def all_of(*checks):
    def check(e: Edited) -> None:
        for c in checks:
            c(e)
    return check


def consumer_cut(weight: str = "c1_W", axis: int = 1, tensor: str = "c0_out"):
    """The next layer reads only the kept channels."""
    return sliced(weight, axis=axis, tensor=tensor)


# ---------------------------------------------------------------------------------------------
# Unary pass-throughs.

for op, attrs in [("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("Sigmoid", {}),
                  ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}), ("HardSwish", {}), ("Tanh", {}), ("Elu", {}),
                  ("Selu", {}), ("Celu", {"alpha": 0.8}), ("Softplus", {}), ("Softsign", {}), ("Erf", {}),
                  ("Exp", {}), ("Abs", {}), ("Neg", {}), ("Floor", {}), ("Ceil", {}), ("Round", {}),
                  ("Sign", {}), ("Sin", {}), ("Cos", {}), ("ThresholdedRelu", {"alpha": 0.1}),
                  ("Shrink", {"lambd": 0.2, "bias": 0.1}), ("Identity", {})]:
    case(op.lower(), op, body(op, **attrs), check=consumer_cut())
case("mish", "Mish", body("Mish", opset=18))
case("log_of_sigmoid", ("Log", "Sigmoid"), body("Log", pre="Sigmoid"))  # log|t| is ill-conditioned near 0
case("sqrt_of_sigmoid", ("Sqrt", "Sigmoid"), body("Sqrt", pre="Sigmoid"))
case("reciprocal_of_sigmoid", ("Reciprocal", "Sigmoid"), body("Reciprocal", pre="Sigmoid"))
case("clip_min_max", "Clip", body("Clip", np.float32(-0.5), np.float32(0.5)))
case("clip_max_only", "Clip", body("Clip", "", np.float32(0.3)))
case("gelu_opset20", "Gelu", body("Gelu", opset=20))
case("gelu_tanh_opset20", "Gelu", body("Gelu", opset=20, approximate="tanh"))
case("dropout_ratio", "Dropout", body("Dropout", np.float32(0.3)))
case("dropout_inference_mode", "Dropout", body("Dropout", np.float32(0.3), np.bool_(False)))


def _dropout_mask(g: G, t: str) -> str:
    """Dropout with its mask output named (unused): the mask is a per-channel tensor too."""
    g.node("Dropout", [t], name="op", outputs=["drop_y", "drop_mask"])
    return "drop_y"


case("dropout_mask_output", "Dropout", lambda: chain(_dropout_mask))
case("cast_roundtrip", "Cast", lambda: chain(lambda g, t: g.node(
    "Cast", [g.node("Cast", [t], name="op", to=TensorProto.DOUBLE)], name="back", to=FLOAT)))
case("castlike", ("CastLike", "Cast"), lambda: chain(lambda g, t: g.node(
    "Cast", [g.node("CastLike", [t, g.const(np.float64(1.0), "like", dtype=np.float64)], name="op")],
    name="back", to=FLOAT)))


def _where_mask(op: str):
    def fn(g: G, t: str) -> str:
        return g.node("Where", [g.node(op, [t], name="op"), g.const(SCALAR, "fill"), t], name="where")
    return fn


case("isnan", ("IsNaN", "Where"), lambda: chain(_where_mask("IsNaN")))
case("isinf", ("IsInf", "Where"), lambda: chain(_where_mask("IsInf")))


def _not(g: G, t: str) -> str:
    positive = g.node("Greater", [t, g.const(np.float32(0.0), "zero")], name="gt")
    return g.node("Where", [g.node("Not", [positive], name="op"), g.node("Mul", [t, g.const(SCALAR, "s")]), t],
                  name="where")


case("not", ("Not", "Greater", "Where", "Mul"), lambda: chain(_not))


def _erf_gelu(g: G, t: str) -> str:
    erf = g.node("Erf", [g.node("Div", [t, g.const(np.float32(np.sqrt(2.0)), "sqrt2")], name="div")], name="erf")
    inner = g.node("Mul", [t, g.node("Add", [erf, g.const(np.float32(1.0), "one")], name="add")], name="mul")
    return g.node("Mul", [inner, g.const(np.float32(0.5), "half")], name="half_mul")


case("erf_gelu_pattern", ("Erf", "Div", "Add", "Mul"), lambda: chain(_erf_gelu))
case("silu_pattern", ("Sigmoid", "Mul"), lambda: chain(
    lambda g, t: g.node("Mul", [t, g.node("Sigmoid", [t], name="sig")], name="op")))

# ---------------------------------------------------------------------------------------------
# Broadcasting ops: another variable branch (coupled), a per-channel constant (sliced), a scalar.


def _two(op: str, wrap_other: str | None = None, **attrs):
    """``op(t, other)`` where ``other`` is a second conv branch (optionally through ``wrap_other``)."""

    def fn(g: G, t: str) -> str:
        other = branch(g)
        if wrap_other == "positive":
            other = g.node("Add", [g.node("Sigmoid", [other], name="sig_b"), g.const(np.float32(0.5), "half")],
                           name="pos_b")
        return g.node(op, [t, other], name="op", **attrs)

    return lambda: chain(fn)


def coupled(weight: str = "c0b_W"):
    """The second branch lost exactly the channels the first lost."""
    def check(e: Edited) -> None:
        np.testing.assert_array_equal(e.kept("c0_out"), e.kept("c0b_out"))
        e.assert_sliced(weight, 0, e.kept("c0_out"))
    return all_of(check, consumer_cut())


for op in ("Add", "Sub", "Mul", "Max", "Min", "Mean", "Sum"):
    case(f"{op.lower()}_branch", op, _two(op), check=coupled())
case("div_branch", ("Div", "Sigmoid", "Add"), _two("Div", "positive"), check=coupled())
case("prelu_branch", "PRelu", _two("PRelu"), check=coupled())
case("mod_branch", ("Mod", "Sigmoid", "Add"), _two("Mod", "positive", fmod=1), check=coupled())


def _pow_branch(g: G, t: str) -> str:
    return g.node("Pow", [g.node("Sigmoid", [t], name="sig"), branch(g)], name="op")


case("pow_branch", ("Pow", "Sigmoid"), lambda: chain(_pow_branch), check=coupled())


def _sum3(g: G, t: str) -> str:
    return g.node("Sum", [t, branch(g), g.const(PER_CHANNEL, "pc")], name="op")


case("sum_three_with_constant", "Sum", lambda: chain(_sum3), check=all_of(coupled(), sliced("pc")))


def _compare(op: str):
    def fn(g: G, t: str) -> str:
        other = branch(g)
        return g.node("Where", [g.node(op, [t, other], name="op"), t, other], name="where")
    return fn


for op in ("Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal"):
    case(f"{op.lower()}_where", (op, "Where"), lambda op=op: chain(_compare(op)), check=coupled())


def _logic(op: str):
    def fn(g: G, t: str) -> str:
        zero = g.const(np.float32(0.0), "zero")
        a = g.node("Greater", [t, zero], name="gt")
        b = g.node("Less", [branch(g), g.const(np.float32(0.2), "lim")], name="lt")
        return g.node("Where", [g.node(op, [a, b], name="op"), t, g.const(SCALAR, "fill")], name="where")
    return fn


for op in ("And", "Or", "Xor"):
    case(f"{op.lower()}_logic", (op, "Greater", "Less", "Where"), lambda op=op: chain(_logic(op)),
         check=coupled())


def _to_uint(g: G, t: str, scale: float, high: float, name: str) -> str:
    clipped = g.node("Clip", [g.node("Abs", [t], name=f"{name}_abs"), g.const(np.float32(0.0), f"{name}_lo"),
                              g.const(np.float32(high), f"{name}_hi")], name=f"{name}_clip")
    scaled = g.node("Mul", [clipped, g.const(np.float32(scale), f"{name}_scale")], name=f"{name}_mul")
    return g.node("Cast", [scaled], name=f"{name}_cast", to=TensorProto.UINT32)


def _bitshift_branch(g: G, t: str) -> str:
    shifted = g.node("BitShift", [_to_uint(g, t, 16.0, 4.0, "a"), _to_uint(g, branch(g), 1.0, 3.0, "b")],
                     name="op", direction="LEFT")
    return g.node("Cast", [shifted], name="back", to=FLOAT)


def _bitshift_const(g: G, t: str) -> str:
    amount = g.const(np.array([0, 1, 2, 3, 0, 1, 2, 3], dtype=np.uint32).reshape(8, 1, 1), "pc", dtype=np.uint32)
    shifted = g.node("BitShift", [_to_uint(g, t, 16.0, 4.0, "a"), amount], name="op", direction="RIGHT")
    return g.node("Cast", [shifted], name="back", to=FLOAT)


case("bitshift_branch", ("BitShift", "Cast", "Clip"), lambda: chain(_bitshift_branch), check=coupled())
case("bitshift_per_channel", ("BitShift", "Cast"), lambda: chain(_bitshift_const), check=sliced("pc"))

for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu"):
    case(f"{op.lower()}_per_channel", op, body(op, PER_CHANNEL),
         check=all_of(sliced("k0"), consumer_cut()))
case("pow_per_channel", ("Pow", "Abs"), body("Pow", np.array([1, 2, 3, 1, 2, 3, 1, 2], np.float32).reshape(8, 1, 1),
                                             pre="Abs"), check=sliced("k0"))
case("mod_per_channel", "Mod", body("Mod", PER_CHANNEL, fmod=1), check=sliced("k0"))
case("add_per_channel_rank4", "Add", body("Add", f32(1, 8, 1, 1)), check=sliced("k0", axis=1))
case("add_along_width_not_channels", "Add", body("Add", f32(8)), check=unchanged("k0"))
case("mul_spatial_constant", "Mul", body("Mul", f32(8, 8)), check=unchanged("k0"))
for op in ("Add", "Sub", "Mul", "Pow", "Max", "Min"):
    case(f"{op.lower()}_scalar", op, body(op, SCALAR), check=unchanged("k0"))
case("prelu_scalar_slope", "PRelu", body("PRelu", np.array([0.2], np.float32)), check=unchanged("k0"))


def _div_scalar_by(g: G, t: str) -> str:
    positive = g.node("Add", [g.node("Sigmoid", [t], name="sig"), g.const(np.float32(0.5), "half")], name="pos")
    return g.node("Div", [g.const(SCALAR, "num"), positive], name="op")


case("div_scalar_by_tensor", ("Div", "Sigmoid", "Add"), lambda: chain(_div_scalar_by))


def _where_const(g: G, t: str) -> str:
    cond = g.const(np.array([1, 0, 1, 1, 0, 0, 1, 0], bool).reshape(8, 1, 1), "cond", dtype=np.bool_)
    return g.node("Where", [cond, t, g.const(PER_CHANNEL, "pc")], name="op")


def _where_branch(g: G, t: str) -> str:
    cond = g.node("Greater", [branch(g, "c0c"), g.const(np.float32(0.0), "zero")], name="gt")
    return g.node("Where", [cond, t, branch(g)], name="op")


case("where_per_channel", "Where", lambda: chain(_where_const), check=sliced("cond", "pc"))
case("where_branch", ("Where", "Greater"), lambda: chain(_where_branch), check=all_of(
    coupled(), lambda e: np.testing.assert_array_equal(e.kept("c0c_out"), e.kept())))
case("greater_per_channel", ("Greater", "Where"), lambda: chain(lambda g, t: g.node(
    "Where", [g.node("Greater", [t, g.const(f32(8, 1, 1), "pc")], name="op"), t, g.const(SCALAR, "s")],
    name="where")), check=sliced("pc"))


def _channel_broadcast_other(g: G, t: str) -> str:
    """``t + mean_c(other)``: the other input broadcasts over channels; only ``t``'s channels are cut."""
    return g.node("Add", [t, g.node("ReduceMean", [branch(g)], name="rm", axes=[1], keepdims=1)], name="op")


case("add_channel_broadcast_input", ("Add", "ReduceMean"), lambda: chain(_channel_broadcast_other))

# ---------------------------------------------------------------------------------------------
# Index maps: Concat, Split, Slice.


def _concat(g: G, t: str) -> tuple[str, int]:
    return g.node("Concat", [t, branch(g, cout=4)], name="op", axis=1), 12


def _concat_check(e: Edited) -> None:
    kept = np.concatenate([e.kept("c0_out"), 8 + e.kept("c0b_out")])
    e.assert_sliced("c1_W", 1, kept)


case("concat_two_branches", "Concat", lambda: chain(_concat), check=_concat_check)


def _concat_width(g: G, t: str) -> str:
    return g.node("Concat", [t, branch(g)], name="op", axis=3)


case("concat_non_channel_axis", "Concat", lambda: chain(_concat_width), check=coupled())


def _split(opset: int, mode: str):
    def fn(g: G, t: str) -> str:
        if mode == "input":
            a, b = g.node("Split", [t, g.ints([3, 5], "sizes")], n_out=2, name="op", axis=1)
        elif mode == "attr":
            a, b = g.node("Split", [t], n_out=2, name="op", axis=1, split=[3, 5])
        else:
            a, b = g.node("Split", [t], n_out=2, name="op", axis=1, num_outputs=2)
        n = 3 if mode != "num_outputs" else 4
        return g.node("Add", [g.conv(a, n, 8, name="ca"), g.conv(b, 8 - n, 8, name="cb")], name="join")
    return lambda: chain(fn, opset=opset)


def _split_check(mode: str):
    def check(e: Edited) -> None:
        n = 3 if mode != "num_outputs" else 4
        kept = e.kept()
        expected = [int(np.sum(kept < n)), int(np.sum(kept >= n))]
        if mode == "attr":
            assert list(e.attr("op", "split")) == expected
        else:
            np.testing.assert_array_equal(e.input_value("op", 1), expected)
            assert e.attr("op", "num_outputs") is None
        e.assert_sliced("ca_W", 1, kept[kept < n])
        e.assert_sliced("cb_W", 1, kept[kept >= n] - n)
    return check


case("split_sizes_input", "Split", _split(17, "input"), check=_split_check("input"))
case("split_attribute_opset11", "Split", _split(11, "attr"), check=_split_check("attr"))
case("split_num_outputs_opset18", "Split", _split(18, "num_outputs"), check=_split_check("num_outputs"))


def _split_height(g: G, t: str) -> str:
    a, b = g.node("Split", [t, g.ints([3, 5], "sizes")], n_out=2, name="op", axis=2)
    return g.node("Concat", [g.node("Relu", [a]), b], name="join", axis=2)


case("split_non_channel_axis", ("Split", "Concat"), lambda: chain(_split_height),
     check=all_of(unchanged("sizes"), consumer_cut()))


def _slice(starts, ends, axes, steps=None, opset=17):
    def fn(g: G, t: str) -> tuple[str, int]:
        if opset < 10:
            u = g.node("Slice", [t], name="op", starts=starts, ends=ends, axes=axes)
        else:
            ins = [t, g.ints(starts, "starts"), g.ints(ends, "ends"), g.ints(axes, "axes")]
            u = g.node("Slice", ins + ([g.ints(steps, "steps")] if steps else []), name="op")
        if 1 not in axes:
            return u, 8
        size = len(range(8)[slice(starts[axes.index(1)], ends[axes.index(1)])])
        return u, size
    return lambda: chain(fn, opset=opset)


def _slice_check(lo: int, hi: int, attrs: bool = False):
    """Channels [lo, hi) are read; new bounds: kept channels before ``lo`` and inside the range."""
    def check(e: Edited) -> None:
        kept = e.kept()
        start = int(np.sum(kept < lo))
        end = start + int(np.sum((kept >= lo) & (kept < hi)))
        if attrs:
            assert list(e.attr("op", "starts")) == [start] and list(e.attr("op", "ends")) == [end]
        else:
            e.assert_values("starts", [start])
            e.assert_values("ends", [end])
        inside = kept[(kept >= lo) & (kept < hi)] - lo
        e.assert_sliced("c1_W", 1, inside)
    return check


case("slice_channels", "Slice", _slice([2], [7], [1]), check=_slice_check(2, 7))
case("slice_channels_negative", "Slice", _slice([-6], [INT64_MAX], [1], [1]), check=_slice_check(2, 8))
case("slice_channels_attributes_opset9", "Slice", _slice([1], [6], [1], opset=9),
     check=_slice_check(1, 6, attrs=True))
case("slice_spatial", "Slice", _slice([1, 1], [7, 7], [2, 3]),
     check=all_of(unchanged("starts", "ends"), consumer_cut()))

# ---------------------------------------------------------------------------------------------
# Layout: Flatten, Reshape, Transpose, Squeeze, Unsqueeze, channel shuffle, heads.


def _pool4(g: G, t: str) -> str:
    return g.node("MaxPool", [t], name="pool", kernel_shape=[4, 4], strides=[4, 4])  # [N, 8, 2, 2]


def _flatten_gemm(g: G, t: str) -> None:
    g.gemm_out(g.node("Flatten", [_pool4(g, t)], name="op", axis=1), 32)


def _features_cut(e: Edited) -> None:
    features = (e.kept()[:, None] * 4 + np.arange(4)).ravel()
    e.assert_sliced("head_W", 1, features)


def mlp_head(fn):
    """Models whose body writes the graph output itself (no conv head)."""
    def build() -> onnx.ModelProto:
        g = G()
        t = g.conv(g.input(), 4, 8, name="c0")
        fn(g, t)
        return g.model()
    return build


case("flatten_into_gemm", ("Flatten", "MaxPool"), mlp_head(_flatten_gemm), check=_features_cut)


def _reshape_gemm(target):
    def fn(g: G, t: str) -> None:
        g.gemm_out(g.node("Reshape", [_pool4(g, t), g.ints(target, "shape")], name="op"), 32)
    return fn


def _reshape_gemm_check(target):
    def check(e: Edited) -> None:
        expected = list(target)
        if expected[1] == 32:
            expected[1] = 4 * e.k()
        e.assert_values("shape", expected)
        _features_cut(e)
    return check


for target in ([-1, 32], [0, 32], [0, -1]):
    case(f"reshape_into_gemm_{'_'.join(str(v).replace('-', 'm') for v in target)}", ("Reshape", "MaxPool"),
         mlp_head(_reshape_gemm(target)), check=_reshape_gemm_check(target))


def _reshape_roundtrip(g: G, t: str) -> str:
    flat = g.node("Reshape", [t, g.ints([0, 8, 64], "shape_a")], name="op")
    return g.node("Reshape", [g.node("Relu", [flat]), g.ints([-1, 8, 8, 8], "shape_b")], name="back")


case("reshape_spatial_roundtrip", ("Reshape", "Relu"), lambda: chain(_reshape_roundtrip), check=lambda e: (
    e.assert_values("shape_a", [0, e.k(), 64]), e.assert_values("shape_b", [-1, e.k(), 8, 8])))


def _shuffle(g: G, t: str) -> str:
    grouped = g.node("Reshape", [t, g.ints([-1, 2, 4, 8, 8], "shape_a")], name="op")
    swapped = g.node("Transpose", [grouped], name="shuffle", perm=[0, 2, 1, 3, 4])
    return g.node("Reshape", [swapped, g.ints([-1, 8, 8, 8], "shape_b")], name="back")


def _shuffle_check(e: Edited) -> None:
    kept = e.kept()
    assert e.k() % 2 == 0 and np.array_equal(kept[: e.k() // 2] + 4, kept[e.k() // 2:]), \
        "channel c and c+4 share a shuffle position: removed together"
    e.assert_values("shape_a", [-1, 2, e.k() // 2, 8, 8])
    e.assert_values("shape_b", [-1, e.k(), 8, 8])


case("channel_shuffle", ("Reshape", "Transpose"), lambda: chain(_shuffle), check=_shuffle_check)


def _nhwc_roundtrip(g: G, t: str) -> str:
    nhwc = g.node("Transpose", [t], name="op", perm=[0, 2, 3, 1])
    scaled = g.node("Mul", [g.node("Relu", [nhwc], name="relu"), g.const(f32(8), "pc")], name="scale")
    return g.node("Transpose", [scaled], name="back", perm=[0, 3, 1, 2])


case("transpose_nhwc_and_back", ("Transpose", "Relu", "Mul"), lambda: chain(_nhwc_roundtrip),
     check=all_of(sliced("pc"), consumer_cut()))


def _nhwc_matmul(g: G, t: str) -> str:
    nhwc = g.node("Transpose", [t], name="op", perm=[0, 2, 3, 1])
    mixed = g.matmul(nhwc, 8, 8, name="mm")
    return g.node("Transpose", [mixed], name="back", perm=[0, 3, 1, 2])


case("transpose_nhwc_matmul", ("Transpose", "MatMul"), lambda: chain(_nhwc_matmul), check=consumer_cut("mm_W", 0))


def _squeeze(opset: int):
    def fn(g: G, t: str) -> str:
        pooled = g.node("GlobalAveragePool", [t], name="gap")
        if opset >= 13:
            sq = g.node("Squeeze", [pooled, g.ints([3], "sq_axes")], name="op")
            return g.node("Unsqueeze", [sq, g.ints([3], "unsq_axes")], name="unsq")
        sq = g.node("Squeeze", [pooled], name="op", axes=[3])
        return g.node("Unsqueeze", [sq], name="unsq", axes=[3])
    return lambda: chain(fn, opset=opset)


case("squeeze_unsqueeze", ("Squeeze", "Unsqueeze", "GlobalAveragePool"), _squeeze(17), check=consumer_cut())
case("squeeze_unsqueeze_opset11", ("Squeeze", "Unsqueeze"), _squeeze(11), check=consumer_cut())


def _squeeze_gemm(g: G, t: str) -> None:
    pooled = g.node("GlobalMaxPool", [t], name="gmp")
    g.gemm_out(g.node("Squeeze", [pooled, g.ints([2, 3], "sq_axes")], name="op"), 8)


case("squeeze_into_gemm", ("Squeeze", "GlobalMaxPool"), mlp_head(_squeeze_gemm), check=sliced("head_W", axis=1))


def _heads() -> onnx.ModelProto:
    """Attention-style head split ``[N,T,16] → [N,T,4,4] → [N,4,T,4]`` and back: whole heads go."""
    g = G()
    h = g.matmul(g.input("x", ("N", 5, 16)), 16, 16, name="c0")
    split = g.node("Reshape", [h, g.ints([0, 0, 4, 4], "shape_a")], name="op")
    heads = g.node("Relu", [g.node("Transpose", [split], name="to_heads", perm=[0, 2, 1, 3])], name="relu")
    merged = g.node("Reshape", [g.node("Transpose", [heads], name="from_heads", perm=[0, 2, 1, 3]),
                                g.ints([0, 0, 16], "shape_b")], name="back")
    g.node("MatMul", [merged, g.const(g.randn((16, 6)), "head_W")], name="head", outputs=["y"])
    g.output("y")
    return g.model()


def _heads_check(e: Edited) -> None:
    kept = e.kept("c0_out", 2)
    assert len(kept) % 4 == 0 and np.array_equal(kept.reshape(-1, 4) % 4, np.tile(np.arange(4), (len(kept) // 4, 1)))
    e.assert_values("shape_a", [0, 0, len(kept) // 4, 4])
    e.assert_values("shape_b", [0, 0, len(kept)])
    e.assert_sliced("head_W", 0, kept)


case("attention_heads_reshape", ("Reshape", "Transpose", "MatMul"), _heads, first=("c0_out", 2),
     weight=("c0_W", 1), check=_heads_check)


def _fused_qkv() -> onnx.ModelProto:
    """``nn.MultiheadAttention``'s in-projection: ``[N,T,48] → [N,T,3,16] → [3,N,T,16]``, Q/K/V picked apart by
    constant Gathers, each split into 4 heads of 4; the stack axis ``3`` is not a head axis."""
    g = G()
    h = g.matmul(g.input("x", ("N", 5, 16)), 16, 48, name="c0")
    stacked = g.node("Reshape", [h, g.ints([0, 0, 3, 16], "shape_qkv")], name="op")
    moved = g.node("Transpose", [g.node("Unsqueeze", [stacked, g.ints([0], "ax0")], name="unsq")], name="stack_first",
                   perm=[3, 1, 2, 0, 4])
    chunks = g.node("Squeeze", [moved, g.ints([3], "ax3")], name="sq")
    parts = []
    for i, name in enumerate("qkv"):
        part = g.node("Gather", [chunks, g.const(np.array(i, np.int64), f"i_{name}", dtype=np.int64)],
                      name=f"pick_{name}", axis=0)
        heads = g.node("Reshape", [part, g.ints([0, 0, 4, 4], f"shape_{name}")], name=f"split_{name}")
        parts.append(g.node("Reshape", [g.node("Relu", [heads], name=f"relu_{name}"), g.ints([0, 0, 16], f"back_{name}")],
                            name=f"merge_{name}"))
    summed = g.node("Sum", parts, name="sum_qkv")
    g.node("MatMul", [summed, g.const(g.randn((16, 6)), "head_W")], name="head", outputs=["y"])
    g.output("y")
    return g.model()


def _fused_qkv_check(e: Edited) -> None:
    kept = e.kept("c0_out", 2)
    per_chunk = [kept[(kept >= 16 * i) & (kept < 16 * (i + 1))] - 16 * i for i in range(3)]
    assert all(np.array_equal(per_chunk[0], c) for c in per_chunk), "the same channels of Q, K and V go"
    heads = per_chunk[0].reshape(-1, 4)
    assert np.array_equal(heads % 4, np.tile(np.arange(4), (len(heads), 1))), "whole heads go"
    e.assert_values("shape_qkv", [0, 0, 3, len(per_chunk[0])])
    for name in "qkv":
        e.assert_values(f"shape_{name}", [0, 0, len(heads), 4])
        e.assert_values(f"back_{name}", [0, 0, len(per_chunk[0])])


case("fused_qkv_stack_picked_apart", ("Reshape", "Gather", "Unsqueeze", "Squeeze"), _fused_qkv, first=("c0_out", 2),
     weight=("c0_W", 1), check=_fused_qkv_check)


def _batch_heads(runtime: bool):
    """``[T,N,16] → [T,N·4,4]`` (batch and heads share an axis, as in ``nn.MultiheadAttention``) → ``[N,4,T,4]``;
    the head size read back by ``Shape(q)[-1:] → Sqrt`` scales q.  ``runtime``: the ``N·4`` entry is computed
    as ``Shape(x)[1] · 4`` (a dynamic export), else it is ``-1``."""

    def build() -> onnx.ModelProto:
        g = G()
        x = g.node("Transpose", [g.input("x", ("N", 5, 16))], name="seq_first", perm=[1, 0, 2])
        h = g.matmul(x, 16, 16, name="c0")
        if runtime:
            batch = g.node("Gather", [g.node("Shape", [x], name="x_shape"), g.ints([1], "i1")], name="batch", axis=0)
            target = g.node("Concat", [g.ints([5], "t_seq"), g.node("Mul", [batch, g.ints([4], "n_heads")], name="bh"),
                                       g.ints([4], "t_dim")], name="target", axis=0)
        else:
            target = g.ints([5, -1, 4], "target")
        q = g.node("Reshape", [h, target], name="op")
        q = g.node("Reshape", [g.node("Transpose", [q], name="bh_first", perm=[1, 0, 2]), g.ints([-1, 4, 5, 4], "split4")],
                   name="to_heads")
        dim = g.node("Slice", [g.node("Shape", [q], name="q_shape"), g.ints([-1], "m1"), g.ints([INT64_MAX], "end")],
                     name="head_dim")
        scale = g.node("Sqrt", [g.node("Cast", [dim], name="dim_f", to=TensorProto.FLOAT)], name="sqrt_dim")
        q = g.node("Div", [q, scale], name="scaled")
        merged = g.node("Reshape", [g.node("Transpose", [q], name="from_heads", perm=[0, 2, 1, 3]),
                                    g.ints([0, 0, 16], "merge")], name="merge")
        g.node("MatMul", [merged, g.const(g.randn((16, 6)), "head_W")], name="head", outputs=["y"])
        g.output("y")
        return g.model()

    return build


def _batch_heads_check(runtime: bool):
    def check(e: Edited) -> None:
        kept = e.kept("c0_out", 2)
        heads = kept.reshape(-1, 4)
        assert np.array_equal(heads % 4, np.tile(np.arange(4), (len(heads), 1))), "whole heads go"
        e.assert_values("split4", [-1, len(heads), 5, 4])
        e.assert_values("merge", [0, 0, len(kept)])
        e.assert_sliced("head_W", 0, kept)
        if runtime:  # Shape(x)[1] · 4 became Shape(x)[1] · 4 · H' / 4
            scale = [i for name, i in e.after.items() if name.startswith("target__scale")]
            assert [int(v) for s in scale for v in s] == [len(heads)]
        else:
            e.assert_values("target", [5, -1, 4])
    return check


def _batch_heads_roundtrip() -> onnx.ModelProto:
    """``[T,N,16] → [T,N·4,4] → [T,N,16]``: interleave there, de-interleave on the way back."""
    g = G()
    x = g.node("Transpose", [g.input("x", ("N", 5, 16))], name="seq_first", perm=[1, 0, 2])
    h = g.matmul(x, 16, 16, name="c0")
    split = g.node("Relu", [g.node("Reshape", [h, g.ints([5, -1, 4], "split")], name="op")], name="relu")
    back = g.node("Reshape", [split, g.ints([5, -1, 16], "back")], name="back_op")
    g.node("MatMul", [g.node("Transpose", [back], name="batch_first", perm=[1, 0, 2]),
                      g.const(g.randn((16, 6)), "head_W")], name="head", outputs=["y"])
    g.output("y")
    return g.model()


def _batch_heads_roundtrip_check(e: Edited) -> None:
    kept = e.kept("c0_out", 2)
    assert np.array_equal(kept.reshape(-1, 4) % 4, np.tile(np.arange(4), (len(kept) // 4, 1)))
    e.assert_values("split", [5, -1, 4])
    e.assert_values("back", [5, -1, len(kept)])
    e.assert_sliced("head_W", 0, kept)


case("heads_merged_with_batch_roundtrip", ("Reshape", "Relu"), _batch_heads_roundtrip, first=("c0_out", 2),
     weight=("c0_W", 1), check=_batch_heads_roundtrip_check)
case("heads_merged_with_batch", ("Reshape", "Transpose", "Shape", "Slice"), _batch_heads(False), first=("c0_out", 2),
     weight=("c0_W", 1), check=_batch_heads_check(False))
case("heads_merged_with_batch_runtime_target", ("Reshape", "Concat", "Mul", "Shape"), _batch_heads(True),
     first=("c0_out", 2), weight=("c0_W", 1), check=_batch_heads_check(True))

# ---------------------------------------------------------------------------------------------
# Conv variants.


def _dw(multiplier: int):
    def fn(g: G, t: str) -> tuple[str, int]:
        return g.conv(t, 8, 8 * multiplier, group=8, name="dw"), 8 * multiplier
    return lambda: chain(fn)


def _dw_check(multiplier: int):
    def check(e: Edited) -> None:
        assert e.attr("dw", "group") == e.k()
        out = (e.kept()[:, None] * multiplier + np.arange(multiplier)).ravel()
        e.assert_sliced("dw_W", 0, out)
        e.assert_sliced("dw_B", 0, out)
        e.assert_sliced("c1_W", 1, out)
    return check


case("depthwise_conv", "Conv", _dw(1), check=_dw_check(1))
case("depthwise_conv_multiplier2", "Conv", _dw(2), check=_dw_check(2))


def _grouped(g: G, t: str) -> str:
    return g.conv(t, 8, 8, group=2, name="gc")


def _grouped_check(e: Edited) -> None:
    kept = e.kept()
    half = e.k() // 2
    assert e.k() % 2 == 0 and np.array_equal(kept[:half] + 4, kept[half:]), "both groups lose the same channels"
    assert e.attr("gc", "group") == 2
    e.assert_sliced("gc_W", 1, kept[:half])


case("grouped_conv_g2", "Conv", lambda: chain(_grouped), check=_grouped_check)
case("conv_1x1_strided_no_bias", "Conv", lambda: chain(
    lambda g, t: g.conv(t, 8, 8, k=1, name="pw", bias=False, strides=[2, 2], pads=[0, 0, 0, 0])),
    check=consumer_cut("pw_W"))
case("conv_dilated", "Conv", lambda: chain(
    lambda g, t: g.conv(t, 8, 8, name="dil", dilations=[2, 2], pads=[2, 2, 2, 2])), check=consumer_cut("dil_W"))


def _convt(group: int, cout: int):
    def fn(g: G, t: str) -> tuple[str, int]:
        return g.conv_t(t, 8, cout, group=group, name="ct"), cout
    return lambda: chain(fn)


def _convt_check(group: int):
    def check(e: Edited) -> None:
        kept = e.kept()
        if group == 8:
            assert e.attr("ct", "group") == e.k()
            e.assert_sliced("ct_W", 0, kept)
            e.assert_sliced("ct_B", 0, kept)
        else:
            assert e.attr("ct", "group") == group
            e.assert_sliced("ct_W", 0, kept)
    return check


case("convtranspose_consumer", "ConvTranspose", _convt(1, 6), check=_convt_check(1))
case("convtranspose_depthwise", "ConvTranspose", _convt(8, 8), check=_convt_check(8))
case("convtranspose_grouped_g2", "ConvTranspose", _convt(2, 6), check=_convt_check(2))


def _convt_first() -> onnx.ModelProto:
    g = G()
    t = g.conv_t(g.input(), 4, 8, name="c0")
    g.head(g.node("Relu", [t], name="relu"), 8)
    return g.model()


case("convtranspose_producer", ("ConvTranspose", "Relu"), _convt_first, weight=("c0_W", 1),
     check=all_of(sliced("c0_B"), consumer_cut()))

# ---------------------------------------------------------------------------------------------
# Normalizations and softmax-likes over non-channel axes.


def _instance_norm(g: G, t: str) -> str:
    return g.node("InstanceNormalization", [t, g.const(f32(8, low=0.5, high=1.5), "scale"),
                                            g.const(f32(8), "bias")], name="op")


def _layer_norm(axis: int):
    def fn(g: G, t: str) -> str:
        shape = [8] if axis == -1 else [8, 8]
        return g.node("LayerNormalization", [t, g.const(f32(*shape, low=0.5, high=1.5), "scale"),
                                             g.const(f32(*shape), "bias")], name="op", axis=axis)
    return lambda: chain(fn)


case("batchnorm", "BatchNormalization", lambda: chain(lambda g, t: g.bn(t, 8, name="op")),
     check=sliced("op_scale", "op_bias", "op_mean", "op_var"))
case("instancenorm", "InstanceNormalization", lambda: chain(_instance_norm), check=sliced("scale", "bias"))
case("layernorm_last_axis", "LayerNormalization", _layer_norm(-1), check=unchanged("scale", "bias"))
case("layernorm_spatial_axes", "LayerNormalization", _layer_norm(2), check=unchanged("scale", "bias"))
case("softmax_last_axis", "Softmax", body("Softmax", axis=-1))
case("logsoftmax_height", "LogSoftmax", body("LogSoftmax", axis=2))
case("hardmax_last_axis", "Hardmax", body("Hardmax", axis=3))
case("softmax_opset11_spatial", "Softmax", body("Softmax", opset=11, axis=2))

# ---------------------------------------------------------------------------------------------
# Reductions over spatial axes, ArgMax/ArgMin.


def _reduce(op: str, axes: list[int], keepdims: int, opset: int = 17, pre: str | None = None):
    as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)

    def fn(g: G, t: str):
        if pre:
            t = g.node(pre, [t], name="pre")
        if as_input:
            r = g.node(op, [t, g.ints(axes, "axes")], name="op", keepdims=keepdims)
        else:
            r = g.node(op, [t], name="op", axes=axes, keepdims=keepdims)
        if keepdims:
            return r
        if len(axes) == 2:
            g.gemm_out(r, 8)
            return None
        return g.node("Unsqueeze", [r, g.ints(axes, "unsq_axes")], name="unsq")

    def build() -> onnx.ModelProto:
        g = G(opset)
        t = g.conv(g.input(), 4, 8, name="c0")
        out = fn(g, t)
        if out is not None:
            g.head(out, 8)
        return g.model()

    return build


for keep in (0, 1):
    case(f"reducemean_spatial_keepdims{keep}", "ReduceMean", _reduce("ReduceMean", [2, 3], keep))
    case(f"reducemax_spatial_keepdims{keep}_opset18", "ReduceMax", _reduce("ReduceMax", [2, 3], keep, opset=18))
    case(f"reducemean_height_keepdims{keep}", ("ReduceMean", "Unsqueeze") if not keep else "ReduceMean",
         _reduce("ReduceMean", [2], keep))
for op, pre in (("ReduceMin", None), ("ReduceSum", None), ("ReduceProd", "Sigmoid"), ("ReduceL1", None),
                ("ReduceL2", None), ("ReduceLogSum", "Sigmoid"), ("ReduceLogSumExp", None),
                ("ReduceSumSquare", None)):
    case(op.lower(), op, _reduce(op, [3], 1, pre=pre))


def _argreduce(op: str, axis: int, keepdims: int):
    def fn(g: G, t: str) -> str:
        index = g.node(op, [t], name="op", axis=axis, keepdims=keepdims)
        if not keepdims:
            index = g.node("Unsqueeze", [index, g.ints([axis], "unsq_axes")], name="unsq")
        return g.node("Cast", [index], name="cast", to=FLOAT)
    return lambda: chain(fn)


case("argmax_width", ("ArgMax", "Cast"), _argreduce("ArgMax", 3, 1))
case("argmin_height_no_keepdims", ("ArgMin", "Unsqueeze", "Cast"), _argreduce("ArgMin", 2, 0))

# ---------------------------------------------------------------------------------------------
# Spatial: pooling, Resize/Upsample, Pad.

case("maxpool", "MaxPool", body("MaxPool", kernel_shape=[2, 2], strides=[2, 2]), check=consumer_cut())
case("averagepool", "AveragePool", body("AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
case("lppool", "LpPool", body("LpPool", kernel_shape=[2, 2], strides=[2, 2], p=2))
case("globalmaxpool", "GlobalMaxPool", body("GlobalMaxPool"))
case("globallppool", "GlobalLpPool", body("GlobalLpPool", p=2))
case("globalaveragepool", "GlobalAveragePool", body("GlobalAveragePool"))
case("resize_scales", "Resize", body("Resize", "", np.array([1, 1, 2, 2], np.float32), mode="nearest"))
case("resize_sizes_spatial_axes_opset18", "Resize",
     body("Resize", "", "", np.array([16, 12], np.int64), opset=18, axes=[2, 3], mode="linear"),
     check=lambda e: e.assert_values("k2", [16, 12]))
case("resize_sizes_with_channel_opset18", "Resize",
     body("Resize", "", "", np.array([8, 16, 16], np.int64), opset=18, axes=[1, 2, 3], mode="nearest"),
     check=lambda e: e.assert_values("k2", [e.k(), 16, 16]))
case("upsample_opset9", "Upsample", body("Upsample", np.array([1, 1, 2, 2], np.float32), opset=9, mode="nearest"))
case("pad_spatial", "Pad", body("Pad", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), mode="constant"),
     check=lambda e: e.assert_values("k0", [0, 0, 1, 2, 0, 0, 2, 1]))
case("pad_spatial_reflect_opset11", "Pad", body("Pad", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                                                opset=11, mode="reflect"))
case("pad_axes_opset18", "Pad", body("Pad", np.array([1, 1, 1, 1], np.int64), "", np.array([2, 3], np.int64),
                                     opset=18, mode="edge"))
case("pad_attribute_opset9", "Pad", body("Pad", opset=9, pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="constant"))

# ---------------------------------------------------------------------------------------------
# Linear: Gemm / MatMul chains (the first producer is a Gemm or MatMul).


def _gemm_mlp(trans_b: int):
    def build() -> onnx.ModelProto:
        g = G()
        h = g.node("Relu", [g.gemm(g.input("x", ("N", 16)), 16, 32, name="c0", trans_b=trans_b)], name="relu")
        h = g.node("Relu", [g.gemm(h, 32, 12, name="c1", trans_b=trans_b)], name="relu2")
        g.gemm_out(h, 12)
        return g.model()
    return build


case("gemm_mlp_transb1", ("Gemm", "Relu"), _gemm_mlp(1), weight=("c0_W", 0),
     check=all_of(sliced("c0_B"), sliced("c1_W", axis=1)))
case("gemm_mlp_transb0", ("Gemm", "Relu"), _gemm_mlp(0), weight=("c0_W", 1),
     check=all_of(sliced("c0_B"), sliced("c1_W", axis=0)))


def _matmul_mlp(shape: tuple):
    def build() -> onnx.ModelProto:
        g = G()
        h = g.matmul(g.input("x", shape), 16, 32, name="c0")
        h = g.node("Relu", [g.node("Add", [h, g.const(f32(32), "bias")], name="add")], name="relu")
        g.node("MatMul", [h, g.const(g.randn((32, 10)), "head_W")], name="head", outputs=["y"])
        g.output("y")
        return g.model()
    return build


case("matmul_mlp_2d", ("MatMul", "Add", "Relu"), _matmul_mlp(("N", 16)), weight=("c0_W", 1),
     check=all_of(sliced("bias", tensor="c0_out"), sliced("head_W", tensor="c0_out")))
case("matmul_mlp_3d", ("MatMul", "Add", "Relu"), _matmul_mlp(("N", 5, 16)), first=("c0_out", 2),
     weight=("c0_W", 1), check=all_of(sliced("bias", tensor="c0_out", slot_axis=2),
                                       sliced("head_W", tensor="c0_out", slot_axis=2)))


def _matmul_const_a() -> onnx.ModelProto:
    """``W·x``: x ``[N,16,5]``, W ``[32,16]``: features on axis 1 of the output."""
    g = G()
    h = g.node("MatMul", [g.const(g.randn((32, 16)), "c0_W"), g.input("x", ("N", 16, 5))], name="c0",
               outputs=["c0_out"])
    h = g.node("Relu", [h], name="relu")
    g.node("MatMul", [g.const(g.randn((10, 32)), "head_W"), h], name="head", outputs=["y"])
    g.output("y")
    return g.model()


case("matmul_constant_left", ("MatMul", "Relu"), _matmul_const_a, weight=("c0_W", 0),
     check=sliced("head_W", axis=1))


def _gemm_after_conv(g: G, t: str) -> None:
    h = g.node("Flatten", [g.node("GlobalAveragePool", [t], name="gap")], name="flat")
    h = g.node("Relu", [g.gemm(h, 8, 16, name="fc")], name="relu")
    g.gemm_out(h, 16)


case("conv_gap_gemm_chain", ("Gemm", "Flatten", "GlobalAveragePool"), mlp_head(_gemm_after_conv),
     check=sliced("fc_W", axis=1))

# ---------------------------------------------------------------------------------------------
# Recurrent ops: the MatMul's features are read by W's last axis; the hidden units are a group of their own.

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _recurrent(op: str, directions: int, **attrs):
    """``x[5,N,16] → MatMul c0 (12) → op (8 hidden) → Transpose → Reshape [5,N,8D] → MatMul``."""
    def build() -> onnx.ModelProto:
        g = G()
        h = g.matmul(g.input("x", (5, "N", 16)), 16, 12, name="c0")
        gates, hidden = GATES[op], 8
        ins = [h, g.const(g.randn((directions, gates * hidden, 12), 0.3), "rnn_W"),
               g.const(g.randn((directions, gates * hidden, hidden), 0.3), "rnn_R"),
               g.const(g.randn((directions, 2 * gates * hidden), 0.1), "rnn_B")]
        if op == "LSTM":
            ins += ["", "", "", g.const(g.randn((directions, 3 * hidden), 0.1), "rnn_P")]
        outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
        direction = "bidirectional" if directions == 2 else "forward"
        g.node(op, ins, name="op", outputs=outs, hidden_size=hidden, direction=direction, **attrs)
        merged = g.node("Reshape", [g.node("Transpose", ["Y"], name="t", perm=[0, 2, 1, 3]),
                                    g.ints([0, 0, directions * hidden], "merge_shape")], name="merge")
        g.node("MatMul", [merged, g.const(g.randn((directions * hidden, 6)), "head_W")], name="head", outputs=["y"])
        g.output("y")
        return g.model()
    return build


def _recurrent_check(directions: int):
    def check(e: Edited) -> None:
        e.assert_sliced("rnn_W", 2, e.kept("c0_out", 2))
        hidden = e.k("Y", 3)
        assert hidden < 8, "the hidden units form a prunable group of their own"
        assert e.attr("op", "hidden_size") == hidden
        e.assert_values("merge_shape", [0, 0, directions * hidden])
        rows = (np.arange(e.after["rnn_R"].shape[1] // hidden)[:, None] * 8 + e.kept("Y", 3)).ravel()
        e.assert_sliced("rnn_R", 1, rows)
    return check


case("lstm_bidirectional_peepholes", ("LSTM", "MatMul", "Transpose", "Reshape"), _recurrent("LSTM", 2),
     first=("c0_out", 2), weight=("c0_W", 1), check=_recurrent_check(2))
case("gru_linear_before_reset", ("GRU", "MatMul"), _recurrent("GRU", 1, linear_before_reset=1),
     first=("c0_out", 2), weight=("c0_W", 1), check=_recurrent_check(1))
case("rnn_bidirectional", ("RNN", "MatMul"), _recurrent("RNN", 2), first=("c0_out", 2), weight=("c0_W", 1),
     check=_recurrent_check(2))

# ---------------------------------------------------------------------------------------------
# Shape reads (run-time Reshape targets).


def _shape_reshape(g: G, t: str) -> None:
    pooled = _pool4(g, t)
    batch = g.node("Gather", [g.node("Shape", [pooled], name="op"), g.ints([0], "idx0")], name="gather", axis=0)
    target = g.node("Concat", [batch, g.ints([-1], "minus1")], name="target", axis=0)
    g.gemm_out(g.node("Reshape", [pooled, target], name="reshape"), 32)


case("shape_builds_reshape_target", ("Shape", "Gather", "Concat", "Reshape"), mlp_head(_shape_reshape),
     check=_features_cut)

# ---------------------------------------------------------------------------------------------
# Compositions that stress the index maps: the same tensor twice, channel permutations, couplings
# across a Concat boundary, negative axes, defaults.

case("mul_self", "Mul", lambda: chain(lambda g, t: g.node("Mul", [t, t], name="op")), check=consumer_cut())
case("concat_self", "Concat", lambda: chain(lambda g, t: (g.node("Concat", [t, t], name="op", axis=1), 16)),
     check=lambda e: e.assert_sliced("c1_W", 1, np.concatenate([e.kept(), 8 + e.kept()])))


def _concat_then_grouped(g: G, t: str) -> tuple[str, int]:
    joined = g.node("Concat", [t, branch(g)], name="op", axis=1)
    return g.conv(joined, 16, 16, group=2, name="gc"), 16


case("concat_then_grouped_conv", ("Concat", "Conv"), lambda: chain(_concat_then_grouped),
     check=lambda e: np.testing.assert_array_equal(e.kept(), e.kept("c0b_out")))


def _concat_then_depthwise(g: G, t: str) -> tuple[str, int]:
    joined = g.node("Concat", [t, branch(g, cout=4)], name="op", axis=1)
    return g.conv(joined, 12, 12, group=12, name="dw"), 12


case("concat_then_depthwise", ("Concat", "Conv"), lambda: chain(_concat_then_depthwise),
     check=lambda e: e.attr("dw", "group") == e.k() + e.k("c0b_out") or pytest.fail("dw group"))


def _split_swap_grouped(g: G, t: str) -> str:
    a, b = g.node("Split", [t, g.ints([4, 4], "sizes")], n_out=2, name="op", axis=-3)
    return g.conv(g.node("Concat", [b, a], name="swap", axis=-3), 8, 8, group=2, name="gc")


def _split_swap_check(e: Edited) -> None:
    kept = e.kept()
    np.testing.assert_array_equal(kept[kept < 4] + 4, kept[kept >= 4])
    e.assert_values("sizes", [int(np.sum(kept < 4))] * 2)


case("split_swap_into_grouped_conv", ("Split", "Concat", "Conv"), lambda: chain(_split_swap_grouped),
     check=_split_swap_check)
case("slice_default_axes", "Slice", lambda: chain(lambda g, t: (g.node(
    "Slice", [t, g.ints([0, 2], "starts"), g.ints([INT64_MAX, 7], "ends")], name="op"), 5)),
    check=lambda e: (e.assert_values("starts", [0, int(np.sum(e.kept() < 2))]),
                     e.assert_values("ends", [INT64_MAX, int(np.sum(e.kept() < 7))])))
case("slice_negative_axis", "Slice", lambda: chain(lambda g, t: (g.node(
    "Slice", [t, g.ints([1], "starts"), g.ints([-1], "ends"), g.ints([-3], "axes")], name="op"), 6)),
    check=_slice_check(1, 7))
case("transpose_default_perm", "Transpose", lambda: chain(
    lambda g, t: g.node("Transpose", [g.node("Transpose", [t], name="op")], name="back")), check=consumer_cut())
case("unsqueeze_front_squeeze", ("Unsqueeze", "Squeeze", "Relu"), lambda: chain(lambda g, t: g.node(
    "Squeeze", [g.node("Relu", [g.node("Unsqueeze", [t, g.ints([0], "a")], name="op")]), g.ints([0], "b")],
    name="sq")), check=consumer_cut())
case("squeeze_without_axes", ("Squeeze", "Unsqueeze"), lambda: chain(lambda g, t: g.node(
    "Unsqueeze", [g.node("Squeeze", [g.node("GlobalAveragePool", [t], name="gap")], name="op"),
                  g.ints([2, 3], "a")], name="unsq")))
case("matmul_channel_as_batch_axis", "MatMul", lambda: chain(lambda g, t: g.matmul(t, 8, 8, name="op")),
     check=all_of(unchanged("op_W"), consumer_cut()))
case("convtranspose_depthwise_multiplier2", "ConvTranspose", _convt(8, 16), check=lambda e: (
    e.attr("ct", "group") == e.k() or pytest.fail("group"), e.assert_sliced("ct_W", 0, e.kept())))


def _view_pattern(g: G, t: str) -> str:
    """PyTorch's ``x.view(x.size(0), x.size(1), -1)``: the target is computed at run time from Shape."""
    batch = g.node("Gather", [g.node("Shape", [t], name="shape_a"), g.ints(0, "i0")], name="ga", axis=0)
    chans = g.node("Gather", [g.node("Shape", [t], name="shape_b"), g.ints(1, "i1")], name="gb", axis=0)
    target = g.node("Concat", [g.node("Unsqueeze", [batch, g.ints([0], "u0")], name="ua"),
                               g.node("Unsqueeze", [chans, g.ints([0], "u1")], name="ub"), g.ints([-1], "m1")],
                    name="target", axis=0)
    flat = g.node("Relu", [g.node("Reshape", [t, target], name="op")], name="relu")
    return g.node("Reshape", [flat, g.ints([-1, 8, 8, 8], "shape_back")], name="back")


case("shape_view_pattern", ("Shape", "Gather", "Unsqueeze", "Concat", "Reshape"), lambda: chain(_view_pattern),
     check=lambda e: e.assert_values("shape_back", [-1, e.k(), 8, 8]))


def _gemm_variants(kind: str):
    def build() -> onnx.ModelProto:
        g = G()
        h = g.gemm(g.input("x", ("N", 16)), 16, 32, name="c0")
        if kind == "transA":
            cols = g.node("Transpose", [g.node("Relu", [h], name="relu")], name="op", perm=[1, 0])
            h = g.node("Gemm", [cols, g.const(g.randn((32, 12)), "c1_W")], name="c1", transA=1)
        elif kind == "bias2d":
            h = g.node("Gemm", [h, g.const(g.randn((12, 32)), "c1_W"), g.const(f32(1, 12), "c1_B")], name="c1",
                       transB=1)
        else:
            h = g.node("Add", [h, g.gemm("x", 16, 32, name="c0b")], name="op")
            g.gemm_out(h, 32)
            return g.model()
        g.gemm_out(g.node("Relu", [h], name="relu2"), 12)
        return g.model()
    return build


case("gemm_transA", ("Gemm", "Transpose"), _gemm_variants("transA"), check=sliced("c1_W"))
case("gemm_bias_2d", "Gemm", _gemm_variants("bias2d"), check=sliced("c1_W", axis=1))
case("gemm_residual_add", ("Gemm", "Add"), _gemm_variants("residual"), check=all_of(
    sliced("c0b_W", "c0b_B", tensor="c0_out"), sliced("head_W", axis=1)))

# ---------------------------------------------------------------------------------------------
# Barriers: the group of c0 must freeze (named node, reason), the head conv c1 must still prune.


def barrier(id: str, ops, build, node: str, reason: str, runnable: bool = True) -> None:
    case(id, ops, build, barrier=(node, reason), runnable=runnable)


barrier("barrier_softmax_channel", "Softmax", body("Softmax", axis=1), "op", "Softmax normalizes over this axis")
barrier("barrier_logsoftmax_opset11_axis1", "LogSoftmax", body("LogSoftmax", opset=11, axis=1), "op",
        "normalizes over this axis")
barrier("barrier_reducemean_channel", "ReduceMean", lambda: chain(lambda g, t: (
    g.node("ReduceMean", [t], name="op", axes=[1], keepdims=1), 1)), "op", "reduces over the channel axis")
barrier("barrier_argmax_channel", ("ArgMax", "Cast"), lambda: chain(lambda g, t: (g.node(
    "Cast", [g.node("ArgMax", [t], name="op", axis=1, keepdims=1)], name="cast", to=FLOAT), 1)),
    "op", "returns indices along the channel axis")


def _layernorm_channels_last(g: G, t: str) -> str:
    nhwc = g.node("Transpose", [t], name="to_nhwc", perm=[0, 2, 3, 1])
    ln = g.node("LayerNormalization", [nhwc, g.const(f32(8, low=0.5, high=1.5), "scale"), g.const(f32(8), "bias")],
                name="op", axis=-1)
    return g.node("Transpose", [ln], name="to_nchw", perm=[0, 3, 1, 2])


barrier("barrier_layernorm_channels_last", ("LayerNormalization", "Transpose"), lambda: chain(_layernorm_channels_last),
        "op", "LayerNormalization normalizes over this axis")
barrier("barrier_instancenorm_channels_last", ("InstanceNormalization", "Transpose"), lambda: chain(
    lambda g, t: g.node("Transpose", [g.node("InstanceNormalization", [
        g.node("Transpose", [t], name="to_nhwc", perm=[0, 3, 1, 2]), g.const(f32(8), "scale"),
        g.const(f32(8), "bias")], name="op")], name="back", perm=[0, 2, 3, 1])),
    "op", "InstanceNormalization reduces over this axis")


def _custom(g: G, t: str) -> str:
    g.domains["com.example"] = 1
    return g.node("MyOp", [t], name="op", domain="com.example")


def _custom_model() -> onnx.ModelProto:
    g = G()
    t = g.conv(g.input(), 4, 8, name="c0")
    u = _custom(g, t)
    h = g.conv(u, 8, 6, name="c1")
    g.node("Identity", [h], name="id", outputs=["y"])
    g.output("y", shape=["N", 6, 8, 8])  # shape inference cannot see through the custom op
    return g.model(check=False)


barrier("barrier_custom_domain_op", (), _custom_model, "op", "no rule for op MyOp (domain 'com.example')",
        runnable=False)
barrier("barrier_unknown_op_einsum", (), body("Einsum", equation="nchw->nchw"), "op", "no rule for op Einsum")


def _topk(g: G, t: str) -> str:
    values, _ = g.node("TopK", [t, g.ints([8], "k")], n_out=2, name="op", axis=3)
    return values


barrier("barrier_unknown_op_topk", (), lambda: chain(_topk), "op", "no rule for op TopK")


def _maxpool_indices(g: G, t: str) -> str:
    y, idx = g.node("MaxPool", [t], n_out=2, name="op", kernel_shape=[2, 2], strides=[2, 2])
    zeroed = g.node("Mul", [g.node("Cast", [idx], name="cast", to=FLOAT), g.const(np.float32(0.0), "zero")])
    return g.node("Add", [y, zeroed], name="join")


barrier("barrier_maxpool_indices", ("MaxPool", "Cast", "Mul", "Add"), lambda: chain(_maxpool_indices), "op",
        "Indices output")
barrier("barrier_pad_channel_axis", "Pad", lambda: chain(lambda g, t: (g.node(
    "Pad", [t, g.ints([0, 1, 0, 0, 0, 1, 0, 0], "pads")], name="op", mode="constant"), 10)),
    "op", "Pad pads the channel axis")
barrier("barrier_slice_step2_channels", "Slice", lambda: chain(lambda g, t: (g.node(
    "Slice", [t, g.ints([0], "starts"), g.ints([8], "ends"), g.ints([1], "axes"), g.ints([2], "steps")],
    name="op"), 4)), "op", "step != 1")
barrier("barrier_resize_channel_axis", "Resize", lambda: chain(lambda g, t: (g.node(
    "Resize", [t, "", g.const(np.array([1, 2, 1, 1], np.float32), "scales")], name="op", mode="nearest"), 16)),
    "op", "Resize rescales this axis")
barrier("barrier_maxroipool", "MaxRoiPool", lambda: chain(lambda g, t: g.node(
    "MaxRoiPool", [t, g.const(np.array([[0, 0, 0, 7, 7], [0, 1, 1, 5, 6]], np.float32), "rois")],
    name="op", pooled_shape=[4, 4])), "op", "MaxRoiPool is not supported")


def _conv_is_output() -> onnx.ModelProto:
    g = G()
    t = g.conv(g.input(), 4, 8, name="c0")
    g.output(t)
    g.head(g.node("Relu", [t], name="relu"), 8)
    return g.model()


barrier("barrier_graph_output", ("Relu",), _conv_is_output, "", "model output")


def _shape_as_data(g: G, t: str) -> str:
    channels = g.node("Gather", [g.node("Shape", [t], name="op"), g.ints([1], "idx1")], name="gather", axis=0)
    divisor = g.node("Cast", [channels], name="cast", to=FLOAT)
    return g.node("Div", [t, divisor], name="div")


case("shape_used_as_data_static", ("Shape", "Gather", "Cast", "Div"), lambda: chain(_shape_as_data))
# The channel count never changes with the input shape: it becomes the constant it is (passes/
# freeze_shape_values), so the pruned model divides by the original count, as the masked reference does.


def _batch_shape_as_data(g: G, t: str) -> str:
    """``t / (N · C)``: a shape value that follows the batch stays computed, and reads the channel count."""
    dims = g.node("Slice", [g.node("Shape", [t], name="op"), g.ints([0], "s0"), g.ints([2], "s2")], name="dims")
    product = g.node("ReduceProd", [dims], name="prod", keepdims=1)
    return g.node("Div", [t, g.node("Cast", [product], name="cast", to=FLOAT)], name="div")


barrier("barrier_shape_used_as_data", ("Shape", "Slice", "ReduceProd", "Cast", "Div"),
        lambda: chain(_batch_shape_as_data), "op", "the channel count read by Shape is used by")


def _gram(g: G, t: str) -> str:
    """``a·aᵀ`` over channels-last rows: the product of two variables contracts the channel axis."""
    rows = g.node("Transpose", [t], name="to_nhwc", perm=[0, 2, 3, 1])  # [N, H, W, C]
    cols = g.node("Transpose", [t], name="to_nhcw", perm=[0, 2, 1, 3])  # [N, H, C, W]
    return g.node("MatMul", [rows, cols], name="op")  # [N, H, W, W]: H (8) feeds the head as channels


barrier("barrier_matmul_two_variables_contracted", ("MatMul", "Transpose"), lambda: chain(_gram), "op",
        "MatMul of two variable tensors")
barrier("barrier_dropout_training", "Dropout", body("Dropout", np.float32(0.3), np.bool_(True)), "op",
        "Dropout in training mode", runnable=False)


barrier("barrier_add_graph_input", "Add", lambda: _with_second_input(), "", "model input")
barrier("barrier_reducemean_all_axes", "ReduceMean", lambda: chain(lambda g, t: (
    g.node("ReduceMean", [t], name="op", keepdims=1), 1)), "op", "reduces over the channel axis")
barrier("barrier_matmul_batched_constant", "MatMul", lambda: chain(lambda g, t: g.node(
    "MatMul", [t, g.const(g.randn((8, 8, 8)), "bw")], name="op")), "op", "batched along the channel axis")
barrier("barrier_gather_channels", "Gather", lambda: chain(lambda g, t: (g.node(
    "Gather", [t, g.ints([0, 2, 4], "idx")], name="op", axis=1), 3)), "op", "Gather selects along the channel axis")
case("gather_spatial_axis", "Gather", lambda: chain(lambda g, t: g.node(
    "Gather", [t, g.ints([0, 2, 4], "idx")], name="op", axis=2)))
barrier("barrier_depth_to_space", (), lambda: chain(lambda g, t: (g.node(
    "DepthToSpace", [t], name="op", blocksize=2), 2)), "op", "no rule for op DepthToSpace")
case("expand_pooled_channels", "Expand", lambda: chain(lambda g, t: g.node(
    "Expand", [g.node("GlobalAveragePool", [t], name="gap"), g.ints([1, 8, 8, 8], "sh")], name="op")))


def _constant_of_shape(g: G, t: str) -> str:
    """``t + ConstantOfShape([N, 8, 1, 1])`` with N read from the model input at run time."""
    batch = g.node("Gather", [g.node("Shape", ["x"], name="xs"), g.ints([0], "i0")], name="gb", axis=0)
    target = g.node("Concat", [batch, g.ints([8, 1, 1], "rest")], name="cat", axis=0)
    fill = g.node("ConstantOfShape", [target], name="op",
                  value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5]))
    return g.node("Add", [t, fill], name="add")


case("constant_of_shape_runtime_target", ("ConstantOfShape", "Concat"), lambda: chain(_constant_of_shape))


def _with_second_input() -> onnx.ModelProto:
    g = G()
    t = g.conv(g.input(), 4, 8, name="c0")
    g.head(g.node("Add", [t, g.input("x2", ("N", 8, 8, 8))], name="op"), 8)
    return g.model()


def _if_capture() -> onnx.ModelProto:
    g = G()
    t = g.conv(g.input(), 4, 8, name="c0")
    cond = g.node("Greater", [g.node("ReduceSum", ["x"], name="rs", keepdims=0), g.const(np.float32(0.0), "zero")],
                  name="gt")
    out = [helper.make_tensor_value_info("branch_out", FLOAT, None)]
    then = helper.make_graph([helper.make_node("Identity", [t], ["branch_out"], name="then_id")], "then", [], out)
    other = helper.make_graph([helper.make_node("Neg", [t], ["branch_out"], name="else_neg")], "else", [], out)
    g.head(g.node("If", [cond], name="if", then_branch=then, else_branch=other), 8)
    return g.model()


barrier("barrier_if_subgraph_capture", ("ReduceSum", "Greater"), _if_capture, "", "read inside the body of control-flow node")

# ---------------------------------------------------------------------------------------------
# com.microsoft contrib ops (graphs in tests/contrib_graphs.py; whole models in tests/test_contrib_ops.py).

case("contrib_bias_gelu", "BiasGelu", contrib_mlp, first=("h", 1), weight=("w1", 1))
case("contrib_gqa_rotary_skip_simplified_quick_gelu", ("GroupQueryAttention", "RotaryEmbedding",
     "SkipSimplifiedLayerNormalization", "QuickGelu"), cg.gqa_decoder_block, first=("up", 2), weight=("up_w", 1))
case("contrib_attention_skip_layer_norm_fast_gelu", ("Attention", "SkipLayerNormalization", "FastGelu"),
     cg.attention_block, first=("up", 2), weight=("up_w", 1))
case("contrib_mha_rotary_heads", ("MultiHeadAttention", "RotaryEmbedding"), cg.mha_rotary_block, first=("q", 2),
     weight=("q_w", 1))
case("contrib_bias_add", "BiasAdd", lambda: cg.bias_add_block(False), first=("up", 2), weight=("up_w", 1),
     runnable=False)  # no CPU kernel
case("barrier_contrib_simplified_layer_norm", "SimplifiedLayerNormalization",
     lambda: cg.bias_add_block(True, cg.MS), first=("up", 2), weight=("up_w", 1),
     barrier=("rms", "SimplifiedLayerNormalization normalizes over this axis"), runnable=False)
case("contrib_matmul_nbits_rows", "MatMulNBits", cg.matmul_nbits_mlp, first=("mid", 1), weight=("mid_q4", 0))
case("barrier_contrib_matmul_nbits_flat_scales", "MatMulNBits", cg.matmul_nbits_mlp, first=("up", 1),
     weight=("up_q4", 0), barrier=("mid", "scales are stored flat"))

# ---------------------------------------------------------------------------------------------
# Tests.

RATIOS = (0.25, 0.5)
CRITERIA = ("l1", "random")
BY_ID = {c.id: c for c in CASES}


def _param(c: Case, *extra, analyzed: bool = True):
    return pytest.param(c, *extra, id="-".join([c.id, *map(str, extra)]))


@functools.lru_cache(maxsize=None)
def build(case_id: str) -> onnx.ModelProto:
    return BY_ID[case_id].build()


@functools.lru_cache(maxsize=None)
def prepared(case_id: str) -> Prepared:
    return prepare(build(case_id))


def first_groups(p: Prepared, c: Case) -> list:
    slot = Slot(*c.first)
    assert slot in p.analysis.slots, f"{slot} was never reached by the analysis"
    groups, _ = p.analysis.slot_units(slot)
    return [p.analysis.groups[i] for i in np.unique(groups)]


def test_ids_are_unique() -> None:
    assert len(BY_ID) == len(CASES)


def test_every_registered_op_has_a_case() -> None:
    covered = {op for c in CASES for op in c.ops}
    missing = sorted(set(registered_ops()) - covered)
    assert not missing, f"registered ops without a rule case: {missing}"


@pytest.mark.parametrize("c", [_param(c, analyzed=False) for c in CASES])
def test_case_uses_its_ops(c: Case) -> None:
    present = {n.op_type for n in build(c.id).graph.node}
    assert set(c.ops) <= present, sorted(set(c.ops) - present)


@pytest.mark.parametrize("c", [_param(c) for c in CASES])
def test_analysis_verdict(c: Case) -> None:
    groups = first_groups(prepared(c.id), c)
    assert groups
    if c.barrier is None:
        frozen = [(g.id, [r.to_dict() for r in g.reasons]) for g in groups if g.frozen]
        assert not frozen, f"first producer's channels frozen: {frozen}"
        assert sum(g.units for g in groups) > 1
        return
    node, reason = c.barrier
    assert all(g.frozen for g in groups), "a barrier must freeze every group of the channel"
    reasons = [r for g in groups for r in g.reasons]
    assert any(r.node == node and reason in r.reason for r in reasons), [r.to_dict() for r in reasons]


RUNNABLE = [c for c in CASES if c.runnable]


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("c", [_param(c) for c in RUNNABLE])
def test_prune_matches_masked_reference(c: Case, ratio: float, criterion: str) -> None:
    p = prepared(c.id)
    plan = plan_prune(p, PruneOptions(ratio=ratio, criterion=criterion, seed=3))
    pruned = apply_plan(p, plan)
    assert_matches_oracle(p, plan, pruned, tolerance=TOLERANCE, seeds=(0, 7), batch=3)
    edited = Edited(p, plan, pruned)
    name, axis = c.weight
    before, after = edited.before[name].shape, edited.after[name].shape
    kept = edited.k(*c.first)
    if c.barrier is None:
        assert kept < p.analysis.slots[Slot(*c.first)][1], "the plan removed no channel of the first producer"
        assert after[axis] == kept and after[:axis] + after[axis + 1:] == before[:axis] + before[axis + 1:]
        edited.assert_sliced(name, axis, edited.kept(*c.first))
        if c.check is not None:
            c.check(edited)
    else:
        assert after == before, "a frozen group keeps its weights"
        assert plan.removed(p.analysis), "the model must still prune outside the barrier"
        assert sum(i.ByteSize() for i in pruned.graph.initializer) < \
            sum(i.ByteSize() for i in p.normalized.graph.initializer)


def test_custom_domain_prune_keeps_it_frozen() -> None:
    """onnxruntime cannot run MyOp; planning and rewriting must still leave the frozen channels alone."""
    p = prepared("barrier_custom_domain_op")
    plan = plan_prune(p, PruneOptions(ratio=0.5))
    pruned = apply_plan(p, plan)
    before = {i.name: list(i.dims) for i in p.normalized.graph.initializer}
    after = {i.name: list(i.dims) for i in pruned.graph.initializer}
    assert after["c0_W"] == before["c0_W"]


# ---------------------------------------------------------------------------------------------
# Known bug: a run-time Reshape target built from the Shape of one group, reshaping another group's tensor.


def _foreign_shape_target() -> onnx.ModelProto:
    """``Reshape(o, [N, C(t), -1])``: the target reads ``t``'s channel count but reshapes ``o`` (branch c0b)."""
    g = G()
    t = g.conv(g.input(), 4, 8, name="c0")
    o = branch(g)
    head = g.node("Slice", [g.node("Shape", [t], name="shape"), g.ints([0], "s0"), g.ints([2], "s2")], name="nc")
    target = g.node("Concat", [head, g.ints([-1], "m1")], name="target", axis=0)
    view = g.node("Reshape", [o, target], name="view")
    g.head(g.node("Reshape", [view, g.ints([-1, 8, 8, 8], "back_shape")], name="back"), 8)
    return g.model()


def test_shape_target_of_another_group_hand_plan() -> None:
    """Shape(c0_out) builds the target of Reshape(c0b_out): the Shape rule freezes c0's group, so a plan that
    removes a channel of it is refused before any rewrite."""
    p = prepare(_foreign_shape_target())
    plan = plan_prune(p, PruneOptions(ratio=0.0))
    index = int(p.analysis.slot_units(Slot("c0_out", 1))[0][0])
    groups = list(plan.groups)
    groups[index] = replace(groups[index], kept=tuple(range(1, 8)))  # drop channel 0 of c0 only
    plan = replace(plan, groups=tuple(groups))
    assert groups[index].frozen, "the Shape rule freezes the group whose channel count a Reshape target reads"
    with pytest.raises(PlanError, match=f"group {groups[index].id} is frozen but the plan removes channels"):
        apply_plan(p, plan)


def test_shape_target_of_another_group_global_ranking() -> None:
    """The same bug reached through ordinary options: global ranking prunes c0b alone, and the Reshape target
    still reads c0's unpruned count; the rewrite's shape check refuses it instead of writing a wrong model."""
    model = _foreign_shape_target()
    with pytest.raises(RewriteError, match=r"tensor 'view_out' would have shape \[13, 8, 56\], the plan implies"):
        prune(model, PruneOptions(ratio=0.25, criterion="l1", global_ranking=True))
