"""onnxprune: structured pruning of ONNX models at the graph level.

Python API (the CLI is a thin layer over the same functions)::

    import onnxprune
    model = onnxprune.load_model("model.onnx")
    result = onnxprune.prune(model, onnxprune.PruneOptions(ratio=0.5), run_verify=True)
    onnxprune.save_model(result.model, "pruned.onnx", source_path="model.onnx")
"""

import importlib.util as _importlib_util
import os as _os
import sys as _sys

from onnxprune.version import __version__


def _register_checkout_passes() -> None:
    """In a source checkout ``passes/`` lives beside the package (the design card's layout) and is
    installed as ``onnxprune.passes`` (pyproject's package-dir); register exactly that one sub-package from
    the checkout, so ``python -m onnxprune.cli`` works without installing."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    init = _os.path.join(here, _os.pardir, "passes", "__init__.py")
    if "onnxprune.passes" in _sys.modules or _os.path.isdir(_os.path.join(here, "passes")) or not _os.path.isfile(init):
        return
    spec = _importlib_util.spec_from_file_location("onnxprune.passes", init,
                                                   submodule_search_locations=[_os.path.dirname(init)])
    module = _importlib_util.module_from_spec(spec)
    _sys.modules[spec.name] = module
    setattr(_sys.modules[__name__], "passes", module)
    spec.loader.exec_module(module)


_register_checkout_passes()

from onnxprune.errors import OnnxPruneError
from onnxprune.io.files import load_model, save_model
from onnxprune.pipeline import PruneOptions, PruneResult, verify
from onnxprune.methods.prepared import prepare
from onnxprune.methods.depth import DepthSettings

from onnxprune.api import bench, prune, quantize, run_recipe, sparsify, validate

__all__ = ["__version__", "DepthSettings", "OnnxPruneError", "PruneOptions", "PruneResult", "bench", "load_model", "prepare", "prune",
           "quantize", "run_recipe", "save_model", "sparsify", "validate", "verify"]
