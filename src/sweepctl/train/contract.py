"""The run contract: what a trainer leaves in its run directory, what the launcher tells it, and the
one atomic writer every file in it (and every other JSON file sweepctl writes) goes through.

Both sides read this one module: the trainer writes these files, the runner, `status`, `report`
and `control` read them. Standard library only, so the orchestration side can import it without
torch (tests/test_layout.py checks that).

    from sweepctl.train.contract import SUMMARY, write_json_atomic
    write_json_atomic(run_dir / SUMMARY, {"ok": True})
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONTRACT_VERSION = 1  # in run_metadata.json and summary.json; raise it when a file below changes meaning
RUN_KIND = "sweepctl.train"
# JSON {"sweep": {name, row_index, shard_index, ...}, "attempt": n} from the launcher to the trainer,
# recorded in run_metadata.json so a run directory says which sweep row made it.
CONTEXT_ENV = "SWEEPCTL_RUN_CONTEXT"

# What may name a run directory: the CSV's run_id, and every command that takes one.
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RUN_ID_MAX = 128

# The trainer's files.
STDOUT_LOG = "stdout.log"  # the runner's tee of the trainer's output
COMMAND = "command.sh"
METADATA = "run_metadata.json"
CONFIG_EFFECTIVE = "config_effective.json"
DATASET_MANIFEST = "dataset_manifest.json"
METRICS = "metrics.jsonl"
HEARTBEAT = "heartbeat.json"
CHECKPOINT = "ckpt.pt"
SUMMARY = "summary.json"
# The runner's files: who owns the run now (and owned it last), and the lock that proves it.
OWNER = "runner.json"
LOCK = ".sweepctl.lock"
# `sweepctl cancel`'s marker: no runner starts the run while it exists, and a runner working on it
# ends its trainer. `launch --include-cancelled` moves it aside.
CANCEL = "cancel.json"

# A complete, finished run directory has these.
COMPLETE_FILES = (STDOUT_LOG, COMMAND, METADATA, CONFIG_EFFECTIVE, DATASET_MANIFEST, METRICS, HEARTBEAT,
                  CHECKPOINT, SUMMARY)


def write_bytes_atomic(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Temp file in the same folder, fsync, os.replace: a reader sees the old file or the new one,
    never half, even after a power cut. The temp name carries the pid and thread, because the
    trainer's heartbeat thread and its main loop may write at once. `mode` (e.g. 0o755) is set
    before the rename, so the file never appears without it; otherwise the umask decides."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            if mode is not None:
                os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # on a full volume the partial file holds the space the next write needs
        if isinstance(e, OSError):
            e.filename = str(path)  # the file the user knows, not the temp name
        raise


def write_text_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def write_json_atomic(path: Path, data: Any, *, default: Callable[[Any], Any] | None = None,
                      allow_nan: bool = True) -> None:
    """`data` as indented JSON, written atomically (see `write_bytes_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=2, default=default, allow_nan=allow_nan) + "\n")


def valid_run_id(run_id: str) -> bool:
    return len(run_id) <= RUN_ID_MAX and RUN_ID_RE.fullmatch(run_id) is not None


def run_id_problem(run_id: str) -> str | None:
    """Why `run_id` cannot name a run directory, or None. The message quotes only what was typed."""
    if valid_run_id(run_id):
        return None
    return (f"{run_id!r} is not a run_id (letters, digits, '.', '_', '-', starting with a letter or digit, "
            f"at most {RUN_ID_MAX} characters)")
