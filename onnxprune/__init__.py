"""onnxprune: structured pruning of ONNX models at the graph level.

Python API (the CLI is a thin layer over the same functions)::

    import onnxprune
    model = onnxprune.load_model("model.onnx")
    result = onnxprune.prune(model, onnxprune.PruneOptions(ratio=0.5), run_verify=True)
    onnxprune.save_model(result.model, "pruned.onnx", source_path="model.onnx")
"""

import os as _os

__version__ = "0.1.0"

_HERE = _os.path.dirname(_os.path.abspath(__file__))
if not _os.path.isdir(_os.path.join(_HERE, "passes")) and _os.path.isfile(
        _os.path.join(_HERE, _os.pardir, "passes", "__init__.py")):
    # Source checkout: ``passes/`` lives beside the package (DESIGN.md) and is installed as
    # ``onnxprune.passes``; make ``import onnxprune.passes`` work from the checkout too.
    __path__.append(_os.path.join(_HERE, _os.pardir))  # noqa: F821 - __path__ is the package's own

from onnxprune.errors import OnnxPruneError
from onnxprune.io.files import load_model, save_model
from onnxprune.pipeline import PruneOptions, PruneResult, prune, verify
from onnxprune.methods.prepared import prepare
from onnxprune.methods.depth import DepthSettings

# Defined after every submodule import: ``validate``, ``bench`` and ``quantize`` are also submodule names,
# and the functions must win as package attributes (``from onnxprune.validate import ...`` still works).
from onnxprune.api import bench, quantize, run_recipe, validate

__all__ = ["__version__", "DepthSettings", "OnnxPruneError", "PruneOptions", "PruneResult", "bench", "load_model", "prepare", "prune",
           "quantize", "run_recipe", "save_model", "validate", "verify"]
