"""Element sparsity: zero individual weights of Conv / Gemm / MatMul layers, unstructured or N:M.

The method's seam (analyze → plan → apply → reference) is :class:`SparsityMethod`; the plan
(:class:`SparsityPlan`) is a frozen, JSON-serialisable value with ``"method": "sparsity"`` and a mask per
layer.  Modules, one job each: ``layers`` (what can be sparsified, the ``[outputs, reduction]`` matrix
view), ``masks`` (choosing zeros from scores), ``obs`` (SparseGPT's update), ``stats`` (calibration norms
and Gram matrices), ``plan`` (settings and plan), ``method`` (the seam), ``oracle`` (the checks),
``storage`` (gzip size, ``sparse_initializer``), ``run`` (the step CLI, recipes and API share) and
``command`` (the click command).
"""

from onnxprune.methods.sparsity.layers import SparseLayer, SparsityAnalysis, Skipped
from onnxprune.methods.sparsity.method import SparsityMethod, SparsityStats
from onnxprune.methods.sparsity.plan import LayerMask, SparsityPlan, SparsitySettings

__all__ = ["LayerMask", "Skipped", "SparseLayer", "SparsityAnalysis", "SparsityMethod", "SparsityPlan",
           "SparsitySettings", "SparsityStats"]
