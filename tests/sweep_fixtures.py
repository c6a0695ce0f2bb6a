"""Fixtures for sweep tests (a pytest plugin: `pytest_plugins = ["sweep_fixtures"]` in a test module).

    fake_gpus    the stand-in nvidia-smi on PATH, reporting what the test sets (no GPUs by default)
    tmux_socket  a private tmux server (SWEEPCTL_TMUX_SOCKET), killed at teardown
    workspace    a working directory with tiny data, an out-root, fake_gpus and tmux_socket
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sweep_helpers import SETTINGS_ENV, FakeGpus, Workspace, kill_tmux_server, write_tiny_data


@pytest.fixture()
def fake_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeGpus:
    return FakeGpus(monkeypatch, tmp_path / "nvidia-smi-calls.log")


@pytest.fixture()
def tmux_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private tmux server for this test (SWEEPCTL_TMUX_SOCKET), killed at teardown.

    The socket lives in a short /tmp path: a Unix socket path is limited to ~100 bytes."""
    d = tempfile.mkdtemp(prefix="swtmux", dir="/tmp")
    socket = os.path.join(d, "sock")
    monkeypatch.setenv("SWEEPCTL_TMUX_SOCKET", socket)
    yield socket
    kill_tmux_server(socket)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_gpus: FakeGpus, tmux_socket: str
              ) -> Iterator[Workspace]:
    """A working directory with tiny data, an out-root, no GPUs and a private tmux server."""
    for var in SETTINGS_ENV:
        if var != "SWEEPCTL_TMUX_SOCKET":
            monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEPCTL_VOLUME", str(tmp_path / "no-volume"))
    out_root = tmp_path / "out"
    data_dir = write_tiny_data(tmp_path / "data")
    monkeypatch.setenv("SWEEPCTL_OUT_ROOT", str(out_root))
    monkeypatch.setenv("SWEEPCTL_DATA_DIR", str(data_dir))
    # Two trainers on a 2-core machine shared with others: one thread each, or they thrash.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ws = Workspace(tmp_path, out_root, data_dir, fake_gpus)
    yield ws
    kill_tmux_server(tmux_socket)  # before reaping: a runner that hears SIGHUP ends its trainer itself
    ws.reap()
