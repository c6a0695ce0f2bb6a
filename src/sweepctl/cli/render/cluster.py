"""What `ray up` and `export slurm` print: what was made, and the commands that use it."""

from __future__ import annotations

import shlex
from typing import Any

from sweepctl.console import console, err_console


def render_ray_up(result: Any, head: str, workers: list[str]) -> None:
    """The cluster `ray_cluster.ray_up` started, and how to launch on it, watch it and stop it."""
    console.print(f"Ray cluster up: head {result.head} at {result.address}"
                  + (f", workers {', '.join(result.workers)}" if result.workers else ", no workers"), highlight=False, soft_wrap=True)
    console.print(f"launch:    sweepctl launch CSV --backend ray --ray-address {result.address} --host {head}",
                  highlight=False, soft_wrap=True)
    console.print(f"dashboard: ssh -N -L 8265:127.0.0.1:8265 {head}, then http://127.0.0.1:8265", highlight=False, soft_wrap=True)
    console.print(f"stop:      sweepctl ray down --head {head}" + "".join(f" --worker {w}" for w in workers),
                  highlight=False, soft_wrap=True)


def render_export(exported: Any) -> None:
    """The job script `slurm.export` wrote (a `slurm.SlurmExport`), and how to submit and watch it."""
    for w in [*exported.preview.sweep.warnings, *exported.warnings]:
        err_console.print(f"warning: {w}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {exported.script}: {exported.rows} array tasks (--array={exported.array}, "
                  f"--gres=gpu:{exported.preview.options.gpus_per_task}); manifest in {exported.preview.sweep_dir}", highlight=False, soft_wrap=True)
    # commands to paste: an out-root may hold a space
    console.print(f"submit: sbatch {shlex.quote(str(exported.script))}", highlight=False, soft_wrap=True)
    console.print(f"status: sweepctl status --out-root {shlex.quote(str(exported.preview.out_root))} "
                  f"--sweep {exported.preview.sweep.name}", highlight=False, soft_wrap=True)
