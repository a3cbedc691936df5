"""Text lines for the ``depth`` section of the analyze and prune reports (the JSON is the section itself),
and the one-line oracle verdict both that section and the prune summary print."""

from __future__ import annotations

from typing import Any


def depth_lines(section: dict[str, Any] | None) -> list[str]:
    """One line per removable block (scores, removed or kept), one per residual join that is not removable."""
    if not section:
        return []
    removed = set(section.get("removed", ()))
    lines = []
    if "criterion" in section:
        lines.append(f"depth   {len(removed)} of {section['removable']} removable residual blocks removed "
                     f"(ranked by {section['criterion']})")
    else:
        lines.append(f"depth   {len(section['blocks'])} removable residual blocks")
    for block in section["blocks"]:
        scores = "  ".join(f"{key} {value:.4g}" for key, value in sorted(block.get("scores", {}).items()))
        after = f", then {'/'.join(block['after'])} (kept)" if block.get("after") else ""
        state = "removed" if block["id"] in removed else "kept" if "criterion" in section else "removable"
        lines.append(f"  {state:<9} {block['id']}: {len(block['weights'])} weighted layers{after}"
                     + (f"  [{scores}]" if scores else ""))
    for join in section.get("not_removable", []):
        lines.append(f"  not removable: node '{join['node']}': {join['reason']}")
    if section.get("verification"):
        lines.append(f"  verify  {oracle_line(section['verification'], 'zero-branch')}")
    repaired = section.get("repair")
    if repaired:
        errors = repaired.get("calibration_error")
        changed = sum(1 for layer in repaired.get("layers", ()) if layer["status"] == "applied")
        lines.append(f"  repair  {repaired['method']} {repaired['status']}: {changed}/{len(repaired.get('layers', ()))} "
                     "layers after the removed blocks refitted"
                     + (f"; calibration output error {errors['removed']:.4f} → {errors['repaired']:.4f}" if errors else "")
                     + (f" ({repaired['reason']})" if repaired.get("reason") else ""))
    budget = section.get("budget")
    if budget:
        width = budget.get("width_target")
        lines.append(f"  budget  {budget['metric']} {budget['target']:g}: depth keeps {budget['kept_by_depth']:.4f}, "
                     + (f"width target {width:.4f} of the depth-pruned model" if width else budget.get("note", "")))
    return lines


def oracle_line(verification: dict[str, Any], oracle: str) -> str:
    """``<oracle> oracle passed (max relative error …, tolerance …)`` for a verification dict."""
    worst = max((d["relative"] for d in verification["diffs"]), default=0.0)
    return (f"{oracle} oracle {'passed' if verification['ok'] else 'FAILED'} (max relative error {worst:.2e}, "
            f"tolerance {verification['tolerance']:g})")
