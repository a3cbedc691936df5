"""Property: on any valid graph built from the supported ops, ``prune`` is right or refuses clearly.

Hypothesis draws a chain/DAG of blocks — conv+activation, depthwise conv, grouped conv, residual add of
two convs, concat of two branches, split into branches, BatchNormalization, pooling, skip connections to
earlier tensors, and (beyond those) squeeze-excitation, channel shuffle, channel Slice, per-channel
constants, channels-last Transpose/MatMul, Resize/ConvTranspose, Pad — with widths 2–12, ending in a
flatten→gemm head, plus random prune options (ratio in [0, 0.9], criterion, uniform or global ranking,
round_to, min_keep).  ``prune`` must either return a model that passes the
full checker, runs in onnxruntime under default optimizations and ``ORT_DISABLE_ALL``, and matches the
masked reference to ≤ 1e-4 relative error on seeded batch-3 inputs — or raise an ``OnnxPruneError``.
Any other exception is a bug.  ``derandomize=True`` keeps CI deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_matches_oracle
from graphs import G
from onnxprune.errors import OnnxPruneError
from onnxprune.pipeline import PruneOptions, prune

TOLERANCE = 1e-4  # relative: max |pruned - masked reference| / max |masked reference|
WIDTH = st.integers(2, 12)
ACTIVATIONS = ("Relu", "Sigmoid", "LeakyRelu", "HardSwish", "Tanh", "SiLU", None)


@dataclass
class Tensor:
    name: str
    channels: int
    size: int  # spatial height = width


class Net:
    """The graph being drawn: a builder plus every 4-D tensor made so far (for skip connections)."""

    def __init__(self, g: G, x: Tensor):
        self.g = g
        self.cur = x
        self.seen = [x]

    def push(self, name: str, channels: int, size: int | None = None) -> None:
        self.cur = Tensor(name, channels, self.cur.size if size is None else size)
        self.seen.append(self.cur)


def _act(draw, net: Net, name: str) -> str:
    op = draw(st.sampled_from(ACTIVATIONS))
    g = net.g
    if op is None:
        return name
    if op == "SiLU":
        return g.node("Mul", [name, g.node("Sigmoid", [name])])
    if op == "LeakyRelu":
        return g.node(op, [name], alpha=0.1)
    return g.node(op, [name])


def _conv_act(draw, net: Net) -> None:
    width, k = draw(WIDTH), draw(st.sampled_from([1, 3]))
    out = net.g.conv(net.cur.name, net.cur.channels, width, k=k)
    net.push(_act(draw, net, out), width)


def _depthwise(draw, net: Net) -> None:
    mult = draw(st.sampled_from([1, 2])) if net.cur.channels <= 6 else 1
    c = net.cur.channels
    out = net.g.conv(net.cur.name, c, c * mult, group=c)
    net.push(_act(draw, net, out), c * mult)


def _grouped(draw, net: Net) -> None:
    c = net.cur.channels
    groups = [d for d in (2, 3, 4) if c % d == 0]
    if not groups:
        return _conv_act(draw, net)
    g = draw(st.sampled_from(groups))
    width = g * draw(st.integers(1, 12 // g))
    out = net.g.conv(net.cur.name, c, width, group=g)
    net.push(_act(draw, net, out), width)


def _residual(draw, net: Net) -> None:
    width = draw(WIDTH)
    a = net.g.conv(net.cur.name, net.cur.channels, width)
    a = _act(draw, net, a)
    a = net.g.conv(a, width, width)
    if width == net.cur.channels and draw(st.booleans()):
        b = net.cur.name  # identity shortcut
    else:
        b = net.g.conv(net.cur.name, net.cur.channels, width, k=1)
    net.push(net.g.node("Add", [a, b]), width)


def _concat(draw, net: Net) -> None:
    w1, w2 = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    a = _act(draw, net, net.g.conv(net.cur.name, net.cur.channels, w1))
    b = net.g.conv(net.cur.name, net.cur.channels, w2, k=1)
    net.push(net.g.node("Concat", [a, b], axis=1), w1 + w2)


def _split(draw, net: Net) -> None:
    c = net.cur.channels
    if c < 2:
        return _conv_act(draw, net)
    first = draw(st.integers(1, c - 1))
    a, b = net.g.node("Split", [net.cur.name, net.g.ints([first, c - first])], n_out=2, axis=1)
    mode = draw(st.sampled_from(["swap", "convs"]))
    if mode == "swap":  # channel permutation: Concat the halves the other way round
        net.push(net.g.node("Concat", [b, net.g.node("Relu", [a])], axis=1), c)
        return
    w1, w2 = draw(WIDTH), draw(WIDTH)
    a = net.g.conv(a, first, w1)
    b = net.g.conv(b, c - first, w2)
    net.push(net.g.node("Concat", [a, b], axis=1), w1 + w2)


def _bn(draw, net: Net) -> None:
    net.push(net.g.bn(net.cur.name, net.cur.channels), net.cur.channels)


def _pool(draw, net: Net) -> None:
    if net.cur.size < 2:
        return _bn(draw, net)
    op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
    out = net.g.node(op, [net.cur.name], kernel_shape=[2, 2], strides=[2, 2])
    net.push(out, net.cur.channels, net.cur.size // 2)


def _skip(draw, net: Net) -> None:
    """Add or concat an earlier tensor of the same spatial size (a DAG edge)."""
    same = [t for t in net.seen[:-1] if t.size == net.cur.size]
    if not same:
        return _conv_act(draw, net)
    other = draw(st.sampled_from(same))
    if other.channels == net.cur.channels and draw(st.booleans()):
        net.push(net.g.node("Add", [net.cur.name, other.name]), net.cur.channels)
    elif net.cur.channels + other.channels <= 24:
        net.push(net.g.node("Concat", [net.cur.name, other.name], axis=1), net.cur.channels + other.channels)


def _se(draw, net: Net) -> None:
    """Squeeze-excitation: ``x * sigmoid(conv(relu(conv(gap(x)))))`` couples x with the gate's conv."""
    g, c = net.g, net.cur.channels
    r = max(1, c // 2)
    gate = g.node("Relu", [g.conv(g.node("GlobalAveragePool", [net.cur.name]), c, r, k=1)])
    gate = g.node("Sigmoid", [g.conv(gate, r, c, k=1)])
    net.push(g.node("Mul", [net.cur.name, gate]), c)


def _shuffle(draw, net: Net) -> None:
    """Channel shuffle ``Reshape [N,2,C/2,H,W] → Transpose → Reshape [N,C,H,W]``."""
    g, c, s = net.g, net.cur.channels, net.cur.size
    if c % 2:
        return _bn(draw, net)
    grouped = g.node("Reshape", [net.cur.name, g.ints([-1, 2, c // 2, s, s])])
    swapped = g.node("Transpose", [grouped], perm=[0, 2, 1, 3, 4])
    net.push(g.node("Reshape", [swapped, g.ints([-1, c, s, s])]), c)


def _slice(draw, net: Net) -> None:
    c = net.cur.channels
    if c < 2:
        return _bn(draw, net)
    lo = draw(st.integers(0, c - 2))
    hi = draw(st.integers(lo + 1, c))
    g = net.g
    net.push(g.node("Slice", [net.cur.name, g.ints([lo]), g.ints([hi]), g.ints([1])]), hi - lo)


def _per_channel(draw, net: Net) -> None:
    g, c = net.g, net.cur.channels
    op = draw(st.sampled_from(["Add", "Mul", "Sub", "Div", "PRelu", "Max"]))
    value = (np.abs(g.randn((c, 1, 1), 1.0)) + 0.5).astype(np.float32)  # positive: a safe divisor
    net.push(g.node(op, [net.cur.name, g.const(value)]), c)


def _nhwc(draw, net: Net) -> None:
    """Channels last and back, with a MatMul (consumer + producer) or a per-channel scale in between."""
    g, c = net.g, net.cur.channels
    h = g.node("Transpose", [net.cur.name], perm=[0, 2, 3, 1])
    if draw(st.booleans()):
        width = draw(WIDTH)
        h, c = g.matmul(h, c, width), width
    else:
        h = g.node("Mul", [h, g.const(g.randn((c,), 1.0))])
    net.push(g.node("Transpose", [h], perm=[0, 3, 1, 2]), c)


def _upsample(draw, net: Net) -> None:
    """Resize ×2 (channels pass) or ConvTranspose ×2 (plain or depthwise)."""
    g, cur = net.g, net.cur
    if cur.size > 8:
        return _pool(draw, net)
    kind = draw(st.sampled_from(["resize", "convt", "convt_depthwise"]))
    if kind == "resize":
        out, width = g.node("Resize", [cur.name, "", g.const(np.array([1, 1, 2, 2], np.float32))],
                            mode="nearest"), cur.channels
    elif kind == "convt":
        width = draw(WIDTH)
        out = g.conv_t(cur.name, cur.channels, width)
    else:
        width = cur.channels
        out = g.conv_t(cur.name, width, width, group=width)
    net.push(out, width, cur.size * 2)


def _pad(draw, net: Net) -> None:
    g = net.g
    net.push(g.node("Pad", [net.cur.name, g.ints([0, 0, 1, 1, 0, 0, 1, 1])], mode="constant"), net.cur.channels,
             net.cur.size + 2)


BLOCKS = {"se": _se, "shuffle": _shuffle, "slice": _slice, "per_channel": _per_channel, "nhwc": _nhwc,
          "upsample": _upsample, "pad": _pad,
          "conv": _conv_act, "depthwise": _depthwise, "grouped": _grouped, "residual": _residual,
          "concat": _concat, "split": _split, "bn": _bn, "pool": _pool, "skip": _skip}


def _head(draw, net: Net) -> None:
    g, cur = net.g, net.cur
    kind = draw(st.sampled_from(["gap", "flatten", "reshape"] if cur.size <= 4 else ["gap"]))
    if kind == "gap":
        flat = g.node("Flatten", [g.node("GlobalAveragePool", [cur.name])], axis=1)
        features = cur.channels
    elif kind == "flatten":
        flat, features = g.node("Flatten", [cur.name], axis=1), cur.channels * cur.size ** 2
    else:
        features = cur.channels * cur.size ** 2
        flat = g.node("Reshape", [cur.name, g.ints([-1, features])])
    if draw(st.booleans()):  # a hidden fully connected layer: a Gemm group of its own
        hidden = draw(WIDTH)
        flat, features = g.node("Relu", [g.gemm(flat, features, hidden)]), hidden
    g.gemm_out(flat, features)


@st.composite
def models(draw) -> onnx.ModelProto:
    g = G(seed=draw(st.integers(0, 2**16)))
    cin = draw(st.integers(1, 4))
    net = Net(g, Tensor(g.input("x", ("N", cin, 8, 8)), cin, 8))
    _conv_act(draw, net)
    for block in draw(st.lists(st.sampled_from(sorted(BLOCKS)), min_size=1, max_size=6)):
        BLOCKS[block](draw, net)
    _head(draw, net)
    return g.model()


options = st.builds(
    PruneOptions,
    # [0, 0.9] in steps of 0.05; 0.0 listed last because Hypothesis favours early (and zero) values
    ratio=st.sampled_from([0.5, 0.25, 0.75, 0.1, 0.9, 0.3, 0.6, 0.4, 0.8, 0.05, 0.15, 0.2, 0.35, 0.45, 0.55, 0.65,
                           0.7, 0.85, 0.0]),
    criterion=st.sampled_from(["l1", "l2", "bn", "random"]),
    global_ranking=st.booleans(),
    seed=st.integers(0, 100),
    round_to=st.sampled_from([1, 2, 4]),
    min_keep=st.sampled_from([0.1, 0.0, 0.5]),
)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(model=models(), opts=options)
def test_prune_is_right_or_refuses_clearly(model: onnx.ModelProto, opts: PruneOptions) -> None:
    try:
        result = prune(model, opts)
    except OnnxPruneError as err:
        message = str(err).strip()
        assert message and "\n" not in message, f"an OnnxPruneError must be one clear line: {message!r}"
        return
    assert_matches_oracle(result.prepared, result.plan, result.model, tolerance=TOLERANCE, seeds=(0, 5), batch=3)
    kept = sum(len(g.kept) for g in result.plan.groups if g.kept is not None)
    total = sum(g.channels for g in result.plan.groups if g.kept is not None)
    assert kept <= total
    if opts.ratio == 0.0:
        assert result.after.params == result.before.params, "ratio 0 keeps every parameter"
