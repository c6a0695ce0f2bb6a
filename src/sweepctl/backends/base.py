"""The backend protocol, after SkyPilot's `sky/backends/backend.py`, and the registry.

A backend takes a validated sweep to rows running somewhere. Everything before it (CSV -> specs ->
plan, the run table) and after it (run directories, the sweep manifest, `status`, `report`) is
shared: a backend adds only where rows run and how one run is started again.

    options(request) -> LaunchOptions         launch's flags as typed, given this backend's meaning
                                               (the tmux backend counts GPUs for a missing --shards)
    preflight(csv, options, settings)          the plan, the pre-flight checks of where the rows
        -> LaunchPreview                       will run, and the run table; writes nothing
    sessions(preview) -> [session]             the tmux sessions `start` would start (a dry run's line)
    refuse(preview)                            raises what `start` would refuse, writing nothing
                                               (a dry run ends here)
    start(preview) -> Started                  refuses as the checks and the run table say, then
                                               writes the manifest and starts the rows
    rerun(plan, run_id, ...) -> RerunCommand   the command a `rerun-<run_id>` tmux session runs to
                                               start one run again
    stop                                       every backend's driver or runners write a state file
                                               in the manifest; `control.stop` signals them all alike
    status                                     run directories and the manifest, read by `status`
                                               whatever ran the rows

Built-in backends are imported on first use, so `sweepctl --help` imports no engine's library.
"""

from __future__ import annotations

import difflib
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
class LaunchRequest:
    """`launch`'s flags as typed (None: not given), before a backend gives them meaning."""

    csv_path: Path
    settings: Settings
    # The LaunchOptions fields every backend shares, as keywords: name, no_wandb, dry_run, force,
    # retry_failed, skip_failed, max_retries, stall_after_s, run_timeout_s, include_cancelled, placed_on.
    common: dict[str, Any]
    # Where tmux shards put rows (--shards, --schedule, --gpus-per-shard, --runs-per-gpu,
    # --fail-fast), by flag; None or the default when not given.
    shard_flags: dict[str, Any] = field(default_factory=dict)
    # One engine's own flags, by flag: {"--ray-address": "10.0.0.5:6379"}; None when not given.
    engine_flags: dict[str, Any] = field(default_factory=dict)

    def shard_flags_given(self) -> list[str]:
        # `--shards 1` is no shard option: an engine's plan is one shard, and `launch --host` sends it
        defaults = {"--gpus-per-shard": 1, "--fail-fast": False, "--shards": 1, "--schedule": "static",
                    "--runs-per-gpu": 1}
        return [flag for flag, value in self.shard_flags.items() if value not in (None, defaults.get(flag))]


@dataclass
class Started:
    """What `start` did, in the one shape `launch` draws (and `launch --json` prints) for every backend."""

    sessions: list[dict[str, Any]]  # {"shard", "session", "devices", "rows", "how"} per session started
    refused_sessions: list[str] = field(default_factory=list)  # still running: never killed, not started
    attach: str | None = None
    status_command: str | None = None
    notes: list[str] = field(default_factory=list)  # the backend's own lines under the sessions
    record: dict[str, Any] = field(default_factory=dict)  # the backend's own keys in `launch --json`


@dataclass(frozen=True)
class RerunCommand:
    """What the `rerun-<run_id>` session runs: argv, the devices it reports, its extra environment."""

    argv: list[str]
    devices: str
    env: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    # True: the engine puts each row on a node itself (Ray, Slurm), so launch's shard options
    # (--shards, --schedule, --gpus-per-shard, --runs-per-gpu, --fail-fast) mean nothing and are refused.
    places_rows: bool
    # launch flags only this backend reads (`--ray-address`); given to another backend, refused.
    engine_flags: tuple[str, ...]

    def options(self, request: LaunchRequest) -> LaunchOptions: ...

    def preflight(self, csv_path: Path, options: LaunchOptions, settings: Settings) -> LaunchPreview: ...

    def sessions(self, preview: LaunchPreview) -> list[str]: ...

    def refuse(self, preview: LaunchPreview) -> None: ...

    def start(self, preview: LaunchPreview) -> Started: ...

    def rerun(self, plan: Plan, run_id: str, *, sweep_dir: Path, launched: dict[str, Any], session: str,
              settings: Settings, force: bool, gpu: int | None) -> RerunCommand: ...


# name -> the module that defines BACKEND; imported when first asked for.
_MODULES: dict[str, str] = {
    "tmux": "sweepctl.backends.tmux",
    "ray": "sweepctl.backends.ray",
    "slurm": "sweepctl.backends.slurm",
}
DEFAULT = "tmux"  # a launch.json that names no backend was written by a tmux launch
# An installed package adds a backend to the command line without code here by declaring
#     [project.entry-points."sweepctl.backends"]
#     toy = "toy_backend"
# which is the same as register("toy", "toy_backend"). Read on the first lookup that needs it.
ENTRY_POINTS = "sweepctl.backends"
_declared: list[bool] = []  # [True] once the entry points were read


def register(name: str, module: str) -> None:
    """Make `--backend NAME` (and a launch.json naming it) use `module`'s BACKEND."""
    if name in _MODULES and _MODULES[name] != module:
        raise SweepctlError(f"backend {name!r} is already {_MODULES[name]}", where=module,
                            hint="register the new backend under another name")
    _MODULES[name] = module


def unregister(name: str) -> None:
    """Forget a backend registered with `register` (the built-in ones stay)."""
    if name not in ("tmux", "ray", "slurm"):
        _MODULES.pop(name, None)


def _read_entry_points() -> None:
    if _declared:
        return
    _declared.append(True)
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINTS):
        _MODULES.setdefault(point.name, point.value)  # a built-in name is never taken over


def names() -> list[str]:
    _read_entry_points()
    return sorted(_MODULES)


def get(name: str) -> Backend:
    if name not in _MODULES:
        _read_entry_points()
    if name not in _MODULES:
        close = difflib.get_close_matches(name, names(), n=1, cutoff=0.5)
        raise SweepctlError(f"--backend must be one of {', '.join(names())}, got {name!r}",
                            hint=f"did you mean --backend {close[0]}?" if close else None)
    backend: Backend = importlib.import_module(_MODULES[name]).BACKEND
    return backend


def of_launch(record: dict[str, Any]) -> Backend:
    """The backend that launched a sweep, from its launch.json (tmux when it names none)."""
    return get((record.get("options") or {}).get("backend") or DEFAULT)


def check_request(backend: Backend, request: LaunchRequest) -> None:
    """Refuse flags the chosen backend would ignore: a flag given and ignored is a silent surprise."""
    if backend.places_rows and (given := request.shard_flags_given()):
        raise SweepctlError(f"{', '.join(given)} place rows on tmux shards; with --backend {backend.name}, "
                            f"{backend.name} places each row on a node with the GPUs it asks for (the CSV's gpus "
                            "column)", hint=f"drop {', '.join(given)}")
    strays = [flag for flag, value in request.engine_flags.items()
              if value is not None and flag not in backend.engine_flags]
    if strays:
        owners = [n for n in names() if n != backend.name and _declares(n, strays[0])]
        raise SweepctlError(f"{', '.join(strays)} means nothing to --backend {backend.name}",
                            hint=f"drop {', '.join(strays)}" + (f", or pass --backend {owners[0]}" if owners else ""))


def _declares(name: str, flag: str) -> bool:
    try:
        return flag in get(name).engine_flags
    except (ImportError, SweepctlError):
        return False
