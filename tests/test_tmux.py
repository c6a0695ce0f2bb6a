"""The tmux layer against a real tmux server on a private socket: start, keep panes, never kill a live one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sweep_helpers import wait_until
from sweepctl.errors import RefusedError
from sweepctl.pod.tmux import Tmux, attach_command, rerun_session

pytest_plugins = ["sweep_fixtures"]


def test_a_finished_session_keeps_its_pane_and_is_replaced(tmux_socket: str, tmp_path: Path) -> None:
    t = Tmux(tmux_socket)
    assert t.sessions() == []  # no server yet
    code = "import os; print('device', os.environ['CUDA_VISIBLE_DEVICES'])"
    assert t.start("sweep-1", [sys.executable, "-c", code], env={"CUDA_VISIBLE_DEVICES": "1"}, cwd=tmp_path) == "started"
    wait_until(lambda: (s := t.session("sweep-1")) is not None and not s.alive, what="sweep-1 to finish")
    assert "device 1" in t.capture("sweep-1")  # the pane outlives its command (remain-on-exit)
    assert t.start("sweep-1", [sys.executable, "-c", code], env={"CUDA_VISIBLE_DEVICES": "7"}, cwd=tmp_path) == "replaced"
    wait_until(lambda: "device 7" in t.capture("sweep-1"), what="the replacement's output")


def test_a_live_session_is_never_killed(tmux_socket: str, tmp_path: Path) -> None:
    t = Tmux(tmux_socket)
    wait_forever = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    t.start("sweep-10", wait_forever, env={}, cwd=tmp_path)
    t.start("sweep-1", [sys.executable, "-c", "pass"], env={}, cwd=tmp_path)
    with pytest.raises(RefusedError) as e:
        t.start("sweep-10", [sys.executable, "-c", "pass"], env={}, cwd=tmp_path)
    assert "still running" in str(e.value) and f"tmux -S {tmux_socket} attach -t sweep-10" in str(e.value)
    # sweep-1 is not mistaken for sweep-10 (tmux matches targets by prefix unless told otherwise)
    wait_until(lambda: not t.session("sweep-1").alive, what="sweep-1 to finish")
    assert t.session("sweep-10").alive
    assert [s.name for s in t.sessions()] == ["sweep-1", "sweep-10"]


def test_names_and_attach_command() -> None:
    assert rerun_session("fineweb10B-mhc-6l.v2-s1337") == "rerun-fineweb10B-mhc-6l_v2-s1337"
    assert attach_command("sweep-3", None) == "tmux attach -t sweep-3"
