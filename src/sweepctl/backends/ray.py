"""Ray: one task per row on a Ray cluster, submitted by a driver in tmux session `sweep-ray`;
Ray, not the plan, puts each row on a node with the GPUs its row asks for (ray_backend.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweepctl import launch
from sweepctl.backends import ray_backend
from sweepctl.backends.base import RerunCommand
from sweepctl.settings import Settings
from sweepctl.sweep.plan import Plan


class RayBackend:
    name = "ray"
    places_rows = True

    def preflight(self, csv_path: Path, options: launch.LaunchOptions, settings: Settings) -> launch.LaunchPreview:
        if not isinstance(options, ray_backend.RayLaunchOptions):
            options = ray_backend.RayLaunchOptions(**{**vars(options), "shards": 1})
        return ray_backend.prepare(csv_path, options, settings)

    def start(self, preview: launch.LaunchPreview) -> ray_backend.RayLaunchResult:
        return ray_backend.execute(preview)

    def rerun(self, plan: Plan, run_id: str, *, sweep_dir: Path, launched: dict[str, Any], session: str,
              settings: Settings, force: bool, gpu: int | None) -> RerunCommand:
        argv = ray_backend.rerun_driver_argv(sweep_dir, run_id, launched.get("ray_address"), session=session,
                                             stale_after_s=settings.stale_after_s, force=force, gpu=gpu)
        return RerunCommand(argv, ray_backend.RAY_DEVICES)


BACKEND = RayBackend()
