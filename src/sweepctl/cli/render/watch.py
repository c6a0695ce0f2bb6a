"""`status --watch`: the status redrawn in place on a terminal, one line per change elsewhere.

Both say how far the whole sweep is (iterations done of all planned, a bar on a terminal) and
when it should end; the terminal view also says when it last refreshed and how to quit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from sweepctl.console import console

FINISHED = ("ok", "failed")


def progress(model: dict[str, Any]) -> dict[str, Any]:
    """Iterations done of all planned, and an ETA for the whole sweep.

    A finished run counts as complete; a pending one as none done. The ETA divides the iterations
    left by the rate of the running runs together (each run's own rate is iterations left over
    its ETA), so it assumes the runs still to start go as fast as those running now."""
    done = total = 0
    rate = 0.0
    for r in model["runs"]:
        mx = r.get("max_iters")
        if not isinstance(mx, int) or mx <= 0:
            continue
        it = mx if r["state"] in FINISHED else min(r.get("iter") or 0, mx)
        done, total = done + it, total + mx
        eta = r.get("eta_s")
        if r["state"] == "running" and isinstance(eta, (int, float)) and eta > 0:
            rate += (mx - it) / eta
    finished = sum(1 for r in model["runs"] if r["state"] in FINISHED)
    eta_s = (total - done) / rate if rate > 0 else (0.0 if total and done == total else None)
    return {"done_iters": done, "total_iters": total, "finished_runs": finished, "runs": len(model["runs"]),
            "eta_s": eta_s}


def progress_text(p: dict[str, Any]) -> str:
    from sweepctl.views.status import duration

    share = f"{p['done_iters'] / p['total_iters']:.0%}" if p["total_iters"] else "?%"
    eta = f"ETA {duration(p['eta_s'])}" if p["eta_s"] is not None else "ETA unknown (nothing running)"
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
