"""`sweepctl`: the Typer application and its error handling.

Command modules are imported here but import their heavy dependencies (torch, numpy, paramiko)
only inside the commands that need them, so `sweepctl --help` stays instant.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import typer

from sweepctl import __version__
from sweepctl.errors import SweepctlError

app = typer.Typer(
    name="sweepctl",
    help="Run ML training sweeps on rented multi-GPU pods: validate, shard, launch in tmux, watch over SSH.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

_DEBUG = False


def _honour_no_color() -> None:
    """Typer draws --help and its own messages on a console of its own; give it NO_COLOR too."""
    from sweepctl.console import no_color

    if no_color():
        try:
            import typer.rich_utils as rich_utils

            rich_utils.COLOR_SYSTEM = None  # type: ignore[assignment]
        except ImportError:  # Typer without Rich support prints plain text anyway
            pass


_honour_no_color()


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
    for name in ("run_cmds", "remote_cmds", "pod_cmds", "report_cmds", "train_cmd", "demo_cmd", "cluster_cmds",
                 "steer_cmds"):
        importlib.import_module(f"sweepctl.cli.{name}").register(app)


_register()


def main() -> None:
    """The entry point: run the app, and turn every way it can end into one exit code.

    Exit codes: 0 ok (help included), 1 user error (bad input, usage, an unexpected exception),
    2 refused by the run table, 3 remote/connection, 130 Ctrl-C (the README's table). Errors are one red line on stderr; the
    traceback only with --debug (or SWEEPCTL_DEBUG=1)."""
    global _DEBUG
    _DEBUG = False  # set by the root callback; reset so one in-process call cannot leak into the next
    from sweepctl.console import err_console

    def fail(line: str, code: int, *, extra: list[str] | None = None) -> None:
        err_console.print(f"error: {line}", style="bold red", markup=False, highlight=False, soft_wrap=True)
        for more in extra or []:
            err_console.print(more, style="red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(code)

    try:
        # standalone_mode=False: errors reach the handlers below instead of click's own printing;
        # the price is that an explicit exit code comes back as the return value.
        code = app(standalone_mode=False)
    except SweepctlError as e:
        if _debug():
            raise
        problems = getattr(e, "problems", None)
        lines = problems or [str(e)]
        for line in lines[:-1]:
            err_console.print(f"error: {line}", style="bold red", markup=False, highlight=False, soft_wrap=True)
        fail(lines[-1], e.exit_code, extra=[f"{len(lines)} problem(s); nothing was started."] if problems else None)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:
        if isinstance(e, _click_exceptions()):
            _usage_error(e, fail)
            return  # a bare group's help was the answer
        if _debug():
            raise
        fail(f"unexpected {type(e).__name__}: {e} — rerun with `sweepctl --debug ...` to see the traceback", 1)
    if isinstance(code, int) and code != 0:
        sys.exit(code)
    # success returns (the console script exits 0), so main() can be called in-process


def _debug() -> bool:
    return _DEBUG or os.environ.get("SWEEPCTL_DEBUG", "") not in ("", "0")


def _click_exceptions() -> tuple[type[Exception], ...]:
    """Click's exception base: Typer >= 0.2x vendors click, older ones use the click package."""
    found: list[type[Exception]] = []
    try:
        from typer._click.exceptions import ClickException  # type: ignore[import-not-found]

        found.append(ClickException)
    except ImportError:
        pass
    try:
        import click

        found.append(click.ClickException)
    except ImportError:
        pass
    return tuple(found)


def _usage_error(e: Exception, fail: Any) -> None:
    """A command line click could not parse: one line and where to look (exit 1, a user error).

    A bare group (`sweepctl`, `sweepctl data`) has already printed its help: that is an answer,
    not an error."""
    if type(e).__name__ == "NoArgsIsHelpError":
        text = e.format_message()  # type: ignore[attr-defined]
        if text.strip():  # plain click returns the help instead of printing it
            typer.echo(text)
        return
    ctx = getattr(e, "ctx", None)
    where = f" — see `{ctx.command_path} --help`" if ctx is not None else ""
    fail(f"{e.format_message()}{where}", 1)  # type: ignore[attr-defined]
