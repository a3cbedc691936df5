"""Reports: the analysis and prune summaries as JSON-ready dicts and as human text.

Why dicts first: the CLI's ``--json`` output, ``--report FILE.json`` and the text tables all come from
the same dict, so what a person reads and what a pipeline parses can never disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxprune.counting import ModelStats, compare_stats, format_bytes, format_count
from onnxprune.groups import Analysis, Group
from onnxprune.pipeline import Prepared, PruneResult

REPORT_VERSION = 1


def _group_shares(analysis: Analysis, index: int, group: Group, stats: ModelStats,
                  param_sizes: dict[str, int]) -> tuple[float, float]:
    """Fractions of the model's params and MACs that belong to the weights this group cuts."""
    params = 0.0
    node_share: dict[str, float] = {}
    for param in group.params:
        first, _ = analysis.slots[param.slot]
        mine = float(np.mean(analysis.atom_group[first + param.index] == index))
        params += mine * param_sizes.get(param.tensor, 0)
        if param.role in ("producer", "consumer"):
            node_share[param.node] = max(node_share.get(param.node, 0.0), mine)
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
    return {
        "report_version": REPORT_VERSION,
        "stats": {"params": stats.params, "macs": stats.macs, "flops": stats.flops, "size_bytes": stats.size_bytes,
                  "uncounted_ops": list(stats.uncounted_ops)},
        "totals": {"groups": len(groups), "prunable": len(prunable),
                   "frozen": sum(g["status"] == "frozen" for g in groups),
                   "prunable_channels": sum(g["channels"] for g in prunable)},
        "groups": groups,
    }


def format_analysis(report: dict[str, Any]) -> str:
    """A table a person can scan: one line per group, reasons under frozen ones."""
    stats, totals = report["stats"], report["totals"]
    lines = [f"params {format_count(stats['params'])}  FLOPs {format_count(stats['flops'])}  "
             f"size {format_bytes(stats['size_bytes'])}",
             f"{'group':<6} {'channels':>8} {'params%':>8} {'FLOPs%':>7}  {'status':<14} label"]
    for group in report["groups"]:
        lines.append(f"{group['id']:<6} {group['channels']:>8} {100 * group['params_share']:>7.1f}% "
                     f"{100 * group['macs_share']:>6.1f}%  {group['status']:<14} {group['label']}")
        seen = set()
        for reason in group["reasons"]:
            key = (reason["node"], reason["reason"])
            if key not in seen:
                seen.add(key)
                where = f"node '{reason['node']}' ({reason['op']})" if reason["node"] else f"tensor '{reason['tensor']}'"
                lines.append(f"{'':<6} frozen at {where}: {reason['reason']}")
    lines.append(f"{totals['groups']} groups: {totals['prunable']} prunable "
                 f"({totals['prunable_channels']} channels), {totals['frozen']} frozen")
    return "\n".join(lines)


def prune_report(result: PruneResult, output: str | None, command: list[str] | None = None) -> dict[str, Any]:
    """Summary of one prune: before/after numbers, settings, per-group kept counts, verification."""
    kept = []
    for group in result.plan.groups:
        if group.kept is not None and not group.frozen:
            kept.append({"id": group.id, "label": group.label, "channels": group.channels, "kept": len(group.kept)})
    report = {
        "report_version": REPORT_VERSION,
        "output": output,
        "command": command,
        "settings": result.plan.settings,
        "comparison": compare_stats(result.before, result.after),
        "groups": kept,
        "verification": result.verification.to_dict() if result.verification else None,
    }
    return report


def format_prune(report: dict[str, Any]) -> str:
    """``params 1.2M → 0.6M (0.50×)`` style lines."""
    lines = []
    for key, label in (("params", "params"), ("flops", "FLOPs"), ("size_bytes", "size")):
        entry = report["comparison"][key]
        fmt = format_bytes if key == "size_bytes" else format_count
        ratio = entry.get("ratio")
        ratio_text = f"({ratio:.3f}×)" if ratio is not None else ""
        lines.append(f"{label:<7} {fmt(entry['before']):>10} → {fmt(entry['after']):>10} {ratio_text}")
    verification = report.get("verification")
    if verification:
        worst = max((d["relative"] for d in verification["diffs"]), default=0.0)
        lines.append(f"verify  masked-reference oracle {'passed' if verification['ok'] else 'FAILED'} "
                     f"(max relative error {worst:.2e}, tolerance {verification['tolerance']:g})")
    return "\n".join(lines)
