"""Where a benchmark script finds the repository: imported first, it puts the checkout's ``onnxprune`` and
the ``models/`` builders ahead of any installed copy (benchmarks measure the code next to them)."""

from __future__ import annotations

import contextlib
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
