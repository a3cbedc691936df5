"""Put the rows of a partial benchmark run into an existing results file, keeping every other row.

Why: a benchmark with several cases (``bench_tool_cost.py --cases c``) can re-run only the cases a change
touches; its rows (each case's baseline and codes, measured side by side in the new run) replace the same
rows of the last full run, and a note says which rows were re-run, when and by what command, so no ratio
is read across two runs without saying so.
"""

from __future__ import annotations


def _row_key(line: str) -> tuple[str, ...] | None:
    """A measurement row's first three cells (case, model, code); None for anything else (headers, other
    tables: their first cell is neither a case ``(x) ...`` nor ``load+save``)."""
    if not line.startswith("| "):
        return None
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    if len(cells) < 3 or not (cells[0] == "load+save" or cells[0].startswith("(")):
        return None
    return tuple(cells[:3])


def _target_key(line: str) -> str | None:
    """A target line's subject and measure (``- (a) prune ..., model: run time ÷ load+save``): one case has
    two targets (time and memory), and the measure's own brackets may hold numbers (``(3.96× above import)``)."""
    if not line.startswith("- (") or ":" not in line:
        return None
    subject, _, rest = line.partition(":")
    return f"{subject}:{rest.split(':', 1)[0].split(' (', 1)[0]}"


def merge(old: str, new: str, note: str) -> str:
    """``old`` with its table rows and target lines replaced by those of ``new`` that share their key, and
    ``note`` added after the first paragraph.  Raises ValueError for a row of ``new`` that ``old`` lacks
    (the partial run would be a table of its own: run the whole benchmark instead)."""
    rows = {_row_key(line): line for line in new.splitlines() if _row_key(line)}
    targets = {_target_key(line): line for line in new.splitlines() if _target_key(line)}
    lines, used = [], set()
    for line in old.splitlines():
        key = _row_key(line) or _target_key(line)
        replacement = rows.get(key) if isinstance(key, tuple) else targets.get(key)
        if replacement is not None:
            used.add(key)
        lines.append(replacement if replacement is not None else line)
    missing = [key for key in list(rows) + list(targets) if key not in used]
    if missing:
        raise ValueError(f"the results file has no row for {missing[0]}: run the whole benchmark")
    first_blank = lines.index("", lines.index("") + 1) if lines.count("") >= 2 else len(lines)
    return "\n".join(lines[:first_blank] + ["", note] + lines[first_blank:]) + "\n"
