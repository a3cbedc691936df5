"""Budgets: choose per-group kept counts so the pruned model keeps a target fraction of FLOPs or params.

Why measured, not estimated: coupled groups (a residual add, a Flatten into a Gemm, a depthwise conv)
make the cost of removing a unit depend on what else is removed, so a per-unit estimate drifts.  The
allocation therefore only fixes an *order* in which units are removed (one entry per unit, a group
index), and a bisection over the number of removed units applies each candidate plan with
:func:`onnxprune.pipeline.apply_plan` and counts it with :func:`onnxprune.measurement.counting.count_model`.  Removing
units never adds MACs or params, so the measured ratio is non-increasing along the order and the
bisection is exact.

Orders:
* ``global`` — units by mean-normalized criterion score, lowest first (FLAP/LAMP-style global ranking);
* ``uniform`` — every group loses the same fraction (the next unit goes to the group whose removed
  fraction would stay smallest), lowest scores first inside a group;
* ``guided`` — greedy on measured sensitivity: the next unit comes from the group whose interpolated
  loss increase per unit of budget saved is smallest (:func:`guided_order`).

Per-group floors (``min_keep``, at least one unit), ``max_ratio`` (never remove more than this fraction
of a group) and ``round_to`` (kept counts rounded *up* to multiples of N, inside the search) hold for
every order; excluded and frozen groups are never in it.

Latency (``--target-latency``) uses the same orders and bisection, but the ratio of a candidate is the
*estimate* of :class:`onnxprune.planning.latency.LatencyModel` (per-layer tables, monotone in every width, so
the bisection stays exact).  The chosen plan is then timed against the original (interleaved runs,
median); when the measured ratio misses the target by more than ``LatencySettings.tolerance`` the
estimate is corrected (:func:`corrected_target`: interpolation between measured plans and the original
at (1, 1), or scaling by estimated/measured beyond them) and the search runs again (at most ``rounds``
times).
The closest measured plan wins, and a plan that is not measurably faster than the input is refused
(:class:`VerificationError`): a latency target must never make a model slower.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np
import onnx

from onnxprune.planning.allocate import rounded_keep
from onnxprune.planning.block_units import keep_units, legal_keep
from onnxprune.measurement.counting import count_model
from onnxprune.errors import InputError, VerificationError
from onnxprune.runtime.input_shapes import InputShapes, require_known_shapes
from onnxprune.runtime.executor import Executor
from onnxprune.planning.latency import LatencySettings, Progress, build_latency_model, measure_models
from onnxprune.methods.plan import make_plan
from onnxprune.methods.prepared import model_stats
from onnxprune.progress import Steps

from onnxprune.methods.prepared import Prepared

METRICS = {"flops": "macs", "params": "params", "latency": "estimated ms"}  # metric -> what a candidate is priced by
ALLOCATIONS = ("global", "uniform", "guided")


@dataclass(frozen=True)
class BudgetSettings:
    """A target (``metric`` ∈ flops/params/latency, ``fraction`` of the original) and the constraints of the search.

    ``latency`` says how latency is measured (only for the latency metric; defaults apply when None).
    """

    metric: str
    fraction: float
    allocation: str = "global"
    min_keep: float = 0.1
    max_ratio: float = 1.0
    round_to: int = 1
    tolerance: float = 0.02
    latency: LatencySettings | None = None
    round_min_units: int = 0  # narrower groups get a finer multiple (allocate.round_step; --round-to auto)
    input_shapes: InputShapes | None = None  # FLOPs and latency are measured at these (onnxprune.runtime.input_shapes)

    def validate(self) -> None:
        if self.metric not in METRICS:
            raise InputError(f"unknown budget metric '{self.metric}' (choose from {', '.join(METRICS)})")
        if not 0.0 < self.fraction <= 1.0:
            raise InputError(f"--target-{self.metric} must be in (0, 1], got {self.fraction}")
        if self.allocation not in ALLOCATIONS:
            raise InputError(f"unknown allocation '{self.allocation}' (choose from {', '.join(ALLOCATIONS)})")
        if not 0.0 <= self.min_keep <= 1.0:
            raise InputError(f"--min-keep must be in [0, 1], got {self.min_keep}")
        if not 0.0 <= self.max_ratio <= 1.0:
            raise InputError(f"--max-ratio must be in [0, 1], got {self.max_ratio}")
        if self.round_to < 1:
            raise InputError(f"--round-to must be >= 1, got {self.round_to}")
        if self.metric == "latency":
            (self.latency or LatencySettings()).validate()


def floors(units: Mapping[int, int], settings: BudgetSettings) -> dict[int, int]:
    """Fewest units each group may keep: ``min_keep``, ``max_ratio`` and at least one."""
    out = {}
    for group, count in units.items():
        by_min = math.ceil(settings.min_keep * count - 1e-9)
        by_max = count - math.floor(settings.max_ratio * count + 1e-9)
        out[group] = min(count, max(1, by_min, by_max))
    return out


def global_order(scores: Mapping[int, np.ndarray], floor: Mapping[int, int]) -> list[int]:
    """Removal order by mean-normalized score (as ``allocate._global_counts`` ranks units)."""
    entries = []
    for group, values in scores.items():
        mean = values.mean()
        normalized = np.sort(values / mean if mean > 0 else values)
        removable = len(values) - floor[group]
        entries.extend((float(v), group) for v in normalized[:removable])
    return [group for _, group in sorted(entries)]


def uniform_order(scores: Mapping[int, np.ndarray], floor: Mapping[int, int]) -> list[int]:
    """Removal order that keeps the removed fraction of every group as equal as possible."""
    entries = []
    for group, values in scores.items():
        units = len(values)
        entries.extend(((j + 1) / units, group) for j in range(units - floor[group]))
    return [group for _, group in sorted(entries)]


def _extrapolated(ratios: np.ndarray, values: np.ndarray, r: float) -> float:
    """Piecewise-linear curve through (0, 0) and the points; beyond the last point, its last slope."""
    xs = np.concatenate([[0.0], ratios])
    ys = np.concatenate([[0.0], values])
    if r <= xs[-1]:
        return float(np.interp(r, xs, ys))
    slope = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), ys[-1] / xs[-1], 0.0)
    return float(ys[-1] + slope * (r - xs[-1]))


def guided_order(units: Mapping[int, int], floor: Mapping[int, int],
                 curves: Mapping[int, dict[str, np.ndarray]]) -> list[int]:
    """Greedy removal order: smallest interpolated loss increase per unit of budget saved first.

    ``curves[group]`` holds ``ratios``, ``loss`` (output change when only this group is pruned at that
    ratio) and ``saved`` (fraction of the model's metric saved at that ratio), all measured.
    """
    def priority(group: int, removed: int) -> float:
        curve, count = curves[group], units[group]
        before, after = removed / count, (removed + 1) / count

        def step(key: str) -> float:
            return _extrapolated(curve["ratios"], curve[key], after) - _extrapolated(curve["ratios"], curve[key], before)

        loss, saved = step("loss"), step("saved")
        return loss / saved if saved > 1e-12 else math.inf

    heap = [(priority(g, 0), g, 0) for g in sorted(units) if units[g] > floor[g]]
    heapq.heapify(heap)
    order = []
    while heap:
        _, group, removed = heapq.heappop(heap)
        order.append(group)
        removed += 1
        if units[group] - removed > floor[group]:
            heapq.heappush(heap, (priority(group, removed), group, removed))
    return order


Removals = tuple[int, ...]  # positions in the order that are removed


@dataclass
class _Search:
    """Search state: builds and prices the plan of a set of removals (cached by kept counts).

    ``price`` is the metric of a pruned model (a count, or estimated ms), ``base`` the original's.
    """

    prepared: Prepared
    scores: Mapping[int, np.ndarray]
    order: list[int]
    settings: BudgetSettings
    base: float
    cache: dict[tuple[int, ...], float]
    price: Callable[[onnx.ModelProto], float]

    def counts(self, removals: Removals) -> dict[int, int]:
        counts = {g: len(v) for g, v in self.scores.items()}
        for position in removals:
            counts[self.order[position]] -= 1
        groups = self.prepared.analysis.groups
        return {g: legal_keep(groups[g], rounded_keep(c, len(self.scores[g]), self.settings.round_to,
                                                      self.settings.round_min_units))
                for g, c in counts.items()}

    def kept(self, removals: Removals) -> dict[int, np.ndarray]:
        groups = self.prepared.analysis.groups
        return {g: keep_units(groups[g], self.scores[g], c) for g, c in self.counts(removals).items()}

    def ratio(self, removals: Removals) -> float:
        key = tuple(sorted(self.counts(removals).items()))
        if key not in self.cache:
            self.cache[key] = self.price(self.model(removals)) / self.base
        return self.cache[key]

    def model(self, removals: Removals) -> onnx.ModelProto:
        """The pruned model of ``removals``."""
        from onnxprune.methods.width import apply_plan

        plan = make_plan(self.prepared.analysis, self.kept(removals), self.prepared.model_sha256, {})
        return apply_plan(self.prepared, plan)

    def prefix(self, k: int) -> float:
        return self.ratio(tuple(range(k)))


def _bisect(search: _Search, target: float) -> tuple[int, int]:
    """Adjacent prefix lengths ``lo + 1 == hi`` with ``prefix(hi) <= target < prefix(lo)``; the caller
    ensures ``prefix(len(order)) <= target < prefix(0)`` (ratios never increase along the order)."""
    lo, hi = 0, len(search.order)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if search.prefix(mid) <= target:
            hi = mid
        else:
            lo = mid
    return lo, hi


def _search(search: _Search) -> Removals:
    """Bisect the prefix of the order closest to the target from below; refine when one step is too coarse."""
    settings, target, tol = search.settings, search.settings.fraction, search.settings.tolerance
    last = len(search.order)
    if search.prefix(last) > target + tol:
        raise InputError(f"--target-{settings.metric} {target:g} is unreachable: the smallest reachable "
                         f"{settings.metric} ratio is {search.prefix(last):.4f} (frozen/excluded groups, "
                         f"--min-keep {settings.min_keep:g}, --max-ratio {settings.max_ratio:g})")
    if search.prefix(last) > target or search.prefix(0) <= target:
        return tuple(range(last if search.prefix(last) > target else 0))
    lo, hi = _bisect(search, target)
    if search.prefix(hi) >= target - tol:
        return tuple(range(hi))
    return _refine(search, lo)


def _refine(search: _Search, start: int) -> Removals:
    """From the prefix ``start`` (above the band), add later removals that do not overshoot the band.

    Why: one unit can be worth several percent (an attention head, a wide layer under --round-to), so
    the prefix can jump over the band; skipping such a unit and taking the next cheaper ones lands in it.
    """
    settings, target, tol = search.settings, search.settings.fraction, search.settings.tolerance
    chosen = tuple(range(start))
    for position in range(start, len(search.order)):
        candidate = chosen + (position,)
        ratio = search.ratio(candidate)
        if ratio < target - tol:
            continue
        chosen = candidate
        if ratio <= target + tol:
            return chosen
    low = search.prefix(start + 1)
    raise InputError(f"--target-{settings.metric} {target:g} cannot be met within ±{tol:g}: the nearest "
                     f"ratios are {low:.4f} and {search.ratio(chosen):.4f} (try a smaller --round-to)")


def allocate_to_target(prepared: Prepared, scores: Mapping[int, np.ndarray], settings: BudgetSettings,
                       base: int, curves: Mapping[int, dict[str, np.ndarray]] | None = None,
                       progress: Progress | None = None, executor: Executor | None = None
                       ) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Kept units per group meeting the target (measured), and a record for the plan's settings.

    ``base`` is the original model's count of the metric (``model_stats(prepared)``; unused for
    latency, whose base is the latency model's estimate of the original; recounted at
    ``settings.input_shapes`` when they are given); ``curves`` are needed for ``guided`` allocation
    (:mod:`onnxprune.planning.sensitivity`); ``progress`` reports the measuring phases of a latency target.

    FLOPs and latency depend on the input shapes: a model with symbolic dims other than the batch and
    no ``settings.input_shapes`` is refused (:func:`onnxprune.runtime.input_shapes.require_known_shapes`).
    """
    settings.validate()
    shapes = settings.input_shapes
    if settings.metric in ("flops", "latency"):
        require_known_shapes(prepared.original, shapes, f"--target-{settings.metric} {settings.fraction:g}")
    units = {g: len(v) for g, v in scores.items()}
    floor = floors(units, settings)
    order = _order(settings.allocation, scores, units, floor, curves)
    if settings.metric == "latency":
        return _latency_target(prepared, scores, order, settings, progress, executor)
    attr = METRICS[settings.metric]
    if shapes:
        base = getattr(model_stats(prepared, input_shapes=shapes), attr)  # counted once per run
    steps = Steps(progress, f"{settings.metric} budget search (apply + count)",
                  math.ceil(math.log2(len(order) + 1)) + 2)  # a bisection over the order, plus its two ends

    def measured(model: onnx.ModelProto) -> float:
        steps.tick()
        return float(getattr(count_model(model, input_shapes=shapes), attr))

    search = _Search(prepared, scores, order, settings, max(base, 1), {}, measured)
    removals = _search(search)
    steps.finish()
    return search.kept(removals), _record(search, removals, search.ratio(removals))


def _record(search: _Search, removals: Removals, achieved: float) -> dict[str, Any]:
    """The plan's ``budget`` settings: target, achieved ratio, search effort, kept units per group."""
    settings, analysis = search.settings, search.prepared.analysis
    return {"metric": settings.metric, "target": settings.fraction, "achieved": round(achieved, 6),
            "tolerance": settings.tolerance, "allocation": settings.allocation,
            "removed_units": len(removals), "removable_units": len(search.order), "evaluations": len(search.cache),
            "input_shapes": settings.input_shapes.to_dict() if settings.input_shapes else None,
            "kept": {analysis.groups[g].id: int(len(v)) for g, v in sorted(search.kept(removals).items())}}


def _latency_target(prepared: Prepared, scores: Mapping[int, np.ndarray], order: list[int],
                    settings: BudgetSettings, progress: Progress | None, executor: Executor | None = None
                    ) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Search on the estimate, confirm by measurement, correct and search again (module docstring)."""
    latency = settings.latency or LatencySettings()
    model = build_latency_model(prepared, latency, progress, executor)  # tables: one task per layer
    search = _Search(prepared, scores, order, settings, model.estimate(prepared.normalized), {}, model.estimate)
    rounds: list[dict[str, Any]] = []
    tried: dict[Removals, dict[str, Any]] = {}
    fraction = settings.fraction
    for _ in range(latency.rounds):
        search.settings = replace(settings, fraction=fraction)
        removals = _latency_removals(search)
        if removals in tried or not removals:
            break
        tried[removals] = _confirm(prepared, search, removals, latency, progress, fraction)
        rounds.append(tried[removals])
        measured = tried[removals]["measured"]
        if abs(measured - settings.fraction) <= latency.tolerance:
            break
        if len(removals) == len(order) and measured > settings.fraction:
            raise InputError(f"--target-latency {settings.fraction:g} is unreachable: with every removable unit "
                             f"removed the model measured {measured:.3f}× the input's latency (frozen/excluded "
                             f"groups, --min-keep {settings.min_keep:g}, --max-ratio {settings.max_ratio:g}, "
                             "fixed per-run costs)")
        fraction = corrected_target([(r["estimated"], r["measured"]) for r in rounds], settings.fraction)
    search.settings = settings
    removals, best = _closest(tried, settings.fraction)
    _refuse_slower(best, settings.fraction)
    record = _record(search, removals, best["measured"])
    measured_on = latency.environment()
    record.update(estimated=best["estimated"], measured=best["measured"], measure_tolerance=latency.tolerance,
                  within_tolerance=abs(best["measured"] - settings.fraction) <= latency.tolerance,
                  latency={"threads": latency.threads, "provider": latency.provider, "batch": latency.batch,
                           "input_shapes": {k: list(v) for k, v in latency.shapes_of(prepared.original).items()},
                           "onnxruntime": measured_on["onnxruntime"], "cpu": measured_on["cpu"]},
                  rounds=rounds, tables=model.record())
    return search.kept(removals), record


def _latency_removals(search: _Search) -> Removals:
    """The prefix of the order whose *estimated* ratio meets ``search.settings.fraction``.

    Why softer than :func:`_search`: the estimate only guides, the measurement decides.  When the
    estimate says the target is out of reach, the fastest plan is still worth timing (the estimate may
    be pessimistic); when one unit jumps over the band, the prefix on either side nearer the target
    will do, since the measurement decides anyway.
    """
    last, target = len(search.order), search.settings.fraction
    if search.prefix(last) > target:
        return tuple(range(last))
    try:
        return _search(search)
    except InputError:
        lo, hi = _bisect(search, target)
        nearer = min((hi, lo), key=lambda k: abs(search.prefix(k) - target))
        return tuple(range(nearer))


def corrected_target(points: list[tuple[float, float]], target: float) -> float:
    """The estimated ratio to search for next, from measured (estimated, measured) pairs of earlier plans.

    Interpolate when the measurements bracket the target — the original, estimated and measured at
    exactly (1, 1), always brackets from above — along the line through the two bracketing points.
    When every plan measured slower than the target, extrapolate through (0, 0) instead (scale by
    estimated/measured): on this project's ResNet-50 runs the measured ratio falls *faster* than the
    estimate at deep cuts, so a line through (1, 1) would overshoot.  A non-increasing bracket (noise)
    also falls back to scaling.
    """
    pts = sorted(set(points) | {(1.0, 1.0)}, key=lambda p: p[1])
    below = [p for p in pts if p[1] <= target]
    above = [p for p in pts if p[1] > target]
    if not above:
        return 1.0
    if below:
        (e0, m0), (e1, m1) = below[-1], above[0]
        if (e1 - e0) * (m1 - m0) > 1e-12:
            return float(min(1.0, max(e0 + (target - m0) * (e1 - e0) / (m1 - m0), 1e-3)))
    estimated, measured = min(points, key=lambda p: abs(p[1] - target))
    return float(min(1.0, max(target * estimated / max(measured, 1e-9), 1e-3)))


def _confirm(prepared: Prepared, search: _Search, removals: Removals, latency: LatencySettings,
             progress: Progress | None, searched_for: float) -> dict[str, Any]:
    """Time the pruned model of ``removals`` against the original, interleaved; ratio of medians."""
    timing = measure_models([prepared.original, search.model(removals)], latency, progress, "latency check")
    original, pruned = timing["ms"]
    return {"searched_for": round(searched_for, 6), "estimated": round(search.ratio(removals), 6),
            "measured": round(pruned / original, 6), "original_ms": round(original, 4), "pruned_ms": round(pruned, 4),
            "runs": timing["runs"], "removed_units": len(removals)}


def _closest(tried: Mapping[Removals, dict[str, Any]], target: float) -> tuple[Removals, dict[str, Any]]:
    """The measured plan nearest the target among those measured faster than the input (any plan when
    none is: :func:`_refuse_slower` then says so); an empty placeholder when nothing was removed."""
    if not tried:
        return (), {"measured": 1.0, "estimated": 1.0}
    faster = {removals: entry for removals, entry in tried.items() if entry["measured"] < 1.0} or tried
    return min(faster.items(), key=lambda item: abs(item[1]["measured"] - target))


def _refuse_slower(best: Mapping[str, Any], target: float) -> None:
    """A latency target must not produce a model that is not faster than its input: refuse it."""
    if best.get("removed_units", 0) == 0:
        raise VerificationError(f"--target-latency {target:g} removes nothing, so the pruned model could not be "
                                "faster than the input; no model written")
    if best["measured"] >= 1.0:
        raise VerificationError(f"--target-latency {target:g}: the pruned model measured {best['measured']:.3f}× "
                                "the input's latency (not faster); no model written")


def _order(allocation: str, scores: Mapping[int, np.ndarray], units: Mapping[int, int], floor: Mapping[int, int],
           curves: Mapping[int, dict[str, np.ndarray]] | None) -> list[int]:
    if allocation == "global":
        return global_order(scores, floor)
    if allocation == "uniform":
        return uniform_order(scores, floor)
    if curves is None:
        raise InputError("guided allocation needs sensitivity curves (--sensitivity FILE, or --guided with "
                         "--calib PATH / --calib-random N)")
    missing = [g for g in units if g not in curves]
    if missing:
        raise InputError(f"the sensitivity data has no curve for {len(missing)} prunable group(s); "
                         "recompute it for this model with the same --exclude")
    return guided_order(units, floor, curves)

