"""Rich views of `quantscope profile`: the damage tables and the searched recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from quantscope.util import format_size, short_size

if TYPE_CHECKING:
    from quantscope.sensitivity.profiler import ProfileRun
    from quantscope.sensitivity.records import SensitivityProfile
    from quantscope.sensitivity.search import SearchResult


def _kl(value: float) -> str:
    return f"{value:.1e}"


def profile_view(run: ProfileRun) -> Group:
    """What `quantscope profile` found: where the profile went, the damage tables, what was not
    measured, and with a budget the searched recipe (and its measured KL)."""
    profile = run.profile
    parts: list[RenderableType] = []
    if run.profile_path is not None:
        parts.append(Text(f"profile written to {run.profile_path} ({profile.seconds:.1f} s)"))
    parts += profile_tables(profile)
    if profile.unmeasured:
        missing = ", ".join(profile.unmeasured)
        parts.append(Text(f"not measured (absent from the loaded model, kept 16-bit): {missing}"))
    if run.search is not None:
        found = run.search
        parts.append(search_table(found))
        parts.append(
            Text(
                f"recipe written to {run.recipe_path}: {format_size(found.total_bytes)} of a "
                f"{format_size(found.budget_bytes)} budget, predicted damage {found.predicted_damage:.3e} "
                f"({found.objective})"
            )
        )
    if run.measured is not None:
        by_position = ", ".join(
            f"{label} {kl:.2e}"
            for label, kl in zip(profile.bucket_labels(), run.measured.kl_by_bucket, strict=True)
        )
        parts.append(
            Text(f"measured KL of the searched recipe: {run.measured.kl:.3e} (by position: {by_position})")
        )
    return Group(*parts)


def profile_tables(profile: SensitivityProfile) -> tuple[Table, Table]:
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
            cells += [short_size(unit.bytes_saved(option)), _kl(unit.damage_for(option).kl)]
        units.add_row(*cells, f"{unit.damage_for(scheme).top1_agreement:.3f}")
        positions.add_row(unit.name, *_position_cells(unit.damage_for(scheme).kl_by_bucket))
    for damage in profile.uniform:
        cells = [f"all at once ({damage.scheme})"]
        for option in profile.schemes:
            saved = sum(u.bytes_saved(option) for u in profile.units)
            cells += [short_size(saved), _kl(damage.kl)] if option == damage.scheme else ["", ""]
        top1 = f"{damage.top1_agreement:.3f}" if damage.scheme == scheme else ""
        units.add_row(*cells, top1, style="bold")
        if damage.scheme == scheme:
            positions.add_row("all at once", *_position_cells(damage.kl_by_bucket), style="bold")
    return units, positions


def _position_cells(by_bucket: tuple[float, ...]) -> list[str]:
    growth = f"{by_bucket[-1] / by_bucket[0]:.2f}x" if by_bucket[0] > 0 else "-"
    return [_kl(kl) for kl in by_bucket] + [growth]


def search_table(result: SearchResult) -> Table:
    """The searched recipe unit by unit: stored as, bytes, damage."""
    table = Table(title=f"Searched recipe {result.recipe.name}")
    table.add_column("unit")
    table.add_column("stored as")
    table.add_column("bytes", justify="right")
    table.add_column(f"damage ({result.objective})", justify="right")
    for choice in result.choices:
        table.add_row(choice.unit, choice.scheme, short_size(choice.bytes), _kl(choice.damage))
    return table
