"""Slurm: an sbatch job array, one task per row, written for the user to submit (slurm_export.py). A
rerun runs the row here, in tmux, as a tmux-launched sweep's would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweepctl import launch
from sweepctl.backends import slurm_export as slurm
from sweepctl.backends.base import LaunchRequest, RerunCommand, Started
from sweepctl.backends.tmux import BACKEND as TMUX
from sweepctl.settings import Settings
from sweepctl.sweep.plan import Plan


class SlurmBackend:
    name = "slurm"
    places_rows = True
    engine_flags: tuple[str, ...] = ()

    def options(self, request: LaunchRequest) -> slurm.SlurmOptions:
        return slurm.SlurmOptions(**request.common)

    def preflight(self, csv_path: Path, options: launch.LaunchOptions, settings: Settings) -> launch.LaunchPreview:
        if not isinstance(options, slurm.SlurmOptions):
            options = slurm.SlurmOptions(**{**vars(options), "shards": 1, "backend": self.name})
        return slurm.prepare(csv_path, options, settings)

    def sessions(self, preview: launch.LaunchPreview) -> list[str]:
        return []  # sbatch starts the array tasks, on the cluster's nodes

    def refuse(self, preview: launch.LaunchPreview) -> None:
        """Nothing: sbatch runs the array whatever this machine sees; `start` turns failed checks and
        failed rows into warnings."""

    def start(self, preview: launch.LaunchPreview) -> Started:
        exported = slurm.write(preview)
        options = exported.preview.options
        assert isinstance(options, slurm.SlurmOptions)
        notes = [f"warning: {w}" for w in exported.warnings]
        notes += [f"wrote {exported.script}: {exported.rows} array tasks (--array={exported.array}, "
                  f"--gres=gpu:{options.gpus_per_task}); manifest in {preview.sweep_dir}",
                  f"submit: sbatch {exported.script}"]
        return Started([], status_command=f"sweepctl status --out-root {preview.out_root} --sweep {preview.sweep.name}",
                       notes=notes, record={"backend": self.name, "script": str(exported.script)})

    def rerun(self, plan: Plan, run_id: str, *, sweep_dir: Path, launched: dict[str, Any], session: str,
              settings: Settings, force: bool, gpu: int | None) -> RerunCommand:
        return TMUX.rerun(plan, run_id, sweep_dir=sweep_dir, launched=launched, session=session, settings=settings,
                          force=force, gpu=gpu)


BACKEND = SlurmBackend()
