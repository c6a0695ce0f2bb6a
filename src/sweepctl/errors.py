"""One exception family for every expected failure.

The CLI prints `str(error)` as one red line and exits with `error.exit_code`; no traceback unless
`--debug`. Each error says where (FILE:LINE, host, run_id) and, in `hint`, what to do next.
Exit codes, the same for every command (the README's table): 0 done, 1 user error, 2 refused by
the run table, 3 remote/connection, 130 Ctrl-C.
"""

from __future__ import annotations


class SweepctlError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text} — {self.hint}" if self.hint else text


class SpecError(SweepctlError):
    """Bad sweep input. `problems` holds every `FILE:LINE: message` found, in file order."""

    def __init__(self, problems: list[str], *, hint: str | None = None):
        super().__init__("\n".join(problems), hint=hint)
        self.problems = problems


class RefusedError(SweepctlError):
    """The run table forbids the action (failed runs, a live run, a live session)."""

    exit_code = 2


class RemoteError(SweepctlError):
    """SSH: unreachable, auth failed, host key, timeout, or a remote command failed."""

    exit_code = 3
