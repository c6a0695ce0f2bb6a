"""Ray: one task per row on a Ray cluster, submitted by a driver in tmux session `sweep-ray`;
Ray, not the plan, puts each row on a node with the GPUs its row asks for (ray_backend.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweepctl import launch
from sweepctl.backends import ray_backend
from sweepctl.backends.base import LaunchRequest, RerunCommand, Started
from sweepctl.settings import Settings
from sweepctl.sweep.plan import Plan


class RayBackend:
    name = "ray"
    places_rows = True
    engine_flags = ("--ray-address",)

    def options(self, request: LaunchRequest) -> ray_backend.RayLaunchOptions:
        return ray_backend.RayLaunchOptions(ray_address=request.engine_flags.get("--ray-address"), **request.common)

    def preflight(self, csv_path: Path, options: launch.LaunchOptions, settings: Settings) -> launch.LaunchPreview:
        if not isinstance(options, ray_backend.RayLaunchOptions):
            options = ray_backend.RayLaunchOptions(**{**vars(options), "shards": 1, "backend": self.name})
        return ray_backend.prepare(csv_path, options, settings)

    def sessions(self, preview: launch.LaunchPreview) -> list[str]:
        return [ray_backend.DRIVER_SESSION] if preview.todo else []

    def refuse(self, preview: launch.LaunchPreview) -> None:
        launch.refuse_if_needed(preview)

    def start(self, preview: launch.LaunchPreview) -> Started:
        result = ray_backend.execute(preview)
        if result.how is None:  # nothing left to run: no driver
            return Started([], attach=result.attach, status_command=result.status_command,
                           record={"backend": self.name, "ray_address": result.address})
        driver = {"shard": None, "session": ray_backend.DRIVER_SESSION, "devices": ray_backend.RAY_DEVICES,
                  "rows": result.rows, "how": result.how}
        note = (f"ray:    {result.address}; each row asks Ray for its GPUs; "
                f"driver log {preview.sweep_dir / ray_backend.DRIVER_LOG}")
        return Started([driver], attach=result.attach, status_command=result.status_command, notes=[note],
                       record={"backend": self.name, "ray_address": result.address})

    def rerun(self, plan: Plan, run_id: str, *, sweep_dir: Path, launched: dict[str, Any], session: str,
              settings: Settings, force: bool, gpu: int | None) -> RerunCommand:
        argv = ray_backend.rerun_driver_argv(sweep_dir, run_id, launched.get("ray_address"), session=session,
                                             stale_after_s=settings.stale_after_s, force=force, gpu=gpu)
        return RerunCommand(argv, ray_backend.RAY_DEVICES)


BACKEND = RayBackend()
