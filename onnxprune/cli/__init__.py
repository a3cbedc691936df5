"""Front-end: the ``onnxprune`` click CLI (``main.py``), its command bodies (``commands.py``) and the
steps the CLI and recipes share (``steps.py``).

Thin over the pipeline: parsing, one-line errors with exit codes, reports. ``python -m onnxprune.cli``,
``python -m onnxprune`` and the ``onnxprune`` script all enter :func:`onnxprune.cli.app.main`.
"""

from onnxprune.cli.app import main

__all__ = ["main"]
