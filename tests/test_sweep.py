"""The sweep file, its jobs, and the dry run on the real Qwen3.5 configs (no job runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from quantscope.errors import QuantscopeError
from quantscope.sweep import load_sweep, plan_jobs
from quantscope.sweep.estimate import ANSWER_SHARE, THINKING_SHARE, estimate_sweep
from tests.shared_configs import CONFIGS, shared_config

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "examples" / "qwen3.5-study.yaml"
# the benchmarks' published sizes: AIME25 30, MATH-500 500, GPQA-Diamond 198, MMLU-Pro 12,032
STUDY_ITEMS = 30 + 500 + 198 + 12032


def write_sweep(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_study_expands_to_its_matrix(tmp_path: Path) -> None:
    sweep = load_sweep(STUDY, out=tmp_path)
    jobs = plan_jobs(sweep)
    # 3 models × (fp8, w4a16-safe, nvfp4-safe) quantized; bf16 is each source as it is
    assert len(jobs.quantize) == 9
    assert {q.recipe for q in jobs.quantize} == {"fp8", "w4a16-safe", "nvfp4-safe"}
    # 3 models × 2 settings × (4 recipes + 3 published checkpoints)
    assert len(jobs.evals) == 42
    assert len(jobs.stores()) == 6
    by_id = {e.id: e for e in jobs.evals}
    fp8 = by_id["eval qwen3.5-27b/thinking/fp8"]
    assert fp8.needs == "quantize qwen3.5-27b/fp8"
    assert fp8.spec.model == str(tmp_path.resolve() / "checkpoints" / "qwen3.5-27b" / "fp8")
    assert fp8.store == tmp_path.resolve() / "qwen3.5-27b" / "thinking"
    published = by_id["eval qwen3.5-27b/no-thinking/qwen-gptq-int4"]
    assert published.needs is None and published.spec.model == "Qwen/Qwen3.5-27B-GPTQ-Int4"
    assert [e.spec.baseline for e in jobs.evals].count(True) == 6  # one bf16 baseline per store
    on, off = by_id["eval qwen3.5-9b/thinking/bf16"].spec, by_id["eval qwen3.5-9b/no-thinking/bf16"].spec
    assert (on.thinking, off.thinking) == (True, False)
    assert on.sampling().presence_penalty == 1.5 and on.sampling().temperature == 1.0
    assert off.sampling().top_p == 0.8  # Qwen3.5's instruct-mode sampling
    assert on.k == 4 and on.max_tokens == 32768
    assert [t.name for t in on.tasks] == ["aime25", "math500", "gpqa_diamond", "mmlu_pro"]


def _study_on_configs(tmp_path: Path, gpu: str = "H100") -> Path:
    """The shipped study with each model planned from its real config (offline)."""
    data = yaml.safe_load(STUDY.read_text())
    for model, config in zip(data["models"], ("qwen3.5-9b", "qwen3.5-27b", "qwen3.5-35b-a3b"), strict=True):
        path = shared_config(f"{config}.config.json")
        model["source"] = str(path)
        # the hub is out of reach here: one published checkpoint that cannot be read, locally
        model["published"] = [{"name": "qwen-fp8", "model": str(CONFIGS / "missing" / model["name"])}]
    data["models"] = data["models"][1:]  # the 27B and the 35B-A3B
    data["gpu"] = gpu
    return write_sweep(tmp_path, data)


def test_dry_run_estimates_gpu_hours_from_the_roofline(tmp_path: Path) -> None:
    sweep = load_sweep(_study_on_configs(tmp_path), out=tmp_path / "out")
    estimate = estimate_sweep(sweep, plan_jobs(sweep))
    jobs = {j.job: j for j in estimate.jobs}
    quantize = jobs["quantize qwen3.5-27b/w4a16-safe"]
    assert (quantize.state, quantize.gpus, quantize.gpu_hours) == ("to run", 1, None)
    bf16 = jobs["eval qwen3.5-27b/thinking/bf16"]
    assert bf16.rows_expected == STUDY_ITEMS * 4 and bf16.rows_stored == 0
    assert bf16.tokens_per_sample == THINKING_SHARE * 32768
    assert jobs["eval qwen3.5-27b/no-thinking/bf16"].tokens_per_sample == ANSWER_SHARE * 32768
    for job in (j for j in estimate.jobs if j.gpu_hours is not None):
        # hours are the samples' tokens at the decode rate, times the job's GPUs
        seconds = job.rows_expected * job.tokens_per_sample / job.decode_tokens_per_s
        assert job.gpu_hours == pytest.approx(seconds / 3600 * job.gpus)
    # fewer bytes per step and more sequences at once: each smaller recipe decodes faster
    rates = [
        jobs[f"eval qwen3.5-27b/thinking/{r}"].decode_tokens_per_s for r in ("bf16", "fp8", "w4a16-safe")
    ]
    assert rates[0] < rates[1] < rates[2]
    # the MoE reads only the experts its batch routes to: faster than the dense 27B, though its
    # 70 GB of BF16 weights leave an H100 room for few sequences
    assert jobs["eval qwen3.5-35b-a3b/thinking/bf16"].decode_tokens_per_s > rates[0]
    unread = jobs["eval qwen3.5-27b/thinking/qwen-fp8"]
    assert unread.gpu_hours is None and "missing/qwen3.5-27b" in unread.note and "unreadable" in unread.note
    assert estimate.unestimated == 6 + 4  # quantize jobs, and the published checkpoints' evals
    assert estimate.gpu_hours == pytest.approx(sum(j.gpu_hours or 0 for j in estimate.jobs))


def test_dry_run_says_what_does_not_fit(tmp_path: Path) -> None:
    sweep = load_sweep(_study_on_configs(tmp_path, gpu="RTX-4090"), out=tmp_path / "out")
    jobs = {j.job: j for j in estimate_sweep(sweep, plan_jobs(sweep)).jobs}
    bf16 = jobs["eval qwen3.5-27b/thinking/bf16"]  # 54 GB of weights on a 24 GB card
    assert bf16.gpu_hours is None and "does not fit" in bf16.note and "RTX-4090" in bf16.note


def _minimal(**changes: object) -> dict:
    data = {"name": "s", "models": [{"name": "toy", "source": "toy"}], "tasks": ["synthetic"]}
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"recipe": ["w4a16"]}, "unknown keys ['recipe']"),
        ({"recipes": ["bf16", "w4a16", "w4a16"]}, "recipes: w4a16 appear more than once"),
        ({"baseline": "fp8"}, "baseline 'fp8' is neither a recipe nor a published checkpoint"),
        ({"eval": {"engine": "openai"}}, "a sweep starts its own engines"),
        ({"eval": {"engine_options": {"data_parallel_size": 2}}}, "set `replicas` under eval"),
        ({"recipes": ["bf16", "w5a16"]}, "recipes: w5a16: neither a preset nor a recipe file"),
        ({"models": [{"name": "a b", "source": "toy"}]}, "models.0.name"),
        ({"settings": [{"name": "t", "thinking": "maybe"}]}, "settings.0.thinking"),
    ],
)
def test_a_bad_sweep_file_names_the_file_and_the_field(tmp_path: Path, changes: dict, message: str) -> None:
    path = write_sweep(tmp_path, _minimal(**changes))
    with pytest.raises(QuantscopeError) as caught:
        load_sweep(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_recipe_files_and_task_files_resolve_beside_the_sweep(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text(yaml.safe_dump({"name": "mine", "scheme": "W4A16"}))
    data = _minimal(recipes=["bf16", "recipes/mine.yaml"], tasks=["math500=data/math500.jsonl"])
    jobs = plan_jobs(load_sweep(write_sweep(tmp_path, data), out=tmp_path / "out"))
    (job,) = jobs.quantize
    assert job.recipe == str(tmp_path / "recipes" / "mine.yaml") and job.id == "quantize toy/mine"
    assert jobs.evals[1].spec.tasks[0].path == str(tmp_path / "data" / "math500.jsonl")
    assert jobs.evals[1].spec.recipe == "mine" and jobs.evals[0].spec.recipe is None
