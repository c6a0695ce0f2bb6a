"""Pull a directory tree from the transport's machine: copy only what changed, never delete.

`Transport.sync_dir_from` (what `sweepctl pull` uses) is `sync_dir` here. It works over any
transport's two primitives, `list_files` (one listing for the whole tree) and `fetch_file` (one
file), so local and SSH pulls behave alike and this logic is written once. Every file lands
atomically (temp file + rename): an interrupted pull never leaves a half file that the next
sync would take for complete.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sweepctl.errors import RemoteError

CHECKPOINT_PATTERNS = ("*.pt", "*.pth", "*.ckpt")  # large model states; `pull` skips them unless asked

ProgressCallback = Callable[[int, int, str], None]  # (bytes done, bytes total, file being copied)


@dataclass(frozen=True)
class RemoteFile:
    """One regular file under a directory being synced: path relative to it, size, mtime (s)."""

    relpath: str
    size: int
    mtime: float


class Source(Protocol):
    """What a sync needs of a transport (base.Transport has it): the machine's name, one listing
    of a whole tree, and one file fetched with progress."""

    host: str

    def list_files(self, remote_dir: str) -> list[RemoteFile]: ...

    def fetch_file(self, remote: str, local: Path, progress: Callable[[int], None] | None) -> None: ...


@dataclass
class SyncReport:
    """What `sync_dir_from` did, for the CLI's summary line."""

    copied: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped_checkpoints: list[str] = field(default_factory=list)
    bytes_copied: int = 0


def is_checkpoint(relpath: str) -> bool:
    """Checkpoints are big and rarely needed on a laptop, so `pull` copies them only when asked."""
    name = posixpath.basename(relpath)
    return any(fnmatch.fnmatch(name, pattern) for pattern in CHECKPOINT_PATTERNS)


def sync_dir(transport: Source, remote_dir: str, local_dir: str | os.PathLike[str], *,
             include_checkpoints: bool = False,
             progress: ProgressCallback | None = None,
             include: Callable[[str], bool] | None = None) -> SyncReport:
    """Make `local_dir` hold every file of `remote_dir`, copying only what changed.

    `include(relpath)` narrows the copy to some files (e.g. one sweep's run directories out of
    an out_root) while keeping the listing to one round trip for the whole tree.

    A file is unchanged when its size and whole-second mtime match (what rsync checks by
    default); copied files get the remote mtime so the next sync sees them as unchanged.
    Local files that vanished remotely are kept: never delete a user's results. Checkpoints
    (`CHECKPOINT_PATTERNS`) are skipped unless `include_checkpoints`. `progress(done, total,
    relpath)` is called as bytes arrive, with the total of what needs copying.
    """
    local_root = Path(local_dir)
    report = SyncReport()
    todo: list[RemoteFile] = []
    for item in transport.list_files(remote_dir):
        if include is not None and not include(item.relpath):
            continue
        if not include_checkpoints and is_checkpoint(item.relpath):
            report.skipped_checkpoints.append(item.relpath)
            continue
        target = _safe_join(local_root, item.relpath, transport.host)
        try:
            st = target.stat()
        except FileNotFoundError:
            todo.append(item)
            continue
        if st.st_size == item.size and int(st.st_mtime) == int(item.mtime):
            report.unchanged += 1
        else:
            todo.append(item)
    total = sum(item.size for item in todo)
    done = 0
    if progress:
        progress(0, total, "")
    for item in todo:
        target = _safe_join(local_root, item.relpath, transport.host)
        target.parent.mkdir(parents=True, exist_ok=True)
        tick = _progress_ticker(progress, done, total, item.relpath) if progress else None
        source = posixpath.join(remote_dir, item.relpath)
        atomic_download(lambda tmp, _src=source, _tick=tick: transport.fetch_file(_src, tmp, _tick), target)
        # The listed mtime, not "now": the next sync compares against the remote's listing.
        os.utime(target, (item.mtime, item.mtime))
        done += item.size
        report.copied.append(item.relpath)
        report.bytes_copied += target.stat().st_size
    if progress:
        progress(total, total, "")
    return report


def _progress_ticker(progress: ProgressCallback, base: int, total: int, relpath: str) -> Callable[[int], None]:
    # A file still being written (a live run's stdout.log) can grow past its listed size; the
    # bar is capped so it never reads more than 100%.
    def tick(done_in_file: int) -> None:
        progress(min(base + done_in_file, total), total, relpath)

    return tick


def _safe_join(root: Path, relpath: str, host: str) -> Path:
    # A listing is data from another machine: a name with `..` must not write outside `root`.
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise RemoteError(f"refusing to copy a file named {relpath!r} (it escapes the target directory)",
                          where=host)
    return root.joinpath(*parts)


def atomic_download(fetch: Callable[[Path], None], target: Path) -> None:
    # Download next to the target, then rename: an interrupted pull never leaves a half file
    # that a later sync would take for complete.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fetch(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
