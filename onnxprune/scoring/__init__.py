"""Stage 6 — importance: weight criteria (``importance``), calibration statistics streamed through
onnxruntime (``statistics``), data criteria (``data_importance``, ``reconstruction``), all reached by name
through ``criteria.score_groups``.
"""
