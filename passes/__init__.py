"""Graph passes, installed as ``onnxprune.passes``.

A pass is one module with one public entry point ``run(graph, ...) -> PassResult(graph, modified)``
(``base.py``) on an onnx-graphsurgeon ``Graph``, and a docstring stating what it assumes and guarantees.  Pipelines import the pass modules and
call them in order (``onnxprune/methods/prepared.py`` is the normalization pipeline).

Boundary: a pass imports only ``onnxprune.errors``, ``onnxprune.io``, ``onnxprune.ir`` and the analysis
types it applies (``onnxprune.analysis``) — never scoring, planning, recovery or front-ends.
"""
