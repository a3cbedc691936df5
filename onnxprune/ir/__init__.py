"""Stage 2 — the graph and its shapes.

``graph`` (onnx-graphsurgeon import/export keeping the model's envelope), ``shapes`` and
``shape_dependence`` (concrete shapes at two assignments of the symbolic dims, which shape values never
depend on the input), ``checker`` (the ONNX checker and strict shape inference, read as errors with node
names), ``layer_table`` (one row per weighted op: weight/bias inputs, weight axes with ``transB``/``alpha``/
``group`` normalised, MAC formula, latency kind — read by rules, counting, latency, recovery and scoring),
``layers`` (weighted layers as matrices, built on the table, shared by scoring and recovery).
"""
