"""Stage 8 — pruning methods behind one interface (``base.Method``): a model made ready once
(``prepared``), width pruning of channels/neurons/heads (``width``, with its ``plan``), and the further
methods built on the same seam. Each method supplies analyze → plan → apply → reference (its oracle).
"""
