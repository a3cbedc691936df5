"""Stage 5 — what can be removed: per-op rules (``rules``) walked into prune groups (``groups``) by
union-find over channel atoms (``unionfind``), and the kept-channel view of a plan (``kept_channels``).
Frozen things always carry the node and the reason.
"""
