"""`sweepctl`: the Typer application and its error handling.

Command modules are imported here but import their heavy dependencies (torch, numpy, paramiko)
only inside the commands that need them, so `sweepctl --help` stays instant.
"""

from __future__ import annotations

import os
import sys

import typer

from sweepctl import __version__
from sweepctl.errors import SweepctlError

app = typer.Typer(
    name="sweepctl",
    help="Run ML training sweeps on rented multi-GPU pods: validate, shard, launch in tmux, watch over SSH.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_DEBUG = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sweepctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    global _DEBUG
    _DEBUG = debug


def _register() -> None:
    from sweepctl.cli import spec_cmds

    spec_cmds.register(app)
    for name in ("run_cmds", "remote_cmds", "pod_cmds", "report_cmds", "train_cmd", "demo_cmd"):
        try:
            module = __import__(f"sweepctl.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != f"sweepctl.cli.{name}":
                raise
            continue  # a command group not built yet
        module.register(app)


_register()


def main() -> None:
    from sweepctl.console import err_console

    try:
        app(standalone_mode=False)
    except SweepctlError as e:
        if _DEBUG or os.environ.get("SWEEPCTL_DEBUG"):
            raise
        lines = getattr(e, "problems", None) or [str(e)]
        for line in lines:
            err_console.print(f"error: {line}", style="bold red", markup=False, highlight=False, soft_wrap=True)
        if getattr(e, "problems", None):
            err_console.print(f"{len(lines)} problem(s); nothing was started.", style="red", markup=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # click's usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
