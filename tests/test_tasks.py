"""Benchmarks: the registry, loaders on local files in each hub schema, prompts, GPQA shuffling, judges."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quantscope.errors import QuantscopeError
from quantscope.tasks import get_task, list_tasks
from quantscope.tasks.aime import AIME25Task
from quantscope.tasks.gpqa import GPQADiamondTask
from quantscope.tasks.prompts import CHOICE_INSTRUCTION, MATH_INSTRUCTION

DATA = Path(__file__).parent / "data"
FIXTURES = {
    "aime25": DATA / "aime25.jsonl",
    "math500": DATA / "math500.jsonl",
    "gpqa_diamond": DATA / "gpqa_diamond.jsonl",
    "mmlu_pro": DATA / "mmlu_pro.jsonl",
}


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write `rows` as JSONL and return the path."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_python(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `script` in a fresh interpreter; fail the test with its stderr when it crashes."""
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


# --- registry -------------------------------------------------------------------------------


def test_list_tasks_names_every_benchmark() -> None:
    assert list_tasks() == ["aime25", "gpqa_diamond", "math500", "mmlu_pro", "synthetic"]


def test_every_task_declares_the_protocol_hooks() -> None:
    # The stages read a task's hooks (levels, hub size, trace patterns, answer equality) from its
    # class; each is part of the Task protocol, so a task that lacks one fails here, not later.
    from quantscope.tasks.base import Task
    from quantscope.tasks.registry import task_class

    hooks = [name for name in Task.__annotations__ if name != "name"]
    assert {"hub", "stratify", "answer_patterns", "hesitation_patterns", "same_answer"} <= set(hooks)
    for task in list_tasks():
        missing = [hook for hook in hooks if not hasattr(task_class(task), hook)]
        assert not missing, f"{task} lacks {missing}"


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(QuantscopeError, match=r"unknown task 'aime24'.*aime25, gpqa_diamond, math500"):
        get_task("aime24")


def test_unknown_option_lists_the_accepted_ones() -> None:
    with pytest.raises(QuantscopeError, match=r"no option dataset; it takes: path, seed"):
        get_task("aime25", dataset="x")


def test_registry_imports_nothing_heavy_until_load() -> None:
    script = (
        "import sys\n"
        "from quantscope.tasks import get_task, list_tasks\n"
        "list_tasks(); get_task('math500'); get_task('gpqa_diamond')\n"
        "print(sorted(m for m in ('datasets', 'math_verify', 'sympy', 'torch') if m in sys.modules))\n"
    )
    assert run_python(script, dict(os.environ)).stdout.strip() == "[]"


def test_get_task_builds_with_options() -> None:
    task = get_task("gpqa_diamond", path=FIXTURES["gpqa_diamond"], seed=3)
    assert isinstance(task, GPQADiamondTask)
    assert (task.name, task.seed, task.path) == ("gpqa_diamond", 3, FIXTURES["gpqa_diamond"])
    # The options take effect: the items come from `path`, their options shuffled by seed 3 as the
    # documented rule does it (random.Random(f"gpqa:{seed}:{id}") over the dataset's option order).
    rows = read_jsonl(FIXTURES["gpqa_diamond"])
    samples = task.load()
    assert [s.id for s in samples] == [row["Record ID"] for row in rows]
    fields = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
    for row, sample in zip(rows, samples, strict=True):
        order = list(range(4))
        random.Random(f"gpqa:3:{row['Record ID']}").shuffle(order)
        assert list(sample.choices) == [row[fields[i]].strip() for i in order]
    seed0 = get_task("gpqa_diamond", path=FIXTURES["gpqa_diamond"]).load()
    assert [s.choices for s in samples] != [s.choices for s in seed0]


# --- loaders on the fixtures ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_loader_keeps_file_order_and_count(name: str) -> None:
    rows = read_jsonl(FIXTURES[name])
    samples = get_task(name, path=FIXTURES[name]).load()
    assert len(samples) == len(rows)
    id_field = {
        "aime25": "id",
        "math500": "unique_id",
        "gpqa_diamond": "Record ID",
        "mmlu_pro": "question_id",
    }
    assert [sample.id for sample in samples] == [str(row[id_field[name]]) for row in rows]
    assert len({sample.id for sample in samples}) == len(samples)


@pytest.mark.parametrize("name", sorted(set(FIXTURES) - {"math500"}))
def test_limit_takes_the_first_items(name: str) -> None:
    task = get_task(name, path=FIXTURES[name])
    everything = task.load()
    assert task.load(limit=2) == everything[:2]
    assert task.load(limit=0) == []
    assert task.load(limit=1000) == everything


def test_limit_on_a_benchmark_with_levels_takes_every_level_in_turn() -> None:
    """Issue 11: `--limit` on a benchmark with difficulty levels must not test only its first level."""
    task = get_task("math500", path=FIXTURES["math500"])
    everything = task.load()
    levels = [s.metadata["level"] for s in everything]
    first_of_each = [next(s for s in everything if s.metadata["level"] == lv) for lv in dict.fromkeys(levels)]
    assert task.load(limit=len(first_of_each)) == first_of_each
    assert task.load(limit=0) == []
    # The fixture's levels in file order are 1, 1, 3, 2, 2, 2 (ids 9001..9006): round robin over the
    # levels in order of first appearance (1, 3, 2), each level in file order, pinned by hand.
    assert levels == [1, 1, 3, 2, 2, 2]
    round_robin = ["9001", "9003", "9004", "9002", "9005", "9006"]
    assert [s.id.split("/")[-1].removesuffix(".json") for s in task.load(limit=1000)] == round_robin
    assert [s.id for s in task.load(limit=4)] == [s.id for s in task.load(limit=1000)][:4]
    synthetic = get_task("synthetic", per_level=5).load(limit=12)
    assert [s.metadata["level"] for s in synthetic] == [1, 2, 3, 4, 5, 6] * 2


def test_negative_limit_is_an_error() -> None:
    with pytest.raises(QuantscopeError, match="limit must be 0 or more"):
        get_task("aime25", path=FIXTURES["aime25"]).load(limit=-1)


def test_aime_samples() -> None:
    samples = AIME25Task(path=FIXTURES["aime25"]).load()
    rows = read_jsonl(FIXTURES["aime25"])
    assert [s.target for s in samples] == [str(int(row["answer"])) for row in rows]  # "044" -> "44"
    first = samples[0]
    assert first.prompt.startswith(rows[0]["problem"])
    assert first.prompt.endswith(MATH_INSTRUCTION)
    assert first.choices == ()
    assert first.metadata["source"] == str(FIXTURES["aime25"])


def test_math500_samples_keep_latex_targets() -> None:
    samples = get_task("math500", path=FIXTURES["math500"]).load()
    assert [s.target for s in samples][:4] == [
        "\\frac{1}{2}",
        "\\sqrt{2}",
        "[-2,7]",
        "\\left( 3, \\frac{\\pi}{2} \\right)",
    ]
    assert samples[0].metadata["subject"] == "Prealgebra" and samples[0].metadata["level"] == 1
    assert all(s.prompt.endswith(MATH_INSTRUCTION) for s in samples)


def test_mmlu_pro_samples_letter_every_option() -> None:
    samples = get_task("mmlu_pro", path=FIXTURES["mmlu_pro"]).load()
    rows = read_jsonl(FIXTURES["mmlu_pro"])
    assert [s.target for s in samples] == [row["answer"] for row in rows]
    ten = samples[0]
    assert len(ten.choices) == 10
    assert "\nA. Volt\n" in ten.prompt and "\nJ. Joule\n" in ten.prompt
    assert ten.prompt.endswith(CHOICE_INSTRUCTION)
    eight = samples[3]  # MMLU-Pro items with fewer options get fewer letters
    assert len(eight.choices) == 8 and "\nH. Chloroplast stroma\n" in eight.prompt
    assert eight.choices[ord(eight.target) - ord("A")] == "Mitochondrion"


def test_parquet_file_loads_like_jsonl(tmp_path: Path) -> None:
    parquet = tmp_path / "mmlu_pro.parquet"
    pq.write_table(pa.Table.from_pylist(read_jsonl(FIXTURES["mmlu_pro"])), parquet)
    from_parquet = get_task("mmlu_pro", path=parquet).load()
    from_jsonl = get_task("mmlu_pro", path=FIXTURES["mmlu_pro"]).load()
    assert [(s.id, s.prompt, s.target, s.choices) for s in from_parquet] == [
        (s.id, s.prompt, s.target, s.choices) for s in from_jsonl
    ]


def test_rows_without_ids_use_their_position(tmp_path: Path) -> None:
    rows = [{k: v for k, v in row.items() if k != "id"} for row in read_jsonl(FIXTURES["aime25"])]
    samples = get_task("aime25", path=write_jsonl(tmp_path / "aime.jsonl", rows)).load()
    assert [s.id for s in samples] == [str(i) for i in range(len(rows))]


# --- schema and file errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("aime25", "answer"),
        ("math500", "problem"),
        ("gpqa_diamond", "Incorrect Answer 2"),
        ("mmlu_pro", "options"),
    ],
)
def test_missing_field_names_the_file_and_field(tmp_path: Path, name: str, field: str) -> None:
    rows = [{k: v for k, v in row.items() if k != field} for row in read_jsonl(FIXTURES[name])]
    path = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    with pytest.raises(QuantscopeError, match="missing field") as error:
        get_task(name, path=path).load()
    assert str(path) in str(error.value) and repr(field) in str(error.value)


def test_empty_value_names_the_row_and_field(tmp_path: Path) -> None:
    rows = read_jsonl(FIXTURES["math500"])
    rows[2]["answer"] = " "
    path = write_jsonl(tmp_path / "math500.jsonl", rows)
    with pytest.raises(QuantscopeError, match=r"row 2 has an empty 'answer'") as error:
        get_task("math500", path=path).load()
    assert str(path) in str(error.value)


def test_non_integer_aime_answer_is_an_error(tmp_path: Path) -> None:
    rows = read_jsonl(FIXTURES["aime25"])
    rows[1]["answer"] = "\\frac{1}{2}"
    with pytest.raises(QuantscopeError, match=r"row 1 has answer .*AIME answers are integers"):
        get_task("aime25", path=write_jsonl(tmp_path / "aime.jsonl", rows)).load()


def test_mmlu_pro_answer_outside_its_options_is_an_error(tmp_path: Path) -> None:
    rows = read_jsonl(FIXTURES["mmlu_pro"])
    rows[3]["answer"] = "J"  # row 3 has 8 options, A-H
    with pytest.raises(QuantscopeError, match=r"row 3 has answer 'J', not one of the letters ABCDEFGH"):
        get_task("mmlu_pro", path=write_jsonl(tmp_path / "mmlu.jsonl", rows)).load()


def test_missing_file_and_wrong_type_are_errors(tmp_path: Path) -> None:
    with pytest.raises(QuantscopeError, match="no such file"):
        get_task("aime25", path=tmp_path / "absent.jsonl").load()
    csv = tmp_path / "aime.csv"
    csv.write_text("problem,answer\n")
    with pytest.raises(QuantscopeError, match=r"unsupported file type '\.csv'"):
        get_task("aime25", path=csv).load()


def test_malformed_jsonl_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "oops", "answer": \n')
    with pytest.raises(QuantscopeError, match="could not read it as json") as error:
        get_task("aime25", path=path).load()
    assert str(path) in str(error.value)


def test_offline_hub_id_says_to_pass_path(tmp_path: Path) -> None:
    # A fresh process, because huggingface_hub reads HF_HUB_OFFLINE at import; an empty HF_HOME
    # makes sure no cached copy answers instead.
    script = (
        "from quantscope.tasks import get_task\n"
        "from quantscope.errors import QuantscopeError\n"
        "try:\n"
        "    get_task('gpqa_diamond').load(limit=1)\n"
        "except QuantscopeError as error:\n"
        "    print(error)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    message = run_python(script, env).stdout
    assert "could not load Idavidrein/gpqa (config 'gpqa_diamond'), split 'train'" in message
    assert "pass path=" in message and "Correct Answer" in message
    assert "gated" in message


# --- GPQA shuffling -------------------------------------------------------------------------


def test_gpqa_shuffle_is_deterministic_and_tracks_the_correct_answer() -> None:
    rows = read_jsonl(FIXTURES["gpqa_diamond"])
    samples = GPQADiamondTask(path=FIXTURES["gpqa_diamond"]).load()
    for row, sample in zip(rows, samples, strict=True):
        assert sorted(sample.choices) == sorted(
            row[k].strip()
            for k in ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
        )
        assert sample.choices["ABCD".index(sample.target)] == row["Correct Answer"].strip()
        assert f"\n{sample.target}. {row['Correct Answer'].strip()}\n" in sample.prompt
    # Pinned: the order must not change between runs, machines or Python versions.
    assert [s.target for s in samples] == ["A", "A", "D", "B", "D"]
    assert samples[2].choices == ("3/4", "1/4", "9/64", "27/64")


def test_gpqa_shuffle_depends_on_seed_and_id_not_on_limit() -> None:
    seed0 = GPQADiamondTask(path=FIXTURES["gpqa_diamond"], seed=0).load()
    assert GPQADiamondTask(path=FIXTURES["gpqa_diamond"], seed=0).load(limit=3) == seed0[:3]
    seed1 = GPQADiamondTask(path=FIXTURES["gpqa_diamond"], seed=1).load()
    assert [s.choices for s in seed0] != [s.choices for s in seed1]
    # Across a whole set, the correct answer is not always in the same slot.
    assert len({s.target for s in seed0}) > 1


def test_gpqa_shuffle_is_the_same_in_a_fresh_process() -> None:
    path = str(FIXTURES["gpqa_diamond"])
    script = (
        "from quantscope.tasks.gpqa import GPQADiamondTask\n"
        f"print([s.choices for s in GPQADiamondTask(path={path!r}, seed=7).load()])\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # str hashing must not leak into the order
    here = [s.choices for s in GPQADiamondTask(path=path, seed=7).load()]
    assert run_python(script, env).stdout.strip() == str(here)


# --- judges on loaded samples ---------------------------------------------------------------


def test_aime_judge() -> None:
    task = get_task("aime25", path=FIXTURES["aime25"])
    samples = task.load()
    assert task.judge(samples[5], "Counting gives 144 - 100, so \\boxed{44}.").correct  # gold "044"
    assert task.judge(samples[0], "\\boxed{040}").correct
    assert not task.judge(samples[0], "\\boxed{41}").correct
    assert task.judge(samples[0], "I ran out of time.").extracted is None


def test_math500_judge() -> None:
    task = get_task("math500", path=FIXTURES["math500"])
    half, root, interval, polar, roots, _ = task.load()
    assert task.judge(half, "So the answer is $\\boxed{0.5}$.").correct
    assert task.judge(root, "\\boxed{2^{1/2}}").correct
    assert task.judge(interval, "\\boxed{[-2, 7]}").correct
    assert not task.judge(interval, "\\boxed{(-2, 7)}").correct
    assert task.judge(polar, "\\boxed{(3, \\pi/2)}").correct
    assert task.judge(roots, "\\boxed{3, 2}").correct
    assert not task.judge(half, "\\boxed{0.6}").correct


@pytest.mark.parametrize("name", ["gpqa_diamond", "mmlu_pro"])
def test_choice_judges(name: str) -> None:
    task = get_task(name, path=FIXTURES[name])
    for sample in task.load():
        wrong = next(letter for letter in "ABCD" if letter != sample.target)
        assert task.judge(sample, f'```json\n{{"answer": "{sample.target}"}}\n```').correct
        assert task.judge(sample, f"The answer is \\boxed{{{sample.target}}}").correct
        assert task.judge(sample, f"Answer: ({sample.target})").correct
        assert not task.judge(sample, f"Answer: ({wrong})").correct
        assert not task.judge(sample, f"<think>Answer: {sample.target}</think>").correct


def test_local_task_files_load_from_many_threads_at_once() -> None:
    """A sweep on Ray loads each eval job's tasks in its own driver thread; datasets' tqdm bars
    race without the loader's lock ("type object 'tqdm' has no attribute '_lock'")."""
    import threading

    from quantscope.tasks import get_task

    path = Path(__file__).resolve().parent / "data" / "math500.jsonl"
    errors: list[Exception] = []

    def load() -> None:
        try:
            for _ in range(5):
                get_task("math500", path=str(path)).load()
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
