"""The laptop side of `sweepctl launch --host`: one sweep launched on one pod or split over several.

    laptop$ sweepctl launch sweeps/fineweb.csv --host pod-a --host pod-b=4 [--reassign [--forget pod-c]]

The other pod-facing commands are one call per pod (`on_pods`). A launch is a sequence of
steps, most of them a round of calls over the pods, and any step before `start` may stop it with
nothing started anywhere: survey every pod (its out_root, shard count and record of the sweep),
check the record (`sweepctl.sweep.hosts`), place the rows, rehearse on every pod (several pods), write
the layout to every pod of the sweep, start, render. `_RemoteLaunch` holds what the steps share
(the connections, each pod's out_root and record, the placement) with a method per step, so
`launch` reads as that sequence.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from sweepctl.cli import remote_opts
from sweepctl.cli.remote_opts import Pods
from sweepctl.console import err_console
from sweepctl.errors import RefusedError, RemoteError, SweepctlError
from sweepctl.state.manifest import LAYOUT_FILE, PLAN_FILE, UPLOAD_DIR, remote_sweep_dir
from sweepctl.sweep.hosts import (
    HostPart,
    Placement,
    PodRecord,
    Recorded,
    check_forget,
    check_hosts,
    default_shards,
    layout_json,
    place,
    recorded_split,
    subset_csv,
)
from sweepctl.sweep.spec import Sweep, read_sweep
from sweepctl.train.contract import RUN_ID_RE, write_json_atomic

if TYPE_CHECKING:  # annotations only: the transport is imported when a connection opens
    from sweepctl.transport import Result, Transport


def launch(pods: Pods, csv_path: Path, *, shards: int | None, gpus_per_shard: int, name: str | None,
           dry_run: bool, as_json: bool, forwarded: list[str], reassign: bool = False,
           forget: list[str] | None = None) -> None:
    """Validate on the laptop, upload each pod's rows and config files, launch there.

    Every pod's record of the sweep is read first, on the same connection: a relaunch keeps each
    row on the pod it was given to, and naming other pods is refused unless `reassign`
    (`sweepctl.sweep.hosts`); `forget` (with `reassign`) names pods lost for good, which must not
    answer. Several pods are rehearsed (`launch --dry-run` on each): a refusal or a
    failed pre-flight on any pod starts nothing anywhere."""
    sweep = _read_sweep(csv_path, name, as_json=as_json)  # every row valid here, or nothing is uploaded
    with contextlib.ExitStack() as stack:
        run = _RemoteLaunch(pods, csv_path, sweep, stack, shards=shards, gpus_per_shard=gpus_per_shard,
                            dry_run=dry_run, reassign=reassign, forget=forget or [], forwarded=forwarded)
        run.survey()
        recorded = run.check_record()
        run.place_rows(recorded)
        if run.rehearse():
            run.write_layout_to_bystanders()
            run.start()
    run.render(as_json=as_json)


def driver_pod_shards(backend: str, hosts: list[str], shards: int | None) -> int:
    """`launch --host POD --backend ray`: the one pod that runs the driver gets the whole CSV, as
    a plan of one shard (`--shards 1`, the only count such a launch accepts), and no GPU survey."""
    if len(hosts) > 1:
        raise SweepctlError(f"--backend {backend} runs its driver on one pod; got {len(hosts)}: {', '.join(hosts)}",
                            hint=f"pass the --host of a {backend} node (e.g. the head from `sweepctl ray up`); "
                                 f"{backend} spreads the rows over every node of its cluster")
    return 1 if shards is None else shards


def _live_shards(record: PodRecord) -> int | None:
    """A pod whose runners are live keeps its shard count: rows added now join their queue."""
    if not record.live_sessions or not record.layout:
        return None
    return next((int(part["shards"]) for part in record.layout.get("hosts") or [] if part.get("host") == record.host),
                None)


def _read_sweep(csv_path: Path, name: str | None, *, as_json: bool) -> Sweep:
    sweep = read_sweep(csv_path, name=name)
    if not RUN_ID_RE.fullmatch(sweep.name):
        raise SweepctlError(f"sweep name {sweep.name!r} is not a safe directory name",
                            hint="pass --name with letters, digits, '.', '_', '-'")
    if not as_json:
        for w in sweep.warnings:
            err_console.print(w, style="yellow", markup=False, highlight=False)
    return sweep


@dataclass
class _Launched:
    """One pod's answer to `launch --json`: its model (when it printed one) and its error."""

    model: dict[str, Any] | None
    error: SweepctlError | None


class _RemoteLaunch:
    """One launch over `pods`, step by step (`launch` calls them in order). Each step fills in what
    the next one reads; the connections (also those opened to pods left out) close with `stack`."""

    def __init__(self, pods: Pods, csv_path: Path, sweep: Sweep, stack: contextlib.ExitStack, *,
                 shards: int | None, gpus_per_shard: int, dry_run: bool, reassign: bool,
                 forget: list[str], forwarded: list[str]) -> None:
        self.pods, self.csv_path, self.sweep, self.stack = pods, csv_path, sweep, stack
        self.shards, self.gpus_per_shard = shards, gpus_per_shard
        self.dry_run, self.reassign, self.forwarded = dry_run, reassign, forwarded
        self.forget = list(dict.fromkeys(forget))  # pods lost for good (--forget): never asked
        self.uploads = _config_uploads(sweep)
        self.text = csv_path.read_bytes().decode("utf-8-sig")
        self.refs = {r.row_index: self.uploads[r.config_path]
                     for r in sweep.runs if r.config_path is not None}
        self.out_root_flag = _flag_value(forwarded, "--out-root")
        self.run_ids = [r.run_id for r in sweep.runs]
        self.transports: dict[str, Transport] = stack.enter_context(pods.open_all())
        self.tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sweepctl-launch-")))
        # survey, check_record: what each pod holds
        self.out_roots: dict[str, str] = {}
        self.records: dict[str, PodRecord] = {}
        self.shard_counts: list[tuple[str, int]] = []
        self.left_out: list[str] = []  # pods of the sweep not named now (--reassign)
        # place_rows: where each row goes
        self.placement = Placement(parts=[], placed={})
        self.by_host: dict[str, HostPart] = {}
        self.layout: dict[str, Any] = {}
        self.busy = self._pods([])  # pods with rows to launch
        self.idle: list[str] = []  # more shards than rows: nothing to launch there
        # rehearse, start: each busy pod's answer
        self.answers: list[remote_opts.Answer[_Launched]] = []
        self.stopped = False  # the rehearsal failed somewhere: nothing started

    # --- the steps ---------------------------------------------------------------------------------

    def survey(self) -> None:
        """Each named pod's out_root, shard count and record of the sweep, one connection each."""
        surveyed = self.pods.each(self._survey_pod, self.transports)
        remote_opts.raise_if_failed(surveyed)  # nothing uploaded yet
        for a in surveyed:
            assert a.value is not None
            self.out_roots[a.host], count, self.records[a.host] = a.value
            self.shard_counts.append((a.host, count))

    def check_record(self) -> Recorded | None:
        """The split the sweep was last launched with. Naming other pods than it is refused, unless
        --reassign, which reads the record of the pods left out too."""
        recorded = recorded_split(self.records.values(), self.run_ids)
        check_forget(self.sweep.name, recorded, self.pods.hosts, self.forget)
        if self.reassign and recorded:
            self._survey_left_out(recorded)
        else:
            check_hosts(self.sweep.name, recorded, self.pods.hosts)
        return recorded

    def place_rows(self, recorded: Recorded | None) -> None:
        """Each row's pod (a recorded row stays on its own), and the layout that records it."""
        self.placement = place(self.run_ids, self.shard_counts, recorded, sweep=self.sweep.name,
                               reassign=self.records if self.reassign else None, forget=self.forget)
        parts = self.placement.parts
        self.by_host = {p.host: p for p in parts}
        self.layout = layout_json(self.sweep.name, str(self.csv_path.absolute()), self.placement,
                                  ts=time.time())
        self.busy = self._pods([p.host for p in parts if p.row_indices])
        self.idle = [p.host for p in parts if not p.row_indices]

    def rehearse(self) -> bool:
        """Several pods: `launch --dry-run` on each first. False when any refused or failed its
        pre-flight: nothing starts anywhere, and the rehearsal's answers are what is shown."""
        if self.pods.single or self.dry_run or not self.busy.hosts:
            return True
        self.answers = self.busy.each(lambda h, t: self._start_on(h, t, rehearse=True), self.transports)
        self.stopped = any(a.error or (a.value and a.value.error) for a in self.answers)
        return not self.stopped

    def write_layout_to_bystanders(self) -> None:
        """The pods of the sweep that launch nothing now; a pod with rows gets the layout in `start`."""
        if self.dry_run:
            return
        # Every pod of the sweep holds the new layout before any starts, also one with no
        # rows now or left out by --reassign: none may read an older one on a later launch.
        bystanders = self._pods(self.idle + self.left_out)
        if bystanders.hosts:
            remote_opts.raise_if_failed(bystanders.each(self._put_layout, self.transports))

    def start(self) -> None:
        """The pod's own `launch --json` on every pod with rows, at once."""
        if self.busy.hosts:
            self.answers = self.busy.each(lambda h, t: self._start_on(h, t, rehearse=False), self.transports)

    def render(self, *, as_json: bool) -> None:
        """Each pod's answer (the one pod's own JSON, or one object for several), then its error."""
        failures = [_as_answer(a) for a in self.answers]
        first = self.answers[0].value if self.answers else None
        if as_json and self.pods.single and first and first.model is not None:
            typer.echo(json.dumps(first.model, indent=2))
        elif as_json:
            typer.echo(json.dumps(self._json(failures), indent=2))
        else:
            self._render_text()
        remote_opts.raise_if_failed(failures)

    # --- on one pod --------------------------------------------------------------------------------

    def _record_of(self, host: str, t: Transport) -> tuple[str, PodRecord]:
        out_root = _pod_out_root(self.pods, t, self.out_root_flag)
        return out_root, _pod_record(self.pods, t, host, out_root, self.sweep.name)

    def _survey_pod(self, host: str, t: Transport) -> tuple[str, int, PodRecord]:
        out_root, record = self._record_of(host, t)
        count = (self.pods.shards.get(host) or self.shards or _live_shards(record)
                 or _pod_gpu_shards(t, host, self.gpus_per_shard))
        return out_root, count, record

    def _survey_left_out(self, recorded: Recorded) -> None:
        # The pods left out may hold started rows: ask them too (status only) which ones. A
        # forgotten pod is only tried: one that answers is not gone, and its rows may be running
        # there (a network blip must not start them twice), so the launch is refused.
        self.left_out = [h for h in dict.fromkeys(recorded.placed.values())
                         if h not in self.pods.hosts and h not in self.forget]
        if not self.left_out and not self.forget:
            return
        asked = self._pods(self.left_out + self.forget)
        self.transports = {**self.transports, **self.stack.enter_context(asked.open_all())}

        def ask(host: str, t: Transport) -> tuple[str, PodRecord] | None:
            if host in self.forget:
                t.connect()
                return None
            return self._record_of(host, t)

        answers = asked.each(ask, self.transports)
        for a in answers:
            if a.host in self.forget and (a.error is None or a.connected):
                raise RefusedError(f"sweep {self.sweep.name}: --forget {a.host} says {a.host} is gone for good, but "
                                   f"it answered, so it is not gone: its rows may be done or running there",
                                   hint=f"use --reassign without --forget {a.host}: it asks {a.host} which of its "
                                        "rows started and moves only the others")
        for a in answers:
            if a.host in self.forget:
                continue
            if a.value is None:
                raise RemoteError(f"sweep {self.sweep.name}: --reassign must know which of its rows started on "
                                  f"{a.host}, which did not answer: {a.describe()}",
                                  hint=f"retry when {a.host} answers; if it is gone for good with its "
                                       f"volume, add --forget {a.host} (its rows start over on the pods named)")
            self.out_roots[a.host], self.records[a.host] = a.value

    def _put_layout(self, host: str, t: Transport) -> None:
        local = self._local_dir(host)
        write_json_atomic(local / LAYOUT_FILE, self.layout)
        t.put(local / LAYOUT_FILE, f"{_upload_dir(self.out_roots[host], self.sweep.name)}/{LAYOUT_FILE}")

    def _upload(self, host: str, t: Transport, directory: str) -> str:
        """This pod's rows of the CSV and every config file, into `directory`; the CSV's path there."""
        part = self.by_host[host]
        local = self._local_dir(host)
        rows = None if part.row_indices == list(range(len(self.run_ids))) else part.row_indices
        name = self.csv_path.name
        (local / name).write_text(subset_csv(self.text, rows, self.refs))
        t.put(local / name, f"{directory}/{name}")
        for src, rel in self.uploads.items():
            t.put(src, f"{directory}/{rel}")
        return f"{directory}/{name}"

    def _start_on(self, host: str, t: Transport, *, rehearse: bool) -> _Launched:
        """The pod's own `launch --json` on its rows (`--dry-run` when rehearsing)."""
        temp = None
        if self.dry_run:  # a dry run writes nothing under the pod's out_root: upload to a temp dir
            temp = t.run(["sh", "-c", 'mktemp -d "${TMPDIR:-/tmp}/sweepctl-dry-run.XXXXXX"'],
                         check=True).stdout.strip()
        try:
            directory = temp or _upload_dir(self.out_roots[host], self.sweep.name)
            remote_csv = self._upload(host, t, directory)
            # The record changes only with a real launch: before it, once the rehearsal passed
            # (several pods); after it, when it started (one pod: until then its plan, if any, is
            # the record, so a launch refused by the run table records nothing).
            real = not (rehearse or self.dry_run)
            if real and not self.pods.single:
                self._put_layout(host, t)
            args = ["launch", remote_csv, "--shards", str(self.by_host[host].shards), "--name", self.sweep.name,
                    "--json", "--placed-on", host, *self.forwarded, *([] if real else ["--dry-run"])]
            result = self.pods.sweepctl(t, args, check=False)
            if real and self.pods.single and result.ok:
                self._put_layout(host, t)
        finally:
            if temp:
                t.run(["rm", "-rf", "--", temp])
        return _launched_from(t, args, result, self.pods.remote_bin)

    # --- helpers -----------------------------------------------------------------------------------

    def _pods(self, hosts: list[str]) -> Pods:
        return Pods(hosts=hosts, remote_bin=self.pods.remote_bin,
                    accept_new_host_key=self.pods.accept_new_host_key)

    def _local_dir(self, host: str) -> Path:
        local = self.tmp / host
        local.mkdir(exist_ok=True)
        return local

    def _json(self, failures: list[remote_opts.Answer[Any]]) -> dict[str, Any]:
        hosts = [dict(self.by_host[a.host].to_json(), launch=(a.value.model if a.value else None),
                      error=str(f.error) if f.error else None)
                 for a, f in zip(self.answers, failures, strict=True)]
        return {"sweep": self.sweep.name, "total_shards": self.layout["total_shards"], "hosts": hosts,
                "moved": [{"run_id": r, "from": a, "to": b} for r, a, b in self.placement.moved],
                "elsewhere": self.placement.elsewhere, "forgotten": self.placement.forgotten}

    def _render_text(self) -> None:
        from sweepctl.cli.render.run import PodLaunched, render_pods_launch

        launched = [PodLaunched(a.host, a.value.model if a.value else None,
                                bool(a.value) and a.value.error is None and not self.stopped,
                                len(self.by_host[a.host].row_indices), self.by_host[a.host].shards)
                    for a in self.answers]
        render_pods_launch(self.placement, launched, self.idle, single=self.pods.single, dry_run=self.dry_run,
                           stopped=self.stopped, status=remote_opts.hint("status"))


def _launched_from(t: Transport, args: list[str], result: Result, remote_bin: str) -> _Launched:
    """The pod's launch model (when it printed one) and its error, as `raise_for_result` names it."""
    from sweepctl.remote import raise_for_result

    try:
        model = json.loads(result.stdout)
    except ValueError:
        model = None
    try:
        raise_for_result(t, args, result, remote_bin)
    except SweepctlError as e:
        return _Launched(model, e)
    return _Launched(model, None)


def _as_answer(a: remote_opts.Answer[_Launched]) -> remote_opts.Answer[Any]:
    error = a.error or (a.value.error if a.value else None)
    return remote_opts.Answer(a.host, value=a.value, error=error, connected=a.connected)


def _upload_dir(out_root: str, sweep: str) -> str:
    return f"{remote_sweep_dir(out_root, sweep)}/{UPLOAD_DIR}"


def _pod_out_root(pods: Pods, t: Transport, out_root_flag: str | None) -> str:
    info = pods.sweepctl_json(t, ["config", "--json", *(["--out-root", out_root_flag] if out_root_flag else [])])
    return str(info["paths"]["out_root"])


def _pod_record(pods: Pods, t: Transport, host: str, out_root: str, sweep: str) -> PodRecord:
    """What the pod holds about `sweep`: its layout file, and when the sweep was launched there,
    its own rows' states and live sessions (the pod's `status --json`, same connection)."""
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
    if not t.exists(f"{remote_sweep_dir(out_root, sweep)}/{PLAN_FILE}"):
        return PodRecord(host, layout)
    model = pods.sweepctl_json(t, ["status", "--json", "--sweep", sweep, "--out-root", out_root])
    return PodRecord(host, layout, {r["run_id"]: r["state"] for r in model["runs"]},
                     [x["name"] for x in model.get("sessions") or [] if x.get("alive")])


def _config_uploads(sweep: Sweep) -> dict[Path, str]:
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


def _pod_gpu_shards(t: Transport, host: str, gpus_per_shard: int) -> int:
    """The pod's GPU count (nvidia-smi --query-gpu over SSH) per --gpus-per-shard: the default."""
    from sweepctl.pod.gpus import QUERY_ARGV, parse_query

    result = t.run(QUERY_ARGV, timeout=30)
    problem = None
    if result.exit_code == 127:
        problem = "nvidia-smi not found"
    elif not result.ok:
        problem = f"nvidia-smi exited {result.exit_code}: {result.stderr_tail(1)}"
    gpus, _bad = parse_query(result.stdout) if result.ok else ([], [])
    return default_shards(len(gpus), gpus_per_shard, where=host, problem=problem)
