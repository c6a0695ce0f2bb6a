"""tmux shards: one session per shard, each a runner walking (or claiming) its rows, on this
machine or, through `launch --host`, on each pod.

The launch itself is `launch.prepare` / `launch.execute`; this adapter adds what launch's flags
mean here (a missing --shards: the live sweep's shards, else one per GPU) and how one run starts
again: a runner for that row alone in session `rerun-<run_id>`, on the least busy GPUs.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sweepctl import launch
from sweepctl.backends.base import LaunchRequest, RerunCommand, Started
from sweepctl.errors import SweepctlError
from sweepctl.pod.gpus import least_busy, query_gpus
from sweepctl.pod.tmux import shard_session
from sweepctl.settings import Settings
from sweepctl.sweep.plan import Plan, cuda_visible_devices


class TmuxBackend:
    name = "tmux"
    places_rows = False
    engine_flags: tuple[str, ...] = ()

    def options(self, request: LaunchRequest) -> launch.LaunchOptions:
        flags, settings = request.shard_flags, request.settings
        shards = flags.get("--shards")
        if shards is None:  # rows joining a live sweep keep its shards
            shards = launch.live_shard_count(request.csv_path, request.common.get("name"), settings)
        gpus_per_shard = flags.get("--gpus-per-shard") or 1
        if shards is None:
            from sweepctl.sweep.hosts import default_shards

            found = query_gpus()
            shards = default_shards(len(found.gpus), gpus_per_shard, where="this machine", problem=found.problem)
        # slots claim rows: K > 1 means the dynamic schedule unless static was asked for (make_plan refuses that)
        schedule = flags.get("--schedule") or ("dynamic" if settings.runs_per_gpu > 1 else "static")
        return launch.LaunchOptions(shards=shards, schedule=schedule, gpus_per_shard=gpus_per_shard,
                                    runs_per_gpu=settings.runs_per_gpu, fail_fast=bool(flags.get("--fail-fast")),
                                    backend=self.name, **request.common)

    def preflight(self, csv_path: Path, options: launch.LaunchOptions, settings: Settings) -> launch.LaunchPreview:
        return launch.prepare(csv_path, options, settings)

    def sessions(self, preview: launch.LaunchPreview) -> list[str]:
        return [shard_session(s) for s in preview.shards_to_start]

    def refuse(self, preview: launch.LaunchPreview) -> None:
        launch.refuse_if_needed(preview)

    def start(self, preview: launch.LaunchPreview) -> Started:
        return started_of(launch.execute(preview))

    def rerun(self, plan: Plan, run_id: str, *, sweep_dir: Path, launched: dict[str, Any], session: str,
              settings: Settings, force: bool, gpu: int | None) -> RerunCommand:
        planned = plan.run(run_id)
        devices = rerun_devices(plan, run_id, planned.gpus, planned.config.device, gpu)
        argv = [sys.executable, "-m", "sweepctl", "runner", str(sweep_dir), "--only", run_id,
                "--devices", devices, "--session", session, "--launched-at", repr(time.time()), "--force",
                "--stale-after", repr(settings.stale_after_s)]
        if planned.shard is not None:
            argv += ["--shard", str(planned.shard)]  # recorded in run_metadata's sweep context
        return RerunCommand(argv, devices, {"CUDA_VISIBLE_DEVICES": devices})


def started_of(result: launch.LaunchResult) -> Started:
    return Started([asdict(s) for s in result.started], list(result.refused_sessions), result.attach,
                   result.status_command)


def rerun_devices(plan: Plan, run_id: str, k: int, device: str | None, gpu: int | None) -> str:
    """CUDA_VISIBLE_DEVICES for a rerun: `--gpu` and the K after it, else the K least busy GPUs."""
    if device == "cpu":
        planned = plan.run(run_id)
        return str(gpu) if gpu is not None else (
            cuda_visible_devices(plan, planned.shard) if planned.shard is not None else "")
    visible = query_gpus().gpus
    if gpu is not None:
        wanted = list(range(gpu, gpu + k))
        missing = [i for i in wanted if i not in {g.index for g in visible}]
        if missing:
            raise SweepctlError(f"--gpu {gpu}: GPU(s) {', '.join(map(str, missing))} not visible "
                                f"({len(visible)} visible)", where=run_id, hint="see `sweepctl status` for the GPUs")
        return ",".join(map(str, wanted))
    if len(visible) < k:
        raise SweepctlError(f"the run needs {k} GPU(s) and {len(visible)} are visible", where=run_id,
                            hint="run it where GPUs are, or set device='cpu' in its row")
    return ",".join(map(str, least_busy(visible, k)))


BACKEND = TmuxBackend()
