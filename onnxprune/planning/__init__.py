"""Stage 9 — how much to cut where: allocation of ratios (``allocate``), hardware alignment
(``alignment``), FLOPs/params/latency budgets (``budget``, ``latency``) and per-group sensitivity
(``sensitivity``). Works on plans through the method seam.
"""
