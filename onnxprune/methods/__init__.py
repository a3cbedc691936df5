"""Pruning methods: each is analyze → plan → apply, with its own oracle (``reference``).

Width pruning (channels, neurons, heads) is the pipeline in :mod:`onnxprune.pipeline`; the methods here
are the families added beside it (depth: :mod:`onnxprune.methods.depth`).
"""
