"""One row of bootstrap's checklist (`Check`), and the small tools its steps share.

A leaf module of its own so that each step's module (bootstrap, sshkeys, python_env) can return
`Check`s and run commands the same way without importing the orchestration that calls them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sweepctl.errors import SweepctlError


@dataclass
class Check:
    """One checklist row. ok: True fine, None worth a look (warn), False bootstrap is incomplete."""

    name: str
    ok: bool | None
    detail: str
    changes: list[str] = field(default_factory=list)
    hint: str | None = None  # what to do when not ok


def run_command(argv: Sequence[str], timeout: float,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A command with a deadline; a missing program is exit code 127, like a shell says it."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              env=None if env is None else {**os.environ, **env})
    except FileNotFoundError:
        return subprocess.CompletedProcess(list(argv), 127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        raise SweepctlError(f"`{shlex.join(argv)}` did not finish within {timeout:.0f} s",
                            hint="run it by hand to see where it hangs") from None


def last_line(text: str) -> str:
    """The last non-blank line: what a failed command's stderr usually says went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def set_mode(path: Path, mode: int, changes: list[str], label: str) -> None:
    """chmod only when the mode differs, and record it, so a second run reports no change."""
    if path.stat().st_mode & 0o777 != mode:
        path.chmod(mode)
        changes.append(f"chmod {mode:o} {label}")

