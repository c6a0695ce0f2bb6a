"""`sweepctl status` drawn: the run table (or, above SUMMARISE_ABOVE runs, its summary), GPUs,
sessions, slots, ETA and disks, from `views.status.collect`'s dict — the same for a local and a
remote status, so the table looks the same wherever the runs are.

    console.print(render(collect(out_root)))
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from sweepctl.pod.tmux import shard_session
from sweepctl.state import runs
from sweepctl.views.status import full_disk, low_disk

STATE_STYLE = {"ok": "green", "running": "cyan", "pending": "dim", "failed": "bold red", "stale": "yellow",
               "cancelled": "magenta"}


SUMMARISE_ABOVE = 200  # runs; a bigger table is summarised unless --all
ATTENTION_ORDER = ("failed", "stale", "running")  # the runs a summary still lists, in this order
ATTENTION_SHOWN = 50
GROUPS_SHOWN = 20
_SEED_SUFFIX = re.compile(r"-s\d+$")


def group_of(run_id: str) -> str:
    """A run's group: its run_id without the `-s<seed>` suffix (report's convention)."""
    return _SEED_SUFFIX.sub("", run_id)


def render(model: dict[str, Any], *, show_all: bool = True, again: str = "sweepctl status --all") -> Any:
    """Rich renderables for a status dict: runs, counts, GPUs, sessions. Above SUMMARISE_ABOVE runs
    and without `show_all`, the run table becomes counts per state and group, then the runs that
    need attention (failed, stale, running); `again` is the command that shows every run."""

    if not show_all and len(model["runs"]) > SUMMARISE_ABOVE:
        return _render_summary(model, again)
    return _render_full(model)


def _render_summary(model: dict[str, Any], again: str) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    runs_ = model["runs"]
    multi = any("host" in r for r in runs_)
    title = f"sweep {model['sweep']}" if model.get("sweep") else "run directories"
    states = [s for s in runs.STATES if any(r["state"] == s for r in runs_)]
    groups: dict[tuple[str, str], Counter[str]] = {}
    for r in runs_:
        groups.setdefault((r.get("host") or "", group_of(r["run_id"])), Counter())[r["state"]] += 1
    head = Text(f"{title} in {model['out_root']}: {len(runs_)} runs, by group (the run_id without -s<seed>)")
    table = Table()
    for col in (*(["host"] if multi else []), "group", "runs", *states):
        table.add_column(col, justify="left" if col in ("host", "group") else "right")
    for (host, name), c in list(groups.items())[:GROUPS_SHOWN]:
        table.add_row(*([host] if multi else []), name, str(sum(c.values())), *(str(c[s] or "") for s in states))
    parts: list[Any] = [head, table]
    if len(groups) > GROUPS_SHOWN:
        parts.append(Text(f"... {len(groups) - GROUPS_SHOWN} more groups"))
    parts.append(Text(", ".join(f"{n} {s}" for s, n in model["counts"].items() if n) or "no runs"))
    attention = [r for s in ATTENTION_ORDER for r in runs_ if r["state"] == s]
    if attention:
        shown = dict(model, runs=attention[:ATTENTION_SHOWN])
        full = _render_full(shown, title="runs that need attention (failed, stale, running)", footer=False)
        parts.append(full)
        if len(attention) > ATTENTION_SHOWN:
            parts.append(Text(f"... {len(attention) - ATTENTION_SHOWN} more; one state: "
                              f"{again.removesuffix(' --all')} --state failed"))
    parts.append(Text(f"every run: {again}"))
    parts.extend(_footer(model, multi))
    return Group(*parts)


def _render_full(model: dict[str, Any], *, title: str | None = None, footer: bool = True) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    # Several pods (sweepctl.sweep.hosts.merge_status): runs, GPUs and sessions carry a `host` key, and
    # the same shard number exists once per host, so every lookup is by (host, name).
    multi = any("host" in r for r in (*model["runs"], *model.get("gpus", []), *model.get("sessions", [])))
    devices = {(e.get("host"), e["name"]): e.get("devices") for e in model.get("sessions", [])}
    if title is None:
        title = f"sweep {model['sweep']}" if model.get("sweep") else "run directories"
        title = f"{title} in {model['out_root']}"
    table = Table(title=title, title_justify="left")
    columns = (("host", False),) if multi else ()
    for col, right in (*columns, ("run_id", False), ("state", False), ("shard/GPU", False), ("iter", True),
                       ("%", True), ("train", True), ("val", True), ("tok/s", True), ("ETA", True),
                       ("beat", True), ("error", False)):
        # on a narrow terminal every column folds, never cuts: the run_id is what the user types next
        table.add_column(col, justify="right" if right else "left", overflow="fold",
                         min_width={"run_id": 16, "state": 7}.get(col))
    for r in model["runs"]:
        shard = r.get("shard")
        where = "-" if shard is None else str(shard)
        if shard is not None and devices.get((r.get("host"), shard_session(shard))):
            where += f"/{devices[(r.get('host'), shard_session(shard))]}"
        it, mx = r.get("iter"), r.get("max_iters")
        pct = f"{100 * it / mx:.0f}" if isinstance(it, int) and mx else ""
        table.add_row(*([r.get("host") or ""] if multi else []),
                      r["run_id"], Text(r["state"], style=STATE_STYLE.get(r["state"], "")), where,
                      "" if it is None else f"{it}/{mx or '?'}", pct, _fmt_float(r.get("train_loss")),
                      _fmt_float(r.get("val_loss")), _fmt_int(r.get("tok_per_s")), duration(r.get("eta_s")),
                      duration(r.get("heartbeat_age_s")), r.get("error_class") or "")
    if not footer:
        return table
    counts = model["counts"]
    line = Text(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no runs")
    return Group(table, line, *_footer(model, multi))


def _footer(model: dict[str, Any], multi: bool) -> list[Any]:
    """GPUs, disks, sessions, and the pods that did not answer."""
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    if model.get("gpus"):
        g = Table(title="GPUs (nvidia-smi --query-gpu)", title_justify="left")
        for col in (*(["host"] if multi else []), "index", "name", "util %", "memory used / total MiB"):
            g.add_column(col)
        for gpu in model["gpus"]:
            g.add_row(*([gpu.get("host") or ""] if multi else []), str(gpu["index"]), gpu["name"],
                      _fmt_int(gpu.get("utilization")),
                      f"{_fmt_int(gpu.get('memory_used_mib'))} / {_fmt_int(gpu.get('memory_total_mib'))}")
        parts.append(g)
    else:
        parts.append(Text("GPUs: none visible", style="dim"))

    def name(s: dict[str, Any]) -> str:
        return f"{s['host']}:{s['name']}" if multi and s.get("host") else s["name"]

    for d in model.get("disks", []):
        where = f"{d['host']}: " if multi and d.get("host") else ""
        space = f"{d['free_bytes'] / 2**30:,.1f} GiB free of {d['total_bytes'] / 2**30:,.0f} GiB"
        volume = d.get("volume") or "the out-root's volume"
        if d.get("read_only"):
            parts.append(Text(f"disk: {where}{volume} is read-only ({space}): no run can save anything; "
                              f"remount it read-write (mount -o remount,rw {volume})", style="bold red"))
        elif d.get("full", full_disk(d)):
            parts.append(Text(f"disk: {where}no space left on {volume} ({space}): runs fail at their next "
                              "checkpoint; free some space", style="bold red"))
        else:
            low = low_disk(d)
            parts.append(Text(f"disk: {where}{space}" + (" — low: checkpoints may fail to save; free some space"
                                                         if low else ""), style="yellow" if low else ""))
    disk_failed = [r["run_id"] for r in model["runs"] if r.get("error_class") == "disk"]
    if disk_failed:
        retry = model.get("retry_command") or "sweepctl launch SWEEP.csv --retry-failed"
        parts.append(Text(f"{len(disk_failed)} run(s) failed writing to a full or read-only volume "
                          f"({', '.join(disk_failed[:3])}{', ...' if len(disk_failed) > 3 else ''}); once there "
                          f"is space, they resume from their last checkpoint: {retry}", style="bold red"))

    parts.extend(render_slots_and_eta(model))
    alive = [name(s) for s in model.get("sessions", []) if s.get("alive")]
    done = [name(s) for s in model.get("sessions", []) if not s.get("alive")]
    parts.append(Text(f"sessions running: {', '.join(alive) or 'none'}"
                      + (f"; finished: {', '.join(done)}" if done else "")))
    for h in model.get("hosts", []):  # only in a remote status: say which pods did not answer
        if h.get("error"):
            shown = (f" (showing its answer from {duration(h['age_s'])} ago)"
                     if h.get("age_s") is not None else " (no runs shown for it)")
            parts.append(Text(f"host {h['host']}: {h['error']}{shown}", style="bold red"))
    return parts


def render_slots_and_eta(model: dict[str, Any]) -> list[Any]:
    """The slots of each GPU (when several runs share one) and the sweep's ETA and cost lines."""
    from rich.text import Text

    parts: list[Any] = []
    groups = model.get("slots") or []
    if any(len(g["sessions"]) > 1 for g in groups):
        parts.append(Text("slots: " + "; ".join(
            f"GPU {g['devices']}: {', '.join(g['sessions'])} ({len(g['alive'])} of {len(g['sessions'])} alive)"
            for g in groups)))
    e = model.get("eta")
    if not e:
        return parts
    left = (f"{e['gpu_hours_left']:,.2f} left" if e["gpu_hours_left"] is not None
            else f"left unknown ({e['not_estimated']} run(s) of shapes not observed yet)")
    cancelled = f", {e['runs_cancelled']} cancelled" if e.get("runs_cancelled") else ""
    line = (f"sweep: {e['runs_done']} done, {e['runs_running']} running, {e['runs_left']} left{cancelled}; "
            f"GPU-hours {e['gpu_hours_used']:,.2f} used, {left}")
    if e["runs_running"] or e["runs_left"]:
        line += (f"; ETA {duration(e['eta_s'])} on {e['slots']} slot(s)" if e["eta_s"] is not None
                 else "; ETA unknown" + (" (no slot alive)" if e["slots"] == 0 else ""))
    if e.get("gpu_hour_price") is not None:
        cost = f"cost {e['cost_used']:,.2f} so far"
        if e["cost_left"] is not None:
            cost += f" + {e['cost_left']:,.2f} left = {e['cost_used'] + e['cost_left']:,.2f}"
        line += f"; {cost} at {e['gpu_hour_price']:g}/GPU-hour"
    parts.append(Text(line))
    for key, how in sorted(e.get("basis", {}).items()):
        parts.append(Text(f"  {key}: {how}", style="dim"))
    return parts


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _fmt_float(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else ""


def _fmt_int(v: Any) -> str:
    return f"{v:,.0f}" if isinstance(v, (int, float)) else ""
