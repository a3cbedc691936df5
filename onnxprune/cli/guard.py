"""The CLI's first contact with model files: the isolation probe, with the command's options.

Why in the CLI package: whether the probe may open a whole-model onnxruntime session depends on how the
command will run the model (block by block for models too large for one session), which is decided above
the io stage.
"""

from __future__ import annotations

import os
from typing import Iterable

from onnxprune.io.isolation import ProbeReport, RunningProbe, cli_options, start_probe
from onnxprune.runtime import blockwise


def guard_files(paths: Iterable[str | os.PathLike[str]], *, onnxruntime: bool) -> ProbeReport | None:
    """The CLI's call: probe ``paths`` unless the running command's options turned isolation off."""
    running = start_guard(paths, onnxruntime=onnxruntime)
    return None if running is None else running.wait()


def start_guard(paths: Iterable[str | os.PathLike[str]], *, onnxruntime: bool) -> RunningProbe | None:
    """:func:`guard_files` without waiting for the child (:func:`onnxprune.io.isolation.start_probe`);
    None when isolation is off."""
    options = cli_options()
    if not options.enabled:
        return None
    paths = list(paths)
    if onnxruntime and any(_blockwise(path) for path in paths):
        onnxruntime = False  # a whole-model session would need the memory blocks avoid; the checker still runs
    return start_probe(paths, onnxruntime=onnxruntime, timeout=options.timeout)


def _blockwise(path: str | os.PathLike[str]) -> bool:
    """Whether the command will run this model block by block (judged by the bytes of its files)."""
    return blockwise.wanted_for_bytes(blockwise.file_bytes(path))
