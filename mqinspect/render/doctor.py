"""Draws a DoctorReport: one row per capability. Rows that are not ok say what depends on them and the fix."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from probes.capabilities import CapabilityCheck, DoctorReport, Status

_STYLES = {Status.OK: "green", Status.MISSING: "red", Status.DEGRADED: "yellow", Status.SKIPPED: "dim"}


def doctor_table(report: DoctorReport) -> Table:
    table = Table(title="mqinspect doctor", title_justify="left", box=None, pad_edge=False)
    table.add_column("check", no_wrap=True, style="bold")
    table.add_column("status", no_wrap=True)
    table.add_column("detail", ratio=1)
    for check in report.checks:
        table.add_row(check.name, _status_cell(check), _detail_cell(check))
    return table


def doctor_verdict(report: DoctorReport) -> Text:
    if report.ok:
        return Text("Everything mqinspect needs is present.", style="green")
    lacking = [c.name for c in report.checks if c.required and c.status in (Status.MISSING, Status.DEGRADED)]
    return Text(f"Not everything mqinspect needs is present: {', '.join(lacking)}.", style="red")


def _status_cell(check: CapabilityCheck) -> Text:
    if not check.required and check.status is not Status.OK:
        return Text(f"{check.status} (not needed)", style="dim")
    return Text(str(check.status), style=_STYLES[check.status])


def _detail_cell(check: CapabilityCheck) -> Text:
    text = Text(check.detail)
    if check.status is not Status.OK:
        text.append(f"\nneeded for: {check.needed_for}", style="dim")
        if check.fix:
            text.append(f"\nfix: {check.fix}", style="cyan")
    return text
