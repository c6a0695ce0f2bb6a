"""cancel, prioritize: steer a sweep while its runners work. Thin: parse, call control.py, render.

With --host the pod runs the same subcommand with --json; the laptop renders its answer.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import typer

from sweepctl.cli import remote_opts
from sweepctl.cli.render.answers import show_answers
from sweepctl.cli.render.steer import render_steered
from sweepctl.errors import SweepctlError

ROWS_ARG = typer.Argument(..., metavar="RUN_ID...", show_default=False,
                          help="run_ids, or glob patterns over them (quote them: '*-mhc-48l-*').")
SWEEP = typer.Option(None, "--sweep", help="Sweep name (default: the latest launched).")
OUT_ROOT = typer.Option(None, "--out-root", help="Where run directories live (default: settings).")
AS_JSON = typer.Option(False, "--json", help="Print what was done to each row as JSON.")
UNMATCHED_OK = typer.Option(False, "--unmatched-ok", hidden=True,
                            help="Set by --host with several pods: each holds a part of the sweep's rows.")

def cancel(
    rows: list[str] = ROWS_ARG,
    sweep: str | None = SWEEP,
    out_root: str | None = OUT_ROOT,
    as_json: bool = AS_JSON,
    unmatched_ok: bool = UNMATCHED_OK,
    host: list[str] | None = remote_opts.HOST,
    remote_bin: str | None = remote_opts.REMOTE_BIN,
    accept_new_host_key: bool = remote_opts.ACCEPT_NEW_HOST_KEY,
) -> None:
    """Cancel rows: a pending one never starts, a running one is ended and shows `cancelled`."""
    from sweepctl import control
    from sweepctl.settings import load_settings

    if pods := remote_opts.resolve(host, remote_bin, accept_new_host_key):
        return _remote(pods, "cancel", rows, as_json=as_json)
    settings = load_settings(out_root=out_root)
    done = control.cancel(Path(settings.out_root), rows, sweep=sweep, stale_after_s=settings.stale_after_s,
                          unmatched_ok=unmatched_ok)
    _show([s.to_json() for s in done], as_json=as_json)


def prioritize(
    rows: list[str] = ROWS_ARG,
    priority: int | None = typer.Option(None, "--priority", show_default=False,
                                        help="The rows' new priority \\[default: one above the sweep's highest, "
                                             "so they are claimed next]."),
    sweep: str | None = SWEEP,
    out_root: str | None = OUT_ROOT,
    as_json: bool = AS_JSON,
    unmatched_ok: bool = UNMATCHED_OK,
    host: list[str] | None = remote_opts.HOST,
    remote_bin: str | None = remote_opts.REMOTE_BIN,
    accept_new_host_key: bool = remote_opts.ACCEPT_NEW_HOST_KEY,
) -> None:
    """Move unclaimed rows of a dynamic sweep up the queue; the runners see it at their next claim."""
    from sweepctl import control
    from sweepctl.settings import load_settings

    if pods := remote_opts.resolve(host, remote_bin, accept_new_host_key):
        return _remote(pods, "prioritize", rows, as_json=as_json)
    settings = load_settings(out_root=out_root)
    done = control.prioritize(Path(settings.out_root), rows, sweep=sweep, priority=priority,
                              unmatched_ok=unmatched_ok)
    _show([s.to_json() for s in done], as_json=as_json)


def _show(model: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(model, indent=2))
    else:
        render_steered(model)


def _remote(pods: remote_opts.Pods, command: str, rows: list[str], *, as_json: bool) -> None:
    args = [command, *rows, *remote_opts.forwarded(exclude=("as_json", "unmatched_ok")), "--json"]
    if not pods.single:  # each pod holds its part of the rows; the patterns are checked against them all
        args.append("--unmatched-ok")
    answers = pods.each(lambda h, t: pods.sweepctl_json(t, args))
    show_answers(pods, answers, as_json=as_json, render=lambda value, prefix: render_steered(value, prefix=prefix))
    remote_opts.raise_if_failed(answers)
    seen = [s["run_id"] for a in answers for s in a.value or []]
    unmatched = [p for p in rows if not any(fnmatch.fnmatchcase(i, p) for i in seen)]
    if unmatched:  # several pods: each took what it holds; a pattern none holds is a typo
        raise SweepctlError(f"{', '.join(map(repr, unmatched))} matches no row on {', '.join(pods.hosts)}",
                            hint=f"see the sweep's rows with: sweepctl status --host {' --host '.join(pods.hosts)}")


def register(app: typer.Typer) -> None:
    app.command()(cancel)
    app.command()(prioritize)
