"""Element sparsity (onnxprune/methods/sparsity): patterns in the written weights, the masked-reference
oracle, SparseGPT's promised reconstruction on held-out data, accuracy on the MNIST CNN, storage, CLI,
recipe and API.  Real onnxruntime sessions throughout; tolerances stated per test.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import replace

import numpy as np
import onnx
import pytest

from conftest import MODELS
from graphs import G
from test_cli import assert_one_line_error, cli
from onnxprune.runtime.calibration import calibration_from_feeds, random_calibration
from onnxprune.measurement.counting import count_model
from onnxprune.errors import InputError, PlanError
from onnxprune.reports.html import render_html
from onnxprune.io.files import load_model, save_model
from onnxprune.methods.sparsity import masks
from onnxprune.methods.sparsity.method import SparsityMethod
from onnxprune.methods.sparsity.obs import reconstruction_error, sparsegpt
from onnxprune.methods.sparsity.oracle import verify_sparsity
from onnxprune.methods.sparsity.plan import SparsityPlan, SparsitySettings
from onnxprune.workflows.sparsify import SparsifyStep, sparsify_to_file
from onnxprune.methods.sparsity.storage import to_sparse_initializers
from onnxprune.methods.prepared import prepare
from onnxprune.workflows.steps import command_report
from onnxprune.runtime.sessions import Runner, make_session
from onnxprune.runtime.feeds import random_feeds
from onnxprune.io.weights import to_array

MNIST = MODELS / "mnist_cnn.onnx"
EXACT = 1e-6  # relative output error allowed against the masked reference when the output runs optimized
#               (fused kernels); with ORT_DISABLE_ALL on both sides the oracle requires bit-for-bit equality


def mixed_model() -> onnx.ModelProto:
    """x[N,6,6,6] → Conv(6→16) → Relu → grouped Conv(16→16, g=2) → Relu → GAP → Flatten →
    Gemm(transB=0, 16→12) → Relu → MatMul(12→8) → Gemm head(transB=1, 8→5)."""
    g = G(seed=3)
    x = g.input("x", ("N", 6, 6, 6))
    h = g.node("Relu", [g.conv(x, 6, 16, name="c0")])
    h = g.node("Relu", [g.conv(h, 16, 16, group=2, name="c1")])
    h = g.node("Flatten", [g.node("GlobalAveragePool", [h])], axis=1)
    h = g.node("Relu", [g.gemm(h, 16, 12, name="g1", trans_b=0)])
    h = g.matmul(h, 12, 8, name="m1")
    g.gemm_out(h, 8)
    return g.model()


def n_m_holds_onnx_layout(weight: np.ndarray, op: str, trans_b: int, n: int, m: int) -> bool:
    """N:M checked in the weight's own ONNX layout, independently of the method's matrix view: groups of M
    consecutive input channels (Conv axis 1 at each output and kernel position; Gemm/MatMul the K axis)."""
    if op == "Conv":
        along = np.moveaxis(weight, 1, -1)  # [O, k..., C]
    elif op == "Gemm" and trans_b:
        along = weight  # [N, K]
    else:
        along = weight.T  # [K, N] → [N, K]
    groups = along.reshape(*along.shape[:-1], along.shape[-1] // m, m)
    return bool(np.all((groups != 0).sum(axis=-1) <= n))


ROWS = 4000  # im2col rows per Conv layer for SparseGPT's Gram matrices in tests (default 20000: slower)


def _run(prepared, settings: SparsitySettings, calibration=None):
    method = SparsityMethod()
    analysis = method.analyze(prepared, settings.exclude)
    stats = method.statistics(prepared, analysis, settings, calibration, max_rows=ROWS)
    plan = method.plan(prepared, analysis, settings, stats)
    return method, plan, method.apply(prepared, plan)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: np.asarray(to_array(init)) for init in model.graph.initializer}


def _accuracy(model: onnx.ModelProto, data: dict[str, np.ndarray]) -> float:
    session = make_session(model)
    logits = np.concatenate([session.run(None, {"input": data["input"][i:i + 250]})[0] for i in range(0, 1000, 250)])
    return float(np.mean(logits.argmax(1) == data["y"]))


# -- patterns and the masked reference -----------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
@pytest.mark.parametrize("criterion", ["magnitude", "wanda"])
def test_n_m_pattern_holds_and_matches_masked_reference(pattern: str, criterion: str) -> None:
    model = mixed_model()
    prepared = prepare(model)
    calibration = random_calibration(model, 16, seed=1, batch_size=8)
    method, plan, out = _run(prepared, SparsitySettings(None, pattern, criterion), calibration)
    n, m = masks.parse_pattern(pattern).n, masks.parse_pattern(pattern).m
    written = _weights(out)
    layers = {record.layer.node: record for record in plan.layers}
    skipped = {s.node: s.reason for s in plan.skipped}
    assert "c0" in skipped and "not divisible by M" in skipped["c0"]  # 6 input channels
    expected = {"c1", "g1", "head"} | ({"m1"} if m == 4 else set())  # m1 reads 12 features: 2:4 only
    assert set(layers) == expected
    for node in ("c1", "g1", "m1", "head"):
        if node not in layers:
            continue
        op = {"c1": "Conv", "g1": "Gemm", "m1": "MatMul", "head": "Gemm"}[node]
        w = written[layers[node].layer.weight]
        assert n_m_holds_onnx_layout(w, op, int(node == "head"), n, m), node
        assert np.count_nonzero(w == 0) >= w.size * (1 - n / m)
    original = _weights(prepared.normalized)
    assert np.array_equal(written["c0_W"], original["c0_W"])  # the skipped layer stays dense, bit for bit
    check = verify_sparsity(method, prepared, plan, out, tolerance=EXACT)
    assert check.ok, check.to_dict()
    assert len(check.shapes) >= 2 and all(d["relative"] <= EXACT for d in check.diffs)
    assert all(d["max_abs"] == 0.0 for d in check.diffs if not d["optimized"])  # ORT_DISABLE_ALL: bit for bit


def test_oracle_fails_when_the_written_weights_differ_from_the_mask() -> None:
    model = mixed_model()
    prepared = prepare(model)
    method, plan, out = _run(prepared, SparsitySettings(0.5))
    record = plan.layers[-1]
    keep = masks.unpack(record.mask, (record.layer.rows, record.layer.cols))
    keep[0, np.argmax(keep[0])] = False  # the reference now zeroes a weight the output kept
    tampered = replace(plan, layers=plan.layers[:-1] + (replace(record, mask=masks.pack(keep)),))
    check = verify_sparsity(method, prepared, tampered, out, tolerance=EXACT)
    assert not check.ok
    assert not all(row["ok"] for row in check.pattern) or any(not d["ok"] for d in check.diffs)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_unstructured_layer_scope_zeroes_the_fraction_of_every_layer(sparsity: float) -> None:
    prepared = prepare(mixed_model())
    method, plan, out = _run(prepared, SparsitySettings(sparsity))
    written = _weights(out)
    for record in plan.layers:
        w = written[record.layer.weight]
        assert np.count_nonzero(w == 0) == record.zeros == int(round(sparsity * w.size))
    assert verify_sparsity(method, prepared, plan, out, tolerance=EXACT).ok


def test_global_scope_allocates_the_total_and_favours_large_weights() -> None:
    prepared = prepare(mixed_model())
    _, plan, _ = _run(prepared, SparsitySettings(0.6, scope="global"))
    summary = plan.summary()
    assert summary["zeros"] == int(round(0.6 * summary["weights"]))
    assert len({round(r.zeros / r.total, 3) for r in plan.layers}) > 1  # not uniform


def test_plan_json_round_trip_replays_the_same_model() -> None:
    prepared = prepare(mixed_model())
    method, plan, out = _run(prepared, SparsitySettings(None, "2:4"))
    again = SparsityPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.method == "sparsity" and again == plan
    replayed = method.apply(prepared, again)
    for name, values in _weights(out).items():
        assert np.array_equal(values, _weights(replayed)[name]), name


def test_settings_refuse_bad_combinations() -> None:
    with pytest.raises(InputError, match="pattern 2:4 zeroes 0.5"):
        SparsitySettings(0.7, "2:4")
    with pytest.raises(InputError, match="need 0 < N < M"):
        SparsitySettings(None, "4:2")
    with pytest.raises(InputError, match="needs --sparsity"):
        SparsitySettings(None, "unstructured")
    with pytest.raises(InputError, match="scope global"):
        SparsitySettings(None, "2:4", scope="global")


# -- SparseGPT -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.5), ("unstructured", 0.8), ("2:4", None)])
def test_sparsegpt_solver_beats_masking_alone(pattern: str, sparsity: float | None) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 32)) @ rng.standard_normal((32, 32))  # correlated inputs
    w = rng.standard_normal((16, 32))
    gram = x.T @ x
    parsed = masks.parse_pattern(pattern)
    updated, keep = sparsegpt(w, gram, parsed, sparsity or parsed.sparsity, block=8)
    assert np.all(updated[~keep] == 0) and masks.holds(updated, parsed)
    assert abs((~keep).mean() - (sparsity or 0.5)) < 0.02
    masked_error = reconstruction_error(np.where(keep, 0.0, w), gram)
    assert reconstruction_error(w - updated, gram) < 0.8 * masked_error


def test_sparsegpt_keeps_its_promise_on_held_out_digits() -> None:
    model = load_model(MNIST)
    prepared = prepare(model)
    digits = np.load(MODELS / "mnist_calib.npz")["input"]
    calibration = calibration_from_feeds([{"input": digits[:128]}], model, batch_size=64)
    test = np.load(MODELS / "mnist_test.npz")
    heldout = calibration_from_feeds([{"input": test["input"][:128]}], model, batch_size=64)
    method, plan, out = _run(prepared, SparsitySettings(None, "2:4", "sparsegpt"), calibration)
    assert plan.updated and set(plan.updates) == {r.layer.node for r in plan.layers}
    check = verify_sparsity(method, prepared, plan, out, heldout=heldout)
    assert check.ok, check.to_dict()
    assert len(check.reconstruction) == 5
    assert all(row["error_updated"] < row["error_masked"] for row in check.reconstruction)
    with pytest.raises(PlanError, match="read from JSON without them"):
        method.apply(prepared, SparsityPlan.from_dict(plan.to_dict()))


# -- MNIST accuracy (no fine-tuning; benchmarks/results_sparsity.md has every criterion) ----------------


@pytest.mark.parametrize("settings,floor", [
    (SparsitySettings(0.5, scope="global"), 0.970),
    (SparsitySettings(0.7, scope="global"), 0.960),
    (SparsitySettings(None, "2:4"), 0.970),
    (SparsitySettings(None, "2:4", "sparsegpt"), 0.970),
])
def test_mnist_accuracy_floors(settings: SparsitySettings, floor: float, mnist_test) -> None:
    model = load_model(MNIST)
    prepared = prepare(model)
    digits = np.load(MODELS / "mnist_calib.npz")["input"][:128]
    calibration = calibration_from_feeds([{"input": digits}], model, batch_size=64) if settings.needs_calibration else None
    _, plan, out = _run(prepared, settings, calibration)
    assert plan.summary()["sparsity"] == pytest.approx(settings.target, abs=1e-3)
    assert _accuracy(out, mnist_test) >= floor


def test_memory_mapped_weights_are_never_written() -> None:
    digest = hashlib.sha256(MNIST.read_bytes()).hexdigest()
    model = load_model(MNIST, mmap_weights=True)
    prepared = prepare(model)
    method, plan, out = _run(prepared, SparsitySettings(0.5))
    assert verify_sparsity(method, prepared, plan, out, tolerance=EXACT).ok
    assert hashlib.sha256(MNIST.read_bytes()).hexdigest() == digest
    assert np.count_nonzero(_weights(prepared.normalized)["classifier.2.weight"] == 0) == 0


def test_external_data_model_is_mapped_read_only_and_sized_with_its_data(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "in" / "m.onnx"
    source.parent.mkdir()
    save_model(load_model(MNIST), source, external_data=True)
    digest = hashlib.sha256((tmp_path / "in" / "m.onnx.data").read_bytes()).hexdigest()
    results = sparsify_to_file(source, tmp_path / "out.onnx", SparsifyStep(SparsitySettings(0.7, scope="global"),
                                                                            verify=True))
    assert hashlib.sha256((tmp_path / "in" / "m.onnx.data").read_bytes()).hexdigest() == digest
    size = results["size"]
    assert size["before"] > 250_000 and size["after"] > 250_000  # the .data files are counted
    assert size["gzip_after"] < 0.5 * size["gzip_before"] and results["verification"]["ok"]


# -- storage ---------------------------------------------------------------------------------------------


def test_sparse_initializers_load_in_onnxruntime_with_identical_outputs(tmp_path: pathlib.Path) -> None:
    prepared = prepare(load_model(MNIST))
    _, plan, out = _run(prepared, SparsitySettings(0.8))
    sparse, converted = to_sparse_initializers(out, [r.layer.weight for r in plan.layers])
    assert set(converted) == {r.layer.weight for r in plan.layers} and len(sparse.graph.sparse_initializer) == 6
    assert sparse.ByteSize() < 0.75 * out.ByteSize()
    path = tmp_path / "sparse.onnx"
    path.write_bytes(sparse.SerializeToString())
    feeds = random_feeds(out, batch=3, seed=0)
    dense_out = Runner(out).run(feeds, optimized=False)
    sparse_out = Runner(onnx.load(path)).run(feeds, optimized=False)
    for name, value in dense_out.items():
        assert np.array_equal(value, sparse_out[name])
    counted, dense_counted = count_model(onnx.load(path)), count_model(out)  # bench / reports count sparse weights
    assert (counted.macs, counted.params) == (dense_counted.macs, dense_counted.params) and counted.macs > 0


# -- front ends ------------------------------------------------------------------------------------------


def test_cli_sparsify_writes_model_and_report(tmp_path: pathlib.Path) -> None:
    out, report = tmp_path / "s.onnx", tmp_path / "r.json"
    result = cli("sparsify", str(MNIST), "-o", str(out), "--pattern", "2:4", "--verify", "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert "2:4" in result.stdout and "gzip" in result.stdout and "--sparsity=enable" in result.stdout
    data = json.loads(report.read_text())
    assert data["command"] == "sparsify" and data["ok"]
    body = data["results"]
    assert body["pattern"] == "2:4" and body["sparsity"] == pytest.approx(0.5)
    assert body["size"]["gzip_after"] < body["size"]["gzip_before"]
    assert body["verification"]["ok"] and body["skipped"][0]["node"] == "/features/features.0/Conv"
    written = load_model(out)
    weights = _weights(written)
    assert n_m_holds_onnx_layout(weights["onnx::Conv_58"], "Conv", 0, 2, 4)
    assert n_m_holds_onnx_layout(weights["classifier.2.weight"], "Gemm", 1, 2, 4)


def test_saved_plan_replays_and_refuses_another_model(tmp_path: pathlib.Path) -> None:
    first, plan_path = tmp_path / "a.onnx", tmp_path / "plan.json"
    step = SparsifyStep(SparsitySettings(0.6, scope="global"), save_plan=str(plan_path))
    results = sparsify_to_file(MNIST, first, step)
    assert json.loads(plan_path.read_text())["method"] == "sparsity"
    replayed = sparsify_to_file(MNIST, tmp_path / "b.onnx", SparsifyStep(step.settings, plan_path=str(plan_path)))
    assert replayed["zeros"] == results["zeros"]
    a, b = _weights(load_model(first)), _weights(load_model(tmp_path / "b.onnx"))
    assert all(np.array_equal(a[name], b[name]) for name in a)
    with pytest.raises(PlanError, match="different model"):
        sparsify_to_file(MODELS / "mobilenetv2.onnx", tmp_path / "c.onnx", SparsifyStep(step.settings,
                                                                                        plan_path=str(plan_path)))


def test_html_report_has_the_sparsity_line(tmp_path: pathlib.Path) -> None:
    results = sparsify_to_file(MNIST, tmp_path / "a.onnx", SparsifyStep(SparsitySettings(None, "2:4")))
    page = render_html(command_report("sparsify", {}, results))
    assert "sparsity 50.0% (2:4, magnitude)" in page and "gzip" in page


@pytest.mark.parametrize("args,needle", [
    (("--pattern", "3:2"), "need 0 < N < M"),
    (("--sparsity", "0.5", "--criterion", "wanda"), "needs calibration data"),
    (("--sparsity", "0.3", "--pattern", "2:4"), "pattern 2:4 zeroes 0.5"),
])
def test_cli_bad_input_is_one_line(tmp_path: pathlib.Path, args: tuple[str, ...], needle: str) -> None:
    result = cli("sparsify", str(MNIST), "-o", str(tmp_path / "x.onnx"), *args)
    assert_one_line_error(result, 2, needle)
    assert not (tmp_path / "x.onnx").exists()


def test_recipe_prune_sparsify_quantize(tmp_path: pathlib.Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""version = 1
model = "{MNIST}"
[calibration]
path = "{MODELS / 'mnist_calib.npz'}"
[[steps]]
type = "prune"
ratio = 0.25
criterion = "l2"
recover = "none"
output = "p.onnx"
[[steps]]
type = "sparsify"
pattern = "2:4"
criterion = "wanda"
verify = true
output = "s.onnx"
[[steps]]
type = "quantize"
output = "q.onnx"
""")
    from onnxprune.api import run_recipe

    result = run_recipe(recipe, tmp_path)
    assert result.ok and [s["type"] for s in result.steps] == ["prune", "sparsify", "quantize"]
    sparsified = result.steps[1]["results"]
    assert sparsified["source"].endswith("p.onnx")
    assert sparsified["sparsity"] == pytest.approx(0.5) and sparsified["verification"]["ok"]
    assert (tmp_path / "q.onnx").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text(f'version = 1\nmodel = "{MNIST}"\n[[steps]]\ntype = "sparsify"\ncriterion = "sparsegpt"\n'
                   'pattern = "2:4"\noutput = "s.onnx"\n')
    with pytest.raises(InputError, match="needs calibration data"):
        run_recipe(bad, tmp_path)


def test_python_api(tmp_path: pathlib.Path) -> None:
    import onnxprune

    result = onnxprune.sparsify(MNIST, tmp_path / "a.onnx", sparsity=0.6, scope="global", sparse_format=True)
    assert result.sparsity == pytest.approx(0.6, abs=1e-4)
    assert result.to_dict()["size"]["sparse_initializers"]
    assert pathlib.Path(result.output).stat().st_size < MNIST.stat().st_size
