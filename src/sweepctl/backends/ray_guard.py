"""The guard beside a Ray task's trainer: when the Ray worker dies, its trainer dies too.

    python -m sweepctl.backends.ray_guard RUN_DIR WORKER_PID KILL_GRACE_S   # stdin: a pipe only the worker writes

Ray gives a dead worker's GPUs to the next task at once. A trainer orphaned by a SIGKILLed worker
(the OOM killer, `ray stop --force`, a forced `ray.cancel`) would go on training beside that task
on the same GPUs, holding its run's lock, with no runner to enforce the stall and time limits.
Nothing in the trainer's own process notices: it runs in a process group of its own (the runner's
choice: a pane's Ctrl-C reaches it only through the runner), out of reach of Ray's clean-up of the
worker's group; and PR_SET_PDEATHSIG would need Popen's preexec_fn, which is unsafe in a process
with as many threads as a Ray worker.

So each task starts this guard, in a session of its own, reading a pipe whose write end only the
worker holds. The kernel closes that end when the worker exits, however it exits: `done` first
means the row ended in the worker's hands; end-of-file without it means the worker died, and the
guard ends the trainer as the runner would have: SIGTERM (the trainer writes an `interrupted`
summary, so a retry resumes from its checkpoint), then SIGKILL to its process group after the
grace. What it does goes to its stdout, the row's log.

Imports only `runs`: it starts once per row.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from sweepctl.state import runs

DONE = b"done"
POLL_S = 0.2


def orphan(run_dir: Path, worker_pid: int) -> int | None:
    """The trainer the dead worker left, if it is still there: recorded by that worker's runner and
    not ended, alive, holding the run's lock, leading its own process group, running sweepctl."""
    owner = runs.read_json(run_dir / runs.OWNER) or {}
    child = owner.get("child_pid")
    if owner.get("runner_pid") != worker_pid or "ended" in owner or not isinstance(child, int):
        return None
    if not runs.pid_alive(child) or not runs.lock_held(run_dir):
        return None
    try:  # a recycled pid would fail one of these
        if os.getpgid(child) != child or b"sweepctl" not in Path(f"/proc/{child}/cmdline").read_bytes():
            return None
    except OSError:
        return None
    return child


def end(child: int, grace_s: float) -> str:
    """SIGTERM, then SIGKILL to the trainer's process group (torchrun's workers included) after the grace."""
    try:
        os.kill(child, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while runs.pid_alive(child):
            if time.monotonic() > deadline:
                os.killpg(child, signal.SIGKILL)
                return f"SIGKILL to process group {child} after {grace_s:g} s"
            time.sleep(POLL_S)
    except ProcessLookupError:
        pass
    return "it exited after SIGTERM"


def main(argv: list[str]) -> int:
    run_dir, worker_pid, grace_s = Path(argv[0]), int(argv[1]), float(argv[2])
    if sys.stdin.buffer.read() == DONE:
        return 0
    child = orphan(run_dir, worker_pid)
    stamp = time.strftime("%H:%M:%S")
    if child is None:
        print(f"[sweepctl guard {stamp}] Ray worker {worker_pid} died; no trainer of {run_dir.name} left running",
              flush=True)
        return 0
    print(f"[sweepctl guard {stamp}] Ray worker {worker_pid} died; ending its trainer pid {child} "
          f"({run_dir.name}) with SIGTERM", flush=True)
    how = end(child, grace_s)
    print(f"[sweepctl guard {time.strftime('%H:%M:%S')}] trainer pid {child}: {how}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
