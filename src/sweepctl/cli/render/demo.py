"""What `sweepctl demo` draws: launch's pre-flight as lines, the sweep until it ends (live on a
terminal, a line per change elsewhere), tables at their natural width, the next steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.markup import escape

from sweepctl.console import console, make_console


def render_checks(checks: list[Any]) -> None:
    """launch's pre-flight, one line each (the demo's inputs are ours, so these rarely fail)."""
    for c in checks:
        mark = "[green]ok[/]" if c.ok else "[bold red]FAIL[/]"
        hint = f" — {c.hint}" if c.hint and not c.ok else ""
        console.print(f"pre-flight {mark} {escape(c.what)}: {escape(c.detail + hint)}", highlight=False, soft_wrap=True)


def print_wide(renderable: Any) -> None:
    """On a terminal, as wide as the terminal; in a pipe or a log (where Rich assumes 80 columns
    and would wrap every number), at the table's natural width."""
    if console.is_terminal:
        console.print(renderable)
        return
    from rich.measure import Measurement

    natural = Measurement.get(console, console.options.update_width(1000), renderable).maximum
    make_console(width=max(console.width, natural)).print(renderable)


def watch_until(model: Callable[[], dict[str, Any]], finished: Callable[[dict[str, Any]], bool], *, poll_s: float,
                check: Callable[[], None]) -> dict[str, Any]:
    """The status table until `finished` (polled every `poll_s`, `check` raising to give up); the last model.

    On a terminal the live table redraws in place and is replaced by the final one; elsewhere
    (a pipe, CI) one line per change keeps the log readable."""
    from sweepctl.cli.render import status as status_view

    start = time.monotonic()
    m = model()
    if console.is_terminal:
        from rich.console import Group
        from rich.live import Live
        from rich.text import Text

        def view(m: dict[str, Any]) -> Any:
            return Group(status_view.render(m), Text(f"{time.monotonic() - start:.0f} s — Ctrl-C stops watching "
                                                "(the runs go on)", style="dim"))

        with Live(view(m), console=console, refresh_per_second=2, transient=True) as live:
            while not finished(m):
                check()
                time.sleep(poll_s)
                m = model()
                live.update(view(m))
        return m
    last = ""
    while True:
        line = ", ".join(f"{n} {s}" for s, n in m["counts"].items() if n)
        if line != last:
            console.print(f"{time.monotonic() - start:5.0f} s  {line}", highlight=False, soft_wrap=True)
            last = line
        if finished(m):
            return m
        check()
        time.sleep(poll_s)
        m = model()


def render_next_steps(steps: list[tuple[str, str]]) -> None:
    """(command, what it shows) per line, the comments aligned."""
    console.print("look further:", highlight=False, soft_wrap=True)
    width = min(64, max(len(c) for c, _ in steps))  # aligned comments, unless one command is very long
    for command, what in steps:
        console.print(f"  {command.ljust(width)}  # {what}", markup=False, highlight=False, soft_wrap=True)
