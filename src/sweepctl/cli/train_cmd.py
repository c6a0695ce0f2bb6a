"""`sweepctl train`: the bundled trainer, run in the foreground on this machine.

The same program the shard runner starts (`python -m sweepctl.train`), so a row can be tried by
hand exactly as a sweep would run it. The CLI process is replaced by the trainer (exec), so
signals, exit codes and the run directory are the trainer's own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer


def train(
    ctx: typer.Context,
    config: str = typer.Argument(..., metavar="CONFIG", help="A preset (see `sweepctl presets`) or a config file (.py or .toml)."),
) -> None:
    """Run the trainer: CONFIG then key=value overrides, e.g. `sweepctl train mhc out_dir=out/x max_iters=100`."""
    from sweepctl.errors import SweepctlError
    from sweepctl.train.config import ConfigError, resolve_config

    # Checked here first, so a typo is exit 1 like every other input error, and nothing is written;
    # the trainer would say the same but exit 2 and leave a failed summary.json in its out_dir.
    try:
        resolve_config(config, ctx.args, base_dir=Path.cwd())
    except ConfigError as e:
        raise SweepctlError(f"bad config: {e}", hint="`sweepctl presets` lists the presets; `sweepctl train "
                            "--help` shows the form") from None
    argv = [sys.executable, "-m", "sweepctl.train", config, *ctx.args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def register(app: typer.Typer) -> None:
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train)
