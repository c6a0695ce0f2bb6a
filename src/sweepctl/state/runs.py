"""The run directory, seen from the orchestration side: paths, atomic JSON, and a run's state.

    view = read_run(Path("/mnt/pod_artifacts/outputs/fineweb10B-mhc-6l-s1337"), stale_after_s=120)
    view.state  # pending | running | ok | failed | stale | cancelled

The state is `classify`'s (pending, running, ok, failed, stale). Reads are cheap on purpose — `status` reads
thousands of run directories per refresh: summary.json and heartbeat.json are small, the runner's
own record is small, and metrics.jsonl is only ever tailed from its end. Nothing here writes except
`write_json_atomic`, `backup` and the lock, which the runner uses.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sweepctl.train.contract import (
    CANCEL,
    CHECKPOINT,
    COMPLETE_FILES,
    HEARTBEAT,
    LOCK,
    METADATA,
    METRICS,
    OWNER,
    STDOUT_LOG,
    SUMMARY,
    run_id_problem,
)

# The one atomic writer, re-exported: the orchestration side writes runs.write_json_atomic(...).
from sweepctl.train.contract import write_json_atomic as write_json_atomic

RunState = Literal["pending", "running", "ok", "failed", "stale", "cancelled"]
STATES: tuple[RunState, ...] = ("pending", "running", "ok", "failed", "stale", "cancelled")

# What a fresh restart moves aside; a resume keeps them (the trainer continues the metrics).
RESTART_BACKUPS = (STDOUT_LOG, SUMMARY, METRICS, HEARTBEAT, CHECKPOINT)
RETRY_BACKUPS = (STDOUT_LOG, SUMMARY)

# What a run_id may be (the CSV's rule): one safe path component, never `..`, never a path.
# A run directory's files that a link could redirect a write through (backups, locks, the trainer).
LINKABLE = (*COMPLETE_FILES, OWNER, LOCK)

# Below this free space not even a summary.json (a few KiB) is sure to fit: the volume is full.
FULL_BYTES = 1 << 20
TAIL_BYTES = 8192  # one read from the end of metrics.jsonl covers dozens of rows
TAIL_MAX_BYTES = 256 * 1024  # how far back to look for the last eval row of a running run

HOST = socket.gethostname()


def run_dir(out_root: str | Path, run_id: str) -> Path:
    return Path(out_root) / run_id


def symlink_problem(directory: Path) -> str | None:
    """Why sweepctl must not write in `directory`: it, or one of its contract files, is a symlink.

    A link would send a backup's rename or a new run's files to wherever it points, outside the
    out-root; the message names the link, never its target."""
    if directory.is_symlink():
        return f"run directory {directory} is a symlink; sweepctl never writes through one (make it a real directory)"
    for name in LINKABLE:
        if (directory / name).is_symlink():
            return (f"{directory / name} is a symlink; sweepctl never writes through one "
                    f"(move it away: mv {directory / name} {directory / name}.link)")
    return None


def resolve_run_dir(out_root: str | Path, run_id: str) -> Path:
    """<out_root>/<run_id> for a valid run_id whose directory is not a link out of the out-root.

    ValueError with a message that reveals nothing outside the out-root."""
    problem = run_id_problem(run_id)
    if problem:
        raise ValueError(problem)
    directory = run_dir(out_root, run_id)
    if directory.is_symlink():
        raise ValueError(f"run directory {directory} is a symlink; sweepctl reads and writes only real "
                         "directories in the out-root")
    return directory


# --- writing -------------------------------------------------------------------------------------

def nearest_existing(path: Path) -> Path:
    """`path`, or its closest parent that exists: where a not-yet-made out_root will live (its
    volume's free space, whether it can be created)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_point(path: Path) -> Path:
    """The mount point of the volume holding `path` (or its nearest existing parent): the longest
    mount in /proc/self/mounts that contains it, so a bind mount counts too."""
    path = Path(os.path.realpath(nearest_existing(Path(path).absolute())))
    try:
        with open("/proc/self/mounts") as f:
            # octal escapes: a space in a mount point is written \040
            points = [Path(line.split()[1].encode().decode("unicode_escape")) for line in f if line.strip()]
    except OSError:
        points = []
    inside = [p for p in points if path == p or p in path.parents]
    if inside:
        return max(inside, key=lambda p: len(p.parts))
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def backup_stamp(now: float | None = None) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now))


def backup(directory: Path, names: tuple[str, ...] | list[str], now: float | None = None) -> list[Path]:
    """Move each existing file to `<name>.bak-<YYYYmmdd-HHMMSS>`; never overwrite an earlier backup.

    Moving (not copying) keeps a multi-GB checkpoint cheap; nothing a user may want is deleted."""
    stamp = backup_stamp(now)
    moved = []
    for name in names:
        src = directory / name
        if not src.exists():
            continue
        dst = directory / f"{name}.bak-{stamp}"
        n = 1
        while dst.exists():  # two backups within one second
            dst = directory / f"{name}.bak-{stamp}-{n}"
            n += 1
        os.replace(src, dst)
        moved.append(dst)
    return moved


def backups_of(directory: Path, name: str) -> list[Path]:
    return sorted(directory.glob(f"{name}.bak-*"))


# --- the per-run lock ----------------------------------------------------------------------------

class RunLock:
    """An flock on `<run_dir>/.sweepctl.lock`, held by the runner and inherited by its trainer child.

    The kernel drops it when the last holder dies, so "the owner is alive" is a question anyone on
    the machine can ask without trusting a pid file."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK
        self.fd: int | None = None

    def acquire(self, wait_s: float = 1.0) -> bool:
        """Take the lock; retry for `wait_s` because a `status` probe holds it for microseconds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return True
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.02)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing our copy; a still-running child keeps the lock alive
            self.fd = None


def lock_held(directory: str | Path) -> bool:
    """Whether some live process holds the run's lock (a shared probe, released at once)."""
    try:
        fd = os.open(os.path.join(directory, LOCK), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the probe's shared lock
    return False


def pid_alive(pid: int) -> bool:
    """True for a live process on this machine; a zombie (killed, not yet reaped) counts as dead."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): signal 0 is the best we have
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


# --- reading -------------------------------------------------------------------------------------

def create_once(path: Path, record: dict[str, Any]) -> bool:
    """Create `path` holding `record`, unless it exists: True for exactly one caller across
    processes (O_EXCL), which is what makes a claim or a sent notification happen once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return True


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object, or None when absent or unreadable (a half-written file from a foreign writer)."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def tail_lines(path: Path, n: int, *, block: int = TAIL_BYTES) -> list[str]:
    """The last `n` lines of a text file, reading backwards from its end in blocks."""
    if n <= 0:
        return []
    try:
        with open(path, "rb") as f:
            pos = f.seek(0, os.SEEK_END)
            data = b""
            while pos > 0 and data.count(b"\n") <= n:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:]


def follow(path: Path, *, done: Callable[[], bool], poll_s: float = 0.5, quiet_s: float = 1.0,
           from_start: bool = False) -> Iterator[str]:
    """Text appended to `path` from its current end, like `tail -F`: a file moved aside (a new
    attempt's `.bak-`) is followed into its replacement. Ends once `done()` and the file is quiet.
    `from_start`: all of it, for a file that did not exist when the caller looked (it may have
    appeared since, and its first lines are then new to the reader)."""
    pos, ino = (0, None) if from_start else _size_and_inode(path)
    quiet_since = time.monotonic()
    while True:
        size, new_ino = _size_and_inode(path)
        if new_ino != ino or size < pos:
            pos, ino = 0, new_ino  # replaced or truncated: start the new file from its beginning
        if size > pos:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read(size - pos)
            pos += len(data)
            quiet_since = time.monotonic()
            yield data.decode("utf-8", "replace")
            continue
        if done() and time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(poll_s)


def _size_and_inode(path: Path) -> tuple[int, int | None]:
    try:
        st = path.stat()
    except OSError:
        return 0, None
    return st.st_size, st.st_ino


@dataclass
class MetricsTail:
    """What status needs from metrics.jsonl: the newest train-loss row and the newest eval row."""

    train: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None
    previous_train: dict[str, Any] | None = None  # the train row before `train`, for the iteration rate


def tail_metrics(path: str | Path) -> MetricsTail:
    """Scan metrics.jsonl backwards until a train row and an eval row are found (bounded)."""
    out = MetricsTail()
    try:
        with open(path, "rb") as f:
            pos = f.seek(0, os.SEEK_END)
            carry = b""
            read = 0
            while pos > 0 and read < TAIL_MAX_BYTES:
                step = min(TAIL_BYTES, pos)
                pos -= step
                f.seek(pos)
                chunk = f.read(step) + carry
                read += step
                lines = chunk.split(b"\n")
                carry = lines[0] if pos > 0 else b""  # maybe a partial line; the next block completes it
                for raw in reversed(lines[1:] if pos > 0 else lines):
                    if _take(out, raw):
                        return out
    except OSError:
        pass
    return out


def _take(out: MetricsTail, raw: bytes) -> bool:
    """File a line (newest first); True once everything status needs is found.

    A cheap substring test comes first: most lines are train rows status no longer needs, and
    decoding every one of them is what would make status slow on thousands of runs."""
    if out.eval is None and b'"val' in raw:
        row = _json_line(raw)
        if row is not None and is_eval_row(row):
            out.eval = row
            return out.previous_train is not None
    if out.previous_train is None and b'"loss"' in raw:
        row = _json_line(raw)
        if row is not None and "loss" in row and not is_eval_row(row):
            if out.train is None:
                out.train = row
            else:
                out.previous_train = row
    return out.eval is not None and out.previous_train is not None


def is_eval_row(row: dict[str, Any]) -> bool:
    return "val" in row or "val_loss" in row


def _json_line(raw: bytes) -> dict[str, Any] | None:
    raw = raw.strip()
    if not raw.startswith(b"{"):
        return None
    try:
        row = json.loads(raw)
    except ValueError:
        return None  # the line being written right now
    return row if isinstance(row, dict) else None


@dataclass
class RunView:
    """One run directory as status and launch see it."""

    run_id: str
    directory: Path
    state: RunState
    summary: dict[str, Any] | None = None
    heartbeat: dict[str, Any] | None = None
    owner: dict[str, Any] | None = None  # runner.json: the runner's record of the current/last attempt
    heartbeat_age_s: float | None = None
    why: str = ""  # one phrase: why this state (shown for stale and running)
    cancel_marked: bool = False  # `sweepctl cancel`'s marker is in the directory now
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def error_class(self) -> str | None:
        if self.summary is None or self.summary.get("ok") is True:
            return None
        return self.summary.get("error_class") or self.summary.get("status") or "unknown"

    @property
    def has_checkpoint(self) -> bool:
        return (self.directory / CHECKPOINT).exists()


def classify(*, summary: dict[str, Any] | None, heartbeat: dict[str, Any] | None, held: bool,
             owner_started: float | None, now: float, stale_after_s: float,
             checkpoint: bool = False, cancelled: bool = False) -> tuple[RunState, str]:
    """The run table's state, from what is on disk and whether the lock is held. Pure.

    A trainer that died while its runner still lives (the lock is held) is stale, not running:
    its heartbeat was written in this attempt by a pid that is gone. The runner writes the summary
    moments later and the run becomes failed."""
    if summary is not None and summary.get("ok") is True:
        return "ok", ""
    # A cancelled run is neither failed nor pending: it ends as the researcher asked. While its
    # runner still holds the lock it is ending, and counts as running until it has.
    if (cancelled and not held) or (summary is not None and summary.get("status") == "cancelled"):
        return "cancelled", ""
    if summary is not None:
        return "failed", ""
    hb_pid = _as_int(heartbeat.get("pid")) if heartbeat else None
    hb_ts = _as_float(heartbeat.get("ts")) if heartbeat else None
    local = heartbeat is not None and heartbeat.get("host") in (None, HOST)
    trainer_dead = local and hb_pid is not None and not pid_alive(hb_pid)
    if held:
        this_attempt = hb_ts is not None and (owner_started is None or hb_ts >= owner_started - 1.0)
        if trainer_dead and this_attempt:
            return "stale", f"trainer pid {hb_pid} is gone"
        return "running", ""
    if heartbeat is None:
        # A checkpoint is work done: a run that has one is resumed, never started over as pending.
        return ("stale", "heartbeat missing or unreadable; has a checkpoint") if checkpoint else ("pending", "")
    if trainer_dead:
        return "stale", f"trainer pid {hb_pid} is gone"
    if hb_ts is None or now - hb_ts > stale_after_s:
        return "stale", "heartbeat is old"
    return "running", ""


def read_run(directory: Path, *, stale_after_s: float, now: float | None = None, probe_lock: bool = True,
             run_id: str | None = None) -> RunView:
    """Read one run directory (which may not exist: a pending run)."""
    now = time.time() if now is None else now
    rid = run_id or directory.name
    d = os.fspath(directory)  # plain strings: building pathlib paths was a third of a 2,000-run status
    summary = read_json(os.path.join(d, SUMMARY))
    owner = read_json(os.path.join(d, OWNER))  # small; says which shard ran it under the dynamic schedule
    heartbeat = None
    held = checkpoint = False
    cancelled = False
    if summary is None or summary.get("ok") is not True:  # an ok run needs no heartbeat, lock probe, marker
        cancelled = os.path.exists(os.path.join(d, CANCEL))
    if summary is None:  # a finished run needs neither its heartbeat nor a lock probe
        heartbeat = read_json(os.path.join(d, HEARTBEAT))
        held = probe_lock and lock_held(d)
        checkpoint = heartbeat is None and os.path.exists(os.path.join(d, CHECKPOINT))
    state, why = classify(summary=summary, heartbeat=heartbeat, held=held,
                          owner_started=_as_float(owner.get("started")) if owner else None,
                          now=now, stale_after_s=stale_after_s, checkpoint=checkpoint, cancelled=cancelled)
    age = None
    if heartbeat is not None and _as_float(heartbeat.get("ts")) is not None:
        age = max(0.0, now - float(heartbeat["ts"]))
    return RunView(run_id=rid, directory=directory, state=state, summary=summary, heartbeat=heartbeat,
                   owner=owner, heartbeat_age_s=age, why=why, cancel_marked=cancelled)


def list_run_dirs(out_root: Path) -> list[Path]:
    """Every run directory under out_root (sorted), for a status without a sweep manifest."""
    return [Path(out_root, name) for name in run_dir_names(out_root)]


def run_dir_names(out_root: str | Path) -> list[str]:
    """The names of list_run_dirs, sorted (a Path per directory, and sorting Paths, were a fifth of
    a 2,000-run status)."""
    try:
        entries = list(os.scandir(out_root))
    except OSError:
        return []
    names = []
    for e in entries:
        if e.name.startswith(".") or not e.is_dir():
            continue
        if any(os.path.exists(os.path.join(e.path, name)) for name in (SUMMARY, HEARTBEAT, METADATA, OWNER,
                                                                         STDOUT_LOG, CANCEL)):
            names.append(e.name)
    return sorted(names)


def _as_int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _as_float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
