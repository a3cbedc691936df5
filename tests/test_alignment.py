"""``--round-to auto``: the provider table, the rule for narrow groups, relaxation for targets, CLI/recipe plumbing."""

from __future__ import annotations

import json
import pathlib

import pytest

from conftest import MODELS, assert_matches_oracle
from test_cli import cli
from onnxprune.measurement.bench import DEFAULT_PROVIDER
from onnxprune.planning.alignment import TABLE, Alignment, provider_for, relaxations, resolve
from onnxprune.planning.allocate import _rounded_keeping_the_cut, round_step
from onnxprune.measurement.counting import count_model
from onnxprune.errors import InputError
from onnxprune.io.files import load_model
from onnxprune.pipeline import PruneOptions, plan_prune
from onnxprune.methods.width import apply_plan
from onnxprune.methods.prepared import model_stats, prepare

BUDGET_MODELS = ("resnet_basic", "mobilenetv2", "vgg_chain", "mnist_cnn", "bert_encoder_static")


def test_resolve_explicit_and_auto() -> None:
    assert resolve(8) == Alignment(8) and resolve("4") == Alignment(4)
    auto = resolve("auto")
    assert (auto.multiple, auto.min_units) == TABLE["CPUExecutionProvider"][:2] and auto.source.startswith("auto")
    for bad in (0, -1, "x", 2.5, None):
        with pytest.raises(InputError, match="positive integer or 'auto'"):
            resolve(bad)
    with pytest.raises(InputError, match="no alignment entry for 'NoSuchExecutionProvider'.*give --round-to N"):
        resolve("auto", provider="NoSuchExecutionProvider")


def test_table_says_which_rows_are_measured() -> None:
    """Only the CPU row is measured here; every other row must say it is guidance, and the plan record
    carries that evidence, so a report never passes vendor guidance off as a measurement."""
    for provider, (_, _, evidence) in TABLE.items():
        measured = provider == "CPUExecutionProvider"
        assert evidence.startswith("measured: " if measured else "not measured here: "), provider
    for provider in TABLE:
        record = resolve("auto", provider).to_dict()
        assert record["source"] == f"auto ({provider})" and record["evidence"] == TABLE[provider][2]
    assert "evidence" not in resolve(8).to_dict()
    assert all(a.evidence == TABLE["CPUExecutionProvider"][2] for a in relaxations(resolve("auto")))


def test_auto_follows_the_latency_provider_and_cpu_otherwise() -> None:
    cuda = PruneOptions(target_latency=0.5, latency_provider="CUDAExecutionProvider", round_to="auto").alignment()
    assert (cuda.multiple, cuda.min_units) == TABLE["CUDAExecutionProvider"][:2]
    assert cuda.source == "auto (CUDAExecutionProvider)" and cuda.evidence.startswith("not measured here")
    # without a latency target the provider measures nothing, so the plan has no device of its own: CPU
    for options in (PruneOptions(target_flops=0.5, latency_provider="CUDAExecutionProvider", round_to="auto"),
                    PruneOptions(ratio=0.3, latency_provider="CUDAExecutionProvider", round_to="auto")):
        assert options.alignment() == resolve("auto")
    assert provider_for(None, "CUDAExecutionProvider") == DEFAULT_PROVIDER
    assert provider_for(0.5, "CUDAExecutionProvider") == "CUDAExecutionProvider"
    # CPU latency targets: exactly the row they always had; explicit values ignore the provider
    cpu = PruneOptions(target_latency=0.5, round_to="auto")
    assert cpu.alignment() == resolve("auto") and (cpu.alignment().multiple, cpu.alignment().min_units) == (16, 32)
    budget = cpu.budget()
    assert budget is not None and (budget.round_to, budget.round_min_units) == (16, 32)
    assert PruneOptions(target_latency=0.5, latency_provider="CUDAExecutionProvider", round_to=4).alignment() \
        == Alignment(4)


def test_latency_budget_uses_its_providers_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through ``PruneOptions.budget()`` with a provider this onnxruntime really lists (no row of its own:
    the table gets a test row); an unavailable provider is named as such before auto looks up a row."""
    import onnxruntime as ort

    other = next((p for p in ort.get_available_providers() if p != DEFAULT_PROVIDER), None)
    if other is None:
        pytest.skip("only the CPU provider is available here")
    options = PruneOptions(target_latency=0.5, latency_provider=other, round_to="auto")
    if other not in TABLE:
        with pytest.raises(InputError, match=f"no alignment entry for '{other}'"):
            options.budget()
        monkeypatch.setitem(TABLE, other, (4, 8, "not measured here: test row"))
    budget = options.budget()
    assert budget is not None and (budget.round_to, budget.round_min_units) == TABLE[other][:2]
    with pytest.raises(InputError, match="not available"):
        PruneOptions(target_latency=0.5, latency_provider="NoSuchExecutionProvider", round_to="auto").budget()


def test_cli_auto_without_a_row_for_the_latency_provider(tmp_path: pathlib.Path) -> None:
    import onnxruntime as ort

    other = next((p for p in ort.get_available_providers() if p not in TABLE), None)
    if other is None:
        pytest.skip("every available provider has an alignment row")
    out = tmp_path / "out.onnx"
    result = cli("prune", str(MODELS / "mnist_cnn.onnx"), "-o", str(out), "--target-latency", "0.5",
                 "--latency-provider", other, "--latency-cache", str(tmp_path / "c.json"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"no alignment entry for '{other}'" in lines[0] and "--round-to N" in lines[0]
    assert not out.exists()


def test_narrow_groups_get_a_finer_power_of_two_that_leaves_them_prunable() -> None:
    assert [round_step(u, 16, 32) for u in (2, 4, 6, 8, 12, 16, 24, 31, 32, 960)] == [1, 2, 2, 4, 4, 8, 8, 8, 16, 16]
    for units in range(2, 64):
        step = round_step(units, 16, 32)
        assert step == 16 or 2 * step <= units, "a narrow group keeps at least one aligned width below full"
    assert round_step(6, 8) == 8, "explicit values (min_units 0) round every group, as before"


def test_relaxations_only_for_auto() -> None:
    assert relaxations(Alignment(8)) == [Alignment(8)]
    assert [a.multiple for a in relaxations(resolve("auto"))] == [16, 8, 4, 2, 1]


@pytest.mark.parametrize("name", BUDGET_MODELS)
@pytest.mark.parametrize("metric", ["flops", "params"])
def test_targets_met_with_auto(name: str, metric: str) -> None:
    prepared = prepare(load_model(MODELS / f"{name}.onnx"))
    plan = plan_prune(prepared, PruneOptions(**{f"target_{metric}": 0.5}, round_to="auto"))
    attr = "macs" if metric == "flops" else "params"
    achieved = getattr(count_model(apply_plan(prepared, plan)), attr) / getattr(model_stats(prepared), attr)
    assert 0.48 <= achieved <= 0.52
    used = plan.settings["alignment"]
    assert plan.settings["round_to"] == "auto" and used["multiple"] in (16, 8, 4, 2, 1)
    for group in plan.groups:
        if group.kept is not None and not group.frozen:
            step = round_step(group.channels, used["multiple"], used["min_units"])
            assert len(group.kept) % step == 0 or len(group.kept) == group.channels


def test_auto_in_ratio_mode_aligns_without_undoing_the_cut() -> None:
    """Ratio mode: rounding up gives back at most half of each group's requested cut, wide groups land on
    multiples of 16, and the rewrite matches the masked reference."""
    for name in ("mobilenetv2", "mnist_cnn", "resnet_bottleneck"):
        prepared = prepare(load_model(MODELS / f"{name}.onnx"))
        plan = plan_prune(prepared, PruneOptions(ratio=0.3, round_to="auto"))
        assert plan.settings["alignment"]["multiple"] == 16
        pruned = 0
        for group in plan.groups:
            if group.kept is None or group.frozen:
                continue
            asked = group.channels - int(0.3 * group.channels + 1e-9)
            kept = len(group.kept)
            assert asked <= kept and kept - asked <= (group.channels - asked) / 2
            if group.channels >= 32 and asked % 16 == 0:
                assert kept == asked
            pruned += kept < group.channels
        assert pruned >= 1, f"{name}: alignment must not cancel the whole --ratio"
        assert_matches_oracle(prepared, plan, apply_plan(prepared, plan))
    assert _rounded_keeping_the_cut(23, 32, 16, 32) == 24 and _rounded_keeping_the_cut(45, 64, 16, 32) == 48
    assert _rounded_keeping_the_cut(480, 960, 16, 32) == 480 and _rounded_keeping_the_cut(12, 16, 16, 32) == 12


def test_cli_default_is_auto_and_explicit_values_keep_their_meaning(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out.onnx"
    result = cli("prune", str(MODELS / "resnet_basic.onnx"), "-o", str(out), "--target-flops", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)["settings"]
    assert settings["round_to"] == "auto" and settings["alignment"]["source"] == "auto (CPUExecutionProvider)"
    assert settings["alignment"]["evidence"].startswith("measured: ")
    result = cli("prune", str(MODELS / "resnet_basic.onnx"), "-o", str(out), "--ratio", "0.5", "--round-to", "1",
                 "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["settings"]["round_to"] == 1 and "alignment" not in report["settings"]
    assert all(g["kept"] == g["channels"] - int(0.5 * g["channels"]) for g in report["groups"])
    for bad in ("0", "x"):
        result = cli("prune", str(MODELS / "resnet_basic.onnx"), "-o", str(out), "--round-to", bad)
        assert result.returncode == 2 and "positive integer or 'auto'" in result.stderr


def test_recipe_checks_round_to_before_running(tmp_path: pathlib.Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'version = 1\nmodel = "{MODELS / "resnet_basic.onnx"}"\n'
                      '[[steps]]\ntype = "prune"\noutput = "p.onnx"\nratio = 0.5\nround_to = "eight"\n')
    result = cli("run", str(recipe))
    assert result.returncode == 2 and "positive integer or 'auto'" in result.stderr
    assert not (tmp_path / "p.onnx").exists()


def test_recipe_auto_follows_the_latency_provider_before_running(tmp_path: pathlib.Path) -> None:
    """A recipe's prune step resolves ``auto`` against its ``latency_provider`` in the check before any step."""
    import onnxruntime as ort

    other = next((p for p in ort.get_available_providers() if p not in TABLE), None)
    if other is None:
        pytest.skip("every available provider has an alignment row")
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'version = 1\nmodel = "{MODELS / "mnist_cnn.onnx"}"\n[[steps]]\ntype = "prune"\n'
                      f'output = "p.onnx"\ntarget_latency = 0.5\nlatency_provider = "{other}"\nround_to = "auto"\n')
    result = cli("run", str(recipe))
    assert result.returncode == 2 and f"no alignment entry for '{other}'" in result.stderr, result.stderr
    assert not (tmp_path / "p.onnx").exists()
