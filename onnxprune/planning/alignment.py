"""Hardware-aligned widths: what ``--round-to auto`` means for each execution provider.

Why a table and not a constant: a pruned width only pays off when the runtime's kernels can use it.
onnxruntime's CPU provider runs convolutions through MLAS's NCHWc layout (blocks of 16 channels with
AVX-512, 8 with AVX2); a convolution whose channel count is not a multiple of the block is left in
plain NCHW and pays reorders around it.  Measured on this project's reference machine (AMD EPYC with
AVX-512, onnxruntime 1.32, one thread; ``benchmarks/bench_round_to.py`` → ``results_round_to.md``,
``benchmarks/bench_target_speed.py`` → ``results_target_speed.md``): MobileNetV2 pruned to half its MACs
runs at 0.74–0.80× the *original's* speed with free widths, and at 0.97 of the ideal 2× or better with
widths rounded to 16; whole models gain 16 ≥ 8 > 4 ≫ 1, 32 is no faster than 16, and on single layer
chains 32 adds 20–30 % latency (the rounding-up buys MACs) while 16 costs at most ~6 %.  16 is also a
multiple of the AVX2 block (8), so one value serves every x86 CPU and a plan does not depend on the
machine that made it.

Why narrow groups get a finer multiple instead of none: rounding is *up*, so a group of ``units``
channels can only keep ``multiple``, ``2·multiple``, …, or all of them; a 16- or 24-channel group would
be frozen or nearly so by 16.  Groups under ``min_units`` therefore use the largest power of two that
still leaves them one aligned width below full (:func:`onnxprune.planning.allocate.round_step`: 24 → 8, 12 → 4).
Leaving them unrounded instead was measurably slower on MobileNetV2, whose 16/24-channel residual
streams run at the highest resolutions (a one-off measurement while choosing the rule, batch 1, one
thread: latency 0.62× the original's with narrow groups unrounded, 0.50–0.53× with them graded or at 16;
the graded rule gives the same MobileNetV2 plan as 16 everywhere and keeps tiny models prunable).

Which row: ``auto`` aligns for the hardware the plan is made for.  With ``--target-latency`` that is the
provider the latency is measured with (``--latency-provider``): tuning widths for one device while
timing them on another would optimise the wrong thing.  Every other plan (``--ratio``, FLOPs or params
targets) has no device of its own and uses the CPU row, as before (:func:`provider_for`).  A provider
without a row is refused with a request for ``--round-to N`` rather than given another provider's row.
Only the CPU row is measured; the others are vendor guidance, and the plan's ``alignment`` record
carries each row's ``evidence`` so a report never passes guidance off as a measurement.

``auto`` is a preference, never allowed to undo what was asked: when a FLOPs/params target cannot be
met within its band with aligned steps (tiny models, where every layer is narrow and alignment buys no
speed), the budget search halves the multiple until it can (:func:`first_feasible`), and the plan
records the multiple used; with ``--ratio`` each group takes the coarsest step whose rounding up gives
back at most half of its requested cut (:func:`onnxprune.planning.allocate._rounded_keeping_the_cut`).  Explicit
integers keep their meaning everywhere: ``--round-to 8`` rounds every group and is a hard constraint.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, TypeVar

from onnxprune.measurement.bench import DEFAULT_PROVIDER
from onnxprune.errors import InputError

T = TypeVar("T")

AUTO = "auto"


@dataclass(frozen=True)
class Alignment:
    """Kept counts of groups with at least ``min_units`` units are rounded up to multiples of ``multiple``.

    ``source`` is ``explicit`` or ``auto (<provider>)``; ``evidence`` (auto only) says whether the row
    was measured or follows vendor guidance (:data:`TABLE`).
    """

    multiple: int
    min_units: int = 0
    source: str = "explicit"
    evidence: str = ""

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"multiple": self.multiple, "min_units": self.min_units, "source": self.source}
        if self.evidence:
            out["evidence"] = self.evidence
        return out


#: provider → (multiple, min_units, evidence).  Only the CPU row is measured here; the others follow
#: the vendors' guidance and say so, so nobody mistakes them for measurements.
TABLE: dict[str, tuple[int, int, str]] = {
    "CPUExecutionProvider": (16, 32, "measured: benchmarks/results_round_to.md (MLAS NCHWc block 16 on AVX-512, "
                                     "8 on AVX2; 16 serves both)"),
    "CUDAExecutionProvider": (8, 32, "not measured here: NVIDIA's guidance (channel counts multiple of 8 for "
                                     "fp16 Tensor Cores)"),
    "TensorrtExecutionProvider": (8, 32, "not measured here: as CUDA"),
}


def provider_for(target_latency: float | None, latency_provider: str) -> str:
    """The provider whose row ``auto`` uses: the one a latency target is measured with, else the CPU's
    (module docstring: a plan without a latency target has no device of its own)."""
    return latency_provider if target_latency is not None else DEFAULT_PROVIDER


def resolve(round_to: int | str, provider: str = DEFAULT_PROVIDER) -> Alignment:
    """An explicit multiple (every group) or ``auto``: the table row of ``provider`` (:func:`provider_for`)."""
    if isinstance(round_to, str) and round_to.strip().lower() == AUTO:
        if provider not in TABLE:
            raise InputError(f"--round-to auto has no alignment entry for '{provider}' (known: {', '.join(TABLE)}); "
                             "give --round-to N")
        multiple, min_units, evidence = TABLE[provider]
        return Alignment(multiple, min_units, f"auto ({provider})", evidence)
    try:
        value = int(round_to)
    except (TypeError, ValueError) as err:
        raise InputError(f"--round-to must be a positive integer or '{AUTO}', got {round_to!r}") from err
    if isinstance(round_to, float) and value != round_to or value < 1:
        raise InputError(f"--round-to must be a positive integer or '{AUTO}', got {round_to!r}")
    return Alignment(value)


def relaxations(alignment: Alignment) -> list[Alignment]:
    """What a budget search may try, in order: an explicit multiple is a hard constraint (itself only);
    ``auto`` is a preference, so it halves the multiple down to 1 when the target cannot be met with
    coarser steps (tiny models, where every layer is narrow, and where alignment buys no speed anyway)."""
    if alignment.source == "explicit":
        return [alignment]
    out, multiple = [], alignment.multiple
    while multiple > 1:
        out.append(replace(alignment, multiple=multiple))
        multiple //= 2
    return out + [replace(alignment, multiple=1, min_units=0)]


def first_feasible(alignment: Alignment, attempt: Callable[[Alignment], T], relax: bool = True
                   ) -> tuple[T, Alignment]:
    """``attempt`` with the first of :func:`relaxations` that does not raise :class:`InputError`
    (a target that cannot be met); the last one's error propagates.

    ``relax=False`` tries ``alignment`` only: a latency target is not helped by unaligned widths (they
    are slower), and every attempt there costs timed runs.
    """
    candidates = relaxations(alignment) if relax else [alignment]
    for candidate in candidates[:-1]:
        try:
            return attempt(candidate), candidate
        except InputError:
            continue
    return attempt(candidates[-1]), candidates[-1]
