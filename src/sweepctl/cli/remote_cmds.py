"""attach, pull: a shard's live tmux session, and a pod's run directories copied here.

    laptop$ sweepctl attach --host pod-a 3          # ssh -t pod-a sweepctl attach sweep-3
    laptop$ sweepctl pull --host pod-a --to results/

The `--host` side of status, logs, stop and rerun is `on_pods`; of launch, `remote_launch`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from sweepctl.cli import remote_opts
from sweepctl.errors import SweepctlError

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
    from sweepctl.pod.tmux import RERUN_PREFIX, SHARD_PREFIX, attach_argv, rerun_session, shard_session
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
        argv = attach_argv(session, socket)
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

    from sweepctl.cli.render.pull import render_pulled, transfer_bars
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

    with transfer_bars(pods.hosts) as bar:
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
                bar(h, done, total, rel)

            def everything(rel: str) -> bool:  # but the pod's compile cache: kernels for its GPU, not results
                return not rel.startswith(f"{COMPILE_CACHE_DEFAULT.parts[0]}/")

            report = t.sync_dir_from(model["out_root"], dest, include=everything if all_runs else wanted,
                                     include_checkpoints=checkpoints, progress=tick)
            return report, dest, name

        answers = pods.each(one)
    render_pulled(answers, several=not pods.single, all_runs=all_runs)
    remote_opts.raise_if_failed(answers)


def register(app: typer.Typer) -> None:
    app.command()(attach)
    app.command()(pull)

