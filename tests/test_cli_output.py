"""Output without a terminal, at any size: pipes get whole rows, big sweeps get a summary.

The pipe checks run the installed `sweepctl` in a subprocess with stdout a pipe and no COLUMNS,
which is what `sweepctl status | grep failed` or `> file` sees."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SWEEPCTL = shutil.which("sweepctl") or str(Path(sys.executable).with_name("sweepctl"))
REPO = Path(__file__).resolve().parents[1]


def piped(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("COLUMNS", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "SWEEPCTL_DEBUG")}
    full_env.update(env or {})
    return subprocess.run([SWEEPCTL, *args], capture_output=True, text=True, env=full_env, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=120)


def test_piped_tables_keep_every_column_on_one_line() -> None:
    r = piped("presets")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert ("│ cvres_mhc_48l │ 48     │ 150    │ 6     │ 24    │ 4     │ 6666  │ 4       │ "
            "mHC + constrained (convex) value residual │") in lines
    assert len(lines) == 18  # title, 3 header lines, 12 presets, bottom rule, the closing sentence
    assert lines[-1] == ("All: block 1024, lr 6e-4 cosine to 6e-5 after 200 warmup steps, bf16. "
                         "See every value with `sweepctl plan CSV --shards 1 --json`.")


def test_columns_still_sets_the_width_of_piped_output() -> None:
    r = piped("presets", env={"COLUMNS": "60"})
    assert max(len(line) for line in r.stdout.splitlines()) <= 60


def test_dash_h_is_help_for_the_app_and_every_command() -> None:
    for args in ((), ("status",), ("validate",), ("train",)):
        short, long = piped(*args, "-h"), piped(*args, "--help")
        assert short.returncode == long.returncode == 0, short.stderr
        assert short.stdout == long.stdout and "Usage: sweepctl" in short.stdout
