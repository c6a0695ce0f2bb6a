"""Beyond tmux on one pod: `launch --backend ray` (via run_cmds), `ray up/down`, `export slurm`, and the
hidden `ray-driver`. Thin: parse, call ray_backend / ray_cluster / slurm, render.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from sweepctl.console import console, err_console

if TYPE_CHECKING:  # annotations only: the commands import their libraries when they run
    from sweepctl.launch import LaunchPreview
    from sweepctl.ray_backend import RayLaunchResult
    from sweepctl.settings import Settings

ray_app = typer.Typer(name="ray", no_args_is_help=True,
                      help="A Ray cluster on your pods for `launch --backend ray` (up, down).")
export_app = typer.Typer(name="export", no_args_is_help=True,
                         help="Write a sweep for another scheduler (slurm).")

RAY_PORTS_HELP = ("Ports: GCS 6379 (--port) on the head, token-authenticated; dashboard 8265 bound to 127.0.0.1 "
                  "(ssh -L 8265:127.0.0.1:8265 HEAD); node manager 8076 and object manager 8077 on every node; "
                  "workers 10002-19999; open every port between the pods and none to the outside.")
HEAD = typer.Option(..., "--head", metavar="HOST", help="ssh alias of the pod that runs the Ray head.")
WORKER = typer.Option(None, "--worker", metavar="HOST", help="ssh alias of a worker pod (repeat).")
REMOTE_BIN = typer.Option(None, "--remote-bin", metavar="PATH",
                          help="sweepctl on the pods; `ray` is taken from the same folder \\[default: settings].")


# --- launch --backend ray (called by run_cmds.launch) --------------------------------------------

def launch_on_backend(backend: str, csv_path: Path, settings: Settings, *, ray_address: str | None,
                      as_json: bool, shard_flags: dict[str, bool], **launch_options: Any) -> None:
    """`launch --backend ray`: pre-flight against the Ray cluster, then the driver in tmux session
    sweep-ray; returns at once. `shard_flags` are the tmux-only options the user gave: refused, not
    ignored (`--shards 1` is accepted: a Ray plan is one shard, and `--host` sends it)."""
    from sweepctl import backends, ray_backend
    from sweepctl.cli import run_views
    from sweepctl.errors import SweepctlError
    from sweepctl.launch import refuse_if_needed

    engine = backends.get(backend)
    if engine.name != "ray":  # its launch result is a Ray driver's; Slurm has a command of its own
        raise SweepctlError(f"launch --backend {backend}: only tmux and ray start from `launch`",
                            hint=f"sweepctl export slurm {csv_path}" if backend == "slurm" else None)
    given = [flag for flag, on in shard_flags.items() if on]
    if given:
        raise SweepctlError(f"{', '.join(given)} place rows on tmux shards; with --backend ray, Ray places each row "
                            "on a node with the GPUs it asks for (the CSV's gpus column)",
                            hint=f"drop {', '.join(given)}")
    options = ray_backend.RayLaunchOptions(ray_address=ray_address, **launch_options)
    preview = engine.preflight(csv_path, options, settings)
    model = _ray_model(run_views.launch_model(preview), preview, None)
    if not as_json:
        run_views.render_launch_preview(model, detailed=options.dry_run)
    try:
        if options.dry_run:
            refuse_if_needed(preview)
            result = None
        else:
            result = engine.start(preview)
    except SweepctlError:
        if as_json:
            typer.echo(json.dumps(model, indent=2))
        raise
    model = _ray_model(model, preview, result)
    if as_json:
        typer.echo(json.dumps(model, indent=2))
        return
    run_views.render_launch_outcome(model)
    if result is not None and result.how is not None:
        console.print(f"ray:    {result.address}; each row asks Ray for its GPUs; "
                      f"driver log {preview.sweep_dir / ray_backend.DRIVER_LOG}", highlight=False, soft_wrap=True)


def driver_pod_shards(hosts: list[str], shards: int | None) -> int:
    """`launch --host POD --backend ray`: the one pod that runs the driver gets the whole CSV, as
    a plan of one shard (`--shards 1`, the only count a Ray launch accepts), and no GPU survey."""
    from sweepctl.errors import SweepctlError

    if len(hosts) > 1:
        raise SweepctlError(f"--backend ray runs its driver on one pod; got {len(hosts)}: {', '.join(hosts)}",
                            hint="pass the --host of a Ray node (e.g. the head from `sweepctl ray up`); Ray "
                                 "spreads the rows over every node of its cluster")
    return 1 if shards is None else shards


def _ray_model(model: dict[str, Any], preview: LaunchPreview, result: RayLaunchResult | None) -> dict[str, Any]:
    """launch's JSON with the driver session as the one session started (so `--host` renders it too)."""
    from sweepctl.ray_backend import DRIVER_SESSION, RAY_DEVICES

    todo = len(preview.todo)
    model = {**model, "backend": "ray", "shards_to_start": ["ray"] if todo else []}  # sessions_text -> sweep-ray
    if result is not None:
        started = [{"shard": None, "session": DRIVER_SESSION, "devices": RAY_DEVICES, "rows": todo,
                    "how": result.how}] if result.how else []
        model.update(started=started, attach=result.attach, status_command=result.status_command,
                     ray_address=result.address)
    return model


def ray_driver(
    sweep_dir: Path = typer.Argument(..., help="<out_root>/.sweeps/<name>"),
    address: str = typer.Option(..., "--address"),
    launch_id: str = typer.Option(..., "--launch-id"),
    session: str | None = typer.Option(None, "--session", help="default: sweep-ray"),
    only: list[str] | None = typer.Option(None, "--only"),
    max_retries: int = typer.Option(0, "--max-retries"),
    force: bool = typer.Option(False, "--force"),
    on_failed: str = typer.Option("skip", "--on-failed"),
    skip_failed: bool = typer.Option(False, "--skip-failed"),
    stall_after: float | None = typer.Option(None, "--stall-after"),
    run_timeout: float | None = typer.Option(None, "--run-timeout"),
    stale_after: float = typer.Option(120.0, "--stale-after"),
) -> None:
    """The Ray driver (runs in tmux session sweep-ray, started by `launch --backend ray`, or rerun-<run_id>)."""
    from sweepctl import ray_backend
    from sweepctl.launch import LaunchOptions

    policy = LaunchOptions(shards=1, max_retries=max_retries, force=force, retry_failed=on_failed == "retry",
                           skip_failed=skip_failed, stall_after_s=stall_after, run_timeout_s=run_timeout)
    options = ray_backend.DriverOptions(sweep_dir=sweep_dir, address=address, launch_id=launch_id, policy=policy,
                                        only=only or None, stale_after_s=stale_after,
                                        session=session or ray_backend.DRIVER_SESSION)
    raise typer.Exit(ray_backend.driver_main(options))


# --- ray up / down -------------------------------------------------------------------------------

@ray_app.command("up", help="Start a Ray cluster on pods over SSH: `ray start --head` on HEAD, then "
                            "`ray start --address HEAD_IP:PORT` on each worker, with the `ray` next to each pod's "
                            f"sweepctl (Ray version checked on every pod). {RAY_PORTS_HELP}")
def ray_up(
    head: str = HEAD,
    worker: list[str] | None = WORKER,
    port: int = typer.Option(6379, "--port", help="GCS port on the head (workers and drivers connect here)."),
    node_manager_port: int = typer.Option(8076, "--node-manager-port", help="Node manager port on every node."),
    object_manager_port: int = typer.Option(8077, "--object-manager-port", help="Object manager port on every node."),
    start_arg: list[str] | None = typer.Option(None, "--start-arg", metavar="ARG",
                                               help="Extra argument for every `ray start` (repeat), "
                                                    "e.g. --start-arg=--num-gpus=8."),
    remote_bin: str | None = REMOTE_BIN,
) -> None:
    from sweepctl.ray_cluster import Ports
    from sweepctl.ray_cluster import ray_up as up
    from sweepctl.settings import load_settings

    settings = load_settings(remote_bin=remote_bin)
    result = up(head, worker or [], remote_bin=settings.remote_bin,
                ports=Ports(port, node_manager_port, object_manager_port), extra=start_arg or [],
                progress=lambda line: console.print(line, highlight=False, soft_wrap=True))
    console.print(f"Ray cluster up: head {result.head} at {result.address}"
                  + (f", workers {', '.join(result.workers)}" if result.workers else ", no workers"), highlight=False, soft_wrap=True)
    console.print(f"launch:    sweepctl launch CSV --backend ray --ray-address {result.address} --host {head}",
                  highlight=False, soft_wrap=True)
    console.print(f"dashboard: ssh -N -L 8265:127.0.0.1:8265 {head}, then http://127.0.0.1:8265", highlight=False, soft_wrap=True)
    console.print(f"stop:      sweepctl ray down --head {head}" + "".join(f" --worker {w}" for w in worker or []),
                  highlight=False, soft_wrap=True)


@ray_app.command("down", help="Stop Ray on pods over SSH (`ray stop` on each worker, then the head). "
                              "`ray stop` ends every Ray process of the pod's user.")
def ray_down(
    head: str = HEAD,
    worker: list[str] | None = WORKER,
    remote_bin: str | None = REMOTE_BIN,
) -> None:
    from sweepctl.ray_cluster import ray_down as down
    from sweepctl.settings import load_settings

    settings = load_settings(remote_bin=remote_bin)
    down([*(worker or []), head], remote_bin=settings.remote_bin,
         progress=lambda line: console.print(line, highlight=False, soft_wrap=True))


# --- export slurm --------------------------------------------------------------------------------

@export_app.command("slurm")
def export_slurm(
    csv_path: Path = typer.Argument(..., metavar="CSV", help="Sweep CSV: run_id,config,seed,overrides,notes[,gpus].",
                                    show_default=False),
    gpus_per_task: int | None = typer.Option(None, "--gpus-per-task", metavar="K",
                                             help="GPUs per array task (--gres=gpu:K) \\[default: the most any row asks for]."),
    concurrency: int | None = typer.Option(None, "--concurrency", metavar="C",
                                           help="At most C array tasks at once (--array=0-(N-1)%C) \\[default: no limit]."),
    out_root: str | None = typer.Option(None, "--out-root", help="Where run directories live (default: settings)."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="FineWeb token shards (default: settings)."),
    name: str | None = typer.Option(None, "--name", help="Sweep name (default: the CSV file name)."),
    output: Path | None = typer.Option(None, "-o", "--output", metavar="FILE",
                                       help="Where to write the script \\[default: <out_root>/.sweeps/<name>/<name>.sbatch]."),
    max_retries: int = typer.Option(0, "--max-retries", help="Retry a failed run up to R times within its task."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed runs again (resuming when possible)."),
    no_wandb: bool = typer.Option(False, "--no-wandb", help="wandb_log=False for every run, whatever the rows say."),
) -> None:
    """Write an sbatch job-array script: one task per row, longest first.

    Each task runs the shard runner's per-row code path (lock, run table, trainer, summary)."""
    from sweepctl import slurm
    from sweepctl.settings import load_settings

    settings = load_settings(out_root=out_root, data_dir=data_dir)
    options = slurm.SlurmOptions(name=name, gpus_per_task=gpus_per_task, concurrency=concurrency,
                                 max_retries=max_retries, retry_failed=retry_failed, no_wandb=no_wandb)
    exported = slurm.export(csv_path, options, settings, output)
    for w in [*exported.preview.sweep.warnings, *exported.warnings]:
        err_console.print(f"warning: {w}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {exported.script}: {exported.rows} array tasks (--array={exported.array}, "
                  f"--gres=gpu:{exported.preview.options.gpus_per_task}); manifest in {exported.preview.sweep_dir}", highlight=False, soft_wrap=True)
    # commands to paste: an out-root may hold a space
    console.print(f"submit: sbatch {shlex.quote(str(exported.script))}", highlight=False, soft_wrap=True)
    console.print(f"status: sweepctl status --out-root {shlex.quote(str(exported.preview.out_root))} "
                  f"--sweep {exported.preview.sweep.name}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(ray_app)
    app.add_typer(export_app)
    app.command("ray-driver", hidden=True)(ray_driver)
