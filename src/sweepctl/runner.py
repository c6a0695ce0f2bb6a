"""The shard runner: runs inside a tmux session and walks its rows, one trainer child at a time.

    sweepctl runner /mnt/pod_artifacts/outputs/.sweeps/fineweb --shard 3 --devices 3 ...

Static schedule: the rows of the plan with row % N == shard. Dynamic schedule: every runner claims
the next unclaimed row, longest first (`sweepctl.plan.claim_order`), by creating
`claims/<launch>/<run_id>` with O_CREAT|O_EXCL, which the filesystem grants to exactly one process —
no row runs twice and no GPU idles while rows remain.

Per row: take the run's flock (inherited by the trainer, so it is held exactly as long as someone
works on the run), decide from the run table, start the trainer (`torchrun` for K > 1 GPUs), tee
its output to stdout.log and the pane, watch its heartbeat (stall) and the clock (timeout), and
make sure a summary.json exists when it ends — the trainer's own, or the runner's when the child
died without one (SIGKILL, the OOM killer). A failed row does not stop the shard unless fail_fast.

This is the only module that starts the trainer as a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from sweepctl import manifest, runs, runtable
from sweepctl.plan import Plan, PlannedRun, claim_order
from sweepctl.tmux import SHARD_PREFIX
from sweepctl.train.contract import CONTEXT_ENV

OnFailed = Literal["skip", "retry"]
DEFAULT_STALL_AFTER_S = 1800.0  # no iteration for 30 min: hung (NCCL, a dead filesystem), not slow
POLL_S = 0.5
EXPLICIT_ROW_LOCK_WAIT_S = 30.0


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


@dataclass
class Outcome:
    run_id: str
    result: str  # ok | failed | interrupted | skipped
    detail: str = ""


# --- claims (dynamic schedule) -------------------------------------------------------------------

def claim(claims_dir: Path, run_id: str, shard: int | None) -> bool:
    """Atomically claim a row; True for exactly one caller per (claims_dir, run_id)."""
    claims_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(claims_dir / run_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"shard": shard, "pid": os.getpid(), "host": runs.HOST, "ts": time.time()}, f)
    return True


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
        self.shard_log = open(options.sweep_dir / log_name, "ab")  # noqa: SIM115 (open for the runner's life)
        self.state_path = options.sweep_dir / log_name.replace(".log", ".json")
        self.stop_signal: int | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.outcomes: list[Outcome] = []

    # output ----------------------------------------------------------------------------------
    def emit(self, data: bytes) -> None:
        """To the pane and the shard log: the shard's history outlives its tmux pane."""
        with self.write_lock:
            for stream in (self.pane, self.shard_log):
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
            ids_iter: Iterator[str] = claimed_rows(ids, self.options.claims_dir, self.options.shard)
        else:
            ids_iter = iter(ids)
        for run_id in ids_iter:
            yield self.plan.run(run_id)

    def run(self) -> int:
        """Walk the rows; 0 when nothing failed. Leaves a one-line summary as the pane's last line."""
        start = time.time()
        self._write_state(started=start)
        self.say(f"sweep {self.plan.sweep}: runner pid {os.getpid()}, CUDA_VISIBLE_DEVICES={self.options.devices}, "
                 f"schedule {self.plan.schedule}")
        for planned in self.rows():
            if self.stop_signal is not None:
                break
            outcome = self.run_row(planned)
            self.outcomes.append(outcome)
            if outcome.result == "failed" and self.options.fail_fast:
                self.say("--fail-fast: stopping this shard after a failed row")
                break
        counts, line = end_line(self.options.session, self.outcomes, stopped=self.stop_signal is not None,
                                elapsed_s=time.time() - start)
        self._write_state(started=start, finished=time.time(), counts=counts)
        self.say(line)
        self.shard_log.close()
        return 1 if counts["failed"] else 0

    def _write_state(self, **fields: Any) -> None:
        runs.write_json_atomic(self.state_path, {
            "session": self.options.session, "shard": self.options.shard, "pid": os.getpid(), "host": runs.HOST,
            "devices": self.options.devices, "launched_at": self.options.launched_at, **fields})

    def run_row(self, planned: PlannedRun) -> Outcome:
        directory = Path(planned.config["out_dir"])
        lock = runs.RunLock(directory)
        # An explicit rerun was checked "not running" just before; a lock still held then belongs to
        # a trainer that has written its summary and is exiting (interpreter teardown can take
        # seconds under load), so wait for it rather than skip the row the user asked for.
        if not lock.acquire(wait_s=EXPLICIT_ROW_LOCK_WAIT_S if self.options.only else 1.0):
            self.say(f"{planned.run_id}: another process is running it; skipped")
            return Outcome(planned.run_id, "skipped", "running elsewhere")
        try:
            return self._run_locked(planned, directory, lock)
        finally:
            lock.release()

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
        while True:
            self._prepare(directory, action)
            self.say(f"{planned.run_id}: attempt {attempt}, {action} ({why})")
            result = self._attempt(planned, directory, lock, attempt=attempt, resume=action == "resume")
            summary = runs.read_json(directory / runs.SUMMARY) or {}
            if result == "ok":
                self.say(f"{planned.run_id}: ok (iter {summary.get('iter_num')}, "
                         f"best val {_fmt(summary.get('best_val_loss'))})")
                return Outcome(planned.run_id, "ok")
            error_class = summary.get("error_class") or "unknown"
            detail = f"{error_class}: {summary.get('error') or ''}".strip()
            if result == "interrupted" or self.stop_signal is not None:
                self.say(f"{planned.run_id}: interrupted")
                return Outcome(planned.run_id, "interrupted", detail)
            self.say(f"{planned.run_id}: failed ({detail})")
            if tries >= self.options.max_retries:
                return Outcome(planned.run_id, "failed", detail)
            tries += 1
            attempt += 1
            view = runs.read_run(directory, stale_after_s=self.options.stale_after_s, probe_lock=False)
            action, why = runtable.resume_or_restart(view, f"retry {tries} of {self.options.max_retries}")

    def _prepare(self, directory: Path, action: str) -> None:
        """Move the previous attempt's files aside (never delete them) before a new attempt."""
        directory.mkdir(parents=True, exist_ok=True)
        names = runs.RETRY_BACKUPS if action == "resume" else runs.RESTART_BACKUPS
        moved = runs.backup(directory, names)
        if moved:
            self.say(f"{directory.name}: kept the previous attempt as {', '.join(p.name for p in moved)}")

    def _attempt(self, planned: PlannedRun, directory: Path, lock: runs.RunLock, *, attempt: int,
                 resume: bool) -> str:
        """One trainer process, start to end. Returns ok | failed | interrupted."""
        argv = trainer_command(planned.argv, gpus=planned.gpus, resume=resume)
        cvd = devices_for(self.options.devices, planned.gpus)
        context = {"sweep": {"name": self.plan.sweep, "row_index": planned.row_index, "shard_index": self.options.shard,
                             "shard_count": self.plan.shard_count, "schedule": self.plan.schedule},
                   "attempt": attempt}
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": cvd, CONTEXT_ENV: json.dumps(context),
               "PYTHONUNBUFFERED": "1"}
        started = time.time()
        owner = {"run_id": planned.run_id, "sweep": self.plan.sweep, "row_index": planned.row_index,
                 "shard": self.options.shard, "session": self.options.session, "host": runs.HOST, "runner_pid": os.getpid(),
                 "child_pid": None, "cuda_visible_devices": cvd, "attempt": attempt, "resume": resume,
                 "started": started, "argv": argv}
        runs.write_json_atomic(directory / runs.OWNER, owner)
        log = open(directory / runs.STDOUT_LOG, "ab")  # noqa: SIM115 (closed after the tee thread ends)
        try:
            self.child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                          pass_fds=(lock.fd,) if lock.fd is not None else ())
        except OSError as e:
            log.close()
            self._write_runner_summary(planned, directory, started, error_class="nonzero_exit",
                                       error=f"could not start the trainer: {e}")
            return "failed"
        owner["child_pid"] = self.child.pid
        runs.write_json_atomic(directory / runs.OWNER, owner)
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
        runs.write_json_atomic(directory / runs.OWNER, {**owner, "ended": time.time(), "exit_code": rc,
                                                        "result": result, "ended_by": reason})
        return result

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
        """Wait for the child; end it when it stalls or runs out of time. Returns stalled/timeout/None."""
        last_iter: Any = None
        last_progress = started
        while True:
            try:
                child.wait(timeout=POLL_S)
                return None
            except subprocess.TimeoutExpired:
                pass
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
            "max_iters": planned.config.get("max_iters"), "last_eval": last_eval,
            "last_eval_iter": tail.eval.get("iter") if tail.eval else None,
            "written_by": "sweepctl runner",
        })


def end_line(session: str, outcomes: Sequence[Any], *, stopped: bool, elapsed_s: float) -> tuple[dict[str, int], str]:
    """Counts per result and the one line a finished runner (or Ray driver) leaves in its pane."""
    counts = {k: sum(1 for o in outcomes if o.result == k) for k in ("ok", "failed", "interrupted", "skipped")}
    line = (f"{session} done{' (stopped)' if stopped else ''}: {counts['ok']} ok, {counts['failed']} failed, "
            f"{counts['interrupted']} interrupted, {counts['skipped']} skipped in {elapsed_s:.0f} s")
    failed = [o.run_id for o in outcomes if o.result == "failed"]
    if failed:
        line += f"; failed: {', '.join(failed)}"
    return counts, line


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
