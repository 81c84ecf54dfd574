"""`quantscope profile`: sensitivity per group of layers, and the least-damage recipe for a budget."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from quantscope.cli.app import app, console, friendly_errors
from quantscope.errors import QuantscopeError


def _size(n: int) -> str:
    from quantscope.recipe import format_size

    return format_size(n)


def _short_size(n: int) -> str:
    """A size in at most 6 characters for table cells: 1.13G, 47.1M, 512k, 300B (decimal units)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.3g}{unit}"
    return f"{n}B"


def _edges(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise QuantscopeError(
            f"--buckets {text!r}: give comma-separated token positions, e.g. 0,512,2048"
        ) from None


def _default_out(model: str, scheme: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model.rstrip("/").rsplit("/", 1)[-1]) or "model"
    return Path(f"quantscope-profile-{slug}-{scheme}.json")


def _kl(value: float) -> str:
    return f"{value:.1e}"


def _profile_tables(profile) -> tuple[Table, Table]:
    """(cost and damage per unit and scheme, damage by position for the main scheme)."""
    scheme = profile.scheme
    units = Table(title=f"Damage per unit: KL(original || quantized) in nats/token ({profile.data})")
    units.add_column("unit", no_wrap=True)
    for option in profile.schemes:
        units.add_column(f"{option} saves", justify="right")
        units.add_column(f"KL {option}", justify="right")
    units.add_column(f"top-1 {scheme}", justify="right")
    positions = Table(title=f"KL {scheme} by token position ({profile.n_sequences}x{profile.seq_len} tokens)")
    positions.add_column("unit", no_wrap=True)
    for label in profile.bucket_labels():
        positions.add_column(label, justify="right")
    positions.add_column("last/first", justify="right")
    for unit in profile.units:
        cells = [unit.name]
        for option in profile.schemes:
            cells += [_short_size(unit.bytes_saved(option)), _kl(unit.damage_for(option).kl)]
        units.add_row(*cells, f"{unit.damage_for(scheme).top1_agreement:.3f}")
        positions.add_row(unit.name, *_position_cells(unit.damage_for(scheme).kl_by_bucket))
    for damage in profile.uniform:
        cells = [f"all at once ({damage.scheme})"]
        for option in profile.schemes:
            saved = sum(u.bytes_saved(option) for u in profile.units)
            cells += [_short_size(saved), _kl(damage.kl)] if option == damage.scheme else ["", ""]
        top1 = f"{damage.top1_agreement:.3f}" if damage.scheme == scheme else ""
        units.add_row(*cells, top1, style="bold")
        if damage.scheme == scheme:
            positions.add_row("all at once", *_position_cells(damage.kl_by_bucket), style="bold")
    return units, positions


def _position_cells(by_bucket: tuple[float, ...]) -> list[str]:
    ratio = f"{by_bucket[-1] / by_bucket[0]:.2f}x" if by_bucket[0] > 0 else "-"
    return [_kl(kl) for kl in by_bucket] + [ratio]


def _search_table(result) -> Table:
    table = Table(title=f"Searched recipe {result.recipe.name}")
    table.add_column("unit")
    table.add_column("stored as")
    table.add_column("bytes", justify="right")
    table.add_column(f"damage ({result.objective})", justify="right")
    for choice in result.choices:
        table.add_row(choice.unit, choice.scheme, _short_size(choice.bytes), _kl(choice.damage))
    return table


@app.command()
@friendly_errors
def profile(
    model: Annotated[str, typer.Argument(help="Checkpoint directory or Hugging Face model id.")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Calibration text: .txt, or .jsonl with 'text' or 'messages'."),
    ] = None,
    scheme: Annotated[str, typer.Option(help="Format to profile: nvfp4, w4a16, mxfp4, fp8…")] = "nvfp4",
    also: Annotated[list[str] | None, typer.Option(help="Extra formats measured per unit, e.g. fp8.")] = None,
    per_layer: Annotated[bool, typer.Option(help="One unit per group and decoder layer.")] = False,
    samples: Annotated[int, typer.Option(help="Calibration windows (sequences).")] = 8,
    seq_len: Annotated[int, typer.Option(help="Tokens per calibration window.")] = 512,
    buckets: Annotated[
        str | None, typer.Option(help="Position-bucket edges, e.g. 0,512,2048,8192 (default: scaled).")
    ] = None,
    budget: Annotated[
        str | None, typer.Option(help="Search a recipe of at most this size, e.g. 20GB.")
    ] = None,
    avg_bits: Annotated[float | None, typer.Option(help="Search for this many bits per parameter.")] = None,
    objective: Annotated[
        str, typer.Option(help="Damage to minimise: mean, late (last bucket), worst.")
    ] = "mean",
    out: Annotated[
        Path | None, typer.Option(help="Profile JSON (default ./quantscope-profile-….json).")
    ] = None,
    recipe_out: Annotated[
        Path | None, typer.Option(help="Searched recipe YAML (default ./<name>.yaml).")
    ] = None,
    from_profile: Annotated[
        Path | None, typer.Option(help="Reuse a saved profile JSON; measure nothing.")
    ] = None,
    validate: Annotated[bool, typer.Option(help="Measure the searched recipe's KL for real.")] = True,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1…, or auto (shard over all GPUs).")] = "cpu",
    dtype: Annotated[
        str | None, typer.Option(help="float32 (CPU default) or bfloat16 (GPU default).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Calibration windows per forward pass.")] = 4,
) -> None:
    """Measure how much each group of layers damages the model when quantized alone (KL of
    next-token distributions vs the original, overall and by token position), then optionally
    search the least-damage recipe that fits --budget and write it as a YAML recipe."""
    from rich.progress import Progress

    from quantscope.anatomy import load_anatomy
    from quantscope.profile.search import search_recipe
    from quantscope.profile.sensitivity import Profiler, load_profile, save_profile
    from quantscope.recipe import parse_size, save_recipe

    profiler = None
    if from_profile is not None:
        result_profile = load_profile(from_profile)
        anatomy = load_anatomy(model)
    else:
        if data is None:
            raise QuantscopeError("give --data FILE (calibration text) or --from-profile PROFILE.json")
        with console.status("loading the model and running the reference pass…"):
            profiler = Profiler(
                model,
                data,
                n_sequences=samples,
                seq_len=seq_len,
                bucket_edges=_edges(buckets),
                device=device,
                dtype=dtype,
                batch_size=batch_size,
            )
        anatomy = profiler.anatomy
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("profiling", total=None)

            def advance(description: str, done: int, total: int) -> None:
                bar.update(task, description=description, completed=done, total=total)

            result_profile = profiler.profile(scheme, also or (), per_layer, advance)
        path = save_profile(result_profile, out or _default_out(model, result_profile.scheme))
        console.print(f"profile written to {path} ({result_profile.seconds:.1f} s)")
    for table in _profile_tables(result_profile):
        console.print(table)
    if result_profile.unmeasured:
        missing = ", ".join(result_profile.unmeasured)
        console.print(f"not measured (absent from the loaded model, kept 16-bit): {missing}")
    if budget is None and avg_bits is None:
        return
    result = search_recipe(
        result_profile,
        anatomy,
        budget_bytes=parse_size(budget) if budget else None,
        avg_bits=avg_bits,
        objective=objective,
    )
    console.print(_search_table(result))
    target = recipe_out or Path(f"{result.recipe.name}.yaml")
    save_recipe(result.recipe, target)
    console.print(
        f"recipe written to {target}: {_size(result.total_bytes)} of a {_size(result.budget_bytes)} budget, "
        f"predicted damage {result.predicted_damage:.3e} ({objective})"
    )
    if validate and profiler is not None:
        measured = profiler.measure_recipe(result.recipe)
        buckets_text = ", ".join(
            f"{label} {kl:.2e}"
            for label, kl in zip(result_profile.bucket_labels(), measured.kl_by_bucket, strict=True)
        )
        console.print(f"measured KL of the searched recipe: {measured.kl:.3e} (by position: {buckets_text})")
