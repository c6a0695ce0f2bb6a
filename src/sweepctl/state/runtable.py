"""The run table: what to do with one row of a sweep, from its state on disk and the user's flags.

Every caller decides here: `launch` for its preview and refusals, each shard runner again under the
row's lock, the Ray driver before it submits, `rerun` for the one run asked for. Pure: `decide`
reads only the RunView it is given.

    decide(runs.read_run(directory, stale_after_s=120), Policy(retry_failed=True))
    # Decision(run_id='mhc-s1', state='failed', action='resume',
    #          detail='retrying a failed run (oom: CUDA out of memory); resuming from ckpt.pt')

| state   | default                     | --force        | --retry-failed              | --skip-failed |
|---------|-----------------------------|----------------|-----------------------------|---------------|
| pending | run                         | run            | run                         | run           |
| ok      | skip                        | restart        | skip                        | skip          |
| failed  | skip, and launch refuses    | restart        | resume (or restart)         | skip          |
| running | skip (never started twice)  | launch refuses | skip                        | skip          |
| stale   | resume (or restart)         | restart        | resume (or restart)         | resume        |

A cancelled row (`sweepctl cancel`) is skipped. `launch --include-cancelled` runs it again (resume,
or restart under --force) and moves its marker aside; a runner, which is not told the flag, reads
the marker: a cancelled row whose marker is gone was included again, and resumes (or restarts).

"Resume (or restart)": resume from the checkpoint when there is one, except after a NaN, which
would come back from the same checkpoint with the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sweepctl.state import runs
from sweepctl.sweep.plan import Plan

Action = Literal["skip", "run", "resume", "restart"]


@dataclass(frozen=True)
class Policy:
    """The flags that change the table (launch's, passed on to its runners and the Ray driver)."""

    force: bool = False  # start every row over, ok and failed ones too; never a running one
    retry_failed: bool = False  # run failed rows again
    skip_failed: bool = False  # leave failed rows, without refusing the launch
    # launch's --include-cancelled; None (a runner): the cancel marker decides, since launch has
    # moved aside the markers of the rows it includes
    include_cancelled: bool | None = None


@dataclass(frozen=True)
class Decision:
    run_id: str
    state: runs.RunState
    action: Action
    detail: str = ""  # why, in a few words
    refusal: str = ""  # set: launch refuses the whole sweep over this row (the runner just skips it)


def last_line(error: object) -> str:
    """A summary's error in one line: a traceback's last line names the exception."""
    lines = str(error or "").strip().splitlines()
    return lines[-1].strip() if lines else ""


def resume_or_restart(view: runs.RunView, why: str) -> tuple[Action, str]:
    """A run that stopped part-way goes on from its checkpoint, unless it has none or hit a NaN."""
    if view.has_checkpoint and view.error_class != "nan":
        return "resume", f"{why}; resuming from {runs.CHECKPOINT}"
    return "restart", f"{why}; no usable checkpoint, starting over"


def decide(view: runs.RunView, policy: Policy, *, older: bool = True) -> Decision:
    """The table above for one row. `older`: the row's result predates this launch; a runner passes
    False for a row another runner of the same launch finished, so --force and --retry-failed
    never redo it."""
    s = view.state

    def row(action: Action, detail: str, refusal: str = "") -> Decision:
        return Decision(view.run_id, s, action, detail, refusal)

    if s == "cancelled":
        if policy.include_cancelled:
            resumable = view.has_checkpoint and view.error_class != "nan" and not policy.force
            return row("resume" if resumable else "restart", "--include-cancelled")
        if policy.include_cancelled is False:
            return row("skip", "cancelled; --include-cancelled runs it")
        if view.cancel_marked:
            return row("skip", "cancelled (sweepctl cancel)")
        return row(*resume_or_restart(view, "cancelled before, included again"))
    if s == "ok":
        return row("restart", "--force") if policy.force and older else row("skip", "already ok")
    if s == "failed":
        err = f"{view.error_class}: {last_line((view.summary or {}).get('error'))}".strip().rstrip(":")
        if policy.force and older:
            return row("restart", "--force")
        if policy.retry_failed and older:
            return row(*resume_or_restart(view, f"retrying a failed run ({err})"))
        if policy.skip_failed or not older:
            return row("skip", f"--skip-failed ({err})" if policy.skip_failed else f"{err}; not retried")
        return row("skip", f"{err}; not retried", refusal=f"{view.run_id} ({err})")
    if s == "running":
        return row("skip", "running; never started twice", refusal=view.run_id if policy.force else "")
    if s == "stale":
        if policy.force:
            return row("restart", f"--force ({view.why})")
        return row(*resume_or_restart(view, f"stale ({view.why})"))
    return row("run", "pending")


def read_table(plan: Plan, policy: Policy, *, stale_after_s: float, only: list[str] | None = None,
               now: float | None = None) -> list[Decision]:
    """`decide` for every row of the plan (or the rows in `only`), each read from its planned out_dir."""
    rows = [r for r in plan.runs if only is None or r.run_id in only]
    return [decide(runs.read_run(Path(r.config.out_dir), stale_after_s=stale_after_s, now=now, run_id=r.run_id),
                   policy) for r in rows]


def refusals(decisions: list[Decision], out_root: Path) -> list[str]:
    """Why launch must not start (empty: it may): failed rows no flag speaks for, running rows --force
    would restart."""
    failed = [d.refusal for d in decisions if d.refusal and d.state == "failed"]
    live = [d.refusal for d in decisions if d.refusal and d.state == "running"]
    out = []
    if failed:
        out.append(f"{len(failed)} failed run(s) in {out_root}: " + "; ".join(failed))
    if live:
        out.append(f"--force would restart {len(live)} running run(s): {', '.join(live)}; "
                   "stop them first (sweepctl stop)")
    return out


def decide_rerun(view: runs.RunView, *, force: bool) -> Decision:
    """`sweepctl rerun RUN_ID`: the named run starts over (its runner gets --force), unless it is
    running, or finished ok and `force` is not given: then `refusal` says why not."""
    if view.state == "running":
        return Decision(view.run_id, view.state, "skip", "running; never started twice", refusal="the run is running")
    if view.state == "ok" and not force:
        return Decision(view.run_id, view.state, "skip", "already ok", refusal="the run finished ok")
    return decide(view, Policy(force=True, include_cancelled=True))
