"""ONNX's own backend test models (shipped with the onnx package): prune at 0.3 or refuse clearly.

These are real exports (AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet,
VGG-19, ZFNet-512) in old IR versions, with ops such as LRN that must freeze their groups.
"""

from __future__ import annotations

import glob
import os

import onnx.backend.test
import pytest

from onnxprune.errors import OnnxPruneError
from onnxprune.io.files import load_model
from onnxprune.pipeline import PruneOptions, prune

LIGHT = sorted(glob.glob(os.path.join(os.path.dirname(onnx.backend.test.__file__), "data", "light", "*.onnx")))


def test_light_models_are_present() -> None:
    assert len(LIGHT) >= 5, "the onnx package ships its light backend models"


@pytest.mark.parametrize("path", LIGHT, ids=[os.path.basename(p) for p in LIGHT])
def test_light_model_prunes_or_is_refused(path: str) -> None:
    try:
        result = prune(load_model(path), PruneOptions(ratio=0.3), run_verify=True)
    except OnnxPruneError as err:  # a clear refusal is acceptable; any other exception fails the test
        assert str(err).strip() and "\n" not in str(err).strip()
        return
    assert result.verification is not None and result.verification.ok
    assert result.after.macs <= result.before.macs
