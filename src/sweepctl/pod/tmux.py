"""tmux, through libtmux: the only module that talks to a tmux server.

Sessions live on the user's default server, so `tmux attach -t sweep-3` just works; the
`tmux_socket` setting (SWEEPCTL_TMUX_SOCKET) points at a private server instead — tests use one
per test. Each session runs one command in one pane with `remain-on-exit`, so a finished runner
leaves its pane (and last line) on screen and tmux reports the pane as dead: "the runner is alive"
is simply "some pane of the session is not dead". A live session is never killed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sweepctl.errors import RefusedError, SweepctlError

SHARD_PREFIX = "sweep-"
RERUN_PREFIX = "rerun-"
PANE_WIDTH, PANE_HEIGHT = 200, 50  # a detached session has no client to size it


def shard_session(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard}"


def rerun_session(run_id: str) -> str:
    # tmux reads '.' and ':' in a target as window/pane separators and rewrites them in names.
    return RERUN_PREFIX + re.sub(r"[.:]", "_", run_id)


def attach_argv(name: str, socket: str | None) -> list[str]:
    return ["tmux", *(["-S", socket] if socket else []), "attach", "-t", name]


def attach_command(name: str, socket: str | None) -> str:
    return shlex.join(attach_argv(name, socket))


@dataclass(frozen=True)
class SessionInfo:
    name: str
    alive: bool  # some pane still runs its command
    pane_pids: tuple[int, ...]

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "alive": self.alive}


def tmux_version() -> str | None:
    exe = shutil.which("tmux")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out or "tmux"


class Tmux:
    """One tmux server: the default one, or the one at `socket`."""

    def __init__(self, socket: str | None = None):
        import libtmux

        self.socket = socket
        self.server = libtmux.Server(socket_path=socket) if socket else libtmux.Server()

    def _cmd(self, *args: str) -> list[str]:
        result = self.server.cmd(*args)
        if result.returncode != 0:
            err = " ".join(result.stderr).strip()
            raise SweepctlError(f"tmux {args[0]} failed: {err or 'exit ' + str(result.returncode)}",
                                where=self.socket or "default tmux server",
                                hint="check `tmux ls`; is the tmux server usable by this user?")
        return result.stdout

    def sessions(self, prefixes: tuple[str, ...] = (SHARD_PREFIX, RERUN_PREFIX)) -> list[SessionInfo]:
        """Sessions whose names start with one of `prefixes`; none when no server is running."""
        if not self.server.is_alive():
            return []
        result = self.server.cmd("list-panes", "-a", "-F", "#{session_name}\t#{pane_dead}\t#{pane_pid}")
        if result.returncode != 0:
            return []  # the server went away between the two calls
        panes: dict[str, list[tuple[bool, int]]] = {}
        for line in result.stdout:
            name, dead, pid = [*line.split("\t"), "", ""][:3]
            if name.startswith(prefixes):
                panes.setdefault(name, []).append((dead == "1", int(pid) if pid.isdigit() else 0))
        return [SessionInfo(name, any(not dead for dead, _ in ps), tuple(p for _, p in ps))
                for name, ps in sorted(panes.items(), key=lambda kv: _natural(kv[0]))]

    def session(self, name: str) -> SessionInfo | None:
        for s in self.sessions(prefixes=(name,)):
            if s.name == name:
                return s
        return None

    def start(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path) -> str:
        """Run `argv` in a new detached session; replace a finished one; refuse a live one.

        Returns "started" or "replaced". The pane keeps its output after the command ends."""
        existing = self.session(name)
        how = "started"
        replace: tuple[str, ...] = ()
        if existing is not None:
            if existing.alive:
                raise RefusedError(f"tmux session {name!r} is still running", where=name,
                                   hint=f"wait for it, or look: {attach_command(name, self.socket)}")
            # Its command has ended; only the pane remains. Killed in the same invocation as the new
            # session is made: killed alone, the server's last session takes the server with it
            # (exit-empty), and a new-session sent a moment later finds it exiting.
            replace = ("kill-session", "-t", f"={name}", ";")
            how = "replaced"
        command = shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), *argv])
        # One tmux invocation, so remain-on-exit is set before a quickly failing command could end
        # and take its error message with it.
        self._cmd(*replace, "new-session", "-d", "-s", name, "-x", str(PANE_WIDTH), "-y", str(PANE_HEIGHT),
                  "-c", str(cwd), command, ";", "set-option", "-w", "-t", f"={name}:", "remain-on-exit", "on")
        return how

    def capture(self, name: str, lines: int = 200) -> list[str]:
        """The pane's visible text and recent history (for tests and `status`)."""
        out = self._cmd("capture-pane", "-p", "-J", "-S", f"-{lines}", "-t", f"={name}:")
        return [line for line in out if line.strip()]


def _natural(name: str) -> tuple[str, int]:
    m = re.match(r"(.*?)(\d+)$", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)
