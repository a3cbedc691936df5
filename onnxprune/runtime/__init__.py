"""Stage 3 — what onnxruntime is fed and how it runs.

``sessions`` (sessions on memory-mapped weights, one per optimisation level), ``feeds`` (random and trial
inputs at distinct shapes the model accepts), ``calibration`` (user data matched to the model's inputs),
``input_shapes`` (``--input-shape`` and the shapes counts and budgets are stated at).
"""
