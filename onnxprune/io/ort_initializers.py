"""Whether onnxruntime keeps its own copy of the weights a session is given as external initializers.

Why: :func:`onnxprune.io.weights.ort_session` hands a session its stub weights as ``OrtValue`` external
initializers.  The sliced weights of a pruned model are computed for that (they exist nowhere else), so
keeping them alive with the session doubles the pruned model in memory if onnxruntime copied them at
creation — which onnxruntime 1.32 does (``Graph::InjectExternalInitializedTensors`` puts their bytes into
the graph and the session drops the ``OrtValue`` s right after).  A ResNet-50 ``prune`` held both copies
while its run check's activations were allocated on top (+50 MB at the peak).

The answer is measured, not assumed from a version number: once per process and session setting, a tiny
session is created on a 1 MiB external initializer, the array is overwritten, and the session is run.  If
the output follows the overwrite, onnxruntime reads the caller's buffer and the arrays must stay alive; if
it does not, onnxruntime copied them and they may go.  Anything unexpected (an error, an odd result)
counts as "not copied": the arrays are then kept, as before.
"""

from __future__ import annotations

import functools

import numpy as np

#: Elements of the probe's initializer (1 MiB of float32): far above any "small tensor" threshold below
#: which a runtime might copy while referencing larger buffers.
PROBE_ELEMENTS = 1 << 18


def copies_external_initializers(options: object) -> bool:
    """Whether a session made with ``options`` (an ``onnxruntime.SessionOptions``) no longer reads the
    buffers of its external initializers once it exists (see the module docstring)."""
    level = int(getattr(options, "graph_optimization_level", 99))
    try:
        prepack_off = options.get_session_config_entry("session.disable_prepacking") == "1"
    except Exception:  # noqa: BLE001 - an entry never set raises in some onnxruntime versions
        prepack_off = False
    return _measured(level, prepack_off)


@functools.cache
def _measured(level: int, prepack_off: bool) -> bool:
    # imported here: io stays light to import, only sessions need these
    import onnxruntime as ort
    from onnx import TensorProto, helper

    try:
        weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[PROBE_ELEMENTS],
                             data_location=TensorProto.EXTERNAL)
        weight.external_data.add(key="location", value="in-memory")
        graph = helper.make_graph(
            [helper.make_node("Add", ["x", "w"], ["y"])], "ort_copy_probe",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [PROBE_ELEMENTS])], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel(level)
        options.log_severity_level = 4
        options.intra_op_num_threads = 1
        if prepack_off:
            options.add_session_config_entry("session.disable_prepacking", "1")
        array = np.ones(PROBE_ELEMENTS, np.float32)
        options.add_external_initializers(["w"], [ort.OrtValue.ortvalue_from_numpy(array)])
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = {"x": np.zeros(1, np.float32)}
        before = session.run(None, feed)[0]
        array[:] = 2.0
        after = session.run(None, feed)[0]
    except Exception:  # noqa: BLE001 - cannot tell: keep the arrays (the safe answer)
        return False
    return bool(np.all(before == 1.0) and np.all(after == 1.0))
