"""The Ray backend: each row to run becomes a Ray task that runs the shard runner's per-row code path.

    sweepctl ray up --head pod-a --worker pod-b           # a Ray cluster on the pods (ray_cluster.py)
    sweepctl launch sweeps/fineweb.csv --backend ray --ray-address 10.0.0.5:6379

`prepare` is launch's own `prepare` (CSV, plan, run table, data and out-root checks) with the GPU
line answered by the Ray cluster instead of nvidia-smi (which is never asked); `execute` writes the same
`.sweeps/<name>/` manifest and starts the driver in tmux session `sweep-ray`, then returns. The
driver (`Driver`, hidden command `sweepctl ray-driver`) submits one task per row with
`num_gpus=row.gpus`, `max_retries=--max-retries` and `retry_exceptions=[RowFailed]`. A task
(`run_row_task`) runs `ShardRunner.run_row` for its row with Ray's GPU ids as
CUDA_VISIBLE_DEVICES — the same lock, run table, trainer child, tee, summaries and `.bak-` copies as
a shard runner — and raises `RowFailed` when the row ended failed, so Ray runs it again.

`sweepctl rerun RUN_ID` of a run whose sweep was launched with `--backend ray` (launch.json says so)
starts the same driver, on the same cluster, for that one row, forced, in tmux session
rerun-<RUN_ID> (`rerun_driver_argv`).

Why a driver in tmux: Ray ends a driver's tasks when the driver exits, so the driver must outlive
`launch`; in tmux it also survives the SSH session, like the shard runners.

Run directories are written under the planned out_root on whichever node runs the row: put
out_root on a volume every node mounts (or `pull` from each node). Every node needs the data.

The only module that imports ray, and only inside functions: without the `ray` extra installed,
`import_ray` raises a SweepctlError saying how to install it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from sweepctl import launch
from sweepctl.backends import ray_guard
from sweepctl.errors import RefusedError, SweepctlError
from sweepctl.pod.gpus import GpuQuery
from sweepctl.pod.tmux import SHARD_PREFIX, Tmux, attach_command
from sweepctl.runner import Outcome, RunnerOptions, ShardRunner, end_line
from sweepctl.settings import Settings
from sweepctl.state import manifest, runs, runtable
from sweepctl.sweep.plan import Plan, PlannedRun, claim_order
from sweepctl.sweep.spec import read_sweep
from sweepctl.train.contract import write_bytes_atomic

RAY_VERSION = "2.60.0"  # the `ray` extra's pin: the driver and every node must run the same Ray
INSTALL_HINT = f"pip install 'sweepctl[ray]' (Ray {RAY_VERSION}) here and on every node"
DRIVER_SESSION = f"{SHARD_PREFIX}ray"  # a shard-like name, so status lists it with the shard sessions
DRIVER_LOG, DRIVER_STATE = "ray-driver.log", "ray-driver.json"
TASK_LOG_DIR = "ray"  # .sweeps/<name>/ray/<launch_id>/<run_id>.log: each row's runner log
RAY_DEVICES = "assigned by Ray per row"  # what launch and rerun print for CUDA_VISIBLE_DEVICES
CONNECT_TIMEOUT_S = 5.0  # ray.init retries an unreachable address for minutes; a TCP probe says so in seconds
WAIT_POLL_S = 1.0  # how often the driver wakes to notice a stop signal
GUARD_EXIT_S = 30.0  # a guard told `done` exits at once; on a loaded node, give it time to start first


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise SweepctlError("the Ray backend needs Ray, which is not installed", hint=INSTALL_HINT) from None
    return ray


class RowFailed(Exception):
    """A row's task raises this when the row ended failed, so Ray retries it (`retry_exceptions`)."""

    def __init__(self, run_id: str, detail: str, attempt: int | None = None):
        super().__init__(run_id, detail, attempt)
        self.run_id, self.detail, self.attempt = run_id, detail, attempt

    def __str__(self) -> str:
        return f"{self.run_id} failed (attempt {self.attempt}): {self.detail}"


# --- connecting ----------------------------------------------------------------------------------

def default_address(address: str | None) -> str:
    """--ray-address, else RAY_ADDRESS, else `auto` (the cluster `ray start` left on this machine)."""
    return address or os.environ.get("RAY_ADDRESS") or "auto"


def _probe(address: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # `auto` and other forms Ray resolves itself, quickly
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise SweepctlError(f"no Ray cluster answers at {address}: {e.strerror or e}", where=address,
                            hint="start one (`sweepctl ray up --head HOST ...` or `ray start --head`) "
                                 "or pass the head's --ray-address IP:6379") from None


@contextlib.contextmanager
def connected(address: str) -> Iterator[ModuleType]:
    """Ray, connected to `address`; a process already connected (a test, a notebook) keeps its connection."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    _probe(address)
    try:
        ray.init(address=address, logging_level="WARNING", configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SweepctlError(f"could not connect to Ray at {address}: {str(e).splitlines()[0]}", where=address,
                            hint="start a cluster with `sweepctl ray up` (or `ray start --head`), or pass "
                                 "--ray-address HEAD_IP:6379") from None
    try:
        yield ray
    finally:
        ray.shutdown()


# --- launch: prepare (reads), execute (writes, starts the driver) --------------------------------

@dataclass
class RayLaunchOptions(launch.LaunchOptions):
    """launch's options plus the backend's; `asdict` puts them into launch.json."""

    shards: int = 1  # one plan shard: Ray, not the plan, places rows
    backend: str = "ray"
    ray_address: str | None = None


def prepare(csv_path: Path, options: RayLaunchOptions, settings: Settings) -> launch.LaunchPreview:
    """launch.prepare for a Ray cluster: the GPU pre-flight line asks the cluster, not nvidia-smi."""
    # The widest row sets the plan's GPUs per shard, so the sweep is read before launch.prepare plans it.
    sweep = read_sweep(csv_path, name=options.name)
    options = replace(options, shards=1, schedule="dynamic", gpus_per_shard=max((r.gpus for r in sweep.runs), default=1),
                      ray_address=default_address(options.ray_address))
    resolved: list[str] = []

    def on_the_cluster(plan: Plan, out_root: Path) -> tuple[GpuQuery, list[launch.Check]]:
        # The rows run on the cluster's GPUs, not this machine's; the driver runs in tmux here.
        check, address = cluster_check(options.ray_address, plan)
        resolved.extend([address] if address else [])
        return GpuQuery([]), [check, *launch.storage_checks(plan, out_root), launch.tmux_check()]

    preview = launch.prepare(csv_path, options, settings, checks=on_the_cluster)
    if resolved:  # the driver connects to what we checked, not to `auto` again
        preview.options = replace(options, ray_address=resolved[0])
    return preview


def cluster_check(address: str, plan: Plan) -> tuple[launch.Check, str | None]:
    """One pre-flight line: the cluster's GPUs against the rows'; and the cluster's GCS address.

    A row asking for more GPUs than the largest node has would wait in Ray's queue forever."""
    what = f"Ray {address}"
    try:
        with connected(address) as ray:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            resolved = ray.get_runtime_context().gcs_address
    except SweepctlError as e:
        return launch.Check(what, False, e.message, hint=e.hint or ""), None
    what = f"Ray {resolved}"
    gpus = [float(n.get("Resources", {}).get("GPU", 0)) for n in nodes]
    cpus = sum(float(n.get("Resources", {}).get("CPU", 0)) for n in nodes)
    largest = max(gpus, default=0.0)
    found = (f"{len(nodes)} node(s), {sum(gpus):g} GPUs (largest node {largest:g}), {cpus:g} CPUs, "
             f"ray {ray.__version__}")
    too_big = [r for r in plan.runs if r.gpus > largest]
    if too_big:
        r = max(too_big, key=lambda r: r.gpus)
        return launch.Check(what, False, f"{found}: {len(too_big)} row(s) need more GPUs than any node has, "
                            f"e.g. {r.run_id} asks for {r.gpus}",
                            hint="add nodes with more GPUs, lower the rows' gpus column, or (CPU rows) start "
                                 "Ray with --num-gpus N logical GPUs"), resolved
    return launch.Check(what, True, f"{found}; rows ask for 1..{max(r.gpus for r in plan.runs)} each"), resolved


@dataclass
class RayLaunchResult:
    preview: launch.LaunchPreview
    how: str | None  # started | replaced | None when nothing was left to run
    rows: int
    address: str
    attach: str
    status_command: str


def driver_argv(sweep_dir: Path, address: str, launch_id: str, policy: launch.LaunchOptions, *,
                stale_after_s: float, session: str = DRIVER_SESSION, only: list[str] | None = None) -> list[str]:
    """The hidden `sweepctl ray-driver` command: a launch's (every row) or a rerun's (`only`, its own session)."""
    argv = [sys.executable, "-m", "sweepctl", "ray-driver", str(sweep_dir), "--address", address,
            "--launch-id", launch_id, "--session", session, "--max-retries", str(policy.max_retries),
            "--stale-after", repr(stale_after_s)]
    for run_id in only or []:
        argv += ["--only", run_id]
    for flag, on in (("--force", policy.force), ("--skip-failed", policy.skip_failed)):
        if on:
            argv.append(flag)
    return argv + launch.runner_policy_flags(retry_failed=policy.retry_failed, stall_after_s=policy.stall_after_s,
                                             run_timeout_s=policy.run_timeout_s)


def execute(preview: launch.LaunchPreview, *, tmux: Tmux | None = None) -> RayLaunchResult:
    """Refuse up front as launch does, then write the manifest and start the driver session."""
    launch.refuse_if_needed(preview)
    options = preview.options
    assert isinstance(options, RayLaunchOptions)
    socket_path = preview.settings.tmux_socket
    result = RayLaunchResult(preview, None, len(preview.todo), default_address(options.ray_address),
                             attach_command(DRIVER_SESSION, socket_path),
                             f"sweepctl status --out-root {preview.out_root}")
    if not preview.todo:
        return result
    tmux = tmux or Tmux(socket_path)
    info = tmux.session(DRIVER_SESSION)
    if info is not None and info.alive:
        raise RefusedError(f"tmux session {DRIVER_SESSION} is still running a Ray driver",
                           where=DRIVER_SESSION, hint=f"wait for it, or `sweepctl stop --all`; look: {result.attach}")
    launched_at = time.time()
    launch_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(launched_at)) + f"-{os.getpid()}"
    launch.write_manifest(preview, launch_id=launch_id, launched_at=launched_at, shards=[])
    launch.include_cancelled(preview)
    argv = driver_argv(preview.sweep_dir, result.address, launch_id, options, stale_after_s=preview.settings.stale_after_s)
    result.how = tmux.start(DRIVER_SESSION, argv, env={}, cwd=Path.cwd())
    return result


def rerun_driver_argv(sweep_dir: Path, run_id: str, address: str | None, *, session: str, stale_after_s: float,
                      force: bool, gpu: int | None) -> list[str]:
    """`sweepctl rerun RUN_ID` of a Ray-launched run: a driver for that one row, on the cluster the launch used.

    control.rerun has checked the run table (not running; ok only with force), so the driver forces
    the row, once, like a tmux rerun's runner. Checked here, before a session starts: Ray is
    installed and the cluster still answers."""
    address = default_address(address)
    force_flag = " --force" if force else ""
    if gpu is not None:
        raise SweepctlError(f"--gpu picks a GPU of this machine, and this run was launched on Ray ({address}), "
                            "which gives each row its GPUs", where=run_id,
                            hint=f"drop --gpu: sweepctl rerun{force_flag} {run_id}")
    import_ray()
    try:
        _probe(address)
    except SweepctlError as e:
        raise SweepctlError(f"this run was launched on Ray, and {e.message}", where=run_id,
                            hint=f"start that cluster again (sweepctl ray up ...), then sweepctl rerun{force_flag} "
                                 f"{run_id}; or launch the sweep on the cluster you have: sweepctl launch CSV "
                                 "--backend ray --ray-address HEAD_IP:6379 --retry-failed") from None
    launch_id = "rerun-" + time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    return driver_argv(sweep_dir, address, launch_id, launch.LaunchOptions(shards=1, force=True),
                       stale_after_s=stale_after_s, session=session, only=[run_id])


# --- the task: one row, on whichever node Ray picked ---------------------------------------------

@dataclass
class TaskPayload:
    """What every task needs, put into Ray's object store once per launch (not once per row)."""

    plan_json: str
    files: dict[str, bytes]  # plan.json and config copies, relative to sweep_dir: for nodes that lack them
    driver: DriverOptions  # the sweep_dir, launch_id, policy and limits the driver runs under


def task_session(launch_id: str, run_id: str) -> str:
    # ShardRunner logs to <sweep_dir>/<session>.log: one log per row and launch, in a folder of its own.
    return f"{TASK_LOG_DIR}/{launch_id}/{run_id}"


def run_row_task(payload: TaskPayload, run_id: str) -> dict[str, Any]:
    """Run one row as a shard runner would; raise RowFailed when it ended failed (Ray retries it).

    Each attempt starts a fresh run-table decision with `launched_at` = now, so a retry sees the
    previous attempt's failed summary as older and runs again (resuming from its checkpoint when
    there is one), and the runner keeps the previous attempt's logs as `.bak-` copies. A retry is
    recognised by the run's runner.json naming this launch's task session: it never repeats
    `--force` (a row that finished ok must not be redone) and always retries a failure."""
    import ray

    options = payload.driver
    sweep_dir = options.sweep_dir
    _materialize(sweep_dir, payload.files)
    plan = Plan.model_validate_json(payload.plan_json)
    planned = plan.run(run_id)
    session = task_session(options.launch_id, run_id)
    (sweep_dir / session).parent.mkdir(parents=True, exist_ok=True)
    directory = Path(planned.config.out_dir)
    previous = runs.read_json(directory / runs.OWNER) or {}
    retry = previous.get("session") == session
    devices = ",".join(str(g) for g in ray.get_gpu_ids())
    options = RunnerOptions(
        sweep_dir=sweep_dir, shard=None, devices=devices, session=session, only=[run_id],
        max_retries=0,  # Ray retries (possibly on another node); the runner does one attempt per task
        stall_after_s=options.policy.stall_after_s, run_timeout_s=options.policy.run_timeout_s,
        on_failed="retry" if retry or options.policy.retry_failed else "skip", force=options.policy.force and not retry,
        launched_at=time.time(), kill_grace_s=options.kill_grace_s, stale_after_s=options.stale_after_s)
    # No pane: the driver's pane shows one line per row, and the row's log has it all.
    with open(os.devnull, "wb") as pane, _guarded(directory, sweep_dir / f"{session}.log", options.kill_grace_s):
        runner = ShardRunner(plan, options, pane=pane)
        try:
            with _forwarding_signals(runner):
                outcome = runner.run_row(planned)
        finally:
            runner.close()
    attempt = (runs.read_json(directory / runs.OWNER) or {}).get("attempt")
    if outcome.result == "failed":
        raise RowFailed(run_id, f"{outcome.detail} (on {runs.HOST}, CUDA_VISIBLE_DEVICES={devices})", attempt)
    return {"run_id": run_id, "result": outcome.result, "detail": outcome.detail, "host": runs.HOST,
            "devices": devices, "attempt": attempt}


@contextlib.contextmanager
def _guarded(directory: Path, log: Path, kill_grace_s: float) -> Iterator[None]:
    """While the row runs, a `ray_guard` process ends its trainer if this worker dies (see ray_guard.py).

    Its own session keeps it out of a clean-up of the worker's process group; the pipe's write end
    is not inheritable, so only this process holds it and the trainer never does."""
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as pipe:
        try:
            with open(log, "ab") as out:
                guard = subprocess.Popen([sys.executable, "-m", "sweepctl.backends.ray_guard", str(directory),
                                          str(os.getpid()), repr(kill_grace_s)],
                                         stdin=read_end, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            os.close(read_end)  # the guard has its own copy
        try:
            yield
        finally:
            pipe.write(ray_guard.DONE)
            pipe.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                guard.wait(timeout=GUARD_EXIT_S)  # it exits as soon as it reads `done`


@contextlib.contextmanager
def _forwarding_signals(runner: ShardRunner) -> Iterator[None]:
    """While the row runs, SIGINT (`ray.cancel`) and SIGTERM (`ray stop`) reach the runner, which
    passes them to the trainer: it writes an `interrupted` summary instead of dying mid-write.

    Ray's worker blocks SIGINT, and a blocked signal mask survives fork and exec: unblocked here,
    or the trainer child would never hear the stop the runner forwards to it."""
    stopping = {signal.SIGINT, signal.SIGTERM}
    previous = {}
    try:
        for sig in stopping:
            previous[sig] = signal.signal(sig, runner.on_signal)
    except ValueError:
        pass  # not the main thread (an async actor): Ray's own handling applies
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _materialize(sweep_dir: Path, files: dict[str, bytes]) -> None:
    """A node without the launch's volume still needs plan.json and the config copies the argv names."""
    for rel, content in files.items():
        path = sweep_dir / rel
        if path.exists():
            continue
        write_bytes_atomic(path, content)


def manifest_files(sweep_dir: Path) -> dict[str, bytes]:
    """plan.json and every file under configs/: what a task's trainer argv may refer to."""
    files = {manifest.PLAN_FILE: (sweep_dir / manifest.PLAN_FILE).read_bytes()}
    configs = sweep_dir / "configs"
    if configs.is_dir():
        for p in sorted(configs.rglob("*")):
            if p.is_file() and ".bak-" not in p.name:
                files[str(p.relative_to(sweep_dir))] = p.read_bytes()
    return files


# --- the driver ----------------------------------------------------------------------------------

@dataclass
class DriverOptions:
    sweep_dir: Path
    address: str
    launch_id: str
    # The launch's choices as the run table and the runner read them: force / retry_failed /
    # skip_failed, max_retries (Ray's, per row), stall_after_s, run_timeout_s. Its tmux-only fields
    # (shards, schedule, fail_fast) are not used.
    policy: launch.LaunchOptions = field(default_factory=lambda: launch.LaunchOptions(shards=1))
    only: list[str] | None = None  # these rows, not the whole plan (a rerun)
    stale_after_s: float = 120.0
    kill_grace_s: float = 30.0
    session: str = DRIVER_SESSION

    @property
    def log_name(self) -> str:
        """ray-driver.log for a launch's driver; <session>.log for another (a rerun's), as runners do."""
        return DRIVER_LOG if self.session == DRIVER_SESSION else f"{self.session}.log"


@dataclass
class RowResult(Outcome):
    """A row's outcome as the driver learns it from Ray: where it ran, and which attempt it was."""

    host: str | None = None
    devices: str | None = None
    attempt: int | None = None


@dataclass
class Driver:
    """Submits the rows, reports each as it ends, and cancels what is left on a stop signal."""

    plan: Plan
    options: DriverOptions
    out: TextIO = field(default_factory=lambda: sys.stdout)
    results: list[RowResult] = field(default_factory=list)
    stop_signal: int | None = None

    def __post_init__(self) -> None:
        self.log = open(self.options.sweep_dir / self.options.log_name, "a")  # noqa: SIM115 (open for the driver's life)
        self.state_path = self.options.sweep_dir / self.options.log_name.replace(".log", ".json")

    def say(self, message: str) -> None:
        """To the pane and ray-driver.log: the driver's history outlives its tmux pane."""
        line = f"[sweepctl {self.options.session} {time.strftime('%H:%M:%S')}] {message}\n"
        for stream in (self.out, self.log):
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):
                pass

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_signal = signum  # acted on by the wait loop: no Ray calls inside a signal handler

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _write_state(self, **fields: Any) -> None:
        # Shaped like a shard runner's state file, so `sweepctl stop` finds and signals the driver.
        runs.write_json_atomic(self.state_path, {
            "session": self.options.session, "shard": None, "pid": os.getpid(), "host": runs.HOST,
            "address": self.options.address, "launch_id": self.options.launch_id, **fields})

    def rows_to_run(self) -> list[PlannedRun]:
        """The run table again, as launch applied it: rows finished since launch are not submitted.
        Like a shard runner, the driver is not told --include-cancelled: a row's cancel marker decides
        (launch moved aside the markers of the rows it includes; a rerun moves its row's)."""
        policy = replace(self.options.policy.table_policy(), include_cancelled=None)
        decisions = runtable.read_table(self.plan, policy, stale_after_s=self.options.stale_after_s,
                                        only=self.options.only)
        for d in decisions:
            if d.action == "skip":
                self.results.append(RowResult(d.run_id, "skipped", d.detail or d.state))
        todo = {d.run_id for d in decisions if d.action != "skip"}
        # Longest first, as dynamic shard runners claim: Ray hands free GPUs to queued tasks in
        # submission order, so the sweep ends close to max(longest row, total / GPUs).
        return [self.plan.run(run_id) for run_id in claim_order(self.plan) if run_id in todo]

    def run(self) -> int:
        """0 when no row failed. Ray must be connected (`driver_main` does it)."""
        import ray

        start = time.time()
        self._write_state(started=start)
        todo = self.rows_to_run()
        payload = TaskPayload(self.plan.model_dump_json(), manifest_files(self.options.sweep_dir), self.options)
        payload_ref = ray.put(payload)
        task = ray.remote(run_row_task)
        pending = {}
        for r in todo:
            ref = task.options(num_gpus=r.gpus, max_retries=self.options.policy.max_retries,
                               retry_exceptions=[RowFailed], name=f"sweepctl {r.run_id}").remote(payload_ref, r.run_id)
            pending[ref] = r.run_id
        self.say(f"sweep {self.plan.sweep}: driver pid {os.getpid()} on Ray {self.options.address}; {len(todo)} row(s) "
                 f"submitted, {len(self.results)} skipped; retries per row: {self.options.policy.max_retries}; "
                 f"row logs in {self.options.sweep_dir / TASK_LOG_DIR / self.options.launch_id}")
        try:
            self._wait(ray, pending)
        except BaseException as e:  # the cluster went away, a bug: the state file must not say "running"
            self.say(f"driver failed with {len(pending)} row(s) outstanding: {type(e).__name__}: {e}")
            self._write_state(started=start, finished=time.time(), error=f"{type(e).__name__}: {e}")
            self.log.close()
            raise
        counts, line = end_line(self.options.session, self.results, stopped=self.stop_signal is not None,
                                elapsed_s=time.time() - start)
        self._write_state(started=start, finished=time.time(), counts=counts)
        self.say(line)
        self.log.close()
        return 1 if counts["failed"] else 0

    def _wait(self, ray: ModuleType, pending: dict[Any, str]) -> None:
        """Report rows as they end; on a stop signal, cancel every row still queued or running."""
        cancelled = False
        while pending:
            if self.stop_signal is not None and not cancelled:
                self.say(f"signal {self.stop_signal}: cancelling {len(pending)} row(s); running trainers write "
                         "`interrupted` summaries")
                for ref in pending:
                    ray.cancel(ref)  # not force: the task hears SIGINT and lets its trainer finish cleanly
                cancelled = True
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_POLL_S)
            for ref in ready:
                self._report(self._result(ray, ref, pending.pop(ref)))

    def _result(self, ray: ModuleType, ref: Any, run_id: str) -> RowResult:
        try:
            value = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return RowResult(run_id, "interrupted", "cancelled")
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, RowFailed):
                return RowResult(run_id, "failed", cause.detail, attempt=cause.attempt)
            return RowResult(run_id, "failed", f"task error: {str(cause or e).splitlines()[0]}")
        except ray.exceptions.RayError as e:  # worker or node died after the last retry
            return RowResult(run_id, "failed", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return RowResult(run_id, value["result"], value.get("detail") or "", value.get("host"), value.get("devices"),
                         value.get("attempt"))

    def _report(self, r: RowResult) -> None:
        self.results.append(r)
        where = f" on {r.host} (CUDA_VISIBLE_DEVICES={r.devices})" if r.host else ""
        attempt = f", attempt {r.attempt}" if r.attempt else ""
        detail = f": {r.detail}" if r.detail and r.result != "ok" else ""
        self.say(f"{r.run_id}: {r.result}{where}{attempt}{detail}")


def driver_main(options: DriverOptions) -> int:
    """Entry point of the hidden `sweepctl ray-driver` command (runs in tmux session sweep-ray)."""
    plan = manifest.read_plan(options.sweep_dir)
    with connected(options.address):
        driver = Driver(plan, options)
        driver.install_signal_handlers()
        return driver.run()
