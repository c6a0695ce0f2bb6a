"""One command on one SSH channel: start it so that its pid is known, read it, kill it if abandoned.

sshd never signals a command when its channel closes, so a command we stop waiting for (a
timeout, a `logs -f` left with Ctrl-C) would run on the pod forever. Every command is therefore
started through a tiny `sh` wrapper that reports its pid on stderr first and then execs it (so pid
and exit status are the command's own); `KILL_SCRIPT` kills that pid's process group. Reading
waits with select() on the channel, so a quiet command costs no CPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sweepctl.transport.base import POLL_S

if TYPE_CHECKING:  # only for annotations: importing paramiko at runtime is deferred
    import paramiko


class Deadline(Exception):
    pass


_PID_MARK = b"@sweepctl-pid "
# `$$` of this `sh -c` becomes the command's pid through `exec`; "$@" is the argv, never re-parsed.
PID_WRAPPER = 'printf "' + _PID_MARK.decode() + '%s\\n" "$$" >&2; exec "$@"'
# Kill the command's process group (its children too: a shell pipeline, a `tail -F`); the group
# is the ssh session's own, made by sshd's setsid for this one command. Just the pid when `ps`
# is missing (minimal images).
KILL_SCRIPT = ('pg=$(ps -o pgid= -p "$1" 2>/dev/null | tr -d " "); '
                'if [ -n "$pg" ] && [ "$pg" -gt 1 ]; then kill -TERM "-$pg"; else kill -TERM "$1"; fi '
                '2>/dev/null; exit 0')


@dataclass
class RemoteCommand:
    """A command running on the pod: its channel, and its pid once the wrapper has reported it."""

    chan: paramiko.Channel
    pid: int | None = None
    _stderr: bytearray = field(default_factory=bytearray)
    _pid_line_done: bool = False

    def feed_stderr(self, chunk: bytes) -> None:
        self._stderr.extend(chunk)
        if self._pid_line_done or b"\n" not in self._stderr:
            return
        self._pid_line_done = True
        first, _, rest = bytes(self._stderr).partition(b"\n")
        if first.startswith(_PID_MARK) and first[len(_PID_MARK):].isdigit():
            self.pid = int(first[len(_PID_MARK):])
            self._stderr = bytearray(rest)  # the marker is ours, not the command's output

    @property
    def stderr(self) -> bytes:
        return bytes(self._stderr)

    def await_pid(self, timeout: float = 2.0) -> None:
        """Read until the pid line arrives (the wrapper's first act: one round trip at most),
        discarding stdout, which nobody will read now."""
        import select

        deadline = time.monotonic() + timeout
        while not self._pid_line_done and not self.chan.exit_status_ready() and not self.chan.closed:
            if self.chan.recv_stderr_ready():
                self.feed_stderr(self.chan.recv_stderr(65536))
            elif self.chan.recv_ready():
                self.chan.recv(65536)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                select.select([self.chan], [], [], min(left, POLL_S))


def channel_chunks(chan: paramiko.Channel, deadline: float | None) -> Iterator[tuple[str, bytes]]:
    """Yield ("out"|"err", bytes) until the command's output ends; raise Deadline when late.

    Waits with select() on the channel (paramiko signals stdout and stderr data, and close, on one
    pipe), so a quiet command costs no CPU and data is handed on the moment it arrives.
    """
    import select

    while True:
        got = False
        while chan.recv_ready():
            yield "out", chan.recv(65536)
            got = True
        while chan.recv_stderr_ready():
            yield "err", chan.recv_stderr(65536)
            got = True
        if got:
            continue
        if (chan.eof_received and chan.exit_status_ready()) or chan.closed:
            # stdout reached EOF and the exit status is in; drain whatever stderr is left.
            while chan.recv_stderr_ready():
                yield "err", chan.recv_stderr(65536)
            return
        wait = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
        if wait <= 0:
            raise Deadline
        select.select([chan], [], [], wait)


def channel_exit_code(code: int) -> int:
    # paramiko reports -1 when the server sent no exit status (killed by a signal, or the
    # connection closed first): make it the shell's "killed" convention rather than a negative.
    return 255 if code < 0 else code
