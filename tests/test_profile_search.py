"""The knapsack behind the recipe search: optimal against brute force, never over budget."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from quantscope.checkpoint.load import load_anatomy
from quantscope.errors import QuantscopeError
from quantscope.plan.recipe import Recipe, assign_schemes, load_recipe, predict_footprint, save_recipe
from quantscope.sensitivity.profiler import Profiler
from quantscope.sensitivity.records import SensitivityProfile, load_profile
from quantscope.sensitivity.search import search_recipe, solve_knapsack, unit_damage


def _brute_force(options: list[list[tuple[int, float]]], capacity: int) -> float:
    best = float("inf")
    for picks in itertools.product(*(range(len(item)) for item in options)):
        cost = sum(options[i][p][0] for i, p in enumerate(picks))
        if cost <= capacity:
            best = min(best, sum(options[i][p][1] for i, p in enumerate(picks)))
    return best


def test_knapsack_matches_brute_force_and_respects_capacity() -> None:
    rng = random.Random(0)
    for _ in range(60):
        items = []
        for _ in range(rng.randint(1, 6)):
            full = rng.randint(100, 5000)
            items.append([(full, 0.0), (full // 2, rng.random()), (full // 4, rng.random() * 3)])
        low = sum(min(c for c, _ in item) for item in items)
        high = sum(max(c for c, _ in item) for item in items)
        capacity = rng.randint(low, high)
        chosen = solve_knapsack(items, capacity)
        cost = sum(items[i][c][0] for i, c in enumerate(chosen))
        damage = sum(items[i][c][1] for i, c in enumerate(chosen))
        assert cost <= capacity
        assert damage == pytest.approx(_brute_force(items, capacity), abs=1e-12)


def test_knapsack_with_coarse_resolution_still_fits() -> None:
    # 30k items' worth of bytes at a capacity far above the 20k-bin resolution.
    items = [[(10**9 + k, 0.0), (3 * 10**8 + k, 1.0 + k / 100)] for k in range(40)]
    capacity = 40 * 3 * 10**8 + 5 * 10**9
    chosen = solve_knapsack(items, capacity)
    assert sum(items[i][c][0] for i, c in enumerate(chosen)) <= capacity
    kept = [i for i, c in enumerate(chosen) if c == 0]
    assert len(kept) == 7  # 5 GB of headroom buys 7 upgrades of 0.7 GB
    assert kept == list(range(33, 40))  # the most damaging units are the ones kept


def test_knapsack_prefers_free_savings_and_rejects_impossible_budgets() -> None:
    items = [[(1000, 0.0), (250, 0.0)], [(1000, 0.0), (250, 0.5)]]
    assert solve_knapsack(items, 10_000) == [1, 0]  # no damage -> take the bytes
    with pytest.raises(QuantscopeError, match="smallest needs 500 bytes"):
        solve_knapsack(items, 499)


# ---------------------------------------------------------------- search on a real profile


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    words = ["carry", "the", "digit", "then", "add", "the", "next", "column", "and", "check", "the", "sum"]
    path = tmp_path_factory.mktemp("calib") / "calib.jsonl"
    lines = [json.dumps({"text": " ".join(rng.choice(words) for _ in range(60))}) for _ in range(20)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def profiler(tiny_qwen35_moe_dir: Path, calibration: Path) -> Profiler:
    return Profiler(tiny_qwen35_moe_dir, calibration, n_sequences=2, seq_len=64, batch_size=2)


@pytest.fixture(scope="module")
def group_profile(profiler: Profiler) -> SensitivityProfile:
    return profiler.profile("nvfp4", ("fp8",))


@pytest.fixture(scope="module")
def layer_profile(profiler: Profiler) -> SensitivityProfile:
    return profiler.profile("w4a16", per_layer=True)


def test_profile_is_deterministic_and_covers_the_groups(profiler: Profiler, group_profile) -> None:
    again = profiler.profile("nvfp4", ("fp8",))
    assert replace(again, seconds=0) == replace(group_profile, seconds=0)
    names = [unit.name for unit in group_profile.units]
    assert names == ["lm_head", "full_attn", "linear_attn", "routed_experts", "shared_expert"]
    for unit in group_profile.units:
        assert unit.damage_for("nvfp4").kl > unit.damage_for("fp8").kl > 0
        assert unit.bytes_kept > unit.bytes_by_scheme["fp8"] > unit.bytes_by_scheme["nvfp4"]
        assert len(unit.damage_for("nvfp4").kl_by_bucket) == len(group_profile.buckets) - 1
    # the router and shared-expert gate are never quantized, so they are no unit
    assert not any(
        "mlp.gate." in t or "shared_expert_gate" in t for u in group_profile.units for t in u.tensors
    )


def test_per_layer_units_keep_fused_sets_whole(layer_profile, tiny_qwen35_moe_dir: Path) -> None:
    anatomy = load_anatomy(tiny_qwen35_moe_dir)
    assert "linear_attn:0" in [u.name for u in layer_profile.units]
    unit_of = {t: u.name for u in layer_profile.units for t in u.tensors}
    for fused in anatomy.fused_sets:
        owners = {unit_of.get(member + ".weight") for member in fused.members}
        assert len(owners) == 1, fused.name


def _preset_choices(profile: SensitivityProfile, keep: tuple[str, ...]) -> float:
    return sum(unit_damage(u, profile.scheme) for u in profile.units if u.group not in keep)


@pytest.mark.parametrize("fixture", ["group_profile", "layer_profile"])
def test_searched_recipes_fit_every_budget_and_never_split_fused_sets(
    request: pytest.FixtureRequest, fixture: str, tiny_qwen35_moe_dir: Path, tmp_path: Path
) -> None:
    profile = request.getfixturevalue(fixture)
    anatomy = load_anatomy(tiny_qwen35_moe_dir)
    smallest = predict_footprint(anatomy, Recipe("all", profile.scheme, quantize_lm_head=True)).total_bytes
    largest = predict_footprint(anatomy, Recipe("none", "bf16")).total_bytes
    previous = float("inf")
    for step in range(6):
        budget = smallest + (largest - smallest) * step // 5
        result = search_recipe(profile, anatomy, budget_bytes=budget)
        path = tmp_path / f"{step}.yaml"
        save_recipe(result.recipe, path)
        reloaded = load_recipe(path)
        assert reloaded == result.recipe
        assigned = assign_schemes(anatomy, reloaded)  # raises on a split fused set
        for fused in anatomy.fused_sets:
            assert len({assigned[m] for m in fused.members}) == 1, fused.name
        footprint = predict_footprint(anatomy, reloaded).total_bytes
        assert footprint == result.total_bytes <= budget
        assert result.predicted_damage <= previous  # more memory never costs accuracy
        previous = result.predicted_damage
    assert previous == 0.0  # the full 16-bit budget keeps everything


def test_search_beats_naive_presets_of_the_same_size(group_profile, tiny_qwen35_moe_dir: Path) -> None:
    anatomy = load_anatomy(tiny_qwen35_moe_dir)
    for preset in ("nvfp4", "nvfp4-keep-shared", "nvfp4-keep-linear-attn", "nvfp4-safe"):
        recipe = load_recipe(preset)
        budget = predict_footprint(anatomy, recipe).total_bytes
        result = search_recipe(group_profile, anatomy, budget_bytes=budget)
        naive = _preset_choices(group_profile, (*recipe.keep_groups, "lm_head"))
        assert result.total_bytes <= budget
        assert result.predicted_damage <= naive + 1e-15, preset


def test_search_measured_damage_is_close_to_its_prediction(profiler: Profiler, group_profile) -> None:
    result = search_recipe(group_profile, profiler.anatomy, avg_bits=10.0)
    measured = profiler.measure_recipe(result.recipe)
    assert measured.kl > 0
    assert measured.kl == pytest.approx(result.predicted_damage, rel=0.5)


def test_search_objectives_and_errors(group_profile, tiny_qwen35_moe_dir: Path) -> None:
    anatomy = load_anatomy(tiny_qwen35_moe_dir)
    late = search_recipe(group_profile, anatomy, avg_bits=8.0, objective="late")
    assert late.objective == "late"
    assert late.predicted_damage == pytest.approx(
        sum(unit_damage(group_profile.unit(c.unit), c.scheme, "late") for c in late.choices)
    )
    with pytest.raises(QuantscopeError, match="below the smallest recipe"):
        search_recipe(group_profile, anatomy, budget_bytes=1000)
    with pytest.raises(QuantscopeError, match="exactly one of"):
        search_recipe(group_profile, anatomy)
    with pytest.raises(QuantscopeError, match="--objective"):
        search_recipe(group_profile, anatomy, avg_bits=8.0, objective="median")
    with pytest.raises(QuantscopeError, match="not in the profile"):
        search_recipe(group_profile, anatomy, avg_bits=8.0, schemes=("mxfp4",))


def test_profile_command_writes_profile_and_recipe(
    tiny_qwen35_moe_dir: Path, calibration: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from quantscope.cli import app

    out, recipe_out = tmp_path / "profile.json", tmp_path / "recipe.yaml"
    args = [
        "profile",
        str(tiny_qwen35_moe_dir),
        "--data",
        str(calibration),
        "--samples",
        "2",
        "--seq-len",
        "64",
    ]
    args += ["--budget", "2.5MB", "--out", str(out), "--recipe-out", str(recipe_out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "measured KL of the searched recipe" in result.output
    recipe = load_recipe(recipe_out)
    assert predict_footprint(load_anatomy(tiny_qwen35_moe_dir), recipe).total_bytes <= 2_500_000
    assert load_profile(out).scheme == "nvfp4"
    again = CliRunner().invoke(app, ["profile", str(tiny_qwen35_moe_dir), "--from-profile", str(out)])
    assert again.exit_code == 0, again.output
    missing = CliRunner().invoke(
        app, ["profile", str(tiny_qwen35_moe_dir), "--data", str(tmp_path / "nope.txt")]
    )
    assert missing.exit_code == 2
    # rich wraps long paths anywhere (an xdist worker's tmp path is longer): compare unwrapped
    assert f"{tmp_path / 'nope.txt'}: no such file" in "".join(missing.output.split("\n"))
    assert "Loading weights" not in missing.output  # the data file is checked before the model loads


def test_modules_pattern_matches_exactly_the_chosen_modules(tiny_qwen35_moe_dir: Path) -> None:
    import re

    from quantscope.sensitivity.search import modules_pattern

    anatomy = load_anatomy(tiny_qwen35_moe_dir)
    modules = {t.module for t in anatomy.tensors if t.is_linear_weight}
    cases = [
        {m for m in modules if ".linear_attn." in m and ".layers.2." in m},
        {m for m in modules if ".experts." in m and (".layers.0." in m or ".layers.3." in m)},
        {m for m in modules if ".shared_expert." in m},
        {"lm_head", "model.layers.1.mlp.experts.2.up_proj"},
    ]
    for wanted in cases:
        pattern = modules_pattern(anatomy, sorted(wanted))
        assert {m for m in modules if re.search(pattern, m)} == wanted, pattern
    compact = modules_pattern(anatomy, sorted(cases[2]))
    assert r"\d+" in compact and len(compact) < 150  # every layer: the index collapses


def test_moe_expert_inputs_share_one_scale_per_layer_where_vllm_does(
    profiler: Profiler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a B200 with FlashInfer, NVFP4 experts take one activation scale per MoE layer (the
    largest calibrated |max| over its experts, for gate/up and for down); vLLM's own CUTLASS
    experts (no FlashInfer) keep each expert's down scale as the export stores it."""
    from quantscope.numerics.served import KernelSet
    from quantscope.sensitivity.units import assignment_targets

    recipe = load_recipe("nvfp4")
    targets = assignment_targets(profiler.model, profiler.anatomy, assign_schemes(profiler.anatomy, recipe))

    def downs(points: list) -> dict[str, float]:
        return {
            p.module: p.amax for p in points if ".mlp.experts." in p.module and p.module.endswith("down_proj")
        }

    shared = downs(profiler.activations(targets))
    calibrated = {m: profiler.input_amax[m] for m in shared}
    assert shared and len(set(calibrated.values())) > 1  # the experts were calibrated apart
    for module, amax in shared.items():
        prefix = module.split(".experts.")[0]
        assert amax == max(v for m, v in calibrated.items() if m.startswith(prefix + ".experts."))
    monkeypatch.setattr(profiler, "kernels", KernelSet(flashinfer=False))
    assert downs(profiler.activations(targets)) == calibrated


def test_damage_includes_the_activation_rounding_the_target_gpu_applies(
    profiler: Profiler, tiny_qwen35_moe_dir: Path, calibration: Path
) -> None:
    """NVFP4 is W4A4 on Blackwell and weight-only on Hopper; FP8 is W8A8 on both."""
    assert profiler.gpu.name == "B200"  # the default target
    weights_only = Profiler(
        tiny_qwen35_moe_dir, calibration, n_sequences=2, seq_len=64, batch_size=2, gpu=None
    )
    hopper = Profiler(tiny_qwen35_moe_dir, calibration, n_sequences=2, seq_len=64, batch_size=2, gpu="H100")
    recipe = load_recipe("nvfp4")
    blackwell_kl = profiler.measure_recipe(recipe).kl
    assert blackwell_kl > weights_only.measure_recipe(recipe).kl == hopper.measure_recipe(recipe).kl
    fp8 = load_recipe("fp8")
    assert (
        hopper.measure_recipe(fp8).kl == profiler.measure_recipe(fp8).kl > weights_only.measure_recipe(fp8).kl
    )
    assert profiler.input_amax and all(v is None or v > 0 for v in profiler.input_amax.values())
    assert profiler.profile("nvfp4").gpu == "B200" and weights_only.profile("nvfp4").gpu is None
