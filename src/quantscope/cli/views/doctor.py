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
    """Devices (or a line saying there are none) and what vLLM runs on each, packages, findings
    and a one-line tally."""
    if diagnosis.devices:
        served = [part for device in diagnosis.devices for part in (Text(), served_table(device))]
        devices = Group(devices_table(diagnosis.devices), *served)
    else:
        devices = Text("no CUDA device", style="dim")
    packages = packages_table(diagnosis.packages)
    return Group(
        devices, Text(), packages, Text(), findings_grid(diagnosis.findings), Text(), tally(diagnosis)
    )


def devices_table(devices: tuple[Device, ...]) -> Table:
    """Per CUDA device: compute capability, the memory CUDA reports (GiB, what vLLM sizes its pool
    against), the formats that run their declared activation quantization in every layer kind and
    those that some layer kind runs with weight-only kernels (`served_table` has the detail)."""
    table = Table(title="CUDA devices", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("device")
    table.add_column("sm", justify="right")
    table.add_column("memory", justify="right")
    table.add_column("runs as declared")
    table.add_column("weight-only somewhere")
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


def served_table(device: Device) -> Table:
    """What vLLM 0.32 runs on `device` for each activation-quantized format, per layer kind:
    the scheme (green as declared, yellow otherwise), the kernel, and the activation-scale
    details the emulation follows (one scale per MoE layer, power-of-two scales)."""
    from quantscope.formats import get_format
    from quantscope.numerics.served import declared_act

    table = Table(title=f"what vLLM 0.32 runs on {device.name} ({device.kernels})", title_justify="left")
    table.add_column("format")
    for kind in ("dense", "MoE experts"):
        table.add_column(kind)
    for name in dict.fromkeys(s.format for s in device.served):
        cells = []
        for served in device.of(name):
            as_declared = served.act == declared_act(get_format(name))
            cell = Text(served.scheme, style="green" if as_declared else "yellow")
            cell.append(f"\n{served.kernel}", style="dim")
            if served.shared_scale:
                cell.append("\none activation scale per layer", style="dim")
            if served.pow2_scales:
                cell.append("\npower-of-two activation scales", style="dim")
            cells.append(cell)
        table.add_row(name, *cells)
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
