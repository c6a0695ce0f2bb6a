"""What `pull` shows: a transfer bar per pod while it copies, then what it copied."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from sweepctl.console import console, err_console


@contextlib.contextmanager
def transfer_bars(hosts: list[str]) -> Iterator[Callable[[str, int, int, str], None]]:
    """A bar per host on stderr, gone when the copy ends; yields `bar(host, done, total, file)`."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err_console, transient=True) as progress:
        tasks = {h: progress.add_task(h, total=None) for h in hosts}

        def bar(host: str, done: int, total: int, rel: str) -> None:
            progress.update(tasks[host], completed=done, total=total or 1, description=f"{host} {rel}"[:60])

        yield bar


def render_pulled(answers: list[Any], *, several: bool, all_runs: bool) -> None:
    """One line per pod: what was copied where; a pod that did not answer in red (several pods)."""
    for a in answers:
        if a.value is None:
            if several:
                console.print(f"{a.host}: {a.describe()}", style="red", markup=False, highlight=False)
            continue
        report, dest, name = a.value
        what = "every run" if all_runs else f"sweep {name}" if name else "every run (no sweep launched)"
        line = (f"{a.host}: {what}: copied {len(report.copied)} file(s) ({_size(report.bytes_copied)}), "
                f"{report.unchanged} unchanged")
        if report.skipped_checkpoints:
            line += f", {len(report.skipped_checkpoints)} checkpoint(s) skipped (--checkpoints copies them)"
        console.print(f"{line} -> {dest}", markup=False, highlight=False)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
