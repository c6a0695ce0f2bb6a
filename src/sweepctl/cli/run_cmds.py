"""launch, status, logs, stop, rerun (and the hidden runner): a sweep on the machine they run on.

Thin: parse, call the library (launch.py, status.py, control.py, runner.py), render. The
library calls return data, so a remote command is the same subcommand run on the pod.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from sweepctl.console import console, err_console

CSV_ARG = typer.Argument(..., help="Sweep CSV: run_id,config,seed,overrides,notes[,gpus].", show_default=False)
OUT_ROOT = typer.Option(None, "--out-root", help="Where run directories live (default: settings).")


def launch(
    csv_path: Path = CSV_ARG,
    shards: int = typer.Option(..., "--shards", help="Number of shards: one tmux session sweep-<i> each."),
    out_root: str | None = OUT_ROOT,
    data_dir: str | None = typer.Option(None, "--data-dir", help="FineWeb token shards (default: settings)."),
    no_wandb: bool = typer.Option(False, "--no-wandb", help="wandb_log=False for every run, whatever the rows say."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Pre-flight and run table only; write and start nothing."),
    force: bool = typer.Option(False, "--force", help="Start every run over (old files kept as .bak-)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed runs again (resuming when possible)."),
    skip_failed: bool = typer.Option(False, "--skip-failed", help="Leave failed runs as they are."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="A shard stops at its first failed run."),
    schedule: str = typer.Option("static", "--schedule", help="static (row i -> shard i % N) or dynamic (claim)."),
    gpus_per_shard: int = typer.Option(1, "--gpus-per-shard", help="GPUs per shard (K): shard i gets i*K..i*K+K-1."),
    max_retries: int = typer.Option(0, "--max-retries", help="Retry a failed run up to R times."),
    name: str | None = typer.Option(None, "--name", help="Sweep name (default: the CSV file name)."),
    stall_after: float = typer.Option(1800.0, "--stall-after",
                                      help="End a run whose iteration has not advanced for S seconds (0: never)."),
    run_timeout: float | None = typer.Option(None, "--run-timeout", help="End a run after S seconds."),
) -> None:
    """Validate, pre-flight, and start one tmux session per shard; returns at once."""
    from sweepctl import launch as lib
    from sweepctl.settings import load_settings

    settings = load_settings(out_root=out_root, data_dir=data_dir)
    options = lib.LaunchOptions(shards=shards, schedule=schedule, gpus_per_shard=gpus_per_shard,  # type: ignore[arg-type]
                                name=name, no_wandb=no_wandb, dry_run=dry_run, force=force,
                                retry_failed=retry_failed, skip_failed=skip_failed, fail_fast=fail_fast,
                                max_retries=max_retries, stall_after_s=stall_after or None,
                                run_timeout_s=run_timeout)
    preview = lib.prepare(csv_path, options, settings)
    for w in preview.sweep.warnings:
        err_console.print(w, style="yellow", markup=False, highlight=False)
    _print_checks(preview.checks)
    _print_rows(preview, detailed=dry_run)
    if dry_run:
        lib.refuse_if_needed(preview)
        console.print(f"dry run: would start {_sessions_text(preview.shards_to_start)}; "
                      "nothing written, nothing started.", highlight=False)
        return
    result = lib.execute(preview)
    if not result.started:
        console.print("nothing to start: every run is ok, running, or skipped.", highlight=False)
        return
    for s in result.started:
        rows = f"{s.rows} rows" if s.rows is not None else "claims rows"
        console.print(f"{s.how} {s.session}: CUDA_VISIBLE_DEVICES={s.devices}, {rows}", highlight=False)
    console.print(f"attach: {result.attach}", highlight=False)
    console.print(f"status: {result.status_command}", highlight=False)
    if result.refused_sessions:
        from sweepctl.errors import RefusedError

        raise RefusedError(f"not started, their tmux sessions are still running: {', '.join(result.refused_sessions)}",
                           hint="a live session is never killed; launch again when it has finished")


def _sessions_text(shards: list[int]) -> str:
    return ", ".join(f"sweep-{s}" for s in shards) or "no session"


def _print_checks(checks: list) -> None:
    table = Table(title="pre-flight", title_justify="left")
    for col in ("check", "", "found"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.what, "[green]ok[/]" if c.ok else "[bold red]FAIL[/]",
                      c.detail + (f" — {c.hint}" if c.hint and not c.ok else ""))
    console.print(table)


def _print_rows(preview, *, detailed: bool) -> None:
    from collections import Counter

    actions = Counter(r.action for r in preview.rows)
    console.print(f"{len(preview.rows)} runs: " + ", ".join(f"{n} {a}" for a, n in sorted(actions.items())),
                  highlight=False)
    shown = preview.rows if detailed else [r for r in preview.rows if r.action not in ("run", "skip")
                                          or r.state in ("failed", "running")]
    if not shown:
        return
    table = Table(title="run table", title_justify="left")
    for col in ("run_id", "state", "action", "why"):
        table.add_column(col, overflow="fold")
    for r in shown:
        table.add_row(r.run_id, r.state, r.action, r.detail)
    console.print(table)


def status(
    out_root: str | None = OUT_ROOT,
    sweep: str | None = typer.Option(None, "--sweep", help="Sweep name (default: the latest launched)."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    watch: bool = typer.Option(False, "--watch", help="Redraw every 2 s until Ctrl-C."),
    state: str | None = typer.Option(None, "--state", help="Only runs in this state: pending running ok failed stale."),
) -> None:
    """Every run (state, progress, losses, ETA), every GPU, every sweep session."""
    from sweepctl import status as lib
    from sweepctl.errors import SweepctlError
    from sweepctl.runs import STATES
    from sweepctl.settings import load_settings

    if state is not None and state not in STATES:
        raise SweepctlError(f"--state must be one of {', '.join(STATES)}, got {state!r}")
    settings = load_settings(out_root=out_root)

    def model() -> dict:
        return lib.collect(Path(settings.out_root), sweep=sweep, stale_after_s=settings.stale_after_s,
                           tmux_socket=settings.tmux_socket, state=state)

    if as_json:
        typer.echo(json.dumps(model(), indent=2))
        return
    if not watch:
        console.print(lib.render(model()))
        return
    from rich.live import Live

    with Live(lib.render(model()), console=console, refresh_per_second=1, screen=False) as live:
        while True:
            time.sleep(2)
            live.update(lib.render(model()))


def logs(
    run_id: str = typer.Argument(..., help="The run whose stdout.log to show."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing as the run writes (ends with the run)."),
    lines: int = typer.Option(50, "-n", "--lines", help="How many of the last lines to show."),
    out_root: str | None = OUT_ROOT,
) -> None:
    """Print the end of a run's stdout.log."""
    import sys

    from sweepctl import runs
    from sweepctl.errors import SweepctlError
    from sweepctl.settings import load_settings

    settings = load_settings(out_root=out_root)
    directory = runs.run_dir(Path(settings.out_root).expanduser().absolute(), run_id)
    path = directory / runs.STDOUT_LOG
    if not path.exists() and not follow:
        raise SweepctlError(f"no {runs.STDOUT_LOG} in {directory}", where=run_id,
                            hint="has it started? see `sweepctl status`")
    for line in runs.tail_lines(path, lines):
        typer.echo(line)
    if follow:
        for chunk in runs.follow(path, done=lambda: (directory / runs.SUMMARY).exists()):
            sys.stdout.write(chunk)
            sys.stdout.flush()


def stop(
    shard: int | None = typer.Option(None, "--shard", help="Stop this shard's runner."),
    all_shards: bool = typer.Option(False, "--all", help="Stop every runner of the sweep."),
    sweep: str | None = typer.Option(None, "--sweep", help="Sweep name (default: the latest launched)."),
    out_root: str | None = OUT_ROOT,
) -> None:
    """SIGINT to the runners: each trainer writes `interrupted`, no new row starts, sessions stay."""
    from sweepctl import control
    from sweepctl.errors import SweepctlError
    from sweepctl.settings import load_settings

    if (shard is None) == (not all_shards):
        raise SweepctlError("pass --shard I or --all")
    settings = load_settings(out_root=out_root)
    sent = control.stop(Path(settings.out_root), sweep=sweep, shard=shard)
    if not sent:
        console.print("nothing to stop: no live runner" + (f" for shard {shard}" if shard is not None else ""),
                      highlight=False)
        return
    for s in sent:
        what = f"{s.kind} pid {s.pid}" + (f" ({s.session})" if s.session else "") + (f" {s.run_id}" if s.run_id else "")
        console.print(f"sent SIGINT to {what}", highlight=False)
    console.print("the trainers write summary.json (interrupted) and the runners start no new row; "
                  "sessions stay open. Relaunch with --retry-failed to resume.", highlight=False)


def rerun(
    run_id: str = typer.Argument(..., help="The run to run again."),
    force: bool = typer.Option(False, "--force", help="Needed when the run finished ok."),
    gpu: int | None = typer.Option(None, "--gpu", help="GPU index (default: the least busy)."),
    out_root: str | None = OUT_ROOT,
) -> None:
    """Run one run again, in tmux session rerun-<run_id>, with the settings its sweep planned."""
    from sweepctl import control
    from sweepctl.settings import load_settings

    settings = load_settings(out_root=out_root)
    r = control.rerun(Path(settings.out_root), run_id, settings=settings, force=force, gpu=gpu)
    console.print(f"started {r.session} ({r.previous_state} before): CUDA_VISIBLE_DEVICES={r.devices or '(none)'}; "
                  "its previous files are kept as .bak-<time>", highlight=False)
    console.print(f"attach: {r.attach}", highlight=False)
    console.print(f"logs:   sweepctl logs {run_id} -f", highlight=False)


def runner(
    sweep_dir: Path = typer.Argument(..., help="<out_root>/.sweeps/<name>"),
    shard: int | None = typer.Option(None, "--shard"),
    devices: str = typer.Option("", "--devices"),
    session: str = typer.Option(..., "--session"),
    claims: Path | None = typer.Option(None, "--claims"),
    only: list[str] | None = typer.Option(None, "--only"),
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
    from sweepctl import runner as lib

    options = lib.RunnerOptions(sweep_dir=sweep_dir, shard=shard, devices=devices, session=session,
                                claims_dir=claims, only=only or None, fail_fast=fail_fast, max_retries=max_retries,
                                stall_after_s=stall_after, run_timeout_s=run_timeout,
                                on_failed=on_failed,  # type: ignore[arg-type]
                                force=force, launched_at=launched_at, stale_after_s=stale_after,
                                kill_grace_s=kill_grace)
    raise typer.Exit(lib.main(options))


def register(app: typer.Typer) -> None:
    app.command()(launch)
    app.command()(status)
    app.command()(logs)
    app.command()(stop)
    app.command()(rerun)
    app.command(hidden=True)(runner)
