"""What bootstrap, `data fineweb` and `data prepare` print."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from sweepctl.console import console


def render_downloaded(report: Any) -> None:
    """`data fineweb`: each file and what was done to it (a `data.DownloadReport`)."""
    table = Table(title=f"{report.data_dir}{' (staged via local disk)' if report.staged else ''}",
                  title_justify="left")
    table.add_column("file")
    table.add_column("status")
    for name in report.files:
        if name in report.refetched:
            status = f"downloaded again (was: {report.refetched[name]})"
        else:
            status = "downloaded" if name in report.downloaded else "present, valid"
        table.add_row(name, status)
    console.print(table)
    if not report.changed:
        console.print(f"nothing to download: all {len(report.files)} files present and valid")


def render_prepared(report: Any) -> None:
    """`data prepare`: the shards written (a `data.PrepareReport`)."""
    table = Table(title=f"{report.out_dir}: {report.documents} documents, {report.tokens:,} tokens",
                  title_justify="left")
    table.add_column("shard")
    table.add_column("tokens", justify="right")
    for name, n in report.shards:
        table.add_row(name, f"{n:,}")
    console.print(table)


def render_checklist(report: dict, *, host: str | None = None) -> None:
    """The checklist table from a bootstrap report's JSON (local or from a pod, same shape), under
    a rule naming the pod when there are several."""
    if host is not None:
        console.rule(host, align="left")
    table = Table(title="bootstrap", title_justify="left")
    table.add_column("check")
    table.add_column("state")
    table.add_column("details", overflow="fold")
    table.add_column("changed", overflow="fold")
    states = {True: "[green]ok[/]", None: "[yellow]warn[/]", False: "[red]FAIL[/]"}
    for check in report["checks"]:
        details = check["detail"] + (f" ({check['hint']})" if check["hint"] and check["ok"] is not True else "")
        table.add_row(check["name"], states[check["ok"]], details, "; ".join(check["changes"]) or "-")
    console.print(table)
    if report["changed"]:
        n = sum(len(c["changes"]) for c in report["checks"])
        console.print(f"{n} change(s); project file: {report['project_file']}", markup=False, highlight=False)
    else:
        console.print("no changes: everything was already in place", markup=False, highlight=False)
