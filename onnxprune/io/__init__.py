"""Stage 1 — loading and saving model files safely.

``files`` (load with external data confined to the model's folder, size limits, atomic saves, hashes,
provenance in ``metadata_props``), ``weights`` (memory-mapped weight stores and stubs), ``inline_weights``
(mapping the initializers of a single ``.onnx`` file), ``isolation`` (first contact with a file in a child
process), ``memory_budget`` (``--memory-limit``). Imports nothing above ``onnxprune.errors``.
"""
