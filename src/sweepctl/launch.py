"""`sweepctl launch`, as a library: validate, pre-flight, apply the run table, write the manifest,
start one tmux session per shard — and return at once.

    preview = prepare(Path("sweeps/fineweb.csv"), LaunchOptions(shards=8), load_settings())
    result = execute(preview)          # raises RefusedError (exit 2) before writing anything

`prepare` only reads (the CSV, the run directories, nvidia-smi, the disk), so `--dry-run` is
`prepare` plus printing. On a pod of a multi-pod sweep it first refuses rows that the sweep's
`upload/hosts.json` gives to another pod (`sweepctl.sweep.hosts.check_local_launch`), unless the
laptop's `launch --host` runs it (the laptop placed the rows against every pod's record).
`execute` refuses up front — failed runs in the way, a pre-flight failure, every needed tmux
session still busy — and only then writes `.sweeps/<name>/` and starts sessions. The runners
re-check every row under its lock; launch's table is the plan, the lock is the guarantee.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sweepctl import __version__
from sweepctl.errors import RefusedError, SweepctlError
from sweepctl.pod.gpus import GpuQuery, query_gpus
from sweepctl.pod.tmux import Tmux, attach_command, shard_session, tmux_version
from sweepctl.runner import DEFAULT_STALL_AFTER_S
from sweepctl.settings import Settings, compile_cache_dir
from sweepctl.state import manifest, runs, runtable
from sweepctl.state.runtable import Decision, Policy
from sweepctl.sweep.plan import Plan, Schedule, cuda_visible_devices, make_plan, merge_plans
from sweepctl.sweep.spec import Sweep, read_sweep, sweep_name_of
from sweepctl.train.contract import RUN_ID_RE

MIN_FREE_BYTES = 1 << 30  # checkpoints of a 48-layer model are hundreds of MB each


@dataclass
class LaunchOptions:
    shards: int
    schedule: Schedule = "static"
    gpus_per_shard: int = 1
    name: str | None = None
    no_wandb: bool = False
    dry_run: bool = False
    force: bool = False
    retry_failed: bool = False
    skip_failed: bool = False
    fail_fast: bool = False
    max_retries: int = 0
    stall_after_s: float | None = DEFAULT_STALL_AFTER_S
    run_timeout_s: float | None = None
    include_cancelled: bool = False  # run rows `sweepctl cancel` withdrew (their markers are moved aside)
    backend: str = "tmux"  # the backend that runs the rows (backends.get), kept in launch.json for rerun
    runs_per_gpu: int = 1  # slots per GPU group (sessions = shards x runs_per_gpu); > 1 needs the dynamic schedule
    # Set only by the laptop's `launch --host` (hidden `--placed-on`): this pod's name in the sweep's
    # multi-pod layout, and that the laptop placed these rows against every pod's record.
    placed_on: str | None = None

    def table_policy(self) -> Policy:
        return Policy(force=self.force, retry_failed=self.retry_failed, skip_failed=self.skip_failed,
                      include_cancelled=self.include_cancelled)


@dataclass
class Check:
    """One pre-flight line: what was checked, whether it passed, and what was found."""

    what: str
    ok: bool
    detail: str
    hint: str = ""


@dataclass
class LiveQueue:
    """A dynamic sweep whose runners are working: where their claims are, and what joins them."""

    sessions: list[str]  # the live runners' tmux sessions
    claims_dir: Path
    wanted: Plan  # the CSV as planned now; merged into plan.json again under the lock at execute
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    drained: bool = False  # every live runner had found the queue empty before the rows were written


@dataclass
class LaunchPreview:
    sweep: Sweep
    plan: Plan
    options: LaunchOptions
    settings: Settings
    out_root: Path
    sweep_dir: Path
    config_copies: dict[Path, Path]
    gpus: GpuQuery
    checks: list[Check]
    rows: list[Decision]
    shards_to_start: list[int]
    refusals: list[str] = field(default_factory=list)  # run-table refusals: failed rows, --force on live rows
    pod: str | None = None  # this machine's name in the sweep's hosts.json (kept in launch.json), if known
    joining: LiveQueue | None = None  # the sweep's runners are live: the CSV's rows join their queue

    @property
    def todo(self) -> list[Decision]:
        return [r for r in self.rows if r.action != "skip"]


@dataclass
class StartedShard:
    shard: int
    session: str
    devices: str
    rows: int | None  # None under the dynamic schedule (rows are claimed)
    how: str  # started | replaced


@dataclass
class LaunchResult:
    preview: LaunchPreview
    started: list[StartedShard]
    refused_sessions: list[str]
    attach: str
    status_command: str


# --- prepare (reads only) ------------------------------------------------------------------------

# The pre-flight of where the rows run, given the plan and the out-root: the GPUs it found (empty
# where this machine's do not matter) and its checks. A backend passes its own to `prepare`.
Preflight = Callable[[Plan, Path], tuple[GpuQuery, list[Check]]]


def this_machine(plan: Plan, out_root: Path) -> tuple[GpuQuery, list[Check]]:
    """Rows on this machine's GPUs, in tmux sessions here: nvidia-smi, then every check."""
    gpus = query_gpus()
    return gpus, preflight(plan, gpus, out_root)


def prepare(csv_path: Path, options: LaunchOptions, settings: Settings, *,
            checks: Preflight = this_machine) -> LaunchPreview:
    sweep = read_sweep(csv_path, name=options.name)  # every row valid, or nothing starts
    if not RUN_ID_RE.fullmatch(sweep.name):
        raise SweepctlError(f"sweep name {sweep.name!r} is not a safe directory name",
                            hint="pass --name with letters, digits, '.', '_', '-'")
    if options.schedule not in ("static", "dynamic"):
        raise SweepctlError(f"--schedule must be static or dynamic, got {options.schedule!r}")
    if sum((options.force, options.retry_failed, options.skip_failed)) > 1:
        raise SweepctlError("--force, --retry-failed and --skip-failed are alternatives; pass one")
    # Absolute paths: the trainer runs in a tmux pane whose working directory is not ours to assume.
    out_root = Path(settings.out_root).expanduser().absolute()
    data_dir = Path(settings.data_dir).expanduser().absolute()
    sweep_dir = manifest.sweep_dir(out_root, sweep.name)
    pod = check_placement(sweep, sweep_dir, options.placed_on)
    copies = _config_copies(sweep, sweep_dir)
    plan = make_plan(sweep, shards=options.shards, schedule=options.schedule,
                     gpus_per_shard=options.gpus_per_shard, out_root=out_root, data_dir=data_dir,
                     no_wandb=options.no_wandb, config_refs={src: str(dst) for src, dst in copies.items()},
                     runs_per_gpu=options.runs_per_gpu, compile_cache=compile_cache_dir(settings, out_root))
    joining = None
    if (live := live_runners(sweep_dir)) and (sweep_dir / manifest.PLAN_FILE).exists():
        joining = join_live_queue(sweep_dir, plan, live, out_root, csv_path, options)
    if joining is not None:
        plan = merge_plans(manifest.read_plan(sweep_dir), plan, started_rows(sweep_dir, joining.claims_dir, out_root),
                           str(csv_path))[0]
    gpus, found = checks(plan, out_root)
    rows = runtable.read_table(plan, options.table_policy(), stale_after_s=settings.stale_after_s)
    refusals = runtable.refusals(rows, out_root)
    todo = {r.run_id for r in rows if r.action != "skip"}
    if joining is not None:  # every shard whose runner has ended gets a new one on the same claims
        shards = list(range(plan.shard_count))
    elif plan.schedule == "static":
        shards = [s.index for s in plan.shards if todo.intersection(s.run_ids)]
    else:
        # slot 0 of every GPU first: fewer rows than slots spread over the GPUs before they pack
        shards = sorted(range(plan.shard_count), key=lambda i: plan.slot(i)[::-1])[:len(todo)]
    return LaunchPreview(sweep=sweep, plan=plan, options=options, settings=settings, out_root=out_root,
                         sweep_dir=sweep_dir, config_copies=copies, gpus=gpus, checks=found, rows=rows,
                         shards_to_start=shards, refusals=refusals, pod=pod, joining=joining)


def live_runners(sweep_dir: Path) -> list[dict[str, Any]]:
    """The state records (`shard-<i>.json`) of this sweep's shard runners alive on this machine."""
    live = []
    for state_file in sorted(sweep_dir.glob("shard-*.json")):
        record = runs.read_json(state_file) or {}
        pid = record.get("pid")
        if (isinstance(pid, int) and not record.get("finished") and not record.get("drained")
                and record.get("host") in (None, runs.HOST) and runs.pid_alive(pid)):
            live.append(record)
    return live


def live_shard_count(csv_path: Path, name: str | None, settings: Settings) -> int | None:
    """The shard count of the CSV's sweep when its runners are live here (rows then join them)."""
    sweep_dir = manifest.sweep_dir(Path(settings.out_root).expanduser().absolute(), name or sweep_name_of(csv_path))
    if not live_runners(sweep_dir):
        return None
    try:
        return manifest.read_plan(sweep_dir).shard_count
    except (OSError, ValueError):
        return None


def join_live_queue(sweep_dir: Path, wanted: Plan, live: list[dict[str, Any]], out_root: Path, csv_path: Path,
                    options: LaunchOptions) -> LiveQueue | None:
    """Check that the CSV's rows can join the live runners' queue (a dynamic schedule, no option
    that would redo their rows), and where their claims are. None: a static sweep's CSV brings
    nothing new, so this is a plain relaunch (its shards whose runner ended get a new one)."""
    sessions = [str(r.get("session")) for r in live]
    current = manifest.read_plan(sweep_dir)
    where = str(sweep_dir / manifest.PLAN_FILE)
    if current.schedule != "dynamic":
        planned = {r.run_id: r.config for r in current.runs}
        if all(planned.get(r.run_id) == r.config for r in wanted.runs):
            return None
        raise RefusedError(f"sweep {current.sweep} is running ({', '.join(sessions)}) under the static schedule: "
                           "its rows were dealt to the shards at launch, so new rows cannot join them", where=where,
                           hint="wait for it to finish and launch again, or stop it and relaunch under the dynamic "
                                "schedule (interrupted rows resume): sweepctl stop --all && sweepctl launch "
                                f"{shlex.quote(str(csv_path))} --schedule dynamic --retry-failed")
    if options.force:
        raise RefusedError(f"--force would start over rows that sweep {current.sweep}'s live runners "
                           f"({', '.join(sessions)}) may be running", where=where,
                           hint=f"add rows without --force: sweepctl launch {shlex.quote(str(csv_path))} "
                                "--schedule dynamic")
    claims = next((Path(r["claims_dir"]) for r in live if r.get("claims_dir")), None)
    if claims is None:  # a runner from before claims were recorded: the last launch's
        claims = manifest.claims_dir(sweep_dir, str(manifest.read_launch(sweep_dir).get("launch_id") or ""))
    return LiveQueue(sessions=sessions, claims_dir=claims, wanted=wanted)


def started_rows(sweep_dir: Path, claims_dir: Path, out_root: Path) -> set[str]:
    """Rows a change may no longer touch: claimed in the live queue, or with a runner record."""
    claimed = {p.name for p in claims_dir.iterdir()} if claims_dir.is_dir() else set()
    plan = manifest.read_plan(sweep_dir)
    return claimed | {r.run_id for r in plan.runs if (runs.run_dir(out_root, r.run_id) / runs.OWNER).exists()}


def check_placement(sweep: Sweep, sweep_dir: Path, placed_on: str | None = None) -> str | None:
    """This machine's name in the sweep's multi-pod layout, after refusing rows the layout gives to
    another pod (RefusedError, before anything is written). None: no name known, or no layout.
    `placed_on`: the laptop's `launch --host` placed these rows against every pod's record."""
    from sweepctl.sweep.hosts import check_local_launch

    if placed_on:
        return placed_on
    path = manifest.layout_path(sweep_dir)
    try:
        layout = json.loads(path.read_text())
    except FileNotFoundError:
        layout = None
    except (OSError, ValueError) as e:  # unread, any row of another pod could start here
        raise SweepctlError(f"cannot read the record of which pod runs which row of sweep {sweep.name}: {e}",
                            where=str(path), hint="copy it from another pod of the sweep (they hold the same file), "
                                                  "or launch from the laptop with --host") from None
    if layout is not None and not isinstance(layout, dict):
        raise SweepctlError(f"not a layout of sweep {sweep.name} (a JSON object)", where=str(path),
                            hint="copy it from another pod of the sweep, or launch from the laptop with --host")
    # The name the laptop gave this pod, kept by its last launch here; a manifest copied to another
    # machine (`pull`) names the pod it came from, not that machine.
    last = manifest.read_launch(sweep_dir)
    pod = last.get("pod") if last.get("host") == runs.HOST and isinstance(last.get("pod"), str) else None
    check_local_launch(sweep.name, layout, [r.run_id for r in sweep.runs], pod, where=str(path))
    return pod


def _config_copies(sweep: Sweep, sweep_dir: Path) -> dict[Path, Path]:
    """Each config file -> its copy under the manifest, so a later edit cannot change a rerun."""
    copies: dict[Path, Path] = {}
    taken: set[str] = set()
    for i, src in enumerate(sweep.config_files):
        name = src.name if src.name not in taken else f"{i}-{src.name}"
        taken.add(name)
        copies[src] = sweep_dir / "configs" / name
    return copies


def all_rows_on_cpu(plan: Plan) -> bool:
    return all(r.config.device == "cpu" for r in plan.runs)


def preflight(plan: Plan, gpus: GpuQuery, out_root: Path) -> list[Check]:
    """GPUs vs shards, data shards, out-root, tmux: one table, every line checked."""
    return [*gpu_checks(plan, gpus), *storage_checks(plan, out_root), tmux_check()]


def gpu_checks(plan: Plan, gpus: GpuQuery) -> list[Check]:
    """The shards' GPUs are visible here, and K slots per GPU fit in its memory."""
    checks = []
    visible = {g.index for g in gpus.gpus}
    needed = sorted({d for s in plan.shards for d in s.devices})
    missing = [d for d in needed if d not in visible]
    seen = f"{len(visible)} visible" + (f" ({gpus.problem})" if gpus.problem else "")
    if all_rows_on_cpu(plan):
        checks.append(Check("GPUs", True, f"{seen}; every row runs on the CPU (device='cpu')"))
    elif missing:
        lonely = [s.index for s in plan.shards if any(d in missing for d in s.devices)]
        checks.append(Check("GPUs", False,
                            f"{seen}, {len(needed)} needed for {plan.shard_count} shard(s) x {plan.gpus_per_shard}: "
                            f"shard(s) {', '.join(map(str, lonely))} would have no GPU (devices "
                            f"{', '.join(map(str, missing))} missing)",
                            hint="lower --shards / --gpus-per-shard, or set device='cpu' in the rows"))
    else:
        checks.append(Check("GPUs", True, f"{seen}; shards use {', '.join(map(str, needed))}"))
    if plan.runs_per_gpu > 1:
        checks.append(_slots_check(plan, gpus))
    return checks


def storage_checks(plan: Plan, out_root: Path) -> list[Check]:
    """The data shards every row reads, and room in the out-root: whichever backend runs the rows."""
    return [*(_data_check(Path(d)) for d in sorted({str(r.config.data_dir) for r in plan.runs})),
            _out_root_check(out_root)]


def tmux_check() -> Check:
    version = tmux_version()
    return Check("tmux", version is not None, version or "tmux not found on PATH",
                 hint="" if version else "install tmux (apt-get install tmux)")


def _slots_check(plan: Plan, gpus: GpuQuery) -> Check:
    """K runs per GPU fit in the smallest GPU used, when the rows' peak memory was measured."""
    from sweepctl.state.slots import fit_problem, load_estimates

    k = plan.runs_per_gpu
    what = f"{k} runs per GPU"
    used = {d for s in plan.shards for d in s.devices}
    totals = [g.memory_total_mib for g in gpus.gpus if g.index in used and g.memory_total_mib]
    packed = [r.config for r in plan.runs if r.gpus == 1 and r.config.device != "cpu"]
    if not packed:
        return Check(what, True, "no single-GPU GPU rows to pack")
    gpu_mib, estimates = (min(totals) if totals else None), load_estimates()
    problem, known = fit_problem(packed, k, gpu_mib, estimates)
    if problem:
        fits = [j for j in range(k - 1, 0, -1) if fit_problem(packed, j, gpu_mib, estimates)[0] is None]
        return Check(what, False, f"would not fit: {problem} (peak memory measured by bench/packing.py)",
                     hint=f"relaunch with --runs-per-gpu {fits[0] if fits else 1}")
    if "no measured" in known or "unknown" in known:
        known += "; not checked (a run that runs out of memory is retried alone)"
    return Check(what, True, known)


def _data_check(data_dir: Path) -> Check:
    from sweepctl.pod.data import shard_problem

    train = sorted(data_dir.glob("fineweb_train_*.bin"))
    val = sorted(data_dir.glob("fineweb_val_*.bin"))
    what = f"data {data_dir}"
    if not train or not val:
        lacking = " and ".join(s for s, found in (("train", train), ("val", val)) if not found)
        return Check(what, False, f"no {lacking} shards (fineweb_{{train,val}}_*.bin)",
                     hint="sweepctl data fineweb --data-dir DIR, or pass --data-dir")
    # Headers only (12 bytes each): a truncated download is caught here, not 20 minutes into a run.
    bad = [(p, why) for p in (*train, *val) if (why := shard_problem(p))]
    if bad:
        p, why = bad[0]
        return Check(what, False, f"{len(bad)} bad shard(s), e.g. {p.name}: {why}",
                     hint="sweepctl data fineweb re-fetches corrupt shards")
    return Check(what, True, f"{len(train)} train + {len(val)} val shards")


def _out_root_check(out_root: Path) -> Check:
    existing = runs.nearest_existing(out_root)
    what = f"out-root {out_root}"
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check(what, False, f"{existing} is not writable", hint="choose --out-root on a writable volume")
    free = shutil.disk_usage(existing).free
    detail = f"writable, {free / 2**30:.1f} GiB free"
    if free < MIN_FREE_BYTES:
        return Check(what, False, detail, hint="free some space or choose another --out-root")
    return Check(what, True, detail)


# --- execute (writes, starts) --------------------------------------------------------------------

def refuse_if_needed(preview: LaunchPreview) -> None:
    """Raise before anything is written: failed pre-flight checks (exit 1), run-table refusals (exit 2)."""
    bad = [c for c in preview.checks if not c.ok]
    if bad:
        raise SweepctlError("pre-flight failed: " + "; ".join(f"{c.what}: {c.detail}" for c in bad),
                            hint="; ".join(c.hint for c in bad if c.hint) or None)
    if preview.refusals:
        hint = ("--retry-failed runs them again (resuming from their checkpoints), --skip-failed leaves them, "
                "--force starts every run over") if any("failed run" in r for r in preview.refusals) else None
        raise RefusedError("launch refused: " + "; ".join(preview.refusals), hint=hint)


def join(preview: LaunchPreview) -> None:
    """Merge the CSV's rows into plan.json under the sweep's lock, against plan.json as it is now
    (another `launch` may have added rows since `prepare`), and write it atomically: the live
    runners read it before their next claim."""
    joining = preview.joining
    assert joining is not None
    d = preview.sweep_dir
    with manifest.sweep_lock(d):
        plan, added, updated = merge_plans(manifest.read_plan(d), joining.wanted,
                                           started_rows(d, joining.claims_dir, preview.out_root),
                                           str(preview.sweep.csv_path))
        manifest.save_plan(d, plan)
        still_claiming = live_runners(d)  # a runner drains under this lock: after it, none claims
    preview.plan, joining.added, joining.updated = plan, added, updated
    joining.drained = not still_claiming


def runner_argv(preview: LaunchPreview, shard: int, *, launch_id: str, launched_at: float,
                claims_dir: Path | None = None) -> list[str]:
    options = preview.options
    argv = [sys.executable, "-m", "sweepctl", "runner", str(preview.sweep_dir), "--shard", str(shard),
            "--devices", cuda_visible_devices(preview.plan, shard), "--session", shard_session(shard),
            "--launched-at", repr(launched_at), "--max-retries", str(options.max_retries),
            "--stale-after", repr(preview.settings.stale_after_s)]
    if preview.plan.schedule == "dynamic":
        argv += ["--claims", str(claims_dir or manifest.claims_dir(preview.sweep_dir, launch_id))]
    if options.fail_fast:
        argv.append("--fail-fast")
    if options.force:
        argv.append("--force")
    return argv + runner_policy_flags(retry_failed=options.retry_failed, stall_after_s=options.stall_after_s,
                                      run_timeout_s=options.run_timeout_s)


def notify_env(settings: Settings) -> dict[str, str]:
    """The webhook reaches the runners through their environment, never argv or a file: it is a secret."""
    return {"SWEEPCTL_NOTIFY_URL": settings.notify_url.get_secret_value()} if settings.notify_url else {}


def runner_policy_flags(*, retry_failed: bool, stall_after_s: float | None, run_timeout_s: float | None
                        ) -> list[str]:
    """The hidden runner's per-row policy flags, shared by every launcher of runners (tmux, Slurm)."""
    flags: list[str] = []
    if retry_failed:
        flags += ["--on-failed", "retry"]
    if stall_after_s:
        flags += ["--stall-after", repr(float(stall_after_s))]
    if run_timeout_s:
        flags += ["--run-timeout", repr(float(run_timeout_s))]
    return flags


def execute(preview: LaunchPreview, *, tmux: Tmux | None = None) -> LaunchResult:
    refuse_if_needed(preview)
    socket = preview.settings.tmux_socket
    attach = attach_command(shard_session(preview.shards_to_start[0] if preview.shards_to_start else 0), socket)
    status_cmd = f"sweepctl status --out-root {shlex.quote(str(preview.out_root))}"
    if not preview.shards_to_start:
        return LaunchResult(preview, [], [], attach, status_cmd)
    tmux = tmux or Tmux(socket)
    busy = [s for s in preview.shards_to_start if (info := tmux.session(shard_session(s))) and info.alive]
    free = [s for s in preview.shards_to_start if s not in busy]
    if not free and preview.joining is None:
        raise RefusedError(f"every shard's tmux session is still running: {', '.join(map(shard_session, busy))}",
                           hint="a live session is never killed; wait for it or `sweepctl stop --all` first")
    launched_at = time.time()
    launch_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(launched_at)) + f"-{os.getpid()}"
    claims_dir = None
    if preview.joining is not None:
        join(preview)
        claims_dir = preview.joining.claims_dir
        launch_id = claims_dir.name  # the live runners' launch: its claims are the queue's
    write_plan_files(preview)
    include_cancelled(preview)
    started, refused = [], [] if preview.joining is not None else [shard_session(s) for s in busy]
    for s in free:
        devices = cuda_visible_devices(preview.plan, s)
        argv = runner_argv(preview, s, launch_id=launch_id, launched_at=launched_at, claims_dir=claims_dir)
        name = shard_session(s)
        try:
            how = tmux.start(name, argv, env={"CUDA_VISIBLE_DEVICES": devices, **notify_env(preview.settings)},
                             cwd=Path.cwd())
        except RefusedError:  # became busy since we looked
            refused.append(name)
            continue
        n = len(preview.plan.shards[s].run_ids) if preview.plan.schedule == "static" else None
        started.append(StartedShard(s, name, devices, n, how))
    if preview.joining is not None and preview.joining.drained and not started and preview.joining.added:
        raise RefusedError(f"rows {', '.join(preview.joining.added)} were added to sweep {preview.sweep.name}'s queue, "
                           "but its runners had just run out of rows and are ending, so none will claim them",
                           where=str(preview.sweep_dir / manifest.PLAN_FILE),
                           hint=f"launch again once they have ended (seconds): sweepctl launch "
                                f"{shlex.quote(str(preview.sweep.csv_path))}")
    if not started and preview.joining is None:  # refused after all: the last launch's record stays as it was
        raise RefusedError(f"no shard started: their tmux sessions became busy ({', '.join(refused)})",
                           hint="a live session is never killed; wait for it or `sweepctl stop --all` first")
    if started:
        record_launch(preview, launch_id=launch_id, launched_at=launched_at, shards=[s.shard for s in started])
    return LaunchResult(preview, started, refused, attach_command(started[0].session, socket) if started else attach,
                        status_cmd)


def include_cancelled(preview: LaunchPreview) -> None:
    """Move the cancel markers of the rows `--include-cancelled` runs aside (kept as `.bak-`)."""
    for row in preview.rows:
        if row.state == "cancelled" and row.action != "skip":
            runs.backup(runs.run_dir(preview.out_root, row.run_id), [runs.CANCEL])


def write_manifest(preview: LaunchPreview, *, launch_id: str, launched_at: float, shards: list[int]) -> None:
    """`.sweeps/<name>/`: the plan's files and the launch's record, for a launcher that starts its
    workers after writing them (Ray, Slurm)."""
    write_plan_files(preview)
    record_launch(preview, launch_id=launch_id, launched_at=launched_at, shards=shards)


def write_plan_files(preview: LaunchPreview) -> None:
    """`.sweeps/<name>/`: CSV copy, config copies, plan.json — what the runners, status, rerun and a
    postmortem need after the pod is gone. A changed CSV or plan keeps the old one as `.bak-`."""
    d = preview.sweep_dir
    d.mkdir(parents=True, exist_ok=True)
    csv_copy = d / preview.sweep.csv_path.name
    manifest.replace_keeping_old(csv_copy, preview.sweep.csv_path.read_bytes())
    for src, dst in preview.config_copies.items():
        manifest.replace_keeping_old(dst, src.read_bytes())
    if preview.joining is None:  # joining, `join` has written it under the sweep's lock
        manifest.write_plan(d, preview.plan)


def record_launch(preview: LaunchPreview, *, launch_id: str, launched_at: float, shards: list[int]) -> None:
    """launch.json and a line in launches.jsonl, once a session has started: a refused launch
    leaves the record of the last one that ran."""
    d = preview.sweep_dir
    csv_copy = d / preview.sweep.csv_path.name
    options = preview.options
    record = {
        "sweep": preview.sweep.name, "launch_id": launch_id, "ts": launched_at,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(launched_at)),
        "host": runs.HOST, "pod": preview.pod, "user": os.environ.get("USER"), "sweepctl_version": __version__,
        "csv": str(preview.sweep.csv_path.absolute()), "csv_copy": csv_copy.name,
        "out_root": str(preview.out_root), "data_dir": str(Path(preview.settings.data_dir).absolute()),
        "options": asdict(options), "shards_started": shards,
        "rows": {a: sum(1 for r in preview.rows if r.action == a) for a in ("run", "resume", "restart", "skip")},
    }
    manifest.record_launch(d, record)
