"""The `Transport` interface that every kind implements, and the `Result` of a command.

One abstraction with a subclass per kind, after skypilot's `command_runner`: `LocalTransport`
(local.py, subprocess) and `SSHTransport` (ssh.py, paramiko) give the same answers for the same
argv, so a command's code does not care where it runs. The helpers here are the ones both kinds
share, so that an argv, an env and an error read the same whichever machine ran them. Nothing here
imports paramiko.
"""

from __future__ import annotations

import os
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sweepctl.errors import RemoteError
from sweepctl.transport.sync import ProgressCallback, RemoteFile, SyncReport, sync_dir

DEFAULT_COMMAND_TIMEOUT = 120.0  # seconds; a remote `sweepctl status --json` takes well under one
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds for TCP connect, SSH banner and key exchange
DEFAULT_AUTH_TIMEOUT = 15.0  # seconds; an agent may need a moment (hardware keys)
DEFAULT_KEEPALIVE_S = 15  # NAT boxes and cloud load balancers drop idle TCP after ~60-350 s
STDERR_TAIL_LINES = 5  # how much of a failed command's stderr goes into the one-line error
POLL_S = 0.2  # how often a blocked read wakes up to check its deadline

StrInput = str | bytes | None


@dataclass(frozen=True)
class Result:
    """What a command did: its exit code and everything it printed (decoded as UTF-8)."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        """The last non-empty stderr lines joined into one line, for a one-line error message."""
        kept = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return " | ".join(kept[-lines:])


def decode_output(data: bytes) -> str:
    # Training logs can hold any bytes (a crashed tokenizer, a binary dumped by mistake); never
    # fail a status call over one bad byte.
    return data.decode("utf-8", errors="replace")


def as_bytes(data: StrInput) -> bytes:
    if data is None:
        return b""
    return data.encode() if isinstance(data, str) else data


def short_command(argv: Sequence[str], limit: int = 120) -> str:
    text = shlex.join(argv)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def with_env(argv: Sequence[str], env: Mapping[str, str] | None) -> list[str]:
    # `env K=V argv` instead of SSH "env" requests: sshd accepts only AcceptEnv names (LANG, LC_*
    # on Debian), while `env` works on every POSIX host and keeps local and remote identical.
    if not env:
        return list(argv)
    return ["env", *(f"{k}={v}" for k, v in env.items()), *argv]


def home_tilde(path: str | os.PathLike[str]) -> str:
    """Show paths under HOME as `~/...`: shorter, and no user names in messages."""
    text = str(path)
    home = os.path.expanduser("~")
    return "~" + text[len(home):] if home != "~" and text.startswith(home + os.sep) else text


class Transport(ABC):
    """Run argvs and move files on one machine. Use as a context manager so it gets closed.

    `host` names the machine in every error message. Remote paths are POSIX paths on that machine;
    they are never expanded by a shell (`~` means a directory called `~`), so pass absolute ones.
    """

    host: str

    # -- commands ---------------------------------------------------------------------------

    @abstractmethod
    def run(self, argv: Sequence[str], timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
            stdin: StrInput = None, *, check: bool = False,
            env: Mapping[str, str] | None = None) -> Result:
        """Run `argv` to completion and return its exit code and output.

        A command still running after `timeout` seconds is abandoned and raises `RemoteError`
        (None: no limit). `check=True` turns a non-zero exit into a `RemoteError` carrying the
        exit code and the last lines of stderr. `env` is set for this command only.
        """

    @abstractmethod
    def stream(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True,
               env: Mapping[str, str] | None = None) -> Generator[str, None, Result]:
        """Yield the command's stdout lines (without the newline) as they arrive.

        For `logs -f` and watch loops. Stderr is kept and reported if the command fails
        (`check`). Closing the generator early (a `break`, Ctrl-C) stops reading and abandons the
        command. `timeout` bounds the whole stream (None: until the command exits).
        The generator's return value (`result = yield from t.stream(...)`) is the command's
        Result (stdout empty: it was yielded), so a caller with `check=False` can map the exit
        code and stderr itself, as `remote.stream_sweepctl` does.
        """

    def check_connection(self) -> None:
        """Raise `RemoteError` (one line, what to do) unless the machine runs commands."""
        result = self.run(["true"], timeout=DEFAULT_CONNECT_TIMEOUT + DEFAULT_AUTH_TIMEOUT)
        if not result.ok:
            raise RemoteError(f"`true` exited with {result.exit_code}: {result.stderr_tail()}",
                              where=self.host, hint="check the login shell and its startup files")

    # -- files ------------------------------------------------------------------------------

    @abstractmethod
    def put(self, local: str | os.PathLike[str], remote: str) -> None:
        """Copy a local file to `remote`, creating parent directories; atomic (temp + rename);
        keeps the mode bits and mtime."""

    @abstractmethod
    def get(self, remote: str, local: str | os.PathLike[str]) -> None:
        """Copy the file `remote` to `local`, creating parent directories; atomic; keeps mtime."""

    @abstractmethod
    def exists(self, remote: str) -> bool:
        """Whether `remote` exists (file, directory, anything)."""

    @abstractmethod
    def list_files(self, remote_dir: str) -> list[RemoteFile]:
        """Every regular file under `remote_dir`, recursively (symlinks are not followed)."""

    @abstractmethod
    def fetch_file(self, remote: str, local: Path, progress: Callable[[int], None] | None) -> None:
        """Copy one file to `local` (which the caller then moves into place)."""

    def sync_dir_from(self, remote_dir: str, local_dir: str | os.PathLike[str], *,
                      include_checkpoints: bool = False,
                      progress: ProgressCallback | None = None,
                      include: Callable[[str], bool] | None = None) -> SyncReport:
        """Make `local_dir` hold every file of `remote_dir`, copying only what changed and deleting
        nothing; checkpoints only with `include_checkpoints`. See `sync.sync_dir` for the rules."""
        return sync_dir(self, remote_dir, local_dir, include_checkpoints=include_checkpoints,
                        progress=progress, include=include)

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:  # noqa: B027 - LocalTransport holds nothing to close
        """Release connections. Safe to call twice."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def error_for(self, argv: Sequence[str], result: Result) -> RemoteError:
        tail = result.stderr_tail()
        return RemoteError(
            f"`{short_command(argv)}` failed with exit code {result.exit_code}"
            + (f": {tail}" if tail else " (no stderr)"), where=self.host)

    def _timed_out(self, argv: Sequence[str], timeout: float) -> RemoteError:
        return RemoteError(f"`{short_command(argv)}` did not finish within {timeout:g}s",
                           where=self.host,
                           hint="the machine may be overloaded; retry, or raise the timeout")


def checked_result(transport: Transport, argv: Sequence[str], result: Result, check: bool) -> Result:
    if check and not result.ok:
        raise transport.error_for(argv, result)
    return result
