"""What launch, stop and rerun print, drawn from plain dicts.

The local commands build the dict from the library's result and draw it; with `--json` they print
the dict instead, which is what `--host` asks the pod for and draws here with the same functions.
Only the "what next" hints differ (a pod's `tmux attach` is the laptop's `sweepctl attach --host`),
so the callers pass those in.
"""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from sweepctl.console import console, err_console
from sweepctl.pod.tmux import SHARD_PREFIX, shard_session


def launch_model(preview: Any, sessions: list[str], started: Any | None = None) -> dict[str, Any]:
    """`launch --json`: the pre-flight, the run table, the sessions the backend would start, and
    (after `start`) what it started (`backends.Started`: the same shape for every backend)."""
    return {
        "sweep": preview.sweep.name,
        "backend": preview.options.backend,
        "out_root": str(preview.out_root),
        "sweep_dir": str(preview.sweep_dir),
        "warnings": list(preview.sweep.warnings),
        "checks": [asdict(c) for c in preview.checks],
        "rows": [{"run_id": r.run_id, "state": r.state, "action": r.action, "detail": r.detail}
                 for r in preview.rows],
        "shard_count": preview.plan.shard_count,
        # a machine without GPUs, every row on the CPU (device='cpu'): shards are CPU slots, whatever
        # CUDA_VISIBLE_DEVICES says. With GPUs, the devices a shard is given are still what it holds.
        "cpu": not preview.gpus.gpus and all(r.config.device == "cpu" for r in preview.plan.runs),
        "schedule": preview.plan.schedule,
        "runs_per_gpu": preview.plan.runs_per_gpu,
        "shards_to_start": list(preview.shards_to_start),
        "sessions_to_start": list(sessions),
        "dry_run": preview.options.dry_run,
        "started": list(started.sessions) if started else [],
        "refused_sessions": list(started.refused_sessions) if started else [],
        "attach": started.attach if started else None,
        "status_command": started.status_command if started else None,
        "notes": list(started.notes) if started else [],
        # the sweep's runners were live: the CSV's rows joined their queue (None otherwise)
        "joined": ({"sessions": j.sessions, "added": j.added, "updated": j.updated}
                   if (j := preview.joining) is not None else None),
        **(started.record if started else {}),
    }


def render_launch_preview(model: dict[str, Any], *, detailed: bool) -> None:
    """Warnings, the pre-flight table and the run table (all of it with --dry-run)."""
    for w in model["warnings"]:
        err_console.print(w, style="yellow", markup=False, highlight=False)
    table = Table(title="pre-flight", title_justify="left")
    for col in ("check", "", "found"):
        table.add_column(col, overflow="fold")
    for c in model["checks"]:
        table.add_row(c["what"], "[green]ok[/]" if c["ok"] else "[bold red]FAIL[/]",
                      c["detail"] + (f" — {c['hint']}" if c["hint"] and not c["ok"] else ""))
    console.print(table)
    rows = model["rows"]
    actions = Counter(r["action"] for r in rows)
    console.print(f"{len(rows)} runs: " + ", ".join(f"{n} {a}" for a, n in sorted(actions.items())),
                  highlight=False)
    shown = rows if detailed else [r for r in rows if r["action"] not in ("run", "skip")
                                   or r["state"] in ("failed", "running")]
    if not shown:
        return
    table = Table(title="run table", title_justify="left")
    for col in ("run_id", "state", "action", "why"):
        table.add_column(col, overflow="fold")
    for r in shown:
        table.add_row(r["run_id"], r["state"], r["action"], r["detail"])
    console.print(table)


def render_launch_outcome(model: dict[str, Any], *, attach: str | None = None, status: str | None = None,
                          show_status: bool = True, prefix: str = "") -> None:
    """The sessions started, the backend's own lines, and how to look at them; `attach`/`status`
    replace the pod's own hints (several pods print one status line, after the last)."""
    if model["dry_run"]:
        console.print(f"{prefix}dry run: would start {', '.join(model['sessions_to_start']) or 'no session'}; "
                      "nothing written, nothing started.", highlight=False)
        return
    if joined := model.get("joined"):
        added, updated = joined["added"], joined["updated"]
        console.print(f"{prefix}joined the live queue of {', '.join(joined['sessions'])}: {len(added)} row(s) added"
                      + (f" ({', '.join(added)})" if added else "") + f", {len(updated)} updated"
                      + (f" ({', '.join(updated)})" if updated else "")
                      + "; the runners claim them without a restart", highlight=False)
    notes = model.get("notes") or []
    if not model["started"] and not notes:
        if not joined:
            console.print(f"{prefix}nothing to start: every run is ok, running, or skipped.", highlight=False)
        return
    for s in model["started"]:
        rows = f"{s['rows']} rows" if s["rows"] is not None else "claims rows"
        k = model.get("runs_per_gpu") or 1
        slot = f" (slot {s['shard'] % k + 1} of {k})" if k > 1 else ""
        where = (f"CPU slot {s['shard']}" if model.get("cpu") and s.get("shard") is not None
                 else f"CUDA_VISIBLE_DEVICES={s['devices']}{slot}")
        console.print(f"{prefix}{s['how']} {s['session']}: {where}, {rows}", highlight=False)
    for note in notes:
        console.print(f"{prefix}{note}", highlight=False, soft_wrap=True)
    if model["started"]:
        console.print(f"attach: {attach or model['attach']}", highlight=False)
    if show_status and (status or model["status_command"]):
        console.print(f"status: {status or model['status_command']}", highlight=False)


def stop_model(sent: list[Any], shard: int | None) -> dict[str, Any]:
    return {"shard": shard, "sent": [s.to_json() for s in sent]}


def render_stop(model: dict[str, Any], *, prefix: str = "") -> None:
    if not model["sent"]:
        console.print(f"{prefix}nothing to stop: no live runner"
                      + (f" for shard {model['shard']}" if model["shard"] is not None else ""), highlight=False)
        return
    for s in model["sent"]:
        what = (f"{s['kind']} pid {s['pid']}" + (f" ({s['session']})" if s["session"] else "")
                + (f" {s['run_id']}" if s["run_id"] else ""))
        console.print(f"{prefix}sent SIGINT to {what}", highlight=False)
    console.print(f"{prefix}the trainers write summary.json (interrupted) and the runners start no new row; "
                  "sessions stay open. Relaunch with --retry-failed to resume.", highlight=False)


def render_rerun(model: dict[str, Any], *, attach: str | None = None, logs: str | None = None) -> None:
    console.print(f"started {model['session']} ({model['previous_state']} before): "
                  f"CUDA_VISIBLE_DEVICES={model['devices'] or '(none)'}; its previous files are kept as .bak-<time>",
                  highlight=False)
    console.print(f"attach: {attach or model['attach']}", highlight=False)
    console.print(f"logs:   {logs or 'sweepctl logs ' + model['run_id'] + ' -f'}", highlight=False)


def shown_path(path: Path) -> str:
    """A path as the user would type it: relative when under the working directory."""
    try:
        rel = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return f"./{rel}" if str(rel) != "." else "."


def no_runs_lines(out_root: Path, source: str, elsewhere: list[tuple[str, Path, int]]) -> list[str]:
    """What an empty `status` says: where it looked, where runs do exist (`elsewhere`: label,
    folder, number of runs), and how to point it at them, on this machine or on a pod."""
    lines = [f"no runs in {shown_path(out_root)} (out_root from {source})"]
    for label, folder, n in elsewhere:
        lines.append(f"runs exist in {shown_path(folder)} ({label}, {n} run{'s' if n != 1 else ''}): "
                     f"sweepctl status --out-root {shlex.quote(shown_path(folder))}")
    lines.append("runs in another folder: --out-root DIR (or export SWEEPCTL_OUT_ROOT=DIR); runs on a pod: "
                 "--host POD, an alias from ~/.ssh/config (or export SWEEPCTL_HOST=POD)")
    return lines


# --- launch over several pods -----------------------------------------------------------------------


@dataclass
class PodLaunched:
    """One pod's part of a `launch --host`: its answer (`launch --json`), and whether it started."""

    host: str
    model: dict[str, Any] | None
    started: bool  # it answered without an error, and every pod passed its rehearsal
    rows: int
    shards: int


def render_pods_launch(placement: Any, launched: list[PodLaunched], idle: list[str], *, single: bool,
                       dry_run: bool, stopped: bool, status: str) -> None:
    """Each pod's pre-flight and sessions under a rule naming its rows and sessions (its own
    sweep-0.., as `attach` and status's shard column number them); when `stopped`, these are
    the rehearsal's dry-run answers and nothing was started. `placement` is `hosts.Placement`:
    the rows --reassign moved and --forget started over, and those kept on pods not named;
    `status` the status command for every --host and the --out-root given."""
    from sweepctl.sweep.hosts import rows_text, some_of

    moves: dict[tuple[str, str], int] = {}
    for _run_id, src, dst in placement.moved:
        if src not in placement.forgotten:
            moves[src, dst] = moves.get((src, dst), 0) + 1
    for host in placement.forgotten:
        lost = [(run_id, dst) for run_id, src, dst in placement.moved if src == host]
        console.print(f"--forget {host}: {host} is forgotten (lost with its volume); "
                      + (f"{rows_text(len(lost))} recorded there start over: "
                         + some_of([f"{run_id} -> {dst}" for run_id, dst in lost], 10) if lost
                         else "no row recorded there starts over (each is ok on a pod named)"),
                      highlight=False)
    if moves:
        console.print("--reassign moves rows that have not started: "
                      + ", ".join(f"{src} -> {dst}: {rows_text(n)}" for (src, dst), n in moves.items()),
                      highlight=False)
    for host, run_ids in placement.elsewhere.items():
        shown = ", ".join(run_ids[:5]) + (", ..." if len(run_ids) > 5 else "")
        console.print(f"{host} keeps {rows_text(len(run_ids))} started there ({shown}): launched nowhere now; "
                      f"add --host {host} to launch them there", highlight=False)
    for pod in launched:
        model = pod.model
        if not single:
            n = (model or {}).get("shard_count") or pod.shards  # the pod's sessions: x its --runs-per-gpu
            sessions = shard_session(0) + (f"..{shard_session(n - 1)}" if n > 1 else "")
            console.rule(f"{pod.host}: {rows_text(pod.rows)} on {sessions}", align="left")
        if model is None:
            continue
        model = dict(model, warnings=[])  # the laptop printed the CSV's warnings once already
        render_launch_preview(model, detailed=dry_run)
        if pod.started:
            first = model["started"][0]["session"] if model["started"] else shard_session(0)
            render_launch_outcome(model, attach=f"sweepctl attach --host {pod.host} {attach_target(first)}",
                                  status=status, show_status=pod is launched[-1],
                                  prefix="" if single else f"{pod.host}: ")
    for host in idle:
        console.print(f"{host}: no rows; nothing launched there", highlight=False)
    if stopped:
        console.print("nothing started on any host: every pod must pass its pre-flight first.", style="red",
                      highlight=False)


def attach_target(session: str) -> str:
    """`sweep-3` -> `3` (attach's shard shorthand); other sessions (`sweep-ray`) by their full name,
    since a bare word is read as a run_id (`rerun-<run_id>`)."""
    rest = session.removeprefix(SHARD_PREFIX)
    return rest if rest.isdigit() else session
