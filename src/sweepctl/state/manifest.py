"""The sweep manifest: what a launch leaves under `<out_root>/.sweeps/<name>/` so that `status`,
`stop`, `rerun`, `report`, a Ray or Slurm row and a postmortem can read the sweep back after the
laptop (or the pod) that launched it is gone.

    .sweeps/<name>/
      <name>.csv          the CSV launched (a changed CSV keeps the old one as .bak-)
      configs/...         the config files its rows name, copied the same way
      plan.json           the Plan: rows, shards, GPUs (PLAN_FILE)
      launch.json         the last launch: options, host, pod, rows by action (LAUNCH_FILE)
      launches.jsonl      every launch, one line each (LAUNCH_HISTORY)
      .plan.lock          held around every read-modify-write of plan.json (sweep_lock)
      claims/<launch_id>/ one file per row a runner of a dynamic launch has claimed (claims_dir)
      slots/              the GPU gates of `--runs-per-gpu` slots (slots_dir, slots.GpuGate)
      notified/<event>    one marker per webhook message sent, so each is sent once (notified_dir)
      <session>.json      each runner's own state (runner.py)
      upload/             on a pod: what `launch --host` uploaded, and hosts.json (which pod runs which row)
      slurm/              sbatch's logs (backends/slurm_export.py)

    plan, launched = load_manifest(out_root, latest_sweep(out_root))
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import posixpath
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweepctl.errors import SweepctlError
from sweepctl.state import runs
from sweepctl.train.contract import write_bytes_atomic

if TYPE_CHECKING:
    from sweepctl.sweep.plan import Plan

SWEEPS_DIR = ".sweeps"
PLAN_FILE = "plan.json"
LAUNCH_FILE = "launch.json"
LAUNCH_HISTORY = "launches.jsonl"
PLAN_LOCK = ".plan.lock"
CLAIMS_DIR = "claims"
SLOTS_DIR = "slots"
NOTIFIED_DIR = "notified"
UPLOAD_DIR = "upload"  # on a pod: the CSV and config files `launch --host` uploaded there
LAYOUT_FILE = "hosts.json"  # in upload/: which pod each row of the sweep was given to (hosts.layout_json)


def sweeps_root(out_root: str | Path) -> Path:
    return Path(out_root) / SWEEPS_DIR


def sweep_dir(out_root: str | Path, name: str) -> Path:
    return sweeps_root(out_root) / name


def remote_sweep_dir(out_root: str, name: str) -> str:
    """The same folder as a POSIX path on a pod (its out_root as the pod spells it)."""
    return posixpath.join(out_root, SWEEPS_DIR, name)


def layout_path(directory: Path) -> Path:
    return directory / UPLOAD_DIR / LAYOUT_FILE


def claims_dir(directory: Path, launch_id: str) -> Path:
    """Where the runners of one dynamic launch claim rows: a file per row, created exclusively."""
    return directory / CLAIMS_DIR / launch_id


def slots_dir(directory: Path) -> Path:
    return directory / SLOTS_DIR


def notified_dir(directory: Path) -> Path:
    return directory / NOTIFIED_DIR


@contextlib.contextmanager
def sweep_lock(directory: Path, timeout_s: float = 60.0) -> Iterator[None]:
    """An exclusive flock on `<sweep_dir>/.plan.lock` around a read-modify-write of plan.json, so
    two `launch`es adding rows, or a `prioritize`, never lose each other's change."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / PLAN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    raise TimeoutError(f"{directory / PLAN_LOCK} held for {timeout_s:g} s") from e
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


# --- writing -------------------------------------------------------------------------------------

def replace_keeping_old(path: Path, content: bytes) -> None:
    """Write `path` atomically unless it already holds `content`; a different old file moves to `.bak-`."""
    if path.exists():
        if path.read_bytes() == content:
            return
        runs.backup(path.parent, [path.name])
    write_bytes_atomic(path, content)


def write_plan(directory: Path, plan: Plan) -> None:
    text = json.dumps(plan.model_dump(mode="json"), indent=2) + "\n"
    replace_keeping_old(directory / PLAN_FILE, text.encode())


def save_plan(directory: Path, plan: Plan) -> None:
    """plan.json replaced in place (no `.bak-`): a live queue's rows joining, or a new priority,
    written under `sweep_lock` for the runners to read before their next claim."""
    runs.write_json_atomic(directory / PLAN_FILE, plan.model_dump(mode="json"))


def record_launch(directory: Path, record: dict[str, Any]) -> None:
    """launch.json (the last launch) and one more line of launches.jsonl (all of them)."""
    runs.write_json_atomic(directory / LAUNCH_FILE, record)
    with open(directory / LAUNCH_HISTORY, "a") as f:
        f.write(json.dumps(record) + "\n")


# --- reading -------------------------------------------------------------------------------------

def read_plan(directory: Path) -> Plan:
    """plan.json of a sweep folder (FileNotFoundError when the sweep was never launched there)."""
    from sweepctl.sweep.plan import Plan  # here: the plan's models (pydantic) only for a sweep that has one

    return Plan.model_validate_json((directory / PLAN_FILE).read_text())


def read_launch(directory: Path) -> dict[str, Any]:
    """launch.json of a sweep folder; {} when absent or unreadable."""
    return runs.read_json(directory / LAUNCH_FILE) or {}


def latest_sweep(out_root: Path) -> str | None:
    """The sweep launched most recently under out_root (by launch.json's time)."""
    best: tuple[float, str] | None = None
    for launch_file in sweeps_root(out_root).glob(f"*/{LAUNCH_FILE}"):
        record = runs.read_json(launch_file) or {}
        ts = float(record.get("ts") or launch_file.stat().st_mtime)
        if best is None or ts > best[0]:
            best = (ts, launch_file.parent.name)
    return best[1] if best else None


def load_manifest(out_root: Path, name: str) -> tuple[Plan, dict[str, Any]]:
    """A launched sweep's plan and its last launch record."""
    d = sweep_dir(out_root, name)
    try:
        plan = read_plan(d)
    except FileNotFoundError:
        raise SweepctlError(f"no sweep {name!r} under {out_root}", where=str(d),
                            hint=f"see `sweepctl status --out-root {shlex.quote(str(out_root))}` for the sweeps "
                                 "there") from None
    except ValueError as e:  # pydantic's ValidationError: a plan.json this version cannot read
        first = [line.strip() for line in str(e).splitlines()[1:3]]
        raise SweepctlError(f"sweep {name!r}: {PLAN_FILE} does not read as a plan ({'; '.join(first)})",
                            where=str(d / PLAN_FILE),
                            hint=f"use the sweepctl version that launched it, or relaunch its CSV: sweepctl launch "
                                 f"{shlex.quote(str(d / (name + '.csv')))} --out-root "
                                 f"{shlex.quote(str(out_root))}") from None
    return plan, read_launch(d)


def plans(out_root: Path) -> dict[str, Plan]:
    """Every readable plan under out_root, by sweep name (sorted); an unreadable one is left out."""
    found = {}
    for plan_file in sorted(sweeps_root(out_root).glob(f"*/{PLAN_FILE}")):
        try:
            found[plan_file.parent.name] = read_plan(plan_file.parent)
        except (OSError, ValueError):
            continue
    return found


def find_run(out_root: Path, run_id: str) -> tuple[str, Plan] | None:
    """The most recently launched sweep whose plan has `run_id`."""
    found = [(float(read_launch(sweep_dir(out_root, name)).get("ts") or 0), name, plan)
             for name, plan in plans(out_root).items() if any(r.run_id == run_id for r in plan.runs)]
    if not found:
        return None
    _, name, plan = max(found, key=lambda t: t[0])
    return name, plan
