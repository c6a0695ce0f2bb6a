"""The laptop side of `--host`, and the commands only a laptop needs: attach, pull.

    laptop$ sweepctl launch sweeps/fineweb.csv --host pod-a --host pod-b=4
    laptop$ sweepctl status --host pod-a --host pod-b --watch
    laptop$ sweepctl attach --host pod-a 3          # ssh -t pod-a sweepctl attach sweep-3
    laptop$ sweepctl pull --host pod-a --to results/

Every pod-facing command (launch, status, logs, stop, rerun, report, bootstrap) keeps its code in
its own module and hands over to a function here when `--host` is given (`remote_opts`). Each runs
the same subcommand on the pod with `--json`, one SSH connection per pod, the version check in the
same round trip, and draws the answer with the renderer the local command uses. With several pods
the calls go out in parallel and the answers merge into one table with a host column; a pod that
does not answer is shown as such while the others still report.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from sweepctl.cli import remote_opts
from sweepctl.cli.remote_opts import Pods
from sweepctl.console import console, err_console
from sweepctl.errors import RemoteError, SweepctlError
from sweepctl.hosts import LAYOUT_FILE, UPLOAD_DIR

WATCH_INTERVAL_S = 2.0  # the local `status --watch` redraws every 2 s too


# --- launch ----------------------------------------------------------------------------------------

def _attach_target(session: str) -> str:
    """`sweep-3` -> `3` (attach's shard shorthand); other sessions (`sweep-ray`) by their full name,
    since a bare word is read as a run_id (`rerun-<run_id>`)."""
    rest = session.removeprefix("sweep-")
    return rest if rest.isdigit() else session


@dataclass
class _Launched:
    """One pod's answer to `launch --json`: its model (when it printed one) and its error."""

    model: dict[str, Any] | None
    error: SweepctlError | None


def launch(pods: Pods, csv_path: Path, *, shards: int | None, gpus_per_shard: int, name: str | None,
           dry_run: bool, as_json: bool, forwarded: list[str], reassign: bool = False) -> None:
    """Validate on the laptop, upload each pod's rows and config files, launch there.

    Every pod's record of the sweep is read first, on the same connection: a relaunch keeps each
    row on the pod it was given to, and naming other pods is refused unless `reassign`
    (`sweepctl.hosts`). Several pods are rehearsed (`launch --dry-run` on each): a refusal or a
    failed pre-flight on any pod starts nothing anywhere."""
    from sweepctl.hosts import check_hosts, layout_json, place, recorded_split, subset_csv
    from sweepctl.spec import RUN_ID_RE, read_sweep

    sweep = read_sweep(csv_path, name=name)  # every row valid here, or nothing is uploaded
    if not RUN_ID_RE.fullmatch(sweep.name):
        raise SweepctlError(f"sweep name {sweep.name!r} is not a safe directory name",
                            hint="pass --name with letters, digits, '.', '_', '-'")
    if not as_json:
        for w in sweep.warnings:
            err_console.print(w, style="yellow", markup=False, highlight=False)
    uploads = _config_uploads(sweep)
    text = csv_path.read_bytes().decode("utf-8-sig")
    refs = {r.row_index: uploads[r.config_path] for r in sweep.runs if r.config_path is not None}
    out_root_flag = _flag_value(forwarded, "--out-root")
    run_ids = [r.run_id for r in sweep.runs]

    with pods.open_all() as transports, contextlib.ExitStack() as stack, \
            tempfile.TemporaryDirectory(prefix="sweepctl-launch-") as tmp:
        def record_of(host: str, t: Any) -> tuple[str, Any]:
            out_root = _pod_out_root(pods, t, out_root_flag)
            return out_root, _pod_record(pods, t, host, out_root, sweep.name)

        def survey(host: str, t: Any) -> tuple[str, int, Any]:
            out_root, record = record_of(host, t)
            return out_root, pods.shards.get(host) or shards or _pod_gpu_shards(t, host, gpus_per_shard), record

        surveyed = pods.each(survey, transports)
        remote_opts.raise_if_failed(surveyed)  # nothing uploaded yet
        out_roots = {a.host: a.value[0] for a in surveyed if a.value}
        records = {a.host: a.value[2] for a in surveyed if a.value}
        recorded = recorded_split(records.values(), run_ids)
        left_out = Pods(hosts=[], remote_bin=pods.remote_bin, accept_new_host_key=pods.accept_new_host_key)
        if reassign and recorded:
            # The pods left out may hold started rows: ask them too (status only) which ones.
            left_out.hosts = [h for h in dict.fromkeys(recorded.placed.values()) if h not in pods.hosts]
            if left_out.hosts:
                transports = {**transports, **stack.enter_context(left_out.open_all())}
                for a in left_out.each(record_of, transports):
                    if a.value is None:
                        raise RemoteError(f"sweep {sweep.name}: --reassign must know which of its rows started on "
                                          f"{a.host}, which did not answer: {a.describe()}",
                                          hint=f"retry when {a.host} answers; if it is gone for good with its "
                                               "volume, launch under a new --name")
                    out_roots[a.host], records[a.host] = a.value
        else:
            check_hosts(sweep.name, recorded, pods.hosts)
        placement = place(run_ids, [(a.host, a.value[1]) for a in surveyed if a.value], recorded, sweep=sweep.name,
                          reassign=records if reassign else None)
        parts = placement.parts
        by_host = {p.host: p for p in parts}
        layout = layout_json(sweep.name, str(csv_path.absolute()), placement, ts=time.time())
        every_row = list(range(len(run_ids)))

        def put_layout(host: str, t: Any) -> None:
            local = Path(tmp, host)
            local.mkdir(exist_ok=True)
            (local / LAYOUT_FILE).write_text(json.dumps(layout, indent=2) + "\n")
            t.put(local / LAYOUT_FILE, f"{_upload_dir(out_roots[host], sweep.name)}/{LAYOUT_FILE}")

        def upload(host: str, t: Any, directory: str) -> str:
            part = by_host[host]
            local = Path(tmp, host)
            local.mkdir(exist_ok=True)
            rows = None if part.row_indices == every_row else part.row_indices
            (local / csv_path.name).write_text(subset_csv(text, rows, refs))
            t.put(local / csv_path.name, f"{directory}/{csv_path.name}")
            for src, rel in uploads.items():
                t.put(src, f"{directory}/{rel}")
            return f"{directory}/{csv_path.name}"

        def start(host: str, t: Any, *, rehearse: bool) -> _Launched:
            from sweepctl.remote import raise_for_result

            part = by_host[host]
            temp = None
            if dry_run:  # a dry run writes nothing under the pod's out_root: upload to a temp dir
                temp = t.run(["sh", "-c", 'mktemp -d "${TMPDIR:-/tmp}/sweepctl-dry-run.XXXXXX"'],
                             check=True).stdout.strip()
            try:
                directory = temp or _upload_dir(out_roots[host], sweep.name)
                remote_csv = upload(host, t, directory)
                # The record changes only with a real launch: before it, once the rehearsal passed
                # (several pods); after it, when it started (one pod: until then its plan, if any, is
                # the record, so a launch refused by the run table records nothing).
                real = not (rehearse or dry_run)
                if real and not pods.single:
                    put_layout(host, t)
                args = ["launch", remote_csv, "--shards", str(part.shards), "--name", sweep.name, "--json",
                        "--placed-on", host, *forwarded, *(["--dry-run"] if rehearse or dry_run else [])]
                result = pods.sweepctl(t, args, check=False)
                if real and pods.single and result.ok:
                    put_layout(host, t)
            finally:
                if temp:
                    t.run(["rm", "-rf", "--", temp])
            try:
                model = json.loads(result.stdout)
            except ValueError:
                model = None
            try:
                raise_for_result(t, args, result, pods.remote_bin)
            except SweepctlError as e:
                return _Launched(model, e)
            return _Launched(model, None)

        busy = [p.host for p in parts if p.row_indices]
        idle = [p.host for p in parts if not p.row_indices]  # more shards than rows: nothing to launch there
        active = Pods(hosts=busy, remote_bin=pods.remote_bin, accept_new_host_key=pods.accept_new_host_key)
        answers: list[remote_opts.Answer[_Launched]] = []
        stopped = False
        if not pods.single and not dry_run and busy:
            answers = active.each(lambda h, t: start(h, t, rehearse=True), transports)
            stopped = any(a.error or (a.value and a.value.error) for a in answers)
        if not stopped:
            if not dry_run:
                # Every pod of the sweep holds the new layout before any starts, also one with no
                # rows now or left out by --reassign: none may read an older one on a later launch.
                bystanders = Pods(hosts=idle + left_out.hosts, remote_bin=pods.remote_bin,
                                  accept_new_host_key=pods.accept_new_host_key)
                if bystanders.hosts:
                    remote_opts.raise_if_failed(bystanders.each(put_layout, transports))
            if busy:
                answers = active.each(lambda h, t: start(h, t, rehearse=False), transports)

    failures = [_as_answer(a) for a in answers]
    if as_json:
        if pods.single and answers and answers[0].value and answers[0].value.model is not None:
            typer.echo(json.dumps(answers[0].value.model, indent=2))
        else:
            hosts = [dict(p.to_json(), launch=(a.value.model if a.value else None),
                          error=str(f.error) if f.error else None)
                     for p, a, f in zip([by_host[h] for h in busy], answers, failures, strict=True)]
            typer.echo(json.dumps({"sweep": sweep.name, "total_shards": layout["total_shards"], "hosts": hosts,
                                   "moved": [{"run_id": r, "from": a, "to": b} for r, a, b in placement.moved],
                                   "elsewhere": placement.elsewhere}, indent=2))
    else:
        _render_launch(pods, placement, answers, idle, dry_run=dry_run, stopped=stopped)
    remote_opts.raise_if_failed(failures)


def _upload_dir(out_root: str, sweep: str) -> str:
    from sweepctl.runs import SWEEPS_DIR

    return f"{out_root}/{SWEEPS_DIR}/{sweep}/{UPLOAD_DIR}"


def _pod_out_root(pods: Pods, t: Any, out_root_flag: str | None) -> str:
    info = pods.sweepctl_json(t, ["config", "--json", *(["--out-root", out_root_flag] if out_root_flag else [])])
    return str(info["paths"]["out_root"])


def _pod_record(pods: Pods, t: Any, host: str, out_root: str, sweep: str) -> Any:
    """What the pod holds about `sweep`: its layout file, and when the sweep was launched there,
    its own rows' states and live sessions (the pod's `status --json`, same connection)."""
    from sweepctl.hosts import PodRecord
    from sweepctl.launch import PLAN_FILE
    from sweepctl.runs import SWEEPS_DIR

    path = f"{_upload_dir(out_root, sweep)}/{LAYOUT_FILE}"
    found = t.run(["cat", "--", path], timeout=30)
    layout = None
    if found.ok or t.exists(path):
        try:
            layout = json.loads(found.stdout) if found.ok else None
        except ValueError:
            pass
        if not isinstance(layout, dict):  # unread, the record would be lost and any row could move
            raise SweepctlError(f"cannot read {path}, the record of which pod runs which row of sweep {sweep}"
                                + (f": {found.stderr_tail(1)}" if not found.ok else ""), where=host,
                                hint="copy it from another pod of the sweep (they hold the same file), or launch "
                                     "under a new --name")
    if not t.exists(f"{out_root}/{SWEEPS_DIR}/{sweep}/{PLAN_FILE}"):
        return PodRecord(host, layout)
    model = pods.sweepctl_json(t, ["status", "--json", "--sweep", sweep, "--out-root", out_root])
    return PodRecord(host, layout, {r["run_id"]: r["state"] for r in model["runs"]},
                     [x["name"] for x in model.get("sessions") or [] if x.get("alive")])


def _as_answer(a: remote_opts.Answer[_Launched]) -> remote_opts.Answer[Any]:
    error = a.error or (a.value.error if a.value else None)
    return remote_opts.Answer(a.host, value=a.value, error=error, connected=a.connected)


def _render_launch(pods: Pods, placement: Any, answers: list[remote_opts.Answer[_Launched]],
                   idle: list[str], *, dry_run: bool, stopped: bool) -> None:
    """Each pod's pre-flight and sessions under a rule naming its rows and sessions (its own
    sweep-0.., as `attach` and status's shard column number them); `stopped`: the rehearsal failed
    somewhere, so these are dry-run answers and nothing was started."""
    from sweepctl.cli import run_views

    by_host = {p.host: p for p in placement.parts}
    moves: dict[tuple[str, str], int] = {}
    for _run_id, src, dst in placement.moved:
        moves[src, dst] = moves.get((src, dst), 0) + 1
    if moves:
        console.print("--reassign moves rows that have not started: "
                      + ", ".join(f"{src} -> {dst}: {_rows(n)}" for (src, dst), n in moves.items()), highlight=False)
    for host, run_ids in placement.elsewhere.items():
        shown = ", ".join(run_ids[:5]) + (", ..." if len(run_ids) > 5 else "")
        console.print(f"{host} keeps {_rows(len(run_ids))} started there ({shown}): launched nowhere now; "
                      f"add --host {host} to launch them there", highlight=False)
    for a in answers:
        part = by_host[a.host]
        if not pods.single:
            sessions = "sweep-0" if part.shards == 1 else f"sweep-0..sweep-{part.shards - 1}"
            console.rule(f"{a.host}: {_rows(len(part.row_indices))} on {sessions}", align="left")
        model = a.value.model if a.value else None
        if model is None:
            continue
        model = dict(model, warnings=[])  # the laptop printed the CSV's warnings once already
        run_views.render_launch_preview(model, detailed=dry_run)
        if a.value and a.value.error is None and not stopped:
            first = model["started"][0]["session"] if model["started"] else "sweep-0"
            status = f"sweepctl status {' '.join(f'--host {h}' for h in pods.hosts)}"
            run_views.render_launch_outcome(
                model, attach=f"sweepctl attach --host {a.host} {_attach_target(first)}",
                status=status, show_status=a is answers[-1], prefix="" if pods.single else f"{a.host}: ")
    for host in idle:
        console.print(f"{host}: no rows; nothing launched there", highlight=False)
    if stopped:
        console.print("nothing started on any host: every pod must pass its pre-flight first.", style="red",
                      highlight=False)


def _rows(n: int) -> str:
    return f"{n} row{'' if n == 1 else 's'}"


def _config_uploads(sweep: Any) -> dict[Path, str]:
    """Each config file the CSV names -> its path in the upload dir (`configs/<name>`), relative to
    the uploaded CSV, which is where the pod's reader looks first."""
    uploads: dict[Path, str] = {}
    taken: set[str] = set()
    for i, src in enumerate(sweep.config_files):
        name = src.name if src.name not in taken else f"{i}-{src.name}"
        taken.add(name)
        uploads[src] = f"configs/{name}"
    return uploads


def _flag_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def _pod_gpu_shards(t: Any, host: str, gpus_per_shard: int) -> int:
    """The pod's GPU count (nvidia-smi --query-gpu over SSH) per --gpus-per-shard: the default."""
    from sweepctl.gpus import QUERY_ARGV, parse_query
    from sweepctl.hosts import default_shards

    result = t.run(QUERY_ARGV, timeout=30)
    problem = None
    if result.exit_code == 127:
        problem = "nvidia-smi not found"
    elif not result.ok:
        problem = f"nvidia-smi exited {result.exit_code}: {result.stderr_tail(1)}"
    gpus, _bad = parse_query(result.stdout) if result.ok else ([], [])
    return default_shards(len(gpus), gpus_per_shard, where=host, problem=problem)


# --- status ------------------------------------------------------------------------------------

def status(pods: Pods, args: list[str], *, as_json: bool, watch: bool) -> None:
    """One `status --json` per pod (one round trip each), drawn as one table."""
    from sweepctl import status as lib

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
            typer.echo(json.dumps(model, indent=2))
        else:
            console.print(lib.render(model))
        remote_opts.raise_if_failed(answers)
        return
    from rich.live import Live

    models = watch_models(pods, pod_args)
    with Live(lib.render(next(models)), console=console, refresh_per_second=1, screen=False) as live:
        for model in models:
            live.update(lib.render(model))


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
    from sweepctl.hosts import HostAnswer, merge_status

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
    if as_json:
        out = answers[0].value if pods.single else {a.host: a.value if a.error is None else {"error": str(a.error)}
                                                     for a in answers}
        if out is not None:
            typer.echo(json.dumps(out, indent=2))
    else:
        for a in answers:
            if a.value is not None:
                run_views.render_stop(a.value, prefix="" if pods.single else f"{a.host}: ")
            elif not pods.single:
                console.print(f"{a.host}: {a.describe()}", style="red", markup=False, highlight=False)
    remote_opts.raise_if_failed(answers)


def rerun(pods: Pods, run_id: str, args: list[str], *, as_json: bool) -> None:
    from sweepctl.cli import run_views

    host = pods.one("rerun")
    with pods.transport(host) as t:
        model = pods.sweepctl_json(t, ["rerun", run_id, *args, "--json"])
    if as_json:
        typer.echo(json.dumps(model, indent=2))
        return
    run_views.render_rerun(model, attach=f"sweepctl attach --host {host} {run_id}",
                           logs=f"sweepctl logs {run_id} -f --host {host}")


# --- report, bootstrap -------------------------------------------------------------------------

def report(pods: Pods, args: list[str], *, fmt: str, plots: Path | None, baseline: str | None,
           group_by: str, sweep: str | None) -> None:
    """`report --format json` on each pod; several pods' runs are grouped again here, so seeds that
    ran on different pods land in one group; tables, CSV, markdown and plots are made here."""
    from sweepctl import report as lib
    from sweepctl.cli.report_cmds import emit

    pod_args = ["report", *args, "--format", "json"]
    answers = pods.each(lambda h, t: pods.sweepctl_json(t, pod_args))
    if pods.single:
        remote_opts.raise_if_failed(answers)
        emit(answers[0].value, fmt=fmt, plots_dir=plots, baseline=baseline)
        return
    got = [a for a in answers if a.value is not None]
    if not got:
        remote_opts.raise_if_failed(answers)
    records = [dict(r, host=a.host) for a in got for r in a.value["runs"]]
    data = lib.assemble(records, out_root=", ".join(f"{a.host}:{a.value['out_root']}" for a in got),
                        sweep=sweep, group_by=group_by, now=max(a.value["generated"] for a in got))
    data["warnings"] = ([f"{a.host}: {w}" for a in got for w in a.value["warnings"]] + data["warnings"]
                        + [f"host {a.host}: {a.describe()} (its runs are missing)" for a in answers if a.error])
    emit(data, fmt=fmt, plots_dir=plots, baseline=baseline)
    remote_opts.raise_if_failed(answers)


def bootstrap(pods: Pods, args: list[str], *, venv: Path | None, wheel: Path | None, python: str,
              as_json: bool) -> None:
    """Install this laptop's sweepctl (as a wheel) on each pod, then run its bootstrap there."""
    from sweepctl.bootstrap import bootstrap_remote, build_wheel
    from sweepctl.cli.pod_cmds import render_checklist

    with tempfile.TemporaryDirectory(prefix="sweepctl-wheel-") as tmp:
        built = wheel or build_wheel(Path(tmp))
        answers = pods.each(lambda h, t: bootstrap_remote(t, built, args, venv=str(venv) if venv else None,
                                                          python=python))
    if as_json:
        out = answers[0].value if pods.single else {a.host: a.value for a in answers}
        typer.echo(json.dumps(out, indent=2))
    failed: list[remote_opts.Answer[Any]] = []
    for a in answers:
        if a.value is None:
            failed.append(a)
            continue
        if not as_json:
            if not pods.single:
                console.rule(a.host, align="left")
            render_checklist(a.value)
        bad = [c["name"] for c in a.value["checks"] if c["ok"] is False]
        if bad or a.value.get("remote_error"):
            hint = next((c["hint"] for c in a.value["checks"] if c["ok"] is False and c["hint"]), None)
            failed.append(remote_opts.Answer(a.host, error=SweepctlError(
                f"bootstrap incomplete: {', '.join(bad) or a.value['remote_error']}", where=a.host, hint=hint)))
    remote_opts.raise_if_failed(failed)


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
    from sweepctl.settings import load_settings
    from sweepctl.tmux import RERUN_PREFIX, SHARD_PREFIX, rerun_session, shard_session

    if target.isdigit():
        session = shard_session(int(target))
    elif target.startswith((SHARD_PREFIX, RERUN_PREFIX)):
        session = target
    else:
        session = rerun_session(target)
    if pods := remote_opts.resolve(host, remote_bin, accept_new_host_key):
        from sweepctl.transport import system_ssh_argv

        # paramiko cannot hand over a terminal; the system ssh client can, with the same policies.
        argv = system_ssh_argv(pods.one("attach"), [pods.remote_bin, "attach", session],
                               accept_new_host_key=accept_new_host_key)
    else:
        socket = load_settings().tmux_socket
        argv = ["tmux", *(["-S", socket] if socket else []), "attach", "-t", session]
    _exec(argv)


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

    from sweepctl.runs import SWEEPS_DIR
    from sweepctl.settings import load_settings

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
            run_ids = {r["run_id"] for r in model["runs"]}
            manifest = f"{SWEEPS_DIR}/{name}/"

            def wanted(rel: str) -> bool:
                return rel.split("/", 1)[0] in run_ids or (name is not None and rel.startswith(manifest))

            def tick(done: int, total: int, rel: str) -> None:
                progress.update(tasks[h], completed=done, total=total or 1, description=f"{h} {rel}"[:60])

            report = t.sync_dir_from(model["out_root"], dest, include=None if all_runs else wanted,
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

