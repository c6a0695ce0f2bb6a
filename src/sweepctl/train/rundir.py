"""The run directory's plumbing: atomic, secret-free writes, the heartbeat thread, provenance.

Every JSON file the trainer writes goes through `write_json` (contract's atomic writer, after
`scrub`): a reader (status, the runner, a report pulled over SSH) never sees half a file, and no
secret environment value (WANDB_API_KEY, HF_TOKEN, any *_KEY/_TOKEN/_SECRET/_PASSWORD) reaches
disk. No torch here.

    from sweepctl.train.rundir import write_json
    write_json(Path("out/run/summary.json"), {"ok": True})
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from sweepctl.train.contract import write_json_atomic

# Env vars whose values must never reach a file; plus any *_KEY/_TOKEN/_SECRET/_PASSWORD variable.
SECRET_ENV = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN")
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD)$", re.IGNORECASE)


def secret_values() -> list[str]:
    vals = {v for k, v in os.environ.items() if (k in SECRET_ENV or SECRET_NAME.search(k)) and len(v) >= 6}
    return sorted(vals, key=len, reverse=True)


def scrub(obj: Any, secrets: list[str]) -> Any:
    """obj with every occurrence of a secret value in any string replaced by <redacted>."""
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, "<redacted>")
        return obj
    if isinstance(obj, dict):
        return {scrub(k, secrets): scrub(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, secrets) for v in obj]
    return obj


# A write that fails for one of these fails for the volume, not for the run: error_class "disk".
DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def disk_cause(e: BaseException) -> OSError | None:
    """The ENOSPC/EROFS behind `e`, also when a library re-raised it as something else (torch.save
    turns a failed write into a RuntimeError while closing its zip file)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError) and cur.errno in DISK_ERRNOS:
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def is_disk_error(e: BaseException) -> bool:
    return disk_cause(e) is not None


def free_space(path: Path) -> str:
    """'12.3 MiB free on /mnt' for the volume holding `path` (its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:,.1f} MiB free"


def disk_error_text(e: BaseException, path: Path) -> str:
    """The one line a disk failure is reported as: what failed, where, and the space left."""
    cause = disk_cause(e)
    errno_ = cause.errno if cause is not None else getattr(e, "errno", None)
    return f"{os.strerror(errno_ or 0)} writing {path} ({free_space(path.parent)})"


def remove_partial(tmp: Path) -> None:
    """A failed write's own temp file goes: on a full volume it holds the space the summary needs."""
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def write_json(path: Path, obj: Any) -> None:
    """Atomic (see contract.write_bytes_atomic) and scrubbed: a reader never sees half a file or a
    secret; NaN is refused (the trainer records a non-finite value as null, never as NaN)."""
    write_json_atomic(path, scrub(obj, secret_values()), default=str, allow_nan=False)


def git_info() -> dict[str, Any] | None:
    """Commit and dirtiness of the checkout the package runs from (None when not a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sweepctl")
    except PackageNotFoundError:
        return None


def wandb_run_id(run_id: str) -> str:
    """Stable per run_id, so a resumed run continues the same W&B run; W&B ids allow [\\w-]."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", run_id)[:40]
    return f"{safe}-{hashlib.sha1(run_id.encode()).hexdigest()[:8]}"


class Heartbeat:
    """heartbeat.json every `interval` seconds from a daemon thread, so a slow step (or a long
    compile) still beats; the runner reads it to tell running from stale."""

    def __init__(self, path: Path, interval: float, max_iters: int):
        self.path, self.interval, self.max_iters = path, interval, max_iters
        self.iter, self.phase = 0, "starting"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except OSError:
                pass  # a full disk must not kill the thread; the next beat retries

    def beat(self) -> None:
        write_json(self.path, {"ts": time.time(), "iter": self.iter, "max_iters": self.max_iters,
                               "pid": os.getpid(), "host": socket.gethostname(), "phase": self.phase})

    def stop(self, phase: str = "ended") -> None:
        """Stop the thread and write a last beat (the run's final iteration and phase)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.phase = phase
        try:
            self.beat()
        except OSError:
            pass
