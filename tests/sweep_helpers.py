"""Helpers for sweep tests: polling with a deadline, a stand-in nvidia-smi, tiny data, a workspace.

The fixtures that use them are in sweep_fixtures.py (a pytest plugin: `pytest_plugins = ["sweep_fixtures"]`).
Everything a test starts is stopped by its own handle — the tmux server by its socket, leftover trainers
by the pids their runners recorded — never by a process name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FAKE_BIN = Path(__file__).parent / "fake_bin"
# A model small enough that a 20-step CPU run takes about a second after imports.
TINY = ("device='cpu' dtype='float32' n_layer=1 n_embd=32 n_head=2 block_size=32 batch_size=4 "
        "gradient_accumulation_steps=1 vocab_size=256 max_iters=20 eval_interval=10 eval_iters=2 eval_batch_size=4 "
        "log_interval=5 warmup_iters=2 lr_decay_iters=20 min_lr=1e-5")


def tiny(extra: str = "") -> str:
    """TINY with extra's settings in place of its own (a key set twice in one row is an error)."""
    import re

    keys = set(re.findall(r"(?:^|\s)(\w+)=", extra))
    kept = [w for w in TINY.split() if w.split("=", 1)[0] not in keys]
    return " ".join([*kept, extra]).strip()


SETTINGS_ENV = ("SWEEPCTL_OUT_ROOT", "SWEEPCTL_DATA_DIR", "FINEWEB10B_LOCAL_DIR", "SWEEPCTL_HOST",
                "SWEEPCTL_PROJECT_FILE", "SWEEPCTL_TMUX_SOCKET", "SWEEPCTL_STALE_AFTER_S")


def wait_until(predicate: Callable[[], Any], *, timeout: float = 60.0, what: str = "condition",
               interval: float = 0.05, explain: Callable[[], str] | None = None) -> Any:
    """Poll until `predicate()` is truthy; fail with `what` (and `explain()`) at the deadline. No fixed sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}" + (f"\n{explain()}" if explain else ""))
        time.sleep(interval)


def panes(socket: str) -> str:
    """Every sweep session's pane text, to explain a test that timed out."""
    from sweepctl.pod.tmux import Tmux

    t = Tmux(socket)
    return "\n".join(f"--- {s.name} (alive={s.alive})\n" + "\n".join(t.capture(s.name, 60)) for s in t.sessions())


def gpu_row(index: int, util: float = 0, used: float = 10, total: float = 81559, name: str = "NVIDIA H100 80GB HBM3"
            ) -> str:
    return f"{index}, {name}, {util:g}, {used:g}, {total:g}"


class FakeGpus:
    """Sets what the stand-in nvidia-smi on PATH reports."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, log: Path):
        self.monkeypatch = monkeypatch
        self.log = log
        monkeypatch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_NVIDIA_SMI_LOG", str(log))
        self.set(0)

    def set(self, gpus: int | list[str]) -> None:
        rows = [gpu_row(i) for i in range(gpus)] if isinstance(gpus, int) else gpus
        self.monkeypatch.setenv("FAKE_NVIDIA_SMI_ROWS", ";".join(rows))

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []




def kill_tmux_server(socket: str) -> None:
    """Kill our private server; its runners get SIGHUP and end their trainers — wait for them."""
    pane_pids = _pane_pids(socket)
    subprocess.run(["tmux", "-S", socket, "kill-server"], capture_output=True, timeout=10)
    for pid in pane_pids:
        _wait_gone(pid, 10)


def _pane_pids(socket: str) -> list[int]:
    proc = subprocess.run(["tmux", "-S", socket, "list-panes", "-a", "-F", "#{pane_pid}"], capture_output=True,
                          text=True, timeout=10)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def _alive(pid: int) -> bool:
    from sweepctl.state.runs import pid_alive

    return pid_alive(pid)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def write_tiny_data(data_dir: Path, tokens: int = 4096, seed: int = 0) -> Path:
    """One train and one val shard of random token ids below 256 (the tiny vocab)."""
    import numpy as np

    from sweepctl.pod.data import write_shard

    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    write_shard(data_dir / "fineweb_train_000001.bin", rng.integers(0, 256, tokens))
    write_shard(data_dir / "fineweb_val_000000.bin", rng.integers(0, 256, tokens // 2))
    return data_dir


@dataclass
class Workspace:
    root: Path
    out_root: Path
    data_dir: Path
    gpus: FakeGpus

    def csv(self, rows: list[tuple[str, str]], name: str = "sweep", config: str = "base") -> Path:
        """A sweep CSV: (run_id, extra overrides) per row, on top of the tiny CPU model."""
        path = self.root / f"{name}.csv"
        lines = ["run_id,config,seed,overrides,notes"]
        for i, (run_id, extra) in enumerate(rows):
            overrides = tiny(extra)
            lines.append(f'{run_id},{config},{1337 + i},"{overrides}",')
        path.write_text("\n".join(lines) + "\n")
        return path

    def run_dir(self, run_id: str) -> Path:
        return self.out_root / run_id

    def reap(self) -> None:
        """SIGKILL any trainer or runner the runs recorded that is still alive (ours, by pid)."""
        from sweepctl.state.runs import OWNER, read_json

        for owner_file in self.out_root.glob(f"*/{OWNER}"):
            owner = read_json(owner_file) or {}
            for key in ("child_pid", "runner_pid"):
                pid = owner.get(key)
                if isinstance(pid, int) and _alive(pid) and not _wait_gone(pid, 5):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

