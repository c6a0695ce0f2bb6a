"""The laptop side of `--host`, and the commands only a laptop needs: attach, pull.

    laptop$ sweepctl status --host pod-a --host pod-b --watch
    laptop$ sweepctl attach --host pod-a 3          # ssh -t pod-a sweepctl attach sweep-3
    laptop$ sweepctl pull --host pod-a --to results/

Every pod-facing command (status, logs, stop, rerun) keeps its code in its own module and hands
over to a function here when `--host` is given (`remote_opts`); report and bootstrap keep their
pod side next to their renderers (`report_cmds`, `pod_cmds`); launch, a sequence of steps over
every pod, hands over to `remote_launch`. Each runs
the same subcommand on the pod with `--json`, one SSH connection per pod, the version check in the
same round trip, and draws the answer with the renderer the local command uses. With several pods
the calls go out in parallel and the answers merge into one table with a host column; a pod that
does not answer is shown as such while the others still report.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from sweepctl.cli import remote_opts
from sweepctl.cli.remote_opts import Pods
from sweepctl.console import console, err_console
from sweepctl.errors import SweepctlError

WATCH_INTERVAL_S = 2.0  # the local `status --watch` redraws every 2 s too


# --- status ------------------------------------------------------------------------------------

def status(pods: Pods, args: list[str], *, as_json: bool, watch: bool, interval: float = WATCH_INTERVAL_S,
           show_all: bool = False) -> None:
    """One `status --json` per pod (one round trip each), drawn as one table."""
    from sweepctl.views.status import render as render_status

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
    from sweepctl.cli.status_watch import watch as watch_status

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
    from sweepctl.cli import run_views

    if shard is not None and not pods.single:
        raise SweepctlError("--shard with several hosts is ambiguous: every pod has its own sweep-0, sweep-1, ...",
                            hint="pass the one --host that runs the shard, or --all")
    answers = pods.each(lambda h, t: pods.sweepctl_json(t, ["stop", *args, "--json"]))
    remote_opts.show_answers(pods, answers, as_json=as_json,
                             render=lambda value, prefix: run_views.render_stop(value, prefix=prefix))
    remote_opts.raise_if_failed(answers)


def rerun(pods: Pods, run_id: str, args: list[str], *, as_json: bool) -> None:
    from sweepctl.cli import run_views

    host = pods.one("rerun")
    with pods.transport(host) as t:
        model = pods.sweepctl_json(t, ["rerun", run_id, *args, "--json"])
    if as_json:
        typer.echo(json.dumps(model, indent=2))
        return
    run_views.render_rerun(model, attach=shlex.join(["sweepctl", "attach", "--host", host, run_id]),
                           logs=remote_opts.hint("logs", run_id, "-f"))


# --- attach, pull: commands of their own -----------------------------------------------------------

def attach(
    target: str = typer.Argument("0", metavar="SHARD|SESSION|RUN_ID",
                                 help="A shard number (session sweep-N), a session name, or a run_id "
                                      "(its rerun-<run_id> session)."),
    host: list[str] | None = remote_opts.HOST,
    remote_bin: str | None = remote_opts.REMOTE_BIN,
    accept_new_host_key: bool = remote_opts.ACCEPT_NEW_HOST_KEY,
) -> None:
    """Open a shard's tmux session, live (detach with Ctrl-b d).

    With --host: `ssh -t HOST`, then the pod's own `sweepctl attach`, which knows the pod's tmux
    server."""
    from sweepctl.pod.tmux import RERUN_PREFIX, SHARD_PREFIX, rerun_session, shard_session
    from sweepctl.settings import load_settings
    from sweepctl.train.contract import run_id_problem

    if target.isdigit():
        session = shard_session(int(target))
    elif target.startswith(SHARD_PREFIX) and run_id_problem(target) is None:  # sweep-N, sweep-ray
        session = target
    else:
        run_id = target.removeprefix(RERUN_PREFIX)
        if problem := run_id_problem(run_id):
            raise SweepctlError(f"{problem}; attach takes a shard number, sweep-N, a run_id or rerun-<run_id>",
                                hint="see the sessions with: sweepctl status")
        session = rerun_session(run_id)
    if pods := remote_opts.resolve(host, remote_bin, accept_new_host_key):
        from sweepctl.transport import system_ssh_argv

        # paramiko cannot hand over a terminal; the system ssh client can, with the same policies.
        argv = system_ssh_argv(pods.one("attach"), [pods.remote_bin, "attach", session],
                               accept_new_host_key=accept_new_host_key)
    else:
        socket = load_settings().tmux_socket
        _check_session(session, socket)
        argv = ["tmux", *(["-S", socket] if socket else []), "attach", "-t", session]
    _exec(argv)


def _check_session(session: str, socket: str | None) -> None:
    """tmux's own "can't find session" names no alternative: list the sweep sessions that exist."""
    from sweepctl.pod.tmux import Tmux, tmux_version

    if tmux_version() is None:
        return  # _exec says tmux is missing
    try:
        found = [s.name for s in Tmux(socket).sessions()]
    except Exception:  # no server running: no sessions at all
        found = []
    if session in found:
        return
    where = f"tmux server {socket}" if socket else "the tmux server"
    if found:
        hint = "sessions there: " + ", ".join(found) + f"; e.g. `sweepctl attach {found[0]}`"
    else:
        hint = f"no sweep is running in tmux here; `{remote_opts.hint('status')}` shows the runs"
    raise SweepctlError(f"no tmux session {session} on {where}", hint=hint)


def _exec(argv: list[str]) -> None:
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        raise SweepctlError(f"{argv[0]} is not installed here",
                            hint="install openssh-client" if argv[0] == "ssh" else "install tmux") from None


def pull(
    host: list[str] | None = remote_opts.HOST,
    to: Path | None = typer.Option(None, "--to", show_default=False,
                                   help="Local folder \\[default: this machine's out_root, so status and report "
                                        "read the pulled runs]. Several hosts: one subfolder per host."),
    sweep: str | None = typer.Option(None, "--sweep", help="This sweep's runs \\[default: the latest launched]."),
    all_runs: bool = typer.Option(False, "--all", help="Every run directory and manifest under the pod's out_root."),
    checkpoints: bool = typer.Option(False, "--checkpoints", help="Copy checkpoints (*.pt) too; large."),
    out_root: str | None = typer.Option(None, "--out-root", help="The pod's out_root \\[default: the pod's settings]."),
    remote_bin: str | None = remote_opts.REMOTE_BIN,
    accept_new_host_key: bool = remote_opts.ACCEPT_NEW_HOST_KEY,
) -> None:
    """Copy a sweep's run directories and manifest from the pod(s); only what changed.

    Incremental: only files whose size or mtime changed are copied, and local files are never
    deleted. The sweep's .sweeps/<name> manifest comes too."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from sweepctl.settings import COMPILE_CACHE_DEFAULT, load_settings
    from sweepctl.state.manifest import SWEEPS_DIR
    from sweepctl.train.contract import valid_run_id

    pods = remote_opts.resolve(host, remote_bin, accept_new_host_key)
    if pods is None:
        raise SweepctlError("pull copies from a pod: pass --host HOST (or set SWEEPCTL_HOST)")
    if all_runs and sweep:
        raise SweepctlError("--all and --sweep are alternatives; pass one")
    dest_root = (to or Path(load_settings().out_root)).expanduser().absolute()
    status_args = ["status", "--json", *(["--out-root", out_root] if out_root else []),
                   *(["--sweep", sweep] if sweep else [])]

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err_console, transient=True) as progress:
        tasks = {h: progress.add_task(h, total=None) for h in pods.hosts}

        def one(h: str, t: Any) -> tuple[Any, Path, str | None]:
            model = pods.sweepctl_json(t, status_args)  # the pod's out_root, the sweep, its run_ids
            dest = dest_root if pods.single else dest_root / h
            name = model.get("sweep")
            # only names that are run_ids: a pod's answer never makes pull copy from outside its runs
            run_ids = {r["run_id"] for r in model["runs"] if valid_run_id(str(r.get("run_id")))}
            manifest = f"{SWEEPS_DIR}/{name}/"

            def wanted(rel: str) -> bool:
                return rel.split("/", 1)[0] in run_ids or (name is not None and rel.startswith(manifest))

            def tick(done: int, total: int, rel: str) -> None:
                progress.update(tasks[h], completed=done, total=total or 1, description=f"{h} {rel}"[:60])

            def everything(rel: str) -> bool:  # but the pod's compile cache: kernels for its GPU, not results
                return not rel.startswith(f"{COMPILE_CACHE_DEFAULT.parts[0]}/")

            report = t.sync_dir_from(model["out_root"], dest, include=everything if all_runs else wanted,
                                     include_checkpoints=checkpoints, progress=tick)
            return report, dest, name

        answers = pods.each(one)
    for a in answers:
        if a.value is None:
            if not pods.single:
                console.print(f"{a.host}: {a.describe()}", style="red", markup=False, highlight=False)
            continue
        report, dest, name = a.value
        what = "every run" if all_runs else f"sweep {name}" if name else "every run (no sweep launched)"
        line = (f"{a.host}: {what}: copied {len(report.copied)} file(s) ({_size(report.bytes_copied)}), "
                f"{report.unchanged} unchanged")
        if report.skipped_checkpoints:
            line += f", {len(report.skipped_checkpoints)} checkpoint(s) skipped (--checkpoints copies them)"
        console.print(f"{line} -> {dest}", markup=False, highlight=False)
    remote_opts.raise_if_failed(answers)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def register(app: typer.Typer) -> None:
    app.command()(attach)
    app.command()(pull)

