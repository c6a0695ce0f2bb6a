"""Acting on a launched sweep: stop its runners, rerun one run. Library functions returning data.

    stop(out_root, shard=3)               # SIGINT: trainers write `interrupted`, sessions stay
    rerun(out_root, "fineweb-mhc-6l-s1337", force=True, settings=settings)

Signals go only to processes this machine can prove are sweepctl's own: a runner recorded in the
sweep's `shard-<i>.json` that is still alive and whose command line is the sweepctl runner, or a
trainer recorded in a run's `runner.json` whose runner is gone.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweepctl import backends, manifest, runs
from sweepctl.errors import RefusedError, SweepctlError
from sweepctl.manifest import find_run, latest_sweep, load_manifest, read_launch
from sweepctl.runtable import decide_rerun
from sweepctl.settings import Settings
from sweepctl.tmux import SHARD_PREFIX, Tmux, attach_command, rerun_session


@dataclass
class Signalled:
    kind: str  # runner | trainer
    pid: int
    session: str | None
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "pid": self.pid, "session": self.session, "run_id": self.run_id}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _is_ours(pid: int, needle: str) -> bool:
    """Guard against a recycled pid: the process must still be what we recorded."""
    if not runs.pid_alive(pid):
        return False
    cmd = _cmdline(pid)
    return needle in cmd if cmd else sys.platform != "linux"


def stop(out_root: Path, *, sweep: str | None = None, shard: int | None = None) -> list[Signalled]:
    """SIGINT to the runners of `sweep` (one shard, or all); each forwards it to its trainer, which
    writes `status: interrupted`, and then starts no further row. Sessions are left for inspection."""
    out_root = Path(out_root).expanduser().absolute()
    name = sweep or latest_sweep(out_root)
    if name is None:
        raise SweepctlError(f"no launched sweep under {out_root}", hint="pass --out-root or --sweep")
    plan, _ = load_manifest(out_root, name)
    d = manifest.sweep_dir(out_root, name)
    sent: list[Signalled] = []
    runner_pids: set[int] = set()
    for state_file in sorted(d.glob("*.json")):
        record = runs.read_json(state_file) or {}
        pid = record.get("pid")
        if "session" not in record or not isinstance(pid, int) or record.get("finished"):
            continue
        if record.get("host") not in (None, runs.HOST) or (shard is not None and record.get("shard") != shard):
            continue
        if shard is not None and not str(record["session"]).startswith(SHARD_PREFIX):
            continue  # --shard I means the shard's session, not a rerun that shares its index
        if _is_ours(pid, "sweepctl"):
            os.kill(pid, signal.SIGINT)
            runner_pids.add(pid)
            sent.append(Signalled("runner", pid, record["session"]))
    # A trainer whose runner died (killed session, crashed runner) still holds its run: stop it directly.
    for r in plan.runs:
        directory = runs.run_dir(out_root, r.run_id)
        owner = runs.read_json(directory / runs.OWNER)
        if not owner or owner.get("host") not in (None, runs.HOST):
            continue
        if shard is not None and owner.get("shard") != shard:
            continue
        child, runner = owner.get("child_pid"), owner.get("runner_pid")
        if not isinstance(child, int) or runner in runner_pids or (isinstance(runner, int) and runs.pid_alive(runner)):
            continue
        if (directory / runs.SUMMARY).exists() or not runs.lock_held(directory):
            continue
        if _is_ours(child, "sweepctl"):
            os.kill(child, signal.SIGINT)
            sent.append(Signalled("trainer", child, owner.get("session"), r.run_id))
    return sent


@dataclass
class RerunResult:
    run_id: str
    sweep: str
    session: str
    devices: str
    previous_state: str
    attach: str


def rerun(out_root: Path, run_id: str, *, settings: Settings, force: bool = False, gpu: int | None = None,
          tmux: Tmux | None = None) -> RerunResult:
    """Run one run again in session `rerun-<run_id>`, with the command its sweep planned for it.

    The old stdout.log, summary.json, metrics (and checkpoint) are moved to `.bak-<time>` by the
    runner under the run's lock; an ok run needs force, a running one is never touched. The backend
    that launched the sweep (launch.json) gives the session's command: with tmux a runner for this
    row on the least busy GPUs; with Ray a driver for this one row, and Ray picks the node and GPUs."""
    out_root = Path(out_root).expanduser().absolute()
    found = find_run(out_root, run_id)
    if found is None:
        raise SweepctlError(f"{run_id} is in no launched sweep under {out_root}", where=run_id,
                            hint="launch its sweep first (the rerun uses the sweep's plan.json)")
    name, plan = found
    view = runs.read_run(runs.run_dir(out_root, run_id), stale_after_s=settings.stale_after_s)
    refusal = decide_rerun(view, force=force).refusal
    if refusal:
        hint = ("stop it first: sweepctl stop" if view.state == "running"
                else "pass --force to run it again (its files are kept as .bak-)")
        raise RefusedError(refusal, where=run_id, hint=hint)
    session = rerun_session(run_id)
    sweep_dir = manifest.sweep_dir(out_root, name)
    launched = read_launch(sweep_dir)
    command = backends.of_launch(launched).rerun(plan, run_id, sweep_dir=sweep_dir,
                                                 launched=launched.get("options") or {}, session=session,
                                                 settings=settings, force=force, gpu=gpu)
    tmux = tmux or Tmux(settings.tmux_socket)
    tmux.start(session, command.argv, env=command.env, cwd=Path.cwd())
    return RerunResult(run_id, name, session, command.devices, view.state,
                       attach_command(session, settings.tmux_socket))


