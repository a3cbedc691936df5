"""``PruneOptions``: everything that decides a width plan, recorded in the plan and the output's provenance.

Why in the planning stage: the options resolve into planning's own settings (a budget, an alignment, a
latency measurement), and planning modules that run a width stage themselves (``depth_stage``) need the
type; defined in :mod:`onnxprune.pipeline` they made planning import the pipeline above it.
``onnxprune.pipeline`` and the package re-export it under its old names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from onnxprune.errors import InputError
from onnxprune.planning.alignment import Alignment, provider_for, resolve as resolve_alignment
from onnxprune.planning.budget import BudgetSettings
from onnxprune.planning.latency import LatencySettings
from onnxprune.runtime.input_shapes import InputShapes, coerce as coerce_shapes


@dataclass(frozen=True)
class PruneOptions:
    """Everything that decides a plan; recorded in the plan and in the output's provenance."""

    ratio: float = 0.0
    criterion: str = "l2"
    global_ranking: bool = False
    round_to: int | str = 1  # multiple N for every group, or "auto" (onnxprune.planning.alignment)
    exclude: tuple[str, ...] = ()
    seed: int = 0
    min_keep: float = 0.1
    head_ratio: float | None = None  # attention heads (default: ratio)
    ffn_ratio: float | None = None  # Gemm/MatMul neurons such as FFN intermediates (default: ratio)
    target_flops: float | None = None  # keep this fraction of the original MACs (onnxprune.planning.budget)
    target_params: float | None = None  # keep this fraction of the original params
    max_ratio: float = 1.0  # with a target: never remove more than this fraction of a group
    allocation: str = "global"  # with a target: global | uniform | guided (sensitivity)
    target_latency: float | None = None  # keep this fraction of the measured latency (onnxprune.planning.latency)
    latency_threads: int = 1  # how latency is measured: intra-op threads, provider, batch, table cache file
    latency_provider: str = "CPUExecutionProvider"
    latency_batch: int = 1
    latency_cache: str | None = None  # None: ~/.cache/onnxprune/latency.json
    # shapes FLOPs, budgets and latency are counted at (onnxprune.runtime.input_shapes; a plan's JSON dict is accepted);
    # None: the calibration data's in prune(), else per sample with symbolic dims at 1
    input_shapes: InputShapes | None = None
    allow_io_change: bool = False  # KV-cache inputs/outputs may lose heads (onnxprune.analysis.io_change)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shapes", coerce_shapes(self.input_shapes))

    def budget(self) -> BudgetSettings | None:
        """The budget this asks for (None: ratio-based pruning); refuses ratio options mixed with a target."""
        targets = {"flops": self.target_flops, "params": self.target_params, "latency": self.target_latency}
        given = {metric: value for metric, value in targets.items() if value is not None}
        if not given:
            return None
        if len(given) > 1:
            raise InputError(f"give only one target, not {' and '.join(f'--target-{m}' for m in given)} together")
        if self.ratio or self.global_ranking or self.head_ratio is not None or self.ffn_ratio is not None:
            raise InputError("a --target-flops/--target-params/--target-latency budget chooses the ratios itself; "
                             "drop --ratio/--global/--head-ratio/--ffn-ratio")
        (metric, fraction), = given.items()
        latency = LatencySettings(self.latency_threads, self.latency_provider, self.latency_batch,
                                  self.latency_cache, input_shapes=self.input_shapes) if metric == "latency" else None
        if latency is not None:
            latency.validate()  # an unavailable provider is named as such, before auto looks up its row
        align = self.alignment()
        return BudgetSettings(metric, float(fraction), self.allocation, self.min_keep, self.max_ratio, align.multiple,
                              round_min_units=align.min_units, latency=latency, input_shapes=self.input_shapes)

    def alignment(self) -> Alignment:
        """``round_to`` resolved: an explicit N for every group, or the ``auto`` table row of the provider
        a latency target is measured with (the CPU's otherwise; :func:`onnxprune.planning.alignment.provider_for`).
        Resolved once per options value (``budget()`` and ``plan_prune`` both ask)."""
        found = self.__dict__.get("_alignment")
        if found is None:
            found = resolve_alignment(self.round_to, provider_for(self.target_latency, self.latency_provider))
            object.__setattr__(self, "_alignment", found)  # a cache, not a field: equality and asdict ignore it
        return found

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exclude"] = list(self.exclude)
        data["input_shapes"] = self.input_shapes.to_dict() if self.input_shapes else None
        return data
