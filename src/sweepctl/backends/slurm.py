"""Slurm: an sbatch job array, one task per row, written for the user to submit (slurm_export.py). A
rerun runs the row here, in tmux, as a tmux-launched sweep's would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweepctl import launch
from sweepctl.backends import slurm_export as slurm
from sweepctl.backends.base import RerunCommand
from sweepctl.backends.tmux import BACKEND as TMUX
from sweepctl.settings import Settings
from sweepctl.sweep.plan import Plan


class SlurmBackend:
    name = "slurm"
    places_rows = True

    def preflight(self, csv_path: Path, options: launch.LaunchOptions, settings: Settings) -> launch.LaunchPreview:
        if not isinstance(options, slurm.SlurmOptions):
            options = slurm.SlurmOptions(**{**vars(options), "shards": 1})
        return slurm.prepare(csv_path, options, settings)

    def start(self, preview: launch.LaunchPreview) -> slurm.SlurmExport:
        return slurm.write(preview)

    def rerun(self, plan: Plan, run_id: str, *, sweep_dir: Path, launched: dict[str, Any], session: str,
              settings: Settings, force: bool, gpu: int | None) -> RerunCommand:
        return TMUX.rerun(plan, run_id, sweep_dir=sweep_dir, launched=launched, session=session, settings=settings,
                          force=force, gpu=gpu)


BACKEND = SlurmBackend()
