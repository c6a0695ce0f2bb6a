"""The backend protocol, after SkyPilot's `sky/backends/backend.py`, and the registry.

A backend takes a validated sweep to rows running somewhere. Everything before it (CSV -> specs ->
plan, the run table) and after it (run directories, the sweep manifest, `status`, `report`) is
shared: a backend adds only where rows run and how one run is started again.

    preflight(csv, options, settings) -> LaunchPreview   the plan, pre-flight checks and run table;
                                                         writes nothing
    start(preview)                                       writes the manifest and starts the rows
                                                         (Slurm: writes the job script to submit)
    rerun(plan, run_id, ...) -> RerunCommand             the command a `rerun-<run_id>` tmux
                                                         session runs to start one run again
    stop                                                 every backend's driver or runners write a
                                                         state file in the manifest; `control.stop`
                                                         signals them all alike
    status                                               run directories and the manifest, read by
                                                         `status` whatever ran the rows

Built-in backends are imported on first use, so `sweepctl --help` imports no engine's library.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sweepctl.errors import SweepctlError

if TYPE_CHECKING:
    from sweepctl.launch import LaunchOptions, LaunchPreview
    from sweepctl.settings import Settings
    from sweepctl.sweep.plan import Plan


@dataclass(frozen=True)
class RerunCommand:
    """What the `rerun-<run_id>` session runs: argv, the devices it reports, its extra environment."""

    argv: list[str]
    devices: str
    env: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    # True: the engine puts each row on a node itself (Ray, Slurm), so launch's shard options
    # (--shards, --schedule, --gpus-per-shard, --fail-fast) mean nothing and are refused.
    places_rows: bool

    def preflight(self, csv_path: Path, options: LaunchOptions, settings: Settings) -> LaunchPreview: ...

    def start(self, preview: LaunchPreview) -> Any: ...

    def rerun(self, plan: Plan, run_id: str, *, sweep_dir: Path, launched: dict[str, Any], session: str,
              settings: Settings, force: bool, gpu: int | None) -> RerunCommand: ...


# name -> the module that defines BACKEND; imported when first asked for.
_MODULES: dict[str, str] = {
    "tmux": "sweepctl.backends.tmux",
    "ray": "sweepctl.backends.ray",
    "slurm": "sweepctl.backends.slurm",
}


def register(name: str, module: str) -> None:
    """Make `--backend NAME` (and a launch.json naming it) use `module`'s BACKEND."""
    if name in _MODULES and _MODULES[name] != module:
        raise SweepctlError(f"backend {name!r} is already {_MODULES[name]}", where=module,
                            hint="register the new backend under another name")
    _MODULES[name] = module


def names() -> list[str]:
    return sorted(_MODULES)


def get(name: str) -> Backend:
    if name not in _MODULES:
        raise SweepctlError(f"--backend must be one of {', '.join(names())}, got {name!r}")
    backend: Backend = importlib.import_module(_MODULES[name]).BACKEND
    return backend


def of_launch(record: dict[str, Any]) -> Backend:
    """The backend that launched a sweep, from its launch.json (tmux when it names none)."""
    return get((record.get("options") or {}).get("backend") or "tmux")
