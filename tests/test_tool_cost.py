"""The tool's own cost (issue 14): memory a run holds without needing it, and work an analysis skips.

Why tests and not only the benchmark (benchmarks/bench_tool_cost.py): each saving here rests on a claim
about another component (the kernel's resident pages of a mapping, onnxruntime copying the weights it is
given) that a new version could break silently; these tests check the claims themselves.
"""

from __future__ import annotations

import gc
import pathlib
import weakref

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from onnxprune.io import files as oio
from onnxprune.io import hashing
from onnxprune.io import weights
from onnxprune.io.ort_initializers import copies_external_initializers
from onnxprune.methods import prepared as prepared_module


def _resident_kib(path: pathlib.Path) -> int:
    """Resident KiB of every mapping of ``path`` in this process (``/proc/self/smaps``)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as handle:
        for line in handle:
            head = line.split()
            if len(head) >= 5 and "-" in head[0] and ":" in head[3]:  # a mapping's header line
                inside = line.rstrip().endswith(str(path))
            elif inside and head[0] == "Rss:":
                total += int(head[1])
    return total


def _wide_mlp(path: pathlib.Path, width: int = 1024, layers: int = 8) -> pathlib.Path:
    """A single-file MLP of ``layers`` × ``width``² float32 weights (32 MiB at the defaults)."""
    rng = np.random.default_rng(0)
    nodes, inits, previous = [], [], "x"
    for i in range(layers):
        inits.append(onnx.numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"h{i}"]))
        previous = f"h{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["n", width])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_mapped_load_leaves_no_weight_pages_resident(tmp_path: pathlib.Path) -> None:
    """The scan reads ~200 headers spread over 32 MiB; readahead used to leave half the file resident
    for the whole run (the guard's validation load too).  Reading a weight still works afterwards."""
    path = _wide_mlp(tmp_path / "mlp.onnx")
    model = oio.load_model(path, mmap_weights=True)
    assert weights.has_stubs(model)
    assert _resident_kib(path) < 1024, f"{_resident_kib(path)} KiB of a 32 MiB file resident after the load"
    view = weights.to_array(model.graph.initializer[3])
    np.testing.assert_array_equal(view, onnx.numpy_helper.to_array(onnx.load(path).graph.initializer[3]))


def _derived_model() -> tuple[onnx.ModelProto, np.ndarray]:
    """y = x @ W with W a *derived* stub (as a pruned slice is) and the array it stands for."""
    store = weights.WeightStore(from_files=False)
    want = np.arange(64 * 32, dtype=np.float32).reshape(64, 32) / 100
    key = store.add_derived(np.dtype(np.float32), (64, 32), lambda: want.copy())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
                              [store.new_stub("w", key)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), want


def _options(optimized: bool) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.add_session_config_entry("session.disable_prepacking", "1")
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def test_the_copy_probe_agrees_with_a_larger_initializer() -> None:
    """The probe (1 MiB) must tell the truth about a 16 MiB weight under the same settings: a runtime
    that referenced large buffers while copying small ones would be caught here."""
    for optimized in (False, True):
        options = _options(optimized)
        claimed = copies_external_initializers(options)
        size = 1 << 22
        array = np.ones(size, np.float32)
        weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[size], data_location=TensorProto.EXTERNAL)
        weight.external_data.add(key="location", value="in-memory")
        graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size])], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
        options.add_external_initializers(["w"], [ort.OrtValue.ortvalue_from_numpy(array)])
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        array[:] = 3.0
        followed = bool(session.run(None, {"x": np.zeros(1, np.float32)})[0][0] == 3.0)
        assert claimed is not followed, f"optimized={optimized}: probe says copies={claimed}, session followed={followed}"


def test_a_session_does_not_keep_a_copied_slice_alive() -> None:
    """When onnxruntime copied the weights, the computed slice is gone once the session exists, and the
    session still computes with the right values (at both optimization levels)."""
    model, want = _derived_model()
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    for optimized in (False, True):
        seen: list[weakref.ref] = []
        store, _ = weights.stub_entry(model.graph.initializer[0])

        def traced(k: str, original=store.transient, seen=seen) -> np.ndarray:
            value = original(k)
            seen.append(weakref.ref(value))
            return value

        store.transient = traced
        try:
            session = weights.ort_session(model, _options(optimized), ["CPUExecutionProvider"])
        finally:
            del store.transient
        gc.collect()
        assert len(seen) == 1
        copies = copies_external_initializers(_options(optimized))
        assert (seen[0]() is None) == copies  # released exactly when onnxruntime holds its own copy
        got = session.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, x @ want, rtol=1e-5, atol=1e-6)


def test_prepare_leaves_the_hash_to_those_who_need_it(monkeypatch) -> None:
    """``analyze`` (``hash_model=False``) never reads the model's SHA-256, so ``prepare`` must not spend a read
    of every weight on it; the first reader gets what hashing the prepared model gives, computed once."""
    from conftest import MODELS

    calls = []
    real = prepared_module.model_sha256
    monkeypatch.setattr(prepared_module, "model_sha256", lambda model: calls.append(1) or real(model))
    model = oio.load_model(MODELS / "mnist_cnn.onnx", mmap_weights=True)
    prepared = prepared_module.prepare(model, hash_model=False)
    assert calls == [] and prepared.sha256 is None
    assert prepared.model_sha256 == real(model)
    assert prepared.model_sha256 == prepared.sha256 and calls == [1]


def test_weights_hashed_ahead_give_the_hash_prepare_always_gave(tmp_path: pathlib.Path) -> None:
    """The CLI hashes the weights before ``prepare`` (while the isolation child runs); the model hash taken at
    the end of ``prepare`` -- of the model as preparing left it (graphsurgeon names its Constant tensors) --
    must be the one a run without the head start computes, for single-file and external-data weights."""
    from conftest import MODELS

    ext = tmp_path / "ext.onnx"
    onnx.save(onnx.load(MODELS / "mobilenetv2.onnx"), ext, save_as_external_data=True, location="ext.data",
              size_threshold=1024)
    for path in (MODELS / "swin_t_reduced.onnx", ext):  # single-file weights above 64 KiB are mapped too
        ahead = oio.load_model(path, mmap_weights=True)
        oio.hash_weights(ahead)
        store = weights.store_of(ahead)
        stubs = [i for i in ahead.graph.initializer if weights.is_stub(i)]
        assert store is not None and len(stubs) >= 6  # hashes kept:
        assert all(store.known(weights.stub_entry(i)[1], "sha256") for i in stubs)
        plain = prepared_module.prepare(oio.load_model(path, mmap_weights=True)).model_sha256
        assert prepared_module.prepare(ahead).model_sha256 == plain

# --------------------------------------------------------------------------------------------------
# the isolation child runs while the CLI loads and hashes the model (workflows.steps.prune_to_file's ``guard``)


def _segfaulting_child(folder: pathlib.Path) -> pathlib.Path:
    """A child script that really dies by SIGSEGV in its checker stage (no onnx crash is known to use)."""
    script = folder / "segfaulting_child.py"
    script.write_text(
        "import ctypes, json, resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
        "print('@@onnxprune-isolation ' + json.dumps({'model': 0, 'stage': 'checker', 'status': 'start'}), "
        "flush=True)\n"
        "ctypes.string_at(0)\n")
    return script


class _LoggedGuard:
    """A real isolation child whose verdict is logged when the parent asks for it."""

    def __init__(self, running, log: list[str]) -> None:
        self.running_probe, self.log = running, log

    def running(self) -> bool:
        return self.running_probe.running()

    def wait(self):
        self.log.append("ready")
        return self.running_probe.wait()


def _watch_native(monkeypatch, log: list[str]) -> None:
    """Record every first contact of native onnx / onnxruntime code with a model, in order."""
    import onnx.shape_inference

    from onnxprune.ir import checker

    real_check, real_infer, real_session = checker.full_check, onnx.shape_inference.infer_shapes, ort.InferenceSession

    def session(*args, **kwargs):
        log.append("onnxruntime")
        return real_session(*args, **kwargs)

    monkeypatch.setattr(prepared_module, "full_check", lambda *a, **k: log.append("checker") or real_check(*a, **k))
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", lambda *a, **k: log.append("inference") or real_infer(*a, **k))
    monkeypatch.setattr(ort, "InferenceSession", session)


def test_nothing_native_touches_the_model_before_the_child_answers(monkeypatch, tmp_path: pathlib.Path) -> None:
    """Hashing starts before the wait (in a thread, :func:`onnxprune.io.files.start_hashing`), every checker /
    inference / session call comes after the verdict, and the prune is the one made without the overlap
    (same plan hash, same bytes)."""
    from conftest import MODELS

    from onnxprune.workflows.steps import PruneStep, prune_to_file

    log: list[str] = []
    _watch_native(monkeypatch, log)
    real_hash = oio.hash_weights
    monkeypatch.setattr(hashing, "hash_weights", lambda m: log.append("hash") or real_hash(m))
    step = PruneStep(ratio=0.3)
    from onnxprune.io.isolation import start_probe

    guard = _LoggedGuard(start_probe([MODELS / "mnist_cnn.onnx"], timeout=120), log)
    prune_to_file(MODELS / "mnist_cnn.onnx", tmp_path / "a.onnx", step, guard=guard)
    native = [i for i, entry in enumerate(log) if entry in ("checker", "inference", "onnxruntime")]
    assert log.count("hash") == 1 and native and log.index("ready") < native[0], log[:6]
    assert {"checker", "inference", "onnxruntime"} <= {log[i] for i in native}
    prune_to_file(MODELS / "mnist_cnn.onnx", tmp_path / "b.onnx", step)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_a_crash_verdict_wins_over_what_the_parent_met_meanwhile(monkeypatch, tmp_path: pathlib.Path) -> None:
    """A child that died is the answer (exit 5), even when the parent's own load failed in the meantime,
    and nothing native ran in the parent."""
    import pytest
    from conftest import MODELS

    from onnxprune.errors import IsolationError, ModelLoadError
    from onnxprune.workflows.steps import PruneStep, prune_to_file

    from onnxprune.io.isolation import _launch, start_probe

    log: list[str] = []
    _watch_native(monkeypatch, log)
    model = MODELS / "mnist_cnn.onnx"
    script = _segfaulting_child(tmp_path)

    def crashed():
        return _launch({"models": [str(model)]}, ["m.onnx"], 120, script)

    with pytest.raises(IsolationError, match="SIGSEGV"):
        prune_to_file(model, tmp_path / "a.onnx", PruneStep(ratio=0.3), guard=crashed())

    def unreadable(*args, **kwargs):
        raise ModelLoadError("m.onnx: external data file changed while loading")

    monkeypatch.setattr("onnxprune.workflows.steps.load_model", unreadable)
    with pytest.raises(IsolationError, match="SIGSEGV"):
        prune_to_file(model, tmp_path / "a.onnx", PruneStep(ratio=0.3), guard=crashed())
    survived = start_probe([model], timeout=120)
    with pytest.raises(ModelLoadError):  # a child that survived: the parent's own error stands
        prune_to_file(model, tmp_path / "a.onnx", PruneStep(ratio=0.3), guard=survived)
    assert log == [] and not (tmp_path / "a.onnx").exists()


# --------------------------------------------------------------------------------------------------
# the isolation child starts without ``site`` (its .pth files cost ~60 ms of a ~75 ms interpreter start)


def _bad_perm_model(path: pathlib.Path) -> pathlib.Path:
    """The checker rejects it (Transpose perm [0, 2, 3, 3]) and onnxruntime cannot load it: both stages
    answer with their own message, which shows they really ran."""
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 3], name="bad_perm"),
         helper.make_node("Relu", ["t"], ["y"], name="relu")],
        "bad_perm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_the_child_starts_without_site_and_still_runs_every_stage(tmp_path: pathlib.Path) -> None:
    from onnxprune.io import isolation

    source = _bad_perm_model(tmp_path / "bad.onnx")
    running = isolation.start_probe([source], onnxruntime=True, timeout=120)
    assert running.spec.get("sys_path"), "the packages were located: no site needed"
    statuses = {r.stage: r for r in running.wait().results}
    assert statuses["checker"].status == "error" and "perm" in statuses["checker"].message
    assert statuses["session"].status == "error" and "ModuleNotFound" not in statuses["session"].message


def test_a_child_without_site_that_cannot_import_falls_back_to_an_ordinary_one(tmp_path: pathlib.Path) -> None:
    """No folders given: the -S child finds neither onnx nor onnxruntime, asks for an ordinary start, and
    the stages run there (an import failure must never pass for a stage's answer)."""
    from onnxprune.io import isolation

    source = _bad_perm_model(tmp_path / "bad.onnx")
    spec = {"models": [str(source)], "checker": True, "onnxruntime": True, "alarm": 0, "sys_path": []}
    report = isolation._launch(spec, [str(source)], 120, isolation.CHILD_SCRIPT, site=False).wait()
    statuses = {r.stage: r for r in report.results}
    assert statuses["checker"].status == "error" and "perm" in statuses["checker"].message, report
    assert statuses["session"].status == "error" and "ModuleNotFound" not in statuses["session"].message, report


def test_union_many_and_roots_match_the_pair_by_pair_union_find() -> None:
    """The inlined loop and the pointer-jumping roots give exactly the roots of union() + find() (the
    analysis numbers groups and units from them)."""
    from onnxprune.analysis.unionfind import UnionFind

    rng = np.random.default_rng(7)
    fast, slow = UnionFind(), UnionFind()
    for _ in range(30):  # atoms added between unions, as the walk does
        count = int(rng.integers(1, 400))
        fast.add(count), slow.add(count)
        n = len(fast)
        a, b = rng.integers(0, n, size=int(rng.integers(0, 300))), rng.integers(0, n, size=int(rng.integers(0, 300)))
        a, b = a[:min(len(a), len(b))], b[:min(len(a), len(b))]
        fast.union_many(a, b)
        for x, y in zip(a.tolist(), b.tolist()):
            slow.union(x, y)
    want = np.array([slow.find(i) for i in range(len(slow))])
    assert np.array_equal(fast.roots(), want)
    assert len(np.unique(want)) < len(want) - 1000  # enough unions that the roots mean something


# --------------------------------------------------------------------------------------------------
# the isolation child checks the graph the parent will check, not every weight of the file


def test_the_child_checks_the_graph_the_parent_checks_not_the_weights(tmp_path: pathlib.Path) -> None:
    """A single-file model's checker copy holds the graph with its weights as typed inputs (a few KiB for
    32 MiB of weights), exists while the child runs and is gone once it is judged; an external-data model's
    copy refers to no data file, so the checker passes it as it passes the file."""
    from conftest import MODELS

    from onnxprune.io.isolation import start_probe

    mlp = _wide_mlp(tmp_path / "mlp.onnx")
    ext = tmp_path / "ext.onnx"
    onnx.save(onnx.load(MODELS / "mobilenetv2.onnx"), ext, save_as_external_data=True, location="ext.data",
              size_threshold=1024)
    running = start_probe([mlp, ext], timeout=120)
    copies = [pathlib.Path(p) for p in running.spec["check"]]
    assert all(c.exists() for c in copies)
    assert copies[0].stat().st_size < mlp.stat().st_size / 1000, copies[0].stat().st_size
    copy = onnx.load(copies[1], load_external_data=False)
    assert not any(i.data_location == TensorProto.EXTERNAL for i in copy.graph.initializer)
    assert {i.name for i in onnx.load(ext, load_external_data=False).graph.initializer} - \
        {i.name for i in copy.graph.initializer} <= {v.name for v in copy.graph.input}
    report = running.wait()
    assert [(r.stage, r.status) for r in report.results] == [("checker", "ok"), ("checker", "ok")], report
    assert not any(c.exists() for c in copies) and not copies[0].parent.exists()


def test_external_data_outside_the_initializers_is_checked_in_the_file(tmp_path: pathlib.Path) -> None:
    """A Constant node's tensor saved as external data is read inline by the parent's load: a copy that still
    refers to it would not be the graph the parent checks, so the child checks the file itself."""
    from onnx.external_data_helper import convert_model_to_external_data

    from onnxprune.io.isolation import start_probe

    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=onnx.numpy_helper.from_array(np.ones((64, 64), np.float32))),
         helper.make_node("MatMul", ["x", "w"], ["y"])],
        "const", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    convert_model_to_external_data(model, location="c.data", size_threshold=1024, convert_attribute=True)
    path = tmp_path / "c.onnx"
    onnx.save(model, path)
    running = start_probe([path], timeout=120)
    assert running.spec["check"] == [None]
    assert [(r.stage, r.status) for r in running.wait().results] == [("checker", "ok")]


def test_norms_taken_while_the_child_runs_are_the_norms_scoring_takes(monkeypatch, tmp_path: pathlib.Path) -> None:
    """``warm_norms`` fills the store before the analysis; the scores and the plan made from them are
    bit-identical to a run without the head start, and nothing is taken once the child is done."""
    from onnxprune.pipeline import PruneOptions, prune
    from onnxprune.scoring import importance
    from onnxprune.scoring.importance import warm_norms

    mlp = _wide_mlp(tmp_path / "mlp.onnx", width=256, layers=4)  # 256 KiB weights: mapped, not parsed
    taken: list[int] = []
    real = importance._index_norms
    monkeypatch.setattr(importance, "_index_norms", lambda *a, **k: taken.append(1) or real(*a, **k))
    for criterion in ("l1", "l2"):
        cold = oio.load_model(mlp, mmap_weights=True)
        warm = oio.load_model(mlp, mmap_weights=True)
        assert warm_norms(warm, criterion, lambda: False) == 0
        assert warm_norms(warm, criterion, lambda: True) == 8  # both axes of four weights
        assert warm_norms(warm, criterion, lambda: True) == 0  # kept: nothing left to take
        taken.clear()
        options = PruneOptions(ratio=0.3, criterion=criterion)
        a = prune(cold, options)
        cold_count, taken[:] = len(taken), []
        b = prune(warm, options)
        assert cold_count >= 6 and taken == []  # the warm run scored from the store alone
        assert a.plan.to_dict() == b.plan.to_dict()
        assert weights.checkable(a.model).SerializeToString() == weights.checkable(b.model).SerializeToString()
    assert warm_norms(warm, "activation", lambda: True) == 0  # a data criterion reads no norms


def test_run_checks_keep_one_thread_under_a_tight_memory_budget() -> None:
    """onnxruntime's threads bring stacks and malloc arenas that count against ``--memory-limit``
    (RLIMIT_DATA): with less than 1 GiB of budget left the shape-only run check keeps one thread."""
    import subprocess
    import sys

    code = ("import resource, os\n"
            "from onnxprune.runtime.sessions import shape_check_threads\n"
            "free = shape_check_threads()\n"
            "used = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmData:'))\n"
            "resource.setrlimit(resource.RLIMIT_DATA, (used + (256 << 20), resource.getrlimit(resource.RLIMIT_DATA)[1]))\n"
            "print(free, shape_check_threads(), len(os.sched_getaffinity(0)))\n")
    free, tight, cpus = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                               check=True).stdout.split())
    assert tight == 1 and free == max(1, min(4, cpus))


def test_weights_hashed_in_a_thread_are_hashed_once_and_give_the_same_model_hash(monkeypatch) -> None:
    """``start_hashing`` hashes in the background; a reader asking for a digest being taken waits for it
    instead of taking it again (``WeightStore.memo``), and the model hash is the one inline hashing gives."""
    import threading
    import time

    from conftest import MODELS

    path = MODELS / "swin_t_reduced.onnx"
    inline = oio.load_model(path, mmap_weights=True)
    oio.hash_weights(inline)
    ahead = oio.load_model(path, mmap_weights=True)
    taken: list[str] = []
    real = weights.chunks

    def slow_chunks(tensor):  # slow enough that the reader below meets digests still being taken
        taken.append(tensor.name)
        time.sleep(0.002)
        yield from real(tensor)

    monkeypatch.setattr(weights, "chunks", slow_chunks)
    before = threading.active_count()
    oio.start_hashing(ahead)
    assert threading.active_count() == before + 1  # no memory budget here: a thread
    assert oio.model_sha256(ahead) == oio.model_sha256(inline)
    stubs = [i.name for i in ahead.graph.initializer if weights.is_stub(i)]
    assert sorted(taken) == sorted(stubs)  # every digest taken once, by one of the two threads


def test_a_fact_being_computed_is_waited_for_not_computed_again() -> None:
    import threading
    import time

    store = weights.WeightStore()
    calls: list[int] = []

    def slow() -> int:
        calls.append(1)
        time.sleep(0.05)
        return 42

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(store.memo("k", "fact", slow))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [42] * 8 and calls == [1]

    def broken() -> int:
        raise ValueError("unreadable")

    import pytest

    with pytest.raises(ValueError):
        store.memo("k", "other", broken)
    assert not store.known("k", "other") and store.memo("k", "other", lambda: 7) == 7  # an error is not kept
