"""The shard runner: runs inside a tmux session and walks its rows, one trainer child at a time.

    sweepctl runner /mnt/pod_artifacts/outputs/.sweeps/fineweb --shard 3 --devices 3 ...

Static schedule: the rows of the plan with row % N == shard. Dynamic schedule: every runner claims
the next unclaimed row, longest first (`sweepctl.sweep.plan.claim_order`), by creating
`claims/<launch>/<run_id>` with O_CREAT|O_EXCL, which the filesystem grants to exactly one process —
no row runs twice and no GPU idles while rows remain.

Per row: take the run's flock (inherited by the trainer, so it is held exactly as long as someone
works on the run), decide from the run table, start the trainer (`torchrun` for K > 1 GPUs), tee
its output to stdout.log and the pane, watch its heartbeat (stall) and the clock (timeout), and
make sure a summary.json exists when it ends — the trainer's own, or the runner's when the child
died without one (SIGKILL, the OOM killer). A failed row does not stop the shard unless fail_fast.

Whatever goes wrong around one row — preparing its directory, starting the trainer (bad bytes in
an argument), finishing it, a full or read-only volume — ends that row with an honest summary
(`error_class: "disk"` for ENOSPC/EROFS, with the path and the space left) and the runner goes
on. Only a volume where not even that summary can be written stops the shard, with the reason in
the pane and the shard log (when they can still be written).

Slots (`runs_per_gpu` K > 1): K runners share a GPU group; each row holds the group's gate
(`sweepctl.state.slots.GpuGate`) shared, a row with `gpus > 1` holds it alone, and a packed run that
ends with error_class `oom` is retried once alone (its summary says `retried_alone`).
Every trainer gets the sweep's compile cache (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR).

This is the only module that starts the trainer as a subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from sweepctl import notify
from sweepctl.pod.tmux import SHARD_PREFIX
from sweepctl.state import manifest, runs, runtable
from sweepctl.state.slots import GpuGate
from sweepctl.sweep.plan import Plan, PlannedRun, claim_order
from sweepctl.train.contract import CONTEXT_ENV
from sweepctl.train.rundir import disk_error_text, is_disk_error

OnFailed = Literal["skip", "retry"]
DEFAULT_STALL_AFTER_S = 1800.0  # no iteration for 30 min: hung (NCCL, a dead filesystem), not slow
POLL_S = 0.5
EXPLICIT_ROW_LOCK_WAIT_S = 30.0
NOTIFY_WAIT_S = 30.0  # at a runner's end, how long queued notifications get to go out
FINAL_STATES = ("ok", "failed", "cancelled")  # a sweep whose rows are all in these is done


@dataclass
class RunnerOptions:
    sweep_dir: Path
    shard: int | None  # None for a rerun outside the shard layout
    devices: str  # CUDA_VISIBLE_DEVICES of this runner; a row with K GPUs uses the first K
    session: str
    claims_dir: Path | None = None  # set under the dynamic schedule
    only: list[str] | None = None  # run exactly these rows (rerun)
    fail_fast: bool = False
    max_retries: int = 0
    stall_after_s: float | None = DEFAULT_STALL_AFTER_S
    run_timeout_s: float | None = None
    on_failed: OnFailed = "skip"
    force: bool = False
    launched_at: float = field(default_factory=time.time)
    kill_grace_s: float = 30.0  # after SIGTERM, how long the trainer gets to write its summary
    stale_after_s: float = 120.0
    notify_url: str | None = None  # a webhook told of failed runs and of the sweep's end (a secret)
    notify_delays_s: tuple[float, ...] = notify.RETRY_DELAYS_S


class VolumeUnusable(Exception):
    """Not even a summary can be written to the out-root: the shard stops, saying why."""


@dataclass
class Outcome:
    run_id: str
    result: str  # ok | failed | interrupted | skipped | cancelled
    detail: str = ""


# --- claims (dynamic schedule) -------------------------------------------------------------------

def claim(claims_dir: Path, run_id: str, shard: int | None) -> bool:
    """Atomically claim a row; True for exactly one caller per (claims_dir, run_id)."""
    return runs.create_once(claims_dir / run_id,
                            {"shard": shard, "pid": os.getpid(), "host": runs.HOST, "ts": time.time()})


def cancel_requested(planned: PlannedRun) -> bool:
    """`sweepctl cancel` marked the row: a claimer passes it by, a runner ends its trainer."""
    return (Path(planned.config.out_dir) / runs.CANCEL).exists()


def claimed_rows(run_ids: list[str], claims_dir: Path, shard: int | None) -> Iterator[str]:
    """Claim lazily: the next row is taken only when this runner is free to start it."""
    for run_id in run_ids:
        if claim(claims_dir, run_id, shard):
            yield run_id


# --- the trainer command -------------------------------------------------------------------------

def trainer_command(argv: list[str], *, gpus: int, resume: bool) -> list[str]:
    """The plan's `python -m sweepctl.train ...` with this interpreter, torchrun for K > 1 GPUs."""
    if argv[:1] != ["python"]:
        raise ValueError(f"unexpected trainer argv {argv[:3]}")
    rest = argv[1:] + (["resume=True"] if resume else [])
    if gpus > 1:
        # `python -m torch.distributed.run` is torchrun without relying on PATH.
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", *rest]
    return [sys.executable, *rest]


def compile_cache_env(cache: str | None) -> dict[str, str]:
    """The trainer's torch.compile caches: Inductor's, and Triton's beside it (Inductor would put
    Triton's under /tmp otherwise, which a replaced pod loses)."""
    if not cache:
        return {}
    return {"TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": str(Path(cache) / "triton")}


def devices_for(devices: str, gpus: int) -> str:
    ids = [d for d in devices.split(",") if d != ""]
    return ",".join(ids[:gpus]) if ids else devices


# --- the runner ----------------------------------------------------------------------------------

class ShardRunner:
    def __init__(self, plan: Plan, options: RunnerOptions, *, pane: BinaryIO | None = None):
        self.plan = plan
        self.options = options
        self.pane = pane if pane is not None else sys.stdout.buffer
        self.write_lock = threading.Lock()
        # shard-<i>.log for a shard session (README: the sweep manifest), <session>.log for a rerun
        shard_session = options.session.startswith(SHARD_PREFIX) and options.shard is not None
        log_name = f"shard-{options.shard}.log" if shard_session else f"{options.session}.log"
        self.shard_log: BinaryIO | None = None
        try:
            self.shard_log = open(options.sweep_dir / log_name, "ab")  # noqa: SIM115 (open for the runner's life)
        except OSError as e:  # a read-only volume: the pane still says what happens
            self.early_problem: str | None = disk_error_text(e, options.sweep_dir / log_name)
        else:
            self.early_problem = None
        self.state_path = options.sweep_dir / log_name.replace(".log", ".json")
        self.stop_signal: int | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.outcomes: list[Outcome] = []
        self.started = time.time()
        self._order: tuple[Plan | None, list[PlannedRun]] = (None, [])  # claim_order of the plan it was made from
        self._plan_key: tuple[int, int, int] | None = None  # plan.json as last read (inode, mtime, size)
        self.notifier = (notify.Notifier(options.notify_url, say=self.say, delays_s=options.notify_delays_s)
                         if options.notify_url else None)

    # output ----------------------------------------------------------------------------------
    def emit(self, data: bytes) -> None:
        """To the pane and the shard log: the shard's history outlives its tmux pane."""
        with self.write_lock:
            for stream in (self.pane, self.shard_log):
                if stream is None:
                    continue
                try:
                    stream.write(data)
                    stream.flush()
                except (OSError, ValueError):
                    pass  # a closed pane must not stop the runs

    def say(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.emit(f"[sweepctl {self.options.session} {stamp}] {message}\n".encode())

    # signals ---------------------------------------------------------------------------------
    def on_signal(self, signum: int, _frame: Any) -> None:
        """Ctrl-C in the pane, `sweepctl stop`, or the session going away: finish this row, start no more.

        The trainer runs in its own process group, so it hears the signal only from us, once."""
        self.stop_signal = signum
        forward = signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM
        child = self.child
        if child is not None and child.poll() is None:
            try:
                os.kill(child.pid, forward)
            except ProcessLookupError:
                pass

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.on_signal)

    # rows ------------------------------------------------------------------------------------
    def rows(self) -> Iterator[PlannedRun]:
        if self.options.only is not None:
            ids = list(self.options.only)
        elif self.plan.schedule == "static" and self.options.shard is not None:
            ids = [r.run_id for r in self.plan.runs_of_shard(self.options.shard)]
        elif self.plan.schedule == "dynamic":  # every runner walks the same longest-first order, claiming
            ids = claim_order(self.plan)
        else:
            ids = [r.run_id for r in self.plan.runs]
        if self.options.claims_dir is not None and self.options.only is None:
            if self.plan.schedule == "dynamic":
                yield from self._live_queue(self.options.claims_dir)
                return
            ids_iter: Iterator[str] = claimed_rows(ids, self.options.claims_dir, self.options.shard)
        else:
            ids_iter = iter(ids)
        for run_id in ids_iter:
            yield self.plan.run(run_id)

    def _live_queue(self, claims_dir: Path) -> Iterator[PlannedRun]:
        """Claim the first unclaimed row of the sweep's queue as it is now: plan.json is read again
        before every claim, so rows a later `launch` appended, and priorities `prioritize` changed,
        count without restarting this runner. Ends when every row is claimed."""
        while True:
            planned = self._claim_next(claims_dir)
            if planned is None:
                # Say "drained" under the sweep's lock, after one more look: a `launch` adding rows
                # holds that lock while it merges, so it either sees this runner drained (and starts
                # runners itself) or wrote its rows before this last look.
                with manifest.sweep_lock(self.options.sweep_dir):
                    planned = self._claim_next(claims_dir)
                    if planned is None:
                        self._write_state(started=self.started, drained=time.time())
                        return
            yield planned

    def _claim_next(self, claims_dir: Path) -> PlannedRun | None:
        self._reload_plan()
        if self._order[0] is not self.plan:  # costed and sorted once per plan read, not per claim
            by_id = {r.run_id: r for r in self.plan.runs}
            self._order = (self.plan, [by_id[i] for i in claim_order(self.plan)])
        try:
            claimed = set(os.listdir(claims_dir))  # one read of the folder, not a stat per claimed row
        except FileNotFoundError:
            claimed = set()
        for planned in self._order[1]:
            if planned.run_id in claimed:
                continue
            if cancel_requested(planned):
                continue  # never claimed: a later `launch --include-cancelled` may still run it
            if claim(claims_dir, planned.run_id, self.options.shard):
                return planned
        return None

    def _reload_plan(self) -> None:
        """The newest plan.json, when it changed (written atomically: old or new, never half)."""
        path = self.options.sweep_dir / manifest.PLAN_FILE
        try:
            st = path.stat()
        except OSError:
            return  # a plan handed in without a manifest (tests, a rerun): keep it
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._plan_key:
            return
        try:
            self.plan = Plan.model_validate_json(path.read_text())
        except (OSError, ValueError) as e:
            self.say(f"cannot read {path}: {e}; claiming from the plan read before")
            return
        self._plan_key = key

    def run(self) -> int:
        """Walk the rows; 0 when nothing failed. Leaves a one-line summary as the pane's last line."""
        start = self.started = time.time()
        self.say(f"sweep {self.plan.sweep}: runner pid {os.getpid()}, CUDA_VISIBLE_DEVICES={self.options.devices}, "
                 f"schedule {self.plan.schedule}")
        stopped_by = self.early_problem
        if stopped_by is None:
            stopped_by = self._write_state(started=start)
        rows = self.rows()
        while stopped_by is None and self.stop_signal is None:
            try:
                planned = next(rows, None)
            except Exception as e:  # a claim that cannot be written: no row can be taken safely
                stopped_by = _describe(e, self.options.claims_dir or self.options.sweep_dir)
                break
            if planned is None:
                break
            try:
                outcome = self.run_row(planned)
            except VolumeUnusable as e:
                self.outcomes.append(Outcome(planned.run_id, "failed", str(e)))
                stopped_by = str(e)
                break
            self.outcomes.append(outcome)
            if outcome.result == "failed":
                self._notify_failed(planned)
            if outcome.result == "failed" and self.options.fail_fast:
                self.say("--fail-fast: stopping this shard after a failed row")
                break
        if stopped_by is not None:
            self.say(f"stopping this shard: {stopped_by}; its other rows stay as they are. Free space or make "
                     f"the volume writable, then: {self._retry_command()}")
        counts, line = end_line(self.options.session, self.outcomes, stopped=self.stop_signal is not None,
                                elapsed_s=time.time() - start)
        self._write_state(started=start, finished=time.time(), counts=counts,
                          **({"stopped_by": stopped_by} if stopped_by else {}))
        self.say(line)
        if self.notifier is not None:
            if self.stop_signal is None and self.options.only is None:
                self._notify_done_if_last()
            self.notifier.wait(NOTIFY_WAIT_S)  # every row has ended: nothing is held up but the pane
        self.close()
        return 1 if counts["failed"] or stopped_by else 0

    def close(self) -> None:
        """Close the shard log; on a full volume what could not be flushed is in the pane already."""
        if self.shard_log is not None:
            with contextlib.suppress(OSError):
                self.shard_log.close()

    def _retry_command(self) -> str:
        launched = manifest.read_launch(self.options.sweep_dir)
        csv = launched.get("csv") if isinstance(launched.get("csv"), str) else "SWEEP.csv"
        return f"sweepctl launch {shlex.quote(csv)} --retry-failed"

    # notifications -----------------------------------------------------------------------------
    def _notify_failed(self, planned: PlannedRun) -> None:
        if self.notifier is None:
            return
        directory = Path(planned.config.out_dir)
        summary = runs.read_json(directory / runs.SUMMARY) or {}
        attempt = (runs.read_json(directory / runs.OWNER) or {}).get("attempt") or 0
        text = notify.failed_text(self.plan.sweep, planned.run_id, summary, host=runs.HOST, session=self.options.session)
        self.notifier.send_once(manifest.notified_dir(self.options.sweep_dir), f"failed-{planned.run_id}-{attempt}", text)

    def _notify_done_if_last(self) -> None:
        """When every row of the sweep has ended (ok, failed or cancelled), the first runner to see it
        tells the webhook, with the counts and the best groups; rows added later make a new event."""
        assert self.notifier is not None
        self._reload_plan()
        views = [runs.read_run(Path(r.config.out_dir), stale_after_s=self.options.stale_after_s, run_id=r.run_id)
                 for r in self.plan.runs]
        if any(v.state not in FINAL_STATES for v in views):
            return  # another runner is still at work; the last one to end sends it
        counts = {s: sum(1 for v in views if v.state == s) for s in FINAL_STATES}
        event = "done-" + hashlib.sha1(" ".join(sorted(v.run_id for v in views)).encode()).hexdigest()[:12]
        text = notify.done_text(self.plan.sweep, counts, self._best_groups(), host=runs.HOST)
        self.notifier.send_once(manifest.notified_dir(self.options.sweep_dir), event, text)

    def _best_groups(self, shown: int = 3) -> list[dict[str, Any]]:
        from sweepctl.views import report

        try:
            data = report.collect(self.options.sweep_dir.parent.parent, sweep=self.plan.sweep,
                                  stale_after_s=self.options.stale_after_s)
        except Exception as e:  # a report problem must not cost the message its counts
            self.say(f"no best groups in the notification: {e}")
            return []
        groups = [{"label": g["label"], **g["best_val"]} for g in data["groups"] if g["best_val"]["n"]]
        return sorted(groups, key=lambda g: g["mean"])[:shown]

    def _write_state(self, **fields: Any) -> str | None:
        """The runner's record (stop finds it there); returns the disk problem when it cannot be written."""
        try:
            runs.write_json_atomic(self.state_path, {
                "session": self.options.session, "shard": self.options.shard, "pid": os.getpid(), "host": runs.HOST,
                "devices": self.options.devices, "launched_at": self.options.launched_at,
                "claims_dir": str(self.options.claims_dir) if self.options.claims_dir else None, **fields})
        except OSError as e:
            problem = _describe(e, self.state_path)
            self.say(f"cannot write {self.state_path.name}: {problem}")
            return problem if is_disk_error(e) else None
        return None

    def run_row(self, planned: PlannedRun) -> Outcome:
        directory = Path(planned.config.out_dir)
        if refusal := runs.symlink_problem(directory):  # never lock, back up or write through a link
            self.say(f"{planned.run_id}: {refusal}; not run")
            return Outcome(planned.run_id, "failed", refusal)
        lock = runs.RunLock(directory)
        try:
            # An explicit rerun was checked "not running" just before; a lock still held then belongs
            # to a trainer that has written its summary and is exiting (interpreter teardown can take
            # seconds under load), so wait for it rather than skip the row the user asked for.
            if not lock.acquire(wait_s=EXPLICIT_ROW_LOCK_WAIT_S if self.options.only else 1.0):
                self.say(f"{planned.run_id}: another process is running it; skipped")
                return Outcome(planned.run_id, "skipped", "running elsewhere")
            return self._run_locked(planned, directory, lock)
        except VolumeUnusable:
            raise
        except Exception as e:  # whatever broke, it broke this row only
            return self._row_failed(planned, directory, e)
        finally:
            lock.release()

    def _row_failed(self, planned: PlannedRun, directory: Path, e: Exception) -> Outcome:
        """End a row that raised with a summary that says why; VolumeUnusable when even that fails."""
        child, self.child = self.child, None
        if child is not None and child.poll() is None:  # never leave a trainer the runner no longer watches
            self._end(child)
        error_class = "disk" if is_disk_error(e) else "exception"
        detail = _describe(e, directory)
        self.say(f"{planned.run_id}: failed ({error_class}: {detail})")
        try:
            self._write_runner_summary(planned, directory, time.time(), error_class=error_class, error=detail)
        except OSError as again:
            raise VolumeUnusable(_describe(again, directory / runs.SUMMARY)) from again
        return Outcome(planned.run_id, "failed", f"{error_class}: {detail}")

    def _decide(self, view: runs.RunView) -> tuple[str, str]:
        """(action, why): the run table under the row's lock. --force and --retry-failed apply only
        to results older than the launch: a row finished by another runner of this launch is never redone."""
        older = view.summary is None or _mtime(view.directory / runs.SUMMARY) < self.options.launched_at
        d = runtable.decide(view, runtable.Policy(force=self.options.force, retry_failed=self.options.on_failed == "retry"),
                            older=older)
        return d.action, d.detail

    def _run_locked(self, planned: PlannedRun, directory: Path, lock: runs.RunLock) -> Outcome:
        view = runs.read_run(directory, stale_after_s=self.options.stale_after_s, probe_lock=False)
        action, why = self._decide(view)
        if action == "skip":
            self.say(f"{planned.run_id}: {why}; skipped")
            return Outcome(planned.run_id, "skipped", why)
        attempt = int((view.owner or {}).get("attempt") or 0) + 1
        tries = 0
        first_error: str | None = None  # set when a packed run's oom is being retried alone
        while True:
            alone = planned.gpus > 1 or first_error is not None
            with self._gpu_gate(planned.run_id, alone=alone) as held:
                if not held:
                    self.say(f"{planned.run_id}: stopped while waiting for the GPU")
                    return Outcome(planned.run_id, "interrupted", "stopped before it started")
                self._prepare(directory, action)
                self.say(f"{planned.run_id}: attempt {attempt}, {action} ({why})")
                result = self._attempt(planned, directory, lock, attempt=attempt, resume=action == "resume",
                                       alone=alone)
            if first_error is not None:
                _note_retried_alone(directory, first_error)
            summary = runs.read_json(directory / runs.SUMMARY) or {}
            if result == "ok":
                self.say(f"{planned.run_id}: ok (iter {summary.get('iter_num')}, "
                         f"best val {_fmt(summary.get('best_val_loss'))})")
                return Outcome(planned.run_id, "ok")
            error_class = summary.get("error_class") or "unknown"
            detail = f"{error_class}: {summary.get('error') or ''}".strip()
            if result == "cancelled":
                self.say(f"{planned.run_id}: cancelled (sweepctl cancel)")
                return Outcome(planned.run_id, "cancelled")
            if result == "interrupted" or self.stop_signal is not None:
                self.say(f"{planned.run_id}: interrupted")
                return Outcome(planned.run_id, "interrupted", detail)
            self.say(f"{planned.run_id}: failed ({detail})")
            if error_class == "oom" and self._packed() and not alone:
                # beside K-1 other runs it ran out of memory: once more with the GPU to itself,
                # outside --max-retries (the row did nothing wrong)
                first_error = detail
                attempt += 1
                view = runs.read_run(directory, stale_after_s=self.options.stale_after_s, probe_lock=False)
                action, why = runtable.resume_or_restart(view, "out of memory beside other runs; retrying alone")
                continue
            if tries >= self.options.max_retries:
                return Outcome(planned.run_id, "failed", detail)
            tries += 1
            attempt += 1
            view = runs.read_run(directory, stale_after_s=self.options.stale_after_s, probe_lock=False)
            action, why = runtable.resume_or_restart(view, f"retry {tries} of {self.options.max_retries}")

    def _packed(self) -> bool:
        """This runner is one of K > 1 slots on its GPUs (a rerun runs outside the slots)."""
        return self.plan.runs_per_gpu > 1 and self.options.shard is not None and self.options.only is None

    def _gpu_gate(self, run_id: str, *, alone: bool) -> AbstractContextManager[bool]:
        if not self._packed():
            return contextlib.nullcontext(True)
        group = self.options.devices.replace(",", "-") or "none"
        if alone:
            self.say(f"{run_id}: runs alone on CUDA_VISIBLE_DEVICES={self.options.devices}; waiting for the other "
                     "slots' rows to end")
        return GpuGate(manifest.slots_dir(self.options.sweep_dir), group).hold(alone=alone,
                                                               stopped=lambda: self.stop_signal is not None)

    def _prepare(self, directory: Path, action: str) -> None:
        """Move the previous attempt's files aside (never delete them) before a new attempt."""
        directory.mkdir(parents=True, exist_ok=True)
        names = runs.RETRY_BACKUPS if action == "resume" else runs.RESTART_BACKUPS
        moved = runs.backup(directory, names)
        if moved:
            self.say(f"{directory.name}: kept the previous attempt as {', '.join(p.name for p in moved)}")

    def _attempt(self, planned: PlannedRun, directory: Path, lock: runs.RunLock, *, attempt: int,
                 resume: bool, alone: bool = True) -> str:
        """One trainer process, start to end. Returns ok | failed | interrupted | cancelled."""
        argv = trainer_command(planned.argv, gpus=planned.gpus, resume=resume)
        cvd = devices_for(self.options.devices, planned.gpus)
        context = {"sweep": {"name": self.plan.sweep, "row_index": planned.row_index, "shard_index": self.options.shard,
                             "shard_count": self.plan.shard_count, "schedule": self.plan.schedule},
                   "attempt": attempt}
        if self._packed():
            _, slot = self.plan.slot(self.options.shard or 0)
            context["slot"] = {"slot": slot, "runs_per_gpu": self.plan.runs_per_gpu, "alone": alone}
        cache_env = compile_cache_env(self.plan.compile_cache)
        for d in cache_env.values():
            Path(d).mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": cvd, CONTEXT_ENV: json.dumps(context),
               "PYTHONUNBUFFERED": "1", **cache_env}
        started = time.time()
        owner = {"run_id": planned.run_id, "sweep": self.plan.sweep, "row_index": planned.row_index,
                 "shard": self.options.shard, "session": self.options.session, "host": runs.HOST, "runner_pid": os.getpid(),
                 "child_pid": None, "cuda_visible_devices": cvd, "attempt": attempt, "resume": resume,
                 "started": started, "argv": argv, "slot": context.get("slot")}
        runs.write_json_atomic(directory / runs.OWNER, owner)
        log = open(directory / runs.STDOUT_LOG, "ab")  # noqa: SIM115 (closed after the tee thread ends)
        try:
            self.child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                          pass_fds=(lock.fd,) if lock.fd is not None else ())
        except (OSError, ValueError) as e:  # ValueError: a NUL byte in an argument or the environment
            log.close()
            self._write_runner_summary(planned, directory, started, error_class="nonzero_exit",
                                       error=f"could not start the trainer: {e}")
            return "failed"
        owner["child_pid"] = self.child.pid
        self._record_owner(directory, owner)
        if self.stop_signal is not None:  # a stop that arrived between rows
            os.kill(self.child.pid, signal.SIGINT)
        tee = threading.Thread(target=self._tee, args=(self.child, log), daemon=True)
        tee.start()
        reason = self._watch(self.child, directory, started)
        rc = self.child.returncode
        tee.join(timeout=10)  # a grandchild may hold the pipe open; its output is not worth a hang
        log.close()
        self.child = None
        result = self._finish(planned, directory, started, rc, reason)
        # the runner's record of how the attempt ended, next to the trainer's own summary
        self._record_owner(directory, {**owner, "ended": time.time(), "exit_code": rc, "result": result,
                                       "ended_by": reason})
        return result

    def _record_owner(self, directory: Path, owner: dict[str, Any]) -> None:
        """runner.json once the trainer runs: a full disk then must not orphan the trainer or lose
        its result (the lock, not this record, proves who owns the run)."""
        try:
            runs.write_json_atomic(directory / runs.OWNER, owner)
        except OSError as e:
            self.say(f"{directory.name}: cannot update {runs.OWNER}: {_describe(e, directory / runs.OWNER)}")

    def _tee(self, child: subprocess.Popen[bytes], log: BinaryIO) -> None:
        assert child.stdout is not None
        while True:
            data = child.stdout.read1(65536)
            if not data:
                break
            log.write(data)
            log.flush()
            self.emit(data)

    def _watch(self, child: subprocess.Popen[bytes], directory: Path, started: float) -> str | None:
        """Wait for the child; end it when it stalls, runs out of time or is cancelled.
        Returns stalled/timeout/cancelled/None."""
        last_iter: Any = None
        last_progress = started
        while True:
            try:
                child.wait(timeout=POLL_S)
                return None
            except subprocess.TimeoutExpired:
                pass
            if (directory / runs.CANCEL).exists():
                self.say(f"{directory.name}: cancelled (sweepctl cancel); ending it")
                self._end(child)
                return "cancelled"
            now = time.time()
            hb = runs.read_json(directory / runs.HEARTBEAT)
            if hb is not None and (hb.get("ts") or 0) >= started - 1 and hb.get("iter") != last_iter:
                last_iter, last_progress = hb.get("iter"), now
            if self.options.stall_after_s and now - last_progress > self.options.stall_after_s:
                self.say(f"{directory.name}: no progress for {self.options.stall_after_s:g} s "
                         f"(iteration {last_iter}); ending it")
                self._end(child)
                return "stalled"
            if self.options.run_timeout_s and now - started > self.options.run_timeout_s:
                self.say(f"{directory.name}: --run-timeout {self.options.run_timeout_s:g} s reached; ending it")
                self._end(child)
                return "timeout"

    def _end(self, child: subprocess.Popen[bytes]) -> None:
        """SIGTERM (the trainer writes its summary), then SIGKILL to the whole process group."""
        try:
            os.kill(child.pid, signal.SIGTERM)
            child.wait(timeout=self.options.kill_grace_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(child.pid, signal.SIGKILL)  # its own group: torchrun's workers included
            except ProcessLookupError:
                pass
            child.wait()
        except ProcessLookupError:
            child.wait()

    def _finish(self, planned: PlannedRun, directory: Path, started: float, rc: int | None,
                reason: str | None) -> str:
        path = directory / runs.SUMMARY
        summary = runs.read_json(path) if _mtime(path) >= started - 1 else None
        if reason == "cancelled":
            error = "cancelled by sweepctl cancel"
            if summary is None:
                self._write_runner_summary(planned, directory, started, error_class="cancelled", error=error, rc=rc,
                                           status="cancelled")
            else:
                summary.update(ok=False, status="cancelled", error_class="cancelled", error=error)
                runs.write_json_atomic(path, summary)
            return "cancelled"
        if reason is not None:
            error = (f"no progress for {self.options.stall_after_s:g} s" if reason == "stalled"
                     else f"ran longer than --run-timeout {self.options.run_timeout_s:g} s")
            if summary is None:
                self._write_runner_summary(planned, directory, started, error_class=reason, error=error, rc=rc)
            else:
                summary.update(ok=False, status="failed", error_class=reason, error=error)
                runs.write_json_atomic(path, summary)
            return "failed"
        if summary is None:
            volume = _volume_problem(directory) if (rc or 0) > 0 and self.stop_signal is None else None
            if volume is not None:  # the trainer failed and could not write its summary for lack of space
                self._write_runner_summary(planned, directory, started, error_class="disk", rc=rc,
                                           error=f"trainer exited with status {rc} without a summary: {volume}")
                return "failed"
            if rc is not None and rc < 0:
                name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
                error_class, error = "signal", f"trainer killed by {name} (signal {-rc}) before writing a summary"
            else:
                error_class, error = "nonzero_exit", f"trainer exited with status {rc} without writing a summary"
            interrupted = self.stop_signal is not None
            self._write_runner_summary(planned, directory, started, error_class=error_class, error=error, rc=rc,
                                       status="interrupted" if interrupted else "failed")
            return "interrupted" if interrupted else "failed"
        if summary.get("ok") is True:
            return "ok"
        return "interrupted" if summary.get("status") == "interrupted" else "failed"

    def _write_runner_summary(self, planned: PlannedRun, directory: Path, started: float, *, error_class: str,
                              error: str, rc: int | None = None, status: str = "failed") -> None:
        """The summary a dead trainer could not write: enough for status, report and a resume decision."""
        hb = runs.read_json(directory / runs.HEARTBEAT) or {}
        tail = runs.tail_metrics(directory / runs.METRICS)
        last_eval = None
        if tail.eval is not None:
            last_eval = {"train": tail.eval.get("train"), "val": tail.eval.get("val", tail.eval.get("val_loss"))}
        end = time.time()
        runs.write_json_atomic(directory / runs.SUMMARY, {
            "contract_version": 1, "run_id": planned.run_id, "ok": False, "status": status,
            "error": error, "error_class": error_class, "exit_code": rc,
            "start_time": started, "end_time": end, "elapsed_s": round(end - started, 3),
            "iter_num": hb.get("iter") if (hb.get("ts") or 0) >= started - 1 else None,
            "max_iters": planned.config.max_iters, "last_eval": last_eval,
            "last_eval_iter": tail.eval.get("iter") if tail.eval else None,
            "written_by": "sweepctl runner",
        })


def end_line(session: str, outcomes: Sequence[Any], *, stopped: bool, elapsed_s: float) -> tuple[dict[str, int], str]:
    """Counts per result and the one line a finished runner (or Ray driver) leaves in its pane."""
    counts = {k: sum(1 for o in outcomes if o.result == k)
              for k in ("ok", "failed", "interrupted", "skipped", "cancelled")}
    cancelled = f", {counts['cancelled']} cancelled" if counts["cancelled"] else ""
    line = (f"{session} done{' (stopped)' if stopped else ''}: {counts['ok']} ok, {counts['failed']} failed, "
            f"{counts['interrupted']} interrupted{cancelled}, {counts['skipped']} skipped in {elapsed_s:.0f} s")
    failed = [o.run_id for o in outcomes if o.result == "failed"]
    if failed:
        line += f"; failed: {', '.join(failed)}"
    return counts, line


def _describe(e: BaseException, where: Path) -> str:
    """One line for a row's error: a disk error names the file and the space left."""
    if is_disk_error(e):
        return disk_error_text(e, Path(getattr(e, "filename", None) or where))
    return f"{type(e).__name__}: {e}"


def _volume_problem(directory: Path) -> str | None:
    """'read-only volume' or 'no space left' for the volume holding `directory`, else None."""
    try:
        st = os.statvfs(runs.nearest_existing(directory))
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return f"the volume holding {directory} is read-only"
    free = st.f_bavail * st.f_frsize
    if free < runs.FULL_BYTES:
        return f"no space left on the volume holding {directory} ({free / 2**20:,.1f} MiB free)"
    return None


def _note_retried_alone(directory: Path, first_error: str) -> None:
    """The summary of a run retried alone says so, with the packed attempt's error."""
    path = directory / runs.SUMMARY
    summary = runs.read_json(path)
    if summary is not None:
        runs.write_json_atomic(path, {**summary, "retried_alone": True, "first_attempt_error": first_error})


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("-inf")


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "-"


def main(options: RunnerOptions) -> int:
    """Entry point of the hidden `sweepctl runner` command."""
    plan = manifest.read_plan(options.sweep_dir)
    runner = ShardRunner(plan, options)
    runner.install_signal_handlers()
    return runner.run()
