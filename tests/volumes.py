"""Real volumes for disk-fault tests: a small tmpfs, a read-only bind mount, a file that fills one.

    with small_tmpfs(tmp_path / "vol", size_mib=8) as vol: ...     # skips when mounting is not allowed
    with read_only_bind(out_root): ...
    fill(vol, leave_bytes=64 << 10)                                  # fallocate all but 64 KiB

Each mount is undone by its mount point in a finalizer that never raises: a busy mount (a trainer
still exiting) is detached lazily, so a failing test never leaves a mount behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(argv: list[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a test volume (CI runs as root)")
    proc = subprocess.run(["mount", *argv], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here ({proc.stderr.strip() or proc.returncode}): no mount permission")


def unmount(mount_point: Path) -> None:
    """Unmount by mount point; lazily when busy. Never raises: it runs in finalizers."""
    with contextlib.suppress(Exception):
        if subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, *, size_mib: int) -> Iterator[Path]:
    mount_point.mkdir(parents=True, exist_ok=True)
    _mount(["-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mount_point)])
    try:
        yield mount_point
    finally:
        unmount(mount_point)


@contextlib.contextmanager
def read_only_bind(path: Path) -> Iterator[Path]:
    """`path` itself, bind-mounted read-only over itself."""
    _mount(["--bind", str(path), str(path)])
    try:
        proc = subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0:
            pytest.skip(f"cannot remount read-only here ({proc.stderr.strip()})")
        yield path
    finally:
        unmount(path)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(volume: Path, *, leave_bytes: int, name: str = "filler") -> Path:
    """A file that takes all of the volume's free space but `leave_bytes`, with fallocate(1)."""
    path = volume / name
    size = free_bytes(volume) - leave_bytes
    subprocess.run(["fallocate", "-l", str(size), str(path)], check=True, capture_output=True, timeout=30)
    return path
