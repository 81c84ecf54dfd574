"""The terminal rendering of `quantscope doctor`: the devices, the packages, then every finding
coloured by level with its fix underneath."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from quantscope.doctor import Device, Diagnosis, Finding, Package

LEVEL_STYLE = {"ok": "green", "info": "cyan", "warn": "yellow", "error": "bold red"}
"""The colour of each finding level; the label is the level itself."""


def doctor_view(diagnosis: Diagnosis) -> Group:
    """Devices (or a line saying there are none), packages, findings and a one-line tally."""
    devices = devices_table(diagnosis.devices) if diagnosis.devices else Text("no CUDA device", style="dim")
    packages = packages_table(diagnosis.packages)
    return Group(
        devices, Text(), packages, Text(), findings_grid(diagnosis.findings), Text(), tally(diagnosis)
    )


def devices_table(devices: tuple[Device, ...]) -> Table:
    """Per CUDA device: compute capability, the memory CUDA reports (GiB, what vLLM sizes its pool
    against), the formats that run with activations quantized and those that fall back to
    weight-only kernels."""
    table = Table(title="CUDA devices", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("device")
    table.add_column("sm", justify="right")
    table.add_column("memory", justify="right")
    table.add_column("activations quantized")
    table.add_column("weight-only fallback")
    for index, device in enumerate(devices):
        table.add_row(
            str(index),
            device.name,
            str(device.capability),
            f"{device.memory_bytes / (1 << 30):.1f} GiB",
            Text(", ".join(device.native) or "none", style="green" if device.native else "dim"),
            Text(", ".join(device.fallback) or "none", style="yellow" if device.fallback else "dim"),
        )
    return table


def packages_table(packages: tuple[Package, ...]) -> Table:
    """Each package doctor checks, its installed version (or "not installed": red when quantscope
    needs it, dim when optional)."""
    table = Table(title="packages", title_justify="left")
    table.add_column("package")
    table.add_column("version")
    table.add_column("needed")
    for package in packages:
        if package.version is not None:
            version = Text(package.version)
        else:
            version = Text("not installed", style="bold red" if package.required else "dim")
        table.add_row(
            package.name, version, "required" if package.required else Text("optional", style="dim")
        )
    return table


def findings_grid(findings: tuple[Finding, ...]) -> Table:
    """One row per finding: its level in colour, then `topic: message` with `fix: …` underneath
    (wrapped lines stay indented under the message)."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column()
    for finding in findings:
        grid.add_row(Text(finding.level, style=LEVEL_STYLE[finding.level]), finding_text(finding))
    return grid


def finding_text(finding: Finding) -> Text:
    """`topic: message`, then `fix: …` on its own line when there is one."""
    text = Text()
    text.append(f"{finding.topic}: ", style="bold")
    text.append(finding.message)
    if finding.fix:
        text.append("\nfix: ", style="bold")
        text.append(finding.fix)
    return text


def tally(diagnosis: Diagnosis) -> Text:
    """One line: errors and warnings, green when there are none."""
    errors, warnings = diagnosis.count("error"), diagnosis.count("warn")
    if not errors and not warnings:
        return Text("no problems found", style="bold green")
    style = "bold red" if errors else "bold yellow"
    return Text(
        f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}", style=style
    )
