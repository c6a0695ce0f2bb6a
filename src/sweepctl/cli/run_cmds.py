"""launch, status, logs, stop, rerun (and the hidden runner): a sweep on the machine they run on.

Thin: parse, call the library (launch.py, views/status.py, control.py, runner.py), render. The
library calls return data, so a remote command is the same subcommand run on the pod.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sweepctl import backends
from sweepctl.cli import remote_opts
from sweepctl.console import console

CSV_ARG = typer.Argument(..., help="Sweep CSV: run_id,config,seed,overrides,notes[,gpus].", show_default=False)
OUT_ROOT = typer.Option(None, "--out-root", help="Where run directories live (default: settings).")


def launch(
    csv_path: Path = CSV_ARG,
    shards: int | None = typer.Option(None, "--shards", show_default=False,
                                      help="Number of shards: one tmux session sweep-<i> each "
                                           "\\[default: one per visible GPU / --gpus-per-shard]."),
    out_root: str | None = OUT_ROOT,
    data_dir: str | None = typer.Option(None, "--data-dir", help="FineWeb token shards (default: settings)."),
    no_wandb: bool = typer.Option(False, "--no-wandb", help="wandb_log=False for every run, whatever the rows say."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Pre-flight and run table only; write and start nothing."),
    force: bool = typer.Option(False, "--force", help="Start every run over (old files kept as .bak-)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed runs again (resuming when possible)."),
    skip_failed: bool = typer.Option(False, "--skip-failed", help="Leave failed runs as they are."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="A shard stops at its first failed run."),
    include_cancelled: bool = typer.Option(False, "--include-cancelled",
                                           help="Run rows `sweepctl cancel` withdrew (skipped otherwise)."),
    notify: str | None = typer.Option(None, "--notify", metavar="URL", show_default=False,
                                      help="Webhook (Slack, Discord) the pod tells when a run fails and when the "
                                           "sweep is done \\[default: notify_url from the settings]."),
    schedule: str | None = typer.Option(None, "--schedule", show_default=False,
                                        help="static (row i -> shard i % N) or dynamic (claim) "
                                             "\\[default: static; dynamic with --runs-per-gpu > 1]."),
    gpus_per_shard: int = typer.Option(1, "--gpus-per-shard", help="GPUs per shard (K): shard i gets i*K..i*K+K-1."),
    runs_per_gpu: int | None = typer.Option(None, "--runs-per-gpu", show_default=False,
                                            help="Slots per GPU: K runs share each GPU, each slot a session "
                                                 "sweep-<i> \\[default: settings, 1]."),
    max_retries: int = typer.Option(0, "--max-retries", help="Retry a failed run up to R times."),
    name: str | None = typer.Option(None, "--name", help="Sweep name (default: the CSV file name)."),
    stall_after: float = typer.Option(1800.0, "--stall-after",
                                      help="End a run whose iteration has not advanced for S seconds (0: never)."),
    run_timeout: float | None = typer.Option(None, "--run-timeout", help="End a run after S seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print the pre-flight, run table and sessions started as JSON."),
    backend: str = typer.Option(backends.DEFAULT, "--backend",
                                help="How the rows run: tmux (a session per shard), ray (a Ray task per row), slurm "
                                     "(an sbatch job array to submit), or a backend a package registers."),
    ray_address: str | None = typer.Option(None, "--ray-address", metavar="ADDR",
                                           help="Ray cluster for --backend ray, HEAD_IP:6379 \\[default: RAY_ADDRESS, "
                                                "else the cluster started on this machine]."),
    host: list[str] | None = remote_opts.LAUNCH_HOST,
    reassign: bool = typer.Option(False, "--reassign",
                                  help="With --host, when the pods differ from the sweep's last launch: move the rows "
                                       "that have not started to the pods named now; started rows stay on their pod."),
    forget: list[str] | None = typer.Option(None, "--forget", metavar="HOST",
                                            help="With --reassign: HOST is a pod lost for good, with its volume. It "
                                                 "is not asked; its rows not ok elsewhere start over on the pods "
                                                 "named. Refused if HOST answers. Repeatable."),
    remote_bin: str | None = remote_opts.REMOTE_BIN,
    accept_new_host_key: bool = remote_opts.ACCEPT_NEW_HOST_KEY,
    placed_on: str | None = typer.Option(None, "--placed-on", hidden=True,
                                         help="Set by `launch --host` on each pod: its name in the sweep's layout."),
) -> None:
    """Validate, pre-flight, and start the rows (one tmux session per shard by default); returns at once."""
    from sweepctl.errors import RefusedError, SweepctlError

    if forget and not reassign:
        raise SweepctlError(f"--forget {forget[0]}: only with --reassign (and --host), which moves {forget[0]}'s rows "
                            "to the pods named",
                            hint=f"add --reassign: sweepctl launch SWEEP.csv --host POD --reassign --forget {forget[0]}")
    if reassign and not host:
        raise SweepctlError("--reassign moves rows between pods: it needs --host",
                            hint="name the pods, e.g. sweepctl launch SWEEP.csv --host pod1 --host pod2 --reassign")
    engine = backends.get(backend)  # the one place a backend is chosen
    if pods := remote_opts.resolve(host, remote_bin, accept_new_host_key):
        from sweepctl.cli import remote_launch

        if engine.places_rows:  # one pod runs the driver; the engine spreads the rows over its nodes
            shards = remote_launch.driver_pod_shards(engine.name, pods.hosts, shards)
        return remote_launch.launch(pods, csv_path, shards=shards, gpus_per_shard=gpus_per_shard, name=name,
                                    dry_run=dry_run, as_json=as_json, reassign=reassign, forget=forget,
                                    forwarded=remote_opts.forwarded(exclude=("shards", "name", "dry_run", "as_json",
                                                                             "reassign", "forget", "placed_on")))
    from sweepctl.cli.render import run as views
    from sweepctl.settings import load_settings

    settings = load_settings(out_root=out_root, data_dir=data_dir, notify_url=notify, runs_per_gpu=runs_per_gpu)
    request = backends.LaunchRequest(
        csv_path, settings,
        common={"name": name, "no_wandb": no_wandb, "dry_run": dry_run, "force": force, "retry_failed": retry_failed,
                "skip_failed": skip_failed, "max_retries": max_retries, "stall_after_s": stall_after or None,
                "run_timeout_s": run_timeout, "include_cancelled": include_cancelled, "placed_on": placed_on},
        shard_flags={"--shards": shards, "--schedule": schedule, "--gpus-per-shard": gpus_per_shard,
                     "--runs-per-gpu": runs_per_gpu, "--fail-fast": fail_fast},
        engine_flags={"--ray-address": ray_address})
    backends.check_request(engine, request)
    preview = engine.preflight(csv_path, engine.options(request), settings)
    sessions = engine.sessions(preview)
    model = views.launch_model(preview, sessions)
    if not as_json:
        views.render_launch_preview(model, detailed=dry_run)
    try:
        if dry_run:
            engine.refuse(preview)
            started = None
        else:
            started = engine.start(preview)
    except SweepctlError:
        if as_json:  # the pre-flight and run table say why; the error line follows on stderr
            typer.echo(json.dumps(model, indent=2))
        raise
    model = views.launch_model(preview, sessions, started)
    if as_json:
        typer.echo(json.dumps(model, indent=2))
    else:
        views.render_launch_outcome(model)
    if started is not None and started.refused_sessions:
        raise RefusedError(f"not started, their tmux sessions are still running: {', '.join(started.refused_sessions)}",
                           hint="a live session is never killed; launch again when it has finished")


def status(
    out_root: str | None = OUT_ROOT,
    sweep: str | None = typer.Option(None, "--sweep", help="Sweep name (default: the latest launched)."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    watch: bool = typer.Option(False, "--watch", help="Redraw every --interval seconds until Ctrl-C (without a "
                               "terminal: a line per change)."),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between refreshes with --watch."),
    state: str | None = typer.Option(None, "--state", help="Only runs in this state: pending running ok failed stale cancelled."),
    show_all: bool = typer.Option(False, "--all", help="Every run in the table (beyond 200 runs it is summarised)."),
    gpu_hour_price: float | None = typer.Option(None, "--gpu-hour-price", metavar="PRICE",
                                                help="Price of one GPU-hour: the sweep's cost so far and left "
                                                     "\\[default: settings]."),
    host: list[str] | None = remote_opts.HOST,
    remote_bin: str | None = remote_opts.REMOTE_BIN,
    accept_new_host_key: bool = remote_opts.ACCEPT_NEW_HOST_KEY,
) -> None:
    """Every run (state, progress, losses, ETA), every GPU, every sweep session."""
    from sweepctl.cli.render.status import render as render_status
    from sweepctl.errors import SweepctlError
    from sweepctl.settings import load_settings
    from sweepctl.state.runs import STATES
    from sweepctl.views.status import collect

    if state is not None and state not in STATES:
        raise SweepctlError(f"--state must be one of {', '.join(STATES)}, got {state!r}")
    if pods := remote_opts.resolve(host, remote_bin, accept_new_host_key):
        from sweepctl.cli import on_pods

        return on_pods.status(pods, remote_opts.forwarded(exclude=("as_json", "watch", "interval", "show_all")),
                                  as_json=as_json, watch=watch, interval=interval, show_all=show_all)
    settings = load_settings(out_root=out_root, gpu_hour_price=gpu_hour_price)

    def model() -> dict:
        return collect(Path(settings.out_root), sweep=sweep, stale_after_s=settings.stale_after_s,
                       tmux_socket=settings.tmux_socket, state=state, gpu_hour_price=settings.gpu_hour_price)

    if as_json:
        typer.echo(json.dumps(model()))
        return
    again = remote_opts.command_line("status", "--all", drop=("--watch", "--interval"))

    def render(m: dict) -> object:
        return render_status(m, show_all=show_all, again=again)

    if not watch:
        m = model()
        console.print(render(m))
        if not m["runs"] and state is None and sweep is None:
            for line in _no_runs(Path(m["out_root"]), out_root):
                console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    from sweepctl.cli.render.watch import polled
    from sweepctl.cli.render.watch import watch as watch_status

    watch_status(polled(model, interval), interval=interval, render=render)


def _no_runs(where: Path, flag: str | None) -> list[str]:
    """The lines of an empty status: the demo's folder, the project file's out_root and the
    default are looked at too, and named when they hold runs."""
    from sweepctl.cli.render.run import no_runs_lines
    from sweepctl.demo import DEFAULT_OUT_ROOT
    from sweepctl.settings import explain_settings, project_file_value
    from sweepctl.state import runs

    source = next(src for name, _, src in explain_settings(out_root=flag) if name == "out_root")
    candidates = [("the demo's folder", Path(DEFAULT_OUT_ROOT).absolute())]
    if (in_file := project_file_value("out_root")) is not None:
        candidates.append(("the project file's out_root", Path(in_file).expanduser().absolute()))
    elsewhere, seen = [], {where}
    for label, folder in candidates:
        n = len(runs.list_run_dirs(folder)) if folder not in seen and folder.is_dir() else 0
        seen.add(folder)
        if n:
            elsewhere.append((label, folder, n))
    return no_runs_lines(where, source, elsewhere)


def logs(
    run_id: str = typer.Argument(..., help="The run whose stdout.log to show."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing as the run writes (ends with the run)."),
    lines: int = typer.Option(50, "-n", "--lines", help="How many of the last lines to show."),
    out_root: str | None = OUT_ROOT,
    host: list[str] | None = remote_opts.HOST,
    remote_bin: str | None = remote_opts.REMOTE_BIN,
    accept_new_host_key: bool = remote_opts.ACCEPT_NEW_HOST_KEY,
) -> None:
    """Print the end of a run's stdout.log."""
    import sys

    from sweepctl import control
    from sweepctl.settings import load_settings
    from sweepctl.state import runs

    check_run_id(run_id)
    if pods := remote_opts.resolve(host, remote_bin, accept_new_host_key):
        from sweepctl.cli import on_pods

        return on_pods.logs(pods, run_id, remote_opts.forwarded())
    settings = load_settings(out_root=out_root)
    path = control.log_path(Path(settings.out_root), run_id, follow=follow)
    directory = path.parent
    existed = path.exists()
    for line in runs.tail_lines(path, lines):
        typer.echo(line)
    if follow and not existed:
        # Said once, on stderr (stdout stays the log): a wait with no word looks like a hang.
        from sweepctl.console import err_console

        err_console.print(f"waiting for {path}: {run_id} has not started yet; its log appears when a runner "
                          f"picks it up. Ctrl-C stops waiting; `{remote_opts.hint('status')}` shows the sweep.",
                          markup=False, highlight=False, soft_wrap=True)
    if follow:
        for chunk in runs.follow(path, done=lambda: (directory / runs.SUMMARY).exists(), from_start=not existed):
            sys.stdout.write(chunk)
            sys.stdout.flush()


def stop(
    shard: int | None = typer.Option(None, "--shard", help="Stop this shard's runner."),
    all_shards: bool = typer.Option(False, "--all", help="Stop every runner of the sweep."),
    sweep: str | None = typer.Option(None, "--sweep", help="Sweep name (default: the latest launched)."),
    out_root: str | None = OUT_ROOT,
    as_json: bool = typer.Option(False, "--json", help="Print the processes signalled as JSON."),
    host: list[str] | None = remote_opts.HOST,
    remote_bin: str | None = remote_opts.REMOTE_BIN,
    accept_new_host_key: bool = remote_opts.ACCEPT_NEW_HOST_KEY,
) -> None:
    """SIGINT to the runners: each trainer writes `interrupted`, no new row starts, sessions stay."""
    from sweepctl import control
    from sweepctl.cli.render import run as views
    from sweepctl.errors import SweepctlError
    from sweepctl.settings import load_settings

    if (shard is None) == (not all_shards):
        raise SweepctlError("pass --shard I or --all")
    if pods := remote_opts.resolve(host, remote_bin, accept_new_host_key):
        from sweepctl.cli import on_pods

        return on_pods.stop(pods, remote_opts.forwarded(exclude=("as_json",)), shard=shard, as_json=as_json)
    settings = load_settings(out_root=out_root)
    model = views.stop_model(control.stop(Path(settings.out_root), sweep=sweep, shard=shard), shard)
    if as_json:
        typer.echo(json.dumps(model, indent=2))
    else:
        views.render_stop(model)


def rerun(
    run_id: str = typer.Argument(..., help="The run to run again."),
    force: bool = typer.Option(False, "--force", help="Needed when the run finished ok."),
    gpu: int | None = typer.Option(None, "--gpu", help="GPU index (default: the least busy)."),
    out_root: str | None = OUT_ROOT,
    as_json: bool = typer.Option(False, "--json", help="Print the session started as JSON."),
    host: list[str] | None = remote_opts.HOST,
    remote_bin: str | None = remote_opts.REMOTE_BIN,
    accept_new_host_key: bool = remote_opts.ACCEPT_NEW_HOST_KEY,
) -> None:
    """Run one run again, in tmux session rerun-<run_id>, with the settings its sweep planned."""
    from dataclasses import asdict

    from sweepctl import control
    from sweepctl.cli.render import run as views
    from sweepctl.settings import load_settings

    check_run_id(run_id)
    if pods := remote_opts.resolve(host, remote_bin, accept_new_host_key):
        from sweepctl.cli import on_pods

        return on_pods.rerun(pods, run_id, remote_opts.forwarded(exclude=("as_json",)), as_json=as_json)
    settings = load_settings(out_root=out_root)
    r = control.rerun(Path(settings.out_root), run_id, settings=settings, force=force, gpu=gpu)
    if as_json:
        typer.echo(json.dumps(asdict(r), indent=2))
    else:
        views.render_rerun(asdict(r), logs=remote_opts.hint("logs", run_id, "-f"))


def runner(
    sweep_dir: Path = typer.Argument(..., help="<out_root>/.sweeps/<name>"),
    shard: int | None = typer.Option(None, "--shard"),
    devices: str = typer.Option("", "--devices"),
    session: str = typer.Option(..., "--session"),
    claims: Path | None = typer.Option(None, "--claims"),
    only: list[str] | None = typer.Option(None, "--only"),
    row_index: int | None = typer.Option(None, "--row-index", help="Run exactly this row (a Slurm array task)."),
    fail_fast: bool = typer.Option(False, "--fail-fast"),
    max_retries: int = typer.Option(0, "--max-retries"),
    stall_after: float | None = typer.Option(None, "--stall-after"),
    run_timeout: float | None = typer.Option(None, "--run-timeout"),
    on_failed: str = typer.Option("skip", "--on-failed"),
    force: bool = typer.Option(False, "--force"),
    launched_at: float = typer.Option(..., "--launched-at"),
    stale_after: float = typer.Option(120.0, "--stale-after"),
    kill_grace: float = typer.Option(30.0, "--kill-grace"),
) -> None:
    """The shard runner (runs inside a tmux session started by launch or rerun)."""
    from sweepctl.runner import RunnerOptions, main

    if row_index is not None:
        from sweepctl.backends.slurm_export import run_id_of_row
        from sweepctl.state.manifest import read_plan

        only = [run_id_of_row(read_plan(sweep_dir), row_index, sweep_dir)]
    options = RunnerOptions(sweep_dir=sweep_dir, shard=shard, devices=devices, session=session,
                            notify_url=_notify_url(),
                            claims_dir=claims, only=only or None, fail_fast=fail_fast, max_retries=max_retries,
                            stall_after_s=stall_after, run_timeout_s=run_timeout,
                            on_failed=on_failed,  # type: ignore[arg-type]
                            force=force, launched_at=launched_at, stale_after_s=stale_after,
                            kill_grace_s=kill_grace)
    raise typer.Exit(main(options))


def check_run_id(run_id: str) -> None:
    """Refuse what cannot be a run_id before anything (here or on a pod) looks for it."""
    from sweepctl.errors import SweepctlError
    from sweepctl.train.contract import run_id_problem

    if problem := run_id_problem(run_id):
        raise SweepctlError(problem, hint="see the run_ids with: sweepctl status")


def _notify_url() -> str | None:
    """The runner's webhook: SWEEPCTL_NOTIFY_URL from launch, else the project file's notify_url. A bad
    project file must not stop the runs, so it only costs the notifications."""
    from sweepctl.errors import SweepctlError
    from sweepctl.settings import load_settings

    try:
        url = load_settings().notify_url
    except SweepctlError:
        return None
    return url.get_secret_value() if url else None


def register(app: typer.Typer) -> None:
    app.command()(launch)
    app.command()(status)
    app.command()(logs)
    app.command()(stop)
    app.command()(rerun)
    app.command(hidden=True)(runner)
