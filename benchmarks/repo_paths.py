"""Where a benchmark script finds the repository: imported first, it puts the checkout's ``onnxprune`` and
the ``models/`` builders ahead of any installed copy (benchmarks measure the code next to them)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ROOT / "models"
for _path in (MODELS, ROOT):  # ROOT ends up first
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
