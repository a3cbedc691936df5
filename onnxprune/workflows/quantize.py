"""Post-training quantization with ``onnxruntime.quantization``, written safely.

Why wrap it: pruning and quantization compose (fewer channels, then 8-bit weights), and a pipeline
wants one tool that reads calibration data the same way, writes atomically and reports sizes.

* ``dynamic``: int8 weights, activations quantized at run time (``quantize_dynamic``; no data needed).
* ``static``: QDQ format, int8 weights and activations with ranges from calibration data
  (``quantize_static`` with a :class:`CalibrationDataReader` over our :class:`CalibrationSet`).

onnxruntime writes to a temporary folder beside the output (it may write helper files); the result
is then loaded with :func:`onnxprune.io.load_model` and saved atomically with provenance, so an
interrupted run never leaves half a model at the destination.
"""

from __future__ import annotations

import logging
import os
import pathlib
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import onnx

from onnxprune.runtime.calibration import CalibrationSet
from onnxprune.measurement.counting import count_model
from onnxprune.errors import InputError, OnnxPruneError
from onnxprune.io.files import load_model, save_model

QUANT_MODES = ("dynamic", "static")


@dataclass
class QuantizeResult:
    """Where the quantized model went and its size before → after."""

    source: str
    output: str
    mode: str
    calibration: dict[str, Any] | None
    before: dict[str, int]
    after: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        ratio = self.after["size_bytes"] / self.before["size_bytes"] if self.before["size_bytes"] else None
        return {"source": self.source, "output": self.output, "mode": self.mode, "calibration": self.calibration,
                "before": self.before, "after": self.after, "size_ratio": ratio}


def _reader(calibration: CalibrationSet):
    """A CalibrationDataReader that replays ``calibration`` batch by batch (and can be rewound)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = calibration.batches()

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

        def rewind(self) -> None:
            self._batches = calibration.batches()

    return _Reader()


def _run_ort(source: onnx.ModelProto, temp_out: str, mode: str, calibration: CalibrationSet | None) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs a pre-processing suggestion on every call
    try:
        if mode == "dynamic":
            quantize_dynamic(source, temp_out, weight_type=QuantType.QInt8)
        else:
            quantize_static(source, temp_out, _reader(calibration), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except OnnxPruneError:
        raise
    except Exception as err:
        raise OnnxPruneError(f"onnxruntime quantization ({mode}) failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    finally:
        root.setLevel(level)


def quantize_model(model: str | os.PathLike[str], output: str | os.PathLike[str], mode: str = "dynamic",
                   calibration: CalibrationSet | None = None, *, inplace: bool = False) -> QuantizeResult:
    """Quantize the model file ``model`` to ``output`` (module docstring); static mode needs ``calibration``."""
    if mode not in QUANT_MODES:
        raise InputError(f"unknown quantization mode '{mode}' (choose from {', '.join(QUANT_MODES)})")
    if mode == "static" and calibration is None:
        raise InputError("static quantization needs calibration data (--calib PATH or --calib-random N)")
    source = load_model(model)
    before = count_model(source, path=model)  # counted first: onnxruntime may modify the proto it is given
    target = pathlib.Path(os.path.abspath(output))
    if not target.parent.is_dir():
        raise InputError(f"{target}: output folder {target.parent} does not exist")
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as work:
        temp_out = os.path.join(work, "quantized.onnx")
        work_copy = onnx.ModelProto()
        work_copy.CopyFrom(source)
        _run_ort(work_copy, temp_out, mode, calibration)
        quantized = load_model(temp_out)
    provenance = {"quantization": {"mode": mode, "tool": "onnxruntime.quantization"},
                  "calibration": calibration.describe() if calibration is not None else None}
    written = save_model(quantized, target, source_path=model, inplace=inplace, provenance=provenance)
    after = count_model(quantized, path=written)
    return QuantizeResult(os.fspath(model), os.fspath(written), mode,
                          calibration.describe() if calibration is not None else None,
                          {"params": before.params, "size_bytes": before.size_bytes},
                          {"params": after.params, "size_bytes": after.size_bytes})


def format_quantize(result: dict[str, Any]) -> str:
    from onnxprune.measurement.counting import format_bytes

    ratio = result["size_ratio"]
    return (f"quantized ({result['mode']}) → {result['output']}\n"
            f"size    {format_bytes(result['before']['size_bytes']):>10} → "
            f"{format_bytes(result['after']['size_bytes']):>10}" + (f" ({ratio:.3f}×)" if ratio else ""))
