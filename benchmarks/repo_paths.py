"""Where a benchmark script finds the repository: imported first, it puts the checkout's ``onnxprune`` and
the ``models/`` builders ahead of any installed copy (benchmarks measure the code next to them)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ROOT / "models"
for _path in (MODELS, ROOT):  # ROOT ends up first
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


@contextlib.contextmanager
def worktree_at(rev: str | None, path: Path) -> Iterator[Path | None]:
    """A detached ``git worktree`` of this repository at ``rev`` in ``path`` (None without a rev), removed on
    exit, also on error: benchmarks measure "before" code side by side with the checkout's."""
    if not rev:
        yield None
        return
    try:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                       capture_output=True)
        yield path
    finally:
        if path.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True,
                           check=False)


def run_json_child(script: str, report: Path, args: list[str], pythonpath: Path, cwd: Path, timeout: float,
                   **options) -> tuple[subprocess.CompletedProcess | None, dict | None]:
    """``python -c SCRIPT REPORT ARGS...`` with ``pythonpath`` first: the finished process (None on timeout) and
    the JSON the child wrote to ``report`` (None if it wrote none).  ``options`` go to ``subprocess.run``.

    Why ``cwd``: ``python -c`` puts the working directory first on ``sys.path``, so a child started in the
    repository root would import that checkout's onnxprune whatever ``PYTHONPATH`` says.
    """
    report.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    try:
        proc = subprocess.run([sys.executable, "-c", script, str(report), *args], capture_output=True, text=True,
                              cwd=cwd, env=env, timeout=timeout, check=False, **options)
    except subprocess.TimeoutExpired:
        return None, None
    return proc, (json.loads(report.read_text()) if report.exists() else None)
