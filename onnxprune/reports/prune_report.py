"""Reports: the analysis and prune summaries as JSON-ready dicts and as human text.

Why dicts first: the CLI's ``--json`` output, ``--report FILE.json`` and the text tables all come from
the same dict, so what a person reads and what a pipeline parses can never disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxprune.measurement.counting import ModelStats, compare_stats, format_bytes, format_count
from onnxprune.analysis.groups import Analysis, Group
from onnxprune.reports.depth import depth_lines, oracle_line
from onnxprune.methods.prepared import Prepared
from onnxprune.pipeline import PruneResult

REPORT_VERSION = 1


def shape_fields(stats: ModelStats) -> dict[str, Any]:
    """``input_shapes`` (the shapes FLOPs were counted at, or ``"symbolic"``) and ``counted_at`` (details,
    :class:`onnxprune.runtime.input_shapes.CountedAt`), so a JSON figure never travels without its shapes."""
    if stats.counted_at is None:
        return {}
    details = stats.counted_at.to_dict()
    return {"input_shapes": details.pop("input_shapes"), "counted_at": details}


def flops_label(report: dict[str, Any]) -> str:
    """What the FLOPs figure means (``at images[1,3,320,320]``, ``per sample``...), '' when static."""
    return ((report.get("counted_at") or {}).get("label")) or ""


def _group_shares(analysis: Analysis, index: int, group: Group, stats: ModelStats,
                  param_sizes: dict[str, int]) -> tuple[float, float]:
    """Fractions of the model's params and MACs that belong to the weights this group cuts."""
    tensor_share: dict[str, float] = {}
    node_share: dict[str, float] = {}
    for param in group.params:
        first, _ = analysis.slots[param.slot]
        mine = float(np.mean(analysis.atom_group[first + param.index] == index))
        tensor_share[param.tensor] = max(tensor_share.get(param.tensor, 0.0), mine)  # rows and columns: once
        if param.role in ("producer", "consumer"):
            node_share[param.node] = max(node_share.get(param.node, 0.0), mine)
    params = sum(share * param_sizes.get(tensor, 0) for tensor, share in tensor_share.items())
    macs = sum(share * stats.node_macs.get(node, 0) for node, share in node_share.items())
    return (params / stats.params if stats.params else 0.0, macs / stats.macs if stats.macs else 0.0)


def analysis_report(prepared: Prepared, stats: ModelStats) -> dict[str, Any]:
    """Every group with channels, shares and status; every frozen group with node and reason."""
    analysis = prepared.analysis
    sizes = {init.name: int(np.prod(init.dims)) for init in prepared.normalized.graph.initializer}
    groups = []
    for index, group in enumerate(analysis.groups):
        params_share, macs_share = _group_shares(analysis, index, group, stats, sizes)
        entry = group.to_dict()
        entry.update(params_share=round(params_share, 6), macs_share=round(macs_share, 6),
                     status="frozen" if group.frozen else "prunable" if group.units > 1 else "single channel")
        groups.append(entry)
    prunable = [g for g in groups if g["status"] == "prunable"]
    unanalyzed = [f.to_dict() for f in analysis.freezes if f.slot not in analysis.slots]
    return {
        "unanalyzed": unanalyzed,
        "control_flow": analysis.control_flow,
        "report_version": REPORT_VERSION,
        "stats": {"params": stats.params, "macs": stats.macs, "flops": stats.flops, "size_bytes": stats.size_bytes,
                  "uncounted_ops": list(stats.uncounted_ops)},
        **shape_fields(stats),
        "totals": {"groups": len(groups), "prunable": len(prunable),
                   "frozen": sum(g["status"] == "frozen" for g in groups),
                   "prunable_channels": sum(g["channels"] for g in prunable)},
        "groups": groups,
    }


def format_analysis(report: dict[str, Any]) -> str:
    """A table a person can scan: one line per group, reasons under frozen ones."""
    stats, totals = report["stats"], report["totals"]
    label = flops_label(report)
    flops = f"FLOPs {label}: " if label else "FLOPs "
    lines = [f"params {format_count(stats['params'])}  {flops}{format_count(stats['flops'])}  "
             f"size {format_bytes(stats['size_bytes'])}",
             f"{'group':<6} {'kind':<7} {'units':>6} {'params%':>8} {'FLOPs%':>7}  {'status':<14} label"]
    for group in report["groups"]:
        units = f"{group['channels']}×{group['head_dim']}" if group.get("head_dim") else str(group["channels"])
        lines.append(f"{group['id']:<6} {group.get('kind', ''):<7} {units:>6} {100 * group['params_share']:>7.1f}% "
                     f"{100 * group['macs_share']:>6.1f}%  {group['status']:<14} {group['label']}")
        seen = set()
        for reason in group["reasons"]:
            key = (reason["node"], reason["reason"])
            if key not in seen:
                seen.add(key)
                where = f"node '{reason['node']}' ({reason['op']})" if reason["node"] else f"tensor '{reason['tensor']}'"
                lines.append(f"{'':<6} frozen at {where}: {reason['reason']}")
        for reason in group.get("fixed_blocks", [])[:1]:  # one line: the units inside the blocks still prune
            where = f"node '{reason['node']}' ({reason['op']})" if reason["node"] else f"tensor '{reason['tensor']}'"
            lines.append(f"{'':<6} every KV head stays ({len(group['fixed_blocks'])} places, e.g. {where}: "
                         f"{reason['reason']}); query heads inside the groups prune")
    for entry in report.get("unanalyzed", []):
        lines.append(f"{'-':<6} not analyzed: '{entry['tensor']}' at node '{entry['node']}' ({entry['op']}): "
                     f"{entry['reason']}")
    for entry in report.get("control_flow", []):
        lines.append(f"{'-':<6} not pruned: node '{entry['node']}' ({entry['op']}, {format_count(entry['params'])} "
                     f"params): {entry['reason']}")
    kinds = {}
    for group in report["groups"]:
        if group["status"] == "prunable":
            kinds[group.get("kind", "channel")] = kinds.get(group.get("kind", "channel"), 0) + 1
    by_kind = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    lines.append(f"{totals['groups']} groups: {totals['prunable']} prunable ({by_kind}; "
                 f"{totals['prunable_channels']} units), {totals['frozen']} frozen")
    return "\n".join(lines + depth_lines(report.get("depth")))


def prune_report(result: PruneResult, output: str | None, command: list[str] | None = None,
                 contributions: bool = False) -> dict[str, Any]:
    """Summary of one prune: before/after numbers, settings, per-group kept counts, verification.

    Per group: original and kept units and the kept ratio; with sensitivity data (``--sensitivity`` or a
    guided scan) the output change measured when that group alone loses what it lost here; with
    ``contributions`` the MACs and params its cut saved (:func:`group_contributions`, which applies and
    counts 2·G partial plans, so it runs only when a report file or JSON is asked for).
    """
    kinds = {group.id: group.kind for group in result.prepared.analysis.groups}  # heads, neurons, channels...
    kept = []
    for group in result.plan.groups:
        if group.kept is not None and not group.frozen:
            kept.append({"id": group.id, "label": group.label, "kind": kinds.get(group.id, "channel"),
                         "channels": group.channels, "kept": len(group.kept),
                         "kept_ratio": round(len(group.kept) / group.channels, 6) if group.channels else None})
    _add_sensitivity(kept, result)
    saving = group_contributions(result) if contributions else None
    if saving is not None:
        for entry in kept:
            entry["contribution"] = saving["groups"].get(entry["id"], {"macs": 0, "params": 0, "macs_share": 0.0,
                                                                       "params_share": 0.0})
    report = {
        "report_version": REPORT_VERSION,
        "output": output,
        "command": command,
        "settings": result.plan.settings,
        "comparison": compare_stats(result.before, result.after),
        **shape_fields(result.before),
        "groups": kept,
        "verification": result.verification.to_dict() if result.verification else None,
        "runs_at": getattr(result, "checked_shapes", []),
    }
    if saving is not None:
        report["contributions"] = {k: v for k, v in saving.items() if k != "groups"}
    if getattr(result, "io_change", None):
        report["io_change"] = result.io_change  # new KV heads per cache input/output (--allow-io-change)
    if getattr(result, "sensitivity", None) is not None:
        report["sensitivity"] = {"criterion": result.sensitivity.criterion, "rows": result.sensitivity.rows}
    report.update(_data_sections(result))
    if getattr(result, "depth", None) is not None:
        report["depth"] = result.depth.to_dict()
    return report


def _add_sensitivity(groups: list[dict[str, Any]], result: PruneResult) -> None:
    """Each group's measured sensitivity at the fraction it lost: the scan pruned it *alone* at several
    ratios; the output change (relative MSE, cosine) is interpolated at ``1 - kept/channels``."""
    sensitivity = getattr(result, "sensitivity", None)  # PruneResult.sensitivity (guided allocation)
    if sensitivity is None:
        return
    curves: dict[str, list[tuple[float, float, float]]] = {}
    for row in sensitivity.rows:
        if row.get("units"):
            curves.setdefault(str(row["group"]), []).append(
                (row["removed"] / row["units"], float(row.get("rel_mse") or 0.0), float(row.get("cosine", 1.0))))
    for entry in groups:
        points = sorted([(0.0, 0.0, 1.0)] + curves.get(entry["id"], []))
        if len(points) == 1:
            entry["sensitivity"] = None
            continue
        removed = 1.0 - entry["kept"] / entry["channels"]
        xs = [p[0] for p in points]
        entry["sensitivity"] = {"removed_fraction": round(removed, 6),
                                "rel_mse": float(np.interp(removed, xs, [p[1] for p in points])),
                                "cosine": float(np.interp(removed, xs, [p[2] for p in points])),
                                "measured_up_to": xs[-1]}


def group_contributions(result: PruneResult) -> dict[str, Any]:
    """MACs and params each pruned group saved, measured by applying partial plans and counting them.

    Why not per group alone: coupled cuts overlap (a Conv loses inputs to one group and outputs to
    another, so its MACs fall by 1 - a·b, not by (1 - a) + (1 - b)), and the savings of groups pruned
    alone do not add up to the total.  Here the groups' cuts are added one at a time, in plan order and
    in reverse order; each group is credited with the mean of its two marginal savings (a two-order
    Shapley estimate).  Each order telescopes to the total, so the contributions sum exactly to
    ``count(unpruned rewrite) - count(pruned)``, for any op the counter models (attention MatMuls too).
    """
    from onnxprune.measurement.counting import count_model
    from onnxprune.methods.width import apply_plan
    from onnxprune.methods.plan import make_plan

    prepared, plan = result.prepared, result.plan
    kept = {index: np.asarray(group.kept) for index, group in enumerate(plan.groups)
            if group.kept is not None and len(group.kept) < group.channels}
    order = sorted(kept)

    def measure(indices: tuple[int, ...]) -> tuple[int, int]:
        model = apply_plan(prepared, make_plan(prepared.analysis, {i: kept[i] for i in indices},
                                               prepared.model_sha256, plan.settings))
        stats = count_model(model)
        return stats.macs, stats.params

    cache: dict[tuple[int, ...], tuple[int, int]] = {}

    def counted(indices: tuple[int, ...]) -> tuple[int, int]:
        """``measure`` once per subset: both orders start from () and end at the whole plan."""
        if indices not in cache:
            cache[indices] = measure(indices)
        return cache[indices]

    credit = {i: [0.0, 0.0] for i in order}
    for sequence in (order, order[::-1]):
        previous = counted(())
        for position, index in enumerate(sequence):
            current = counted(tuple(sorted(sequence[:position + 1])))
            credit[index][0] += (previous[0] - current[0]) / 2
            credit[index][1] += (previous[1] - current[1]) / 2
            previous = current
    start, end = cache[()], cache[tuple(order)]
    total_macs, total_params = start[0] - end[0], start[1] - end[1]
    groups = {plan.groups[i].id: {"macs": round(m), "params": round(p),
                                  "macs_share": round(m / total_macs, 6) if total_macs else 0.0,
                                  "params_share": round(p / total_params, 6) if total_params else 0.0}
              for i, (m, p) in credit.items()}
    return {"method": "mean marginal saving over plan order and reverse order (applied and counted)",
            "macs_saved": total_macs, "params_saved": total_params, "evaluations": len(cache), "groups": groups}


def _data_sections(result: PruneResult) -> dict[str, Any]:
    """Criterion, calibration (source, size, output error vs the original) and recovery records.

    The oracle in ``verification`` judged the rewrite *before* recovery; recovery changes weights on
    purpose and is judged by ``calibration.output_error`` instead.
    """
    recovery = result.recovery or {"method": "none"}
    sections: dict[str, Any] = {"criterion": result.plan.settings.get("criterion"),
                                "calibration": result.calibration, "recovery": recovery}
    if result.verification is not None and recovery["method"] != "none":
        sections["verification_scope"] = "the rewrite before recovery (recovery changes weights on purpose)"
    return sections


def _format_data_sections(report: dict[str, Any]) -> list[str]:
    """``calib`` and ``recover`` lines (nothing without calibration data)."""
    calibration = report.get("calibration")
    if not calibration:
        return []
    source = "RANDOM inputs" if calibration["random"] else f"{calibration['source']} '{calibration['origin']}'"
    lines = [f"calib   {source}: {calibration['samples']} samples in batches of {calibration['batch_size']}"]
    errors = calibration["output_error"]
    recovery = report.get("recovery") or {"method": "none"}
    text = f"error   vs original on calibration inputs (relative L2): pruned {errors['pruned']['worst_relative_l2']:.4f}"
    if "recovered" in errors:
        text += f", recovered ({recovery['method']}) {errors['recovered']['worst_relative_l2']:.4f}"
    lines.append(text)
    if recovery["method"] != "none":
        layers = recovery.get("layers", [])
        applied = sum(1 for layer in layers if layer["status"] == "applied")
        status = recovery.get("status", "applied")
        lines.append(f"recover {recovery['method']} {status}: {applied}/{len(layers)} layers changed"
                     + (f" ({recovery['reason']})" if status == "rejected" else ""))
    return lines


def _format_latency(budget: dict[str, Any]) -> str:
    """Estimated vs measured latency ratio, how it was measured, where the per-layer tables came from."""
    chosen = min(budget["rounds"], key=lambda r: abs(r["measured"] - budget["measured"]))
    where, tables = budget["latency"], budget["tables"]
    missed = "" if budget["within_tolerance"] else f"; misses the target by more than ±{budget['measure_tolerance']:g}"
    shapes = where.get("input_shapes")
    at = ("at " + " ".join(f"{k}[{','.join(map(str, v))}]" for k, v in shapes.items())) if shapes \
        else f"batch {where['batch']}"
    return (f"latency estimated {budget['estimated']:.3f}, measured {budget['measured']:.3f} ({chosen['original_ms']:.3f} → "
            f"{chosen['pruned_ms']:.3f} ms, median of {chosen['runs']} interleaved runs, {where['threads']} thread(s), "
            f"{where['provider']}, {at}); tables {tables['measured']} measured, {tables['cached']} "
            f"cached{missed}")


def format_prune(report: dict[str, Any]) -> str:
    """``params 1.2M → 0.6M (0.50×)`` style lines."""
    lines = []
    for key, label in (("params", "params"), ("flops", "FLOPs"), ("size_bytes", "size")):
        entry = report["comparison"][key]
        fmt = format_bytes if key == "size_bytes" else format_count
        ratio = entry.get("ratio")
        ratio_text = f"({ratio:.3f}×)" if ratio is not None else ""
        at = f"  {flops_label(report)}" if key == "flops" and flops_label(report) else ""
        lines.append(f"{label:<7} {fmt(entry['before']):>10} → {fmt(entry['after']):>10} {ratio_text}{at}")
    budget = (report.get("settings") or {}).get("budget")
    if budget:
        lines.append(f"target  {budget['metric']} {budget['target']:g} → {budget['achieved']:.4f} measured "
                     f"({budget['allocation']} allocation, {budget['removed_units']} of "
                     f"{budget['removable_units']} removable units removed)")
        if budget["metric"] == "latency":
            lines.append(_format_latency(budget))
    lines += _format_data_sections(report)
    lines += depth_lines(report.get("depth"))
    if report.get("runs_at"):
        shown = [",".join(f"{n}{list(v)}".replace(" ", "") for n, v in batch.items()) for batch in report["runs_at"]]
        shapes = "; ".join(dict.fromkeys(shown))  # a static model runs its one shape with several seeds
        lines.append(f"runs    like the original at {shapes}")
    if report.get("io_change"):
        counts = sorted({(c["before"], c["after"]) for c in report["io_change"].values()})
        lines.append(f"io      {len(report['io_change'])} KV-cache inputs/outputs narrowed (heads "
                     f"{', '.join(f'{a} → {b}' for a, b in counts)}; per tensor in metadata_props "
                     "'onnxprune_io_change'): the runtime's cache config must match")
    if report.get("verification"):
        lines.append(f"verify  {oracle_line(report['verification'], 'masked-reference')}")
    return "\n".join(lines)
