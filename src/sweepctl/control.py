"""Acting on a launched sweep: stop its runners, rerun one run, cancel or prioritize rows.
Library functions returning data.

    stop(out_root, shard=3)               # SIGINT: trainers write `interrupted`, sessions stay
    rerun(out_root, "fineweb-mhc-6l-s1337", force=True, settings=settings)
    cancel(out_root, ["*-mhc-48l-*"])     # pending rows never start, running ones end `cancelled`
    prioritize(out_root, ["*-6l-*"])      # the next claims take these rows

Signals go only to processes this machine can prove are sweepctl's own: a runner recorded in the
sweep's `shard-<i>.json` that is still alive and whose command line is the sweepctl runner, or a
trainer recorded in a run's `runner.json` whose runner is gone.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweepctl import backends
from sweepctl.errors import RefusedError, SweepctlError
from sweepctl.pod.tmux import SHARD_PREFIX, Tmux, attach_command, rerun_session
from sweepctl.settings import Settings
from sweepctl.state import manifest, runs
from sweepctl.state.manifest import find_run, latest_sweep, load_manifest, read_launch
from sweepctl.state.runtable import decide_rerun
from sweepctl.sweep.plan import Plan
from sweepctl.train.contract import valid_run_id


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
    writes `status: interrupted`, and then starts no further row. Sessions are left for inspection.

    Runners are found from every record that names one — each shard/rerun record in the sweep's
    folder and each run's runner.json — so the runners of an earlier launch (another tmux server,
    a record overwritten since) are stopped too, not only the last launch's."""
    out_root = Path(out_root).expanduser().absolute()
    name = sweep or latest_sweep(out_root)
    if name is None:
        raise SweepctlError(f"no launched sweep under {out_root}", hint="pass --out-root or --sweep")
    plan, _ = load_manifest(out_root, name)
    d = manifest.sweep_dir(out_root, name)
    sent: list[Signalled] = []
    runner_pids: set[int] = set()

    def signal_runner(pid: int, session: str | None) -> None:
        if pid in runner_pids or not _is_ours(pid, "sweepctl"):
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        runner_pids.add(pid)
        sent.append(Signalled("runner", pid, session))

    for state_file in sorted(d.glob("*.json")):
        record = runs.read_json(state_file) or {}
        pid = record.get("pid")
        if "session" not in record or not isinstance(pid, int) or record.get("finished"):
            continue
        if record.get("host") not in (None, runs.HOST) or (shard is not None and record.get("shard") != shard):
            continue
        if shard is not None and not str(record["session"]).startswith(SHARD_PREFIX):
            continue  # --shard I means the shard's session, not a rerun that shares its index
        signal_runner(pid, record["session"])
    owners = []
    for r in plan.runs:
        directory = runs.run_dir(out_root, r.run_id)
        owner = runs.read_json(directory / runs.OWNER)
        if not owner or owner.get("host") not in (None, runs.HOST) or owner.get("sweep") not in (None, name):
            continue
        if shard is not None and owner.get("shard") != shard:
            continue
        owners.append((r.run_id, directory, owner))
        runner = owner.get("runner_pid")
        shard_session = str(owner.get("session")).startswith(SHARD_PREFIX)
        # a runner still working on this run, whichever launch started it
        if isinstance(runner, int) and "ended" not in owner and (shard is None or shard_session):
            signal_runner(runner, owner.get("session"))
    # A trainer whose runner died (killed session, crashed runner) still holds its run: stop it directly.
    for run_id, directory, owner in owners:
        child, runner = owner.get("child_pid"), owner.get("runner_pid")
        if not isinstance(child, int) or runner in runner_pids or (isinstance(runner, int) and runs.pid_alive(runner)):
            continue
        if (directory / runs.SUMMARY).exists() or not runs.lock_held(directory):
            continue
        if _is_ours(child, "sweepctl"):
            os.kill(child, signal.SIGINT)
            sent.append(Signalled("trainer", child, owner.get("session"), run_id))
    return sent


# --- a run_id typed by the user ---------------------------------------------------------------------

def run_directory(out_root: Path, run_id: str) -> Path:
    """<out_root>/<run_id> for a valid run_id that is not a link out of the out-root; SweepctlError
    (exit 1) otherwise, quoting only what was typed: nothing outside the out-root is looked at."""
    try:
        return runs.resolve_run_dir(out_root, run_id)
    except ValueError as e:
        raise SweepctlError(str(e), where=run_id if valid_run_id(run_id) else None,
                            hint=f"see the run_ids with: sweepctl status --out-root {out_root}") from None


def known_run_ids(out_root: Path) -> list[str]:
    """Every run_id a launched sweep under out_root plans, and every run directory there."""
    known = {d.name for d in runs.list_run_dirs(out_root)}
    for plan in manifest.plans(out_root).values():
        known.update(r.run_id for r in plan.runs)
    return sorted(known)


def log_path(out_root: Path, run_id: str, *, follow: bool) -> Path:
    """The run's stdout.log for `logs`; refused when there is nothing to show or, with -f, nothing
    to wait for (no sweep in out_root plans the run and it has no directory): a typo would
    otherwise wait forever in silence."""
    import difflib

    out_root = Path(out_root).expanduser().absolute()
    directory = run_directory(out_root, run_id)
    path = directory / runs.STDOUT_LOG
    if path.is_symlink():
        raise SweepctlError(f"{path} is a symlink; sweepctl reads only real files in the out-root", where=run_id,
                            hint=f"look at it yourself: ls -l {path}")
    if path.exists():
        return path
    known = known_run_ids(out_root)
    if run_id in known and follow:
        return path  # planned, not started yet: -f waits for it
    if run_id in known:
        raise SweepctlError(f"no {runs.STDOUT_LOG} in {directory} yet", where=run_id,
                            hint=f"it has not started; wait for it with: sweepctl logs {run_id} -f")
    close = difflib.get_close_matches(run_id, known, n=1, cutoff=0.6)
    hint = (f"did you mean {close[0]}? sweepctl logs {close[0]}" + (" -f" if follow else "") if close
            else f"see the run_ids with: sweepctl status --out-root {out_root}")
    raise SweepctlError(f"no run {run_id} in {out_root}: no launched sweep plans it and it has no directory",
                        where=run_id, hint=hint)


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
    directory = run_directory(out_root, run_id)
    found = find_run(out_root, run_id)
    if found is None:
        raise SweepctlError(f"{run_id} is in no launched sweep under {out_root}", where=run_id,
                            hint="launch its sweep first (the rerun uses the sweep's plan.json)")
    name, plan = found
    if refusal := runs.symlink_problem(directory):
        raise SweepctlError(refusal, where=run_id, hint=f"replace the link with a real directory, then: "
                                                        f"sweepctl rerun {run_id} --force")
    if problem := read_only_problem(out_root):
        raise SweepctlError(problem, where=run_id, hint=f"remount it read-write (mount -o remount,rw "
                                                        f"{runs.mount_point(out_root)}), then: sweepctl rerun {run_id}")
    view = runs.read_run(directory, stale_after_s=settings.stale_after_s)
    refusal = decide_rerun(view, force=force).refusal
    if refusal:
        hint = ("stop it first: sweepctl stop" if view.state == "running"
                else "pass --force to run it again (its files are kept as .bak-)")
        raise RefusedError(refusal, where=run_id, hint=hint)
    if view.state == "cancelled":  # asked for by name: the cancel is withdrawn (its marker kept as .bak-)
        runs.backup(view.directory, [runs.CANCEL])
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


def read_only_problem(out_root: Path) -> str | None:
    """Why nothing can be written under out_root (a read-only volume, no write permission), or None."""
    existing = runs.nearest_existing(Path(out_root))
    if os.access(existing, os.W_OK | os.X_OK):
        return None
    return f"{existing} is not writable (a read-only volume, or no write permission): nothing could be saved"


# --- steering a running sweep: cancel, prioritize --------------------------------------------------

@dataclass
class Steered:
    """What `cancel` or `prioritize` did to one row."""

    run_id: str
    state: str  # the run's state when asked
    action: str  # cancelled | ending | left | prioritized
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "state": self.state, "action": self.action, "detail": self.detail}


def select_rows(plan: Plan, patterns: list[str], where: str, *, unmatched_ok: bool = False) -> list[str]:
    """The plan's run_ids matching any pattern (an exact run_id or a glob such as `*-mhc-48l-*`), in
    plan order. A pattern matching nothing is an error: a typo must not pass as "nothing to do".
    `unmatched_ok`: one pod of several, whose rows are a part of the sweep (the laptop checks the whole)."""
    ids = [r.run_id for r in plan.runs]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(i, p) for i in ids)]
    if unmatched and not unmatched_ok:
        raise SweepctlError(f"{', '.join(map(repr, unmatched))} matches no row of sweep {plan.sweep}", where=where,
                            hint=f"see its rows with: sweepctl status --sweep {plan.sweep}")
    return [i for i in ids if any(fnmatch.fnmatchcase(i, p) for p in patterns)]


def _manifest(out_root: Path, sweep: str | None) -> tuple[Path, str, Plan]:
    out_root = Path(out_root).expanduser().absolute()
    name = sweep or latest_sweep(out_root)
    if name is None:
        raise SweepctlError(f"no launched sweep under {out_root}", hint="pass --out-root or --sweep")
    plan, _ = load_manifest(out_root, name)
    return out_root, name, plan


def cancel(out_root: Path, patterns: list[str], *, sweep: str | None = None, stale_after_s: float = 120.0,
           unmatched_ok: bool = False) -> list[Steered]:
    """Mark rows cancelled (`<run_dir>/cancel.json`): a pending row is never claimed or started, a
    running one is ended by its runner (SIGTERM to the trainer, as `stop` does) and ends `cancelled`.
    An ok run is left as it is; nothing is deleted."""
    out_root, name, plan = _manifest(out_root, sweep)
    done: list[Steered] = []
    for run_id in select_rows(plan, patterns, str(manifest.sweep_dir(out_root, name) / manifest.PLAN_FILE),
                              unmatched_ok=unmatched_ok):
        directory = runs.run_dir(out_root, run_id)
        view = runs.read_run(directory, stale_after_s=stale_after_s)
        if view.state == "ok":
            done.append(Steered(run_id, view.state, "left", "finished ok; nothing to cancel"))
            continue
        if view.state == "cancelled" and (directory / runs.CANCEL).exists():
            done.append(Steered(run_id, view.state, "left", "cancelled already"))
            continue
        runs.write_json_atomic(directory / runs.CANCEL, {"run_id": run_id, "sweep": name, "ts": time.time(),
                                                         "host": runs.HOST, "user": os.environ.get("USER")})
        if view.state != "running":
            done.append(Steered(run_id, view.state, "cancelled", "will not start"))
            continue
        done.append(Steered(run_id, view.state, "ending", _end_orphan(directory) or "its runner ends the trainer"))
    return done


def _end_orphan(directory: Path) -> str | None:
    """A running trainer whose runner is gone has nobody to read the marker: SIGTERM it directly."""
    owner = runs.read_json(directory / runs.OWNER) or {}
    child, runner = owner.get("child_pid"), owner.get("runner_pid")
    if owner.get("host") not in (None, runs.HOST) or not isinstance(child, int):
        return None
    if isinstance(runner, int) and runs.pid_alive(runner):
        return None
    if _is_ours(child, "sweepctl"):
        os.kill(child, signal.SIGTERM)
        return f"its runner is gone; sent SIGTERM to trainer pid {child}"
    return None


def prioritize(out_root: Path, patterns: list[str], *, sweep: str | None = None, priority: int | None = None,
               unmatched_ok: bool = False) -> list[Steered]:
    """Set the priority of rows not yet claimed, in plan.json (under the sweep's lock): the live
    runners read it before their next claim. Default: one above the highest priority in the plan,
    so the rows named go next."""
    out_root, name, _ = _manifest(out_root, sweep)
    d = manifest.sweep_dir(out_root, name)
    with manifest.sweep_lock(d):
        plan, record = load_manifest(out_root, name)
        if plan.schedule != "dynamic":
            raise RefusedError(f"sweep {name} runs the static schedule: each shard walks its rows in CSV order, "
                               "so there is no queue to reorder", where=str(d / manifest.PLAN_FILE),
                               hint="reorder the CSV and launch it with --schedule dynamic after the current runs "
                                    "(sweepctl launch SWEEP.csv --schedule dynamic)")
        ids = select_rows(plan, patterns, str(d / manifest.PLAN_FILE), unmatched_ok=unmatched_ok)
        level = priority if priority is not None else max(r.priority for r in plan.runs) + 1
        claims = manifest.claims_dir(d, str(record.get("launch_id") or ""))
        done = []
        for run_id in ids:
            planned = plan.run(run_id)
            if (claims / run_id).exists() or runs.run_dir(out_root, run_id).joinpath(runs.OWNER).exists():
                done.append(Steered(run_id, "claimed", "left", "already claimed; the order no longer matters for it"))
                continue
            planned.priority = level
            done.append(Steered(run_id, "pending", "prioritized", f"priority {level}"))
        if any(s.action == "prioritized" for s in done):
            manifest.save_plan(d, plan)
    return done
