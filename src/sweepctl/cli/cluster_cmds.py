"""Beyond tmux on one pod: `ray up/down`, `export slurm`, and the hidden `ray-driver`. Thin: parse,
call ray_backend / ray_cluster / slurm, render. (`launch --backend ray|slurm` is launch's own,
through `sweepctl.backends`.)
"""

from __future__ import annotations

from pathlib import Path

import typer

from sweepctl.console import console

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
    from sweepctl.backends import ray_backend
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
    from sweepctl.backends.ray_cluster import Ports
    from sweepctl.backends.ray_cluster import ray_up as up
    from sweepctl.cli.render.cluster import render_ray_up
    from sweepctl.settings import load_settings

    settings = load_settings(remote_bin=remote_bin)
    result = up(head, worker or [], remote_bin=settings.remote_bin,
                ports=Ports(port, node_manager_port, object_manager_port), extra=start_arg or [],
                progress=lambda line: console.print(line, highlight=False, soft_wrap=True))
    render_ray_up(result, head, worker or [])


@ray_app.command("down", help="Stop Ray on pods over SSH (`ray stop` on each worker, then the head). "
                              "`ray stop` ends every Ray process of the pod's user.")
def ray_down(
    head: str = HEAD,
    worker: list[str] | None = WORKER,
    remote_bin: str | None = REMOTE_BIN,
) -> None:
    from sweepctl.backends.ray_cluster import ray_down as down
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
    from sweepctl.backends import slurm_export as slurm
    from sweepctl.cli.render.cluster import render_export
    from sweepctl.settings import load_settings

    settings = load_settings(out_root=out_root, data_dir=data_dir)
    options = slurm.SlurmOptions(name=name, gpus_per_task=gpus_per_task, concurrency=concurrency,
                                 max_retries=max_retries, retry_failed=retry_failed, no_wandb=no_wandb)
    exported = slurm.export(csv_path, options, settings, output)
    render_export(exported)


def register(app: typer.Typer) -> None:
    app.add_typer(ray_app)
    app.add_typer(export_app)
    app.command("ray-driver", hidden=True)(ray_driver)
