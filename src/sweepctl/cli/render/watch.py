"""`status --watch`: the status redrawn in place on a terminal, one line per change elsewhere.

Both say how far the whole sweep is (iterations done of all planned, a bar on a terminal) and
when it should end (the ETA status prints, `eta.estimate`); the terminal view also says when it
last refreshed and how to quit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from sweepctl.console import console
from sweepctl.views.eta import FINISHED  # cancelled included: a cancelled row never runs, so it is over


def progress(model: dict[str, Any]) -> dict[str, Any]:
    """Iterations done of all planned, and when the sweep should end.

    A finished run counts as complete; a pending one as none done; a cancelled one is over and
    its iterations are out of both sides (they will not be trained). The ETA is the sweep's one
    ETA, `eta.estimate`'s, the figure under status's table (observed throughput per model shape,
    the claim order replayed over the live slots); a watch of run directories that no launched
    sweep lists has none."""
    done = total = 0
    for r in model["runs"]:
        mx = r.get("max_iters")
        if not isinstance(mx, int) or mx <= 0 or r["state"] == "cancelled":
            continue
        it = mx if r["state"] in FINISHED else min(r.get("iter") or 0, mx)
        done, total = done + it, total + mx
    finished = sum(1 for r in model["runs"] if r["state"] in FINISHED)
    estimate = model.get("eta")
    why = None
    if model["runs"] and finished == len(model["runs"]):
        eta_s: float | None = 0.0
    elif estimate:
        eta_s = estimate.get("eta_s")
        if eta_s is None:
            why = ("no slot alive" if estimate.get("slots") == 0 else
                   f"{estimate.get('not_estimated')} run(s) of shapes not observed yet")
    else:
        eta_s, why = None, "no launched sweep lists these runs"
    return {"done_iters": done, "total_iters": total, "finished_runs": finished, "runs": len(model["runs"]),
            "eta_s": eta_s, "eta_unknown_because": why}


def progress_text(p: dict[str, Any]) -> str:
    from sweepctl.cli.render.status import duration

    if p["total_iters"]:
        share = f"{p['done_iters'] / p['total_iters']:.0%}"
    else:
        share = "100%" if p["runs"] and p["finished_runs"] == p["runs"] else "?%"
    eta = f"ETA {duration(p['eta_s'])}" if p["eta_s"] is not None else f"ETA unknown ({p['eta_unknown_because']})"
    return f"{p['finished_runs']}/{p['runs']} runs finished, {share} of iterations, {eta}"


def change_line(model: dict[str, Any]) -> str:
    """The line a watch without a terminal prints when it changes."""
    counts = ", ".join(f"{n} {s}" for s, n in model["counts"].items() if n) or "no runs"
    return f"{counts} — {progress_text(progress(model))}"


def watch(models: Iterator[dict[str, Any]], *, interval: float, render: Callable[[dict[str, Any]], Any],
          clock: Callable[[], float] = time.time) -> None:
    """Until Ctrl-C: on a terminal, the view redrawn in place; otherwise a timestamped line each
    time `change_line` differs (nothing is printed while nothing changes)."""
    if not console.is_terminal:
        last = None
        for model in models:
            line = change_line(model)
            if line != last:
                stamp = time.strftime("%H:%M:%S", time.localtime(clock()))
                console.print(f"{stamp}  {line}", markup=False, highlight=False, soft_wrap=True)
                last = line
        return
    from rich.live import Live

    first = next(models)
    with Live(_view(first, render, interval, clock()), console=console, refresh_per_second=1,
              screen=False) as live:
        for model in models:
            live.update(_view(model, render, interval, clock()))


def _view(model: dict[str, Any], render: Callable[[dict[str, Any]], Any], interval: float, now: float) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    p = progress(model)
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(p["total_iters"], 1), completed=p["done_iters"], width=40),
                Text(progress_text(p)))
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    return Group(render(model), bar, Text(f"refreshed {stamp}, every {interval:g} s — Ctrl-C quits watching "
                                          "(the runs go on)", style="dim"))


def polled(model: Callable[[], dict[str, Any]], interval: float,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[dict[str, Any]]:
    """model() now, then every `interval` seconds, forever."""
    while True:
        yield model()
        sleep(interval)
