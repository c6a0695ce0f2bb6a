"""The laptop side of `--host` for status, logs, stop and rerun: the same subcommand on the pod.

    laptop$ sweepctl status --host pod-a --host pod-b --watch
    laptop$ sweepctl stop --all --host pod-a

Each command keeps its code in its own module and hands over to a function here when `--host` is
given (`remote_opts`); report and bootstrap keep their pod side with their command (`report_cmds`,
`pod_cmds`); launch, a sequence of steps over every pod, hands over to `remote_launch`. Each runs
the same subcommand on the pod with `--json`, one SSH connection per pod, the version check in the
same round trip, and draws the answer with the renderer the local command uses (`cli/render`).
With several pods the calls go out in parallel and the answers merge into one table with a host
column; a pod that does not answer is shown as such while the others still report.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from typing import Any

import typer

from sweepctl.cli import remote_opts
from sweepctl.cli.remote_opts import Pods
from sweepctl.console import console
from sweepctl.errors import SweepctlError

WATCH_INTERVAL_S = 2.0  # the local `status --watch` redraws every 2 s too


# --- status ------------------------------------------------------------------------------------

def status(pods: Pods, args: list[str], *, as_json: bool, watch: bool, interval: float = WATCH_INTERVAL_S,
           show_all: bool = False) -> None:
    """One `status --json` per pod (one round trip each), drawn as one table."""
    from sweepctl.cli.render.status import render as render_status

    again = remote_opts.command_line("status", "--all", drop=("--watch", "--interval"))

    def render(model: dict[str, Any]) -> Any:
        return render_status(model, show_all=show_all, again=again)

    pod_args = ["status", *args, "--json"]
    if as_json and pods.single:  # the pod's JSON, byte for byte
        with pods.transport(pods.hosts[0]) as t:
            typer.echo(pods.sweepctl(t, pod_args).stdout, nl=False)
        return
    if as_json or not watch:
        answers = pods.each(lambda h, t: pods.sweepctl_json(t, pod_args))
        if pods.single:
            remote_opts.raise_if_failed(answers)
        model = _merge(pods, [(a, None) for a in answers])
        if as_json:
            typer.echo(json.dumps(model))
        else:
            console.print(render(model))
        remote_opts.raise_if_failed(answers)
        return
    from sweepctl.cli.render.watch import watch as watch_status

    watch_status(watch_models(pods, pod_args, interval=interval), interval=interval, render=render)


def watch_models(pods: Pods, pod_args: list[str], *, interval: float = WATCH_INTERVAL_S,
                 sleep: Any = time.sleep) -> Iterator[dict[str, Any]]:
    """A merged status model per refresh, forever. A pod that stops answering (dropped connection,
    rebooting) keeps its last answer on screen with the error in the footer; the next refresh
    reconnects (SSHTransport opens a new connection when the old one died)."""
    last: dict[str, tuple[dict[str, Any], float]] = {}
    with pods.open_all() as transports:
        first = True
        while True:
            if not first:
                sleep(interval)
            first = False
            answers = pods.each(lambda h, t: pods.sweepctl_json(t, pod_args), transports)
            now = time.monotonic()
            shown = []
            for a in answers:
                if a.error is None:
                    last[a.host] = (a.value, now)
                    shown.append((a, None))
                else:
                    seen = last.get(a.host)
                    shown.append((remote_opts.Answer(a.host, seen[0] if seen else None, a.error, a.connected),
                                  now - seen[1] if seen else None))
            yield _merge(pods, shown)


def _merge(pods: Pods, answers: list[tuple[remote_opts.Answer[Any], float | None]]) -> dict[str, Any]:
    from sweepctl.sweep.hosts import HostAnswer, merge_status

    return merge_status([HostAnswer(a.host, a.value, a.describe() if a.error else None, age)
                         for a, age in answers], host_column=not pods.single)


# --- logs, stop, rerun -----------------------------------------------------------------------------

def logs(pods: Pods, run_id: str, args: list[str]) -> None:
    """Stream the pod's `sweepctl logs` (with -f: until the run ends or Ctrl-C, which stops the
    remote command too). With several pods, the one that has the run's stdout.log is asked."""
    from sweepctl import __version__
    from sweepctl.remote import stream_sweepctl

    host = pods.hosts[0]
    if not pods.single:
        probe = ["logs", run_id, "--lines", "0", *_probe_args(args)]
        probes = pods.each(lambda h, t: pods.sweepctl(t, probe))
        having = [a.host for a in probes if a.error is None]
        if len(having) != 1:
            why = "; ".join(f"{a.host}: {a.describe()}" for a in probes if a.error)
            raise SweepctlError(f"{run_id} has a stdout.log on {len(having)} of {len(probes)} hosts"
                                + (f" ({', '.join(having)})" if having else f" — {why}"),
                                where=run_id, hint="pass the one --host that runs it (see `sweepctl status`)")
        host = having[0]
    with pods.transport(host) as t:
        for line in stream_sweepctl(t, ["logs", run_id, *args], pods.remote_bin, expect_version=__version__):
            typer.echo(line)


def _probe_args(args: list[str]) -> list[str]:
    """The forwarded `logs` options minus --follow and --lines N: a probe must return at once."""
    out, words = [], iter(args)
    for word in words:
        if word == "--lines":
            next(words, None)
        elif word != "--follow":
            out.append(word)
    return out


def stop(pods: Pods, args: list[str], *, shard: int | None, as_json: bool) -> None:
    from sweepctl.cli.render import run as views
    from sweepctl.cli.render.answers import show_answers

    if shard is not None and not pods.single:
        raise SweepctlError("--shard with several hosts is ambiguous: every pod has its own sweep-0, sweep-1, ...",
                            hint="pass the one --host that runs the shard, or --all")
    answers = pods.each(lambda h, t: pods.sweepctl_json(t, ["stop", *args, "--json"]))
    show_answers(pods, answers, as_json=as_json, render=lambda value, prefix: views.render_stop(value, prefix=prefix))
    remote_opts.raise_if_failed(answers)


def rerun(pods: Pods, run_id: str, args: list[str], *, as_json: bool) -> None:
    from sweepctl.cli.render import run as views

    host = pods.one("rerun")
    with pods.transport(host) as t:
        model = pods.sweepctl_json(t, ["rerun", run_id, *args, "--json"])
    if as_json:
        typer.echo(json.dumps(model, indent=2))
        return
    views.render_rerun(model, attach=shlex.join(["sweepctl", "attach", "--host", host, run_id]),
                           logs=remote_opts.hint("logs", run_id, "-f"))
