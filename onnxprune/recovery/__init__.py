"""Stage 7 — training-free repair of a pruned model from calibration data: the consumer layers that
lost inputs (``layers``), bias compensation (``bias``) and least-squares refits (``lsq``).
"""
