"""One sweep over several pods: which rows each host runs, and one status out of many. Pure.

    parts = split_rows(6, [("a", 2), ("b", 1)])   # shards 0-1 on a, shard 2 on b
    parts[0].row_indices == [0, 1, 3, 4]; parts[1].row_indices == [2, 5]

Static placement across hosts follows the single-pod rule with global shard numbers: row i goes
to global shard i % total, and shards are numbered host by host (a has 0..n_a-1, b the next n_b).
Each host gets a CSV with only its rows, in file order, launched there with `--shards n_h`. That
host's own plan then puts its j-th row on local shard j % n_h, which is exactly global shard
i % total minus the host's first shard — so each pod keeps its ordinary plan, manifest, run table
and runner, and knows nothing about the other pods. The subset CSV keeps every kept row on its
original line number, so an error on the pod points at the same line as the laptop's CSV.

A relaunch never moves a row to another pod. Every pod of a launch keeps the sweep's layout
(`.sweeps/<name>/upload/hosts.json`: each run_id's pod, and the pods with their shard counts);
`place` puts a recorded row back on its pod, whatever the order of --host or the shard counts,
and only rows new to the sweep follow the rule above. Naming other pods than the layout's is
refused (`check_hosts`): the left-out pod's rows may be done or running there. `--reassign` moves
the rows that never started (pending on their pod, and that pod has no live runner that could
still reach them) to the pods named now; a started row stays on its pod, launched there if that
pod is named, else left alone — so no run_id ever runs on two pods. `--forget HOST` (with
--reassign) declares a pod lost for good with its volume: it is not asked, and its rows start
over on the pods named now (`check_forget`, `place`'s `forget`).

A launch on a pod itself (no --host) reads that pod's copy of the layout too (`check_local_launch`):
it refuses rows the layout gives to another pod. The pod knows its own name there (the laptop's
ssh alias) only from the laptop: each `launch --host` runs the pod's launch with the hidden option
`--placed-on <alias>`, and that launch keeps it in its manifest for later launches on the pod. Such a launch
from the laptop is not checked again on the pod: the laptop placed its rows against every pod's
record, which may be newer than this pod's copy (a --reassign writes it after the launch).
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sweepctl.errors import RefusedError, SweepctlError

RUN_STATES = ("pending", "running", "ok", "failed", "stale", "cancelled")  # the order status counts them in


def parse_host(arg: str) -> tuple[str, int | None]:
    """`HOST` or `HOST=SHARDS` (an ssh alias, optionally with its shard count).

    `=` and not `:` because `user@host:port` is already a valid destination."""
    host, sep, count = arg.partition("=")
    host = host.strip()
    if not host:
        raise SweepctlError(f"--host {arg!r}: empty host name", hint="use an ssh alias, e.g. --host pod-a=8")
    if not sep:
        return host, None
    if not count.strip().isdigit() or int(count) < 1:
        raise SweepctlError(f"--host {arg!r}: the shard count after '=' must be a positive integer",
                            hint="e.g. --host pod-a=8")
    return host, int(count)


@dataclass
class HostPart:
    """One host's share of a sweep: its shards (a contiguous block of global shard numbers) and
    the rows (global 0-based row indices, in file order) those shards run."""

    host: str
    shards: int
    first_shard: int
    row_indices: list[int] = field(default_factory=list)

    @property
    def global_shards(self) -> range:
        return range(self.first_shard, self.first_shard + self.shards)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def split_rows(n_rows: int, shards: Iterable[tuple[str, int]]) -> list[HostPart]:
    """Row i -> global shard i % total -> the host owning that shard (shards numbered host by host)."""
    parts, first = [], 0
    for host, n in shards:
        if n < 1:
            raise SweepctlError(f"{host}: needs at least one shard (got {n})")
        parts.append(HostPart(host, n, first))
        first += n
    if len({p.host for p in parts}) != len(parts):
        raise SweepctlError("the same host is named twice", hint="give each --host once (HOST=N sets its shards)")
    owner = [p for p in parts for _ in range(p.shards)]  # global shard -> its host's part
    for i in range(n_rows):
        owner[i % first].row_indices.append(i)
    return parts


# --- the recorded placement: rows never change pods behind the user's back ----------------------

@dataclass
class PodRecord:
    """What one pod holds about a sweep before a launch: its copy of the layout (None: none), the
    state of each row of its own plan (None: the sweep was never launched there), and its live
    sweep-*/rerun-* sessions (a runner in one may still start any row of its plan)."""

    host: str
    layout: dict[str, Any] | None = None
    states: dict[str, str] | None = None
    live_sessions: list[str] = field(default_factory=list)


@dataclass
class Recorded:
    """The split a sweep was last launched with: its pods (in launch order, with shard counts) and
    the pod of every run_id it ever placed."""

    hosts: list[str]
    shards: dict[str, int]
    placed: dict[str, str]
    when: str | None = None

    def host_args(self) -> str:
        return " ".join(f"--host {h}={self.shards[h]}" if h in self.shards else f"--host {h}" for h in self.hosts)


def recorded_split(records: Iterable[PodRecord], run_ids: list[str]) -> Recorded | None:
    """The newest layout any pod holds (every pod of a launch gets the same one), and for a sweep
    launched on a pod itself, that pod's own plan; None when the sweep is new to every pod."""
    records = list(records)
    layouts = [r.layout for r in records if r.layout]
    hosts: list[str] = []
    shards: dict[str, int] = {}
    placed: dict[str, str] = {}
    when = None
    if layouts:
        newest = max(layouts, key=lambda layout: float(layout.get("ts") or 0))
        for part in newest.get("hosts") or []:
            hosts.append(part["host"])
            shards[part["host"]] = int(part["shards"])
        placed = dict(newest.get("placed") or {})
        if not placed:  # a layout from before `placed`: its row indices, read against this CSV
            placed = {run_ids[i]: part["host"] for part in newest.get("hosts") or []
                      for i in part.get("row_indices") or [] if i < len(run_ids)}
        when = newest.get("time")
    for r in records:
        for run_id in r.states or {}:
            if run_id not in placed:
                placed[run_id] = r.host
                if r.host not in hosts:
                    hosts.append(r.host)
    return Recorded(hosts, shards, placed, when) if hosts or placed else None


@dataclass
class Placement:
    """Where this launch puts each row: `parts` (the named pods, with global row indices), `moved`
    (run_id, from pod, to pod) under --reassign, and `elsewhere`: rows that stay recorded on a pod
    not named now (started there), launched nowhere this time. `forgotten`: the pods of --forget,
    whose rows in `moved` start over."""

    parts: list[HostPart]
    placed: dict[str, str]
    moved: list[tuple[str, str, str]] = field(default_factory=list)
    elsewhere: dict[str, list[str]] = field(default_factory=dict)
    forgotten: list[str] = field(default_factory=list)


def check_hosts(sweep: str, recorded: Recorded | None, named: list[str]) -> None:
    """Refuse a launch that leaves out a pod of the last launch, or names a pod new to the sweep.
    The order of the pods and their shard counts may change: rows stay on their pods anyway. A pod
    that only keeps rows started there before a --reassign may be named again, or not."""
    if recorded is None:
        return
    on = Counter(recorded.placed.values())
    changes = [f"{h} is left out ({rows_text(on[h])} recorded there)" for h in recorded.hosts if h not in named]
    changes += [f"{h} is new to it" for h in named if h not in recorded.hosts and h not in on]
    if not changes:
        return
    when = f" at {recorded.when}" if recorded.when else ""
    raise RefusedError(
        f"sweep {sweep} was launched on {', '.join(recorded.hosts)}{when}; this launch names {', '.join(named)}: "
        f"{', '.join(changes)}. A relaunch keeps every row on its pod, so that no run starts on two pods",
        hint=f"relaunch with {recorded.host_args()} (the recorded pods), or add --reassign to move the rows "
             "that have not started to the pods named now (started rows stay on their pod)")


def check_forget(sweep: str, recorded: Recorded | None, named: list[str], forget: Iterable[str]) -> None:
    """Refuse `--forget HOST` for a pod named now (it cannot be lost and run rows) or one the sweep
    was never launched on (a typo would otherwise forget nothing and move nothing)."""
    on = set(recorded.hosts) | set(recorded.placed.values()) if recorded else set()
    for host in forget:
        if host in named:
            raise RefusedError(f"--forget {host}: {host} is also named with --host; a forgotten pod runs nothing",
                               hint=f"drop --host {host} to move its rows to the other pods, or drop --forget {host} "
                                    "to keep it in the sweep")
        if host not in on:
            pods = f"its pods are {', '.join(sorted(on))}" if on else "it has no record on the pods named"
            raise RefusedError(f"--forget {host}: {host} is not a pod of sweep {sweep} ({pods})",
                               hint="name a pod the sweep was launched on (the refusal without --forget names "
                                    f"them), or drop --forget {host}")


def place(run_ids: list[str], shards: Iterable[tuple[str, int]], recorded: Recorded | None, *, sweep: str,
          reassign: Mapping[str, PodRecord] | None = None, forget: Collection[str] = ()) -> Placement:
    """Each row's pod for this launch. A recorded row stays on its pod; a new row follows
    `split_rows`' rule. With `reassign` (the record of every pod that holds recorded rows), a
    recorded row that is pending there follows the rule too, unless that pod has live sessions.

    `forget` (with `reassign`): pods lost for good, not asked. A row recorded there goes to a
    named pod where it is already ok (its launch skips it), else it starts over where the rule puts
    it (it is in `moved`); the new layout drops the forgotten pods, also their rows not in this CSV."""
    parts = split_rows(0, shards)
    by_host = {p.host: p for p in parts}
    owner = [p for p in parts for _ in range(p.shards)]
    lost = {r: h for r, h in (recorded.placed if recorded else {}).items() if h in forget}
    placed = {r: h for r, h in (recorded.placed if recorded else {}).items() if h not in forget}
    result = Placement(parts, placed, forgotten=[h for h in dict.fromkeys(lost.values())])
    for i, run_id in enumerate(run_ids):
        rule = owner[i % len(owner)]
        host = placed.get(run_id)
        if run_id in lost:
            host = next((p.host for p in parts
                         if ((reassign or {}).get(p.host, PodRecord(p.host)).states or {}).get(run_id) == "ok"), None)
            if host is None:
                result.moved.append((run_id, lost[run_id], rule.host))
            else:
                placed[run_id] = host
        elif host is not None and reassign is not None:
            pod = reassign.get(host)
            if pod is None:
                raise RefusedError(f"sweep {sweep}: {run_id} is recorded on {host}, which did not answer, so "
                                   "--reassign cannot tell whether it started there",
                                   hint=f"retry when {host} answers; if it is gone for good with its volume, "
                                        f"add --forget {host} (its rows start over on the pods named)")
            if (pod.states or {}).get(run_id, "pending") == "pending":
                host = None  # never started: free to go where the rule puts it
                if rule.host != placed[run_id]:
                    result.moved.append((run_id, placed[run_id], rule.host))
        if host is None:
            rule.row_indices.append(i)
            placed[run_id] = rule.host
        elif host in by_host:
            by_host[host].row_indices.append(i)
        else:
            result.elsewhere.setdefault(host, []).append(run_id)
    for host in dict.fromkeys(src for _, src, _ in result.moved if src not in forget):
        live = (reassign or {})[host].live_sessions
        if live:
            n = sum(1 for _, src, _ in result.moved if src == host)
            raise RefusedError(f"sweep {sweep}: {host} still has live session(s) {', '.join(live)}, whose runners "
                               f"would start the {rows_text(n)} --reassign moves off it",
                               hint=f"wait for them, or `sweepctl stop --all --host {host}`; then launch again")
    return result


def layout_json(sweep: str, csv_path: str, placement: Placement, *, ts: float) -> dict[str, Any]:
    """hosts.json: what `recorded_split` reads back on the next launch (the newest `ts` wins)."""
    return {"sweep": sweep, "csv": csv_path, "ts": ts,
            "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)),
            "total_shards": sum(p.shards for p in placement.parts),
            "hosts": [p.to_json() for p in placement.parts], "placed": placement.placed}


def check_local_launch(sweep: str, layout: Mapping[str, Any] | None, run_ids: list[str], this_pod: str | None,
                       *, where: str | None = None) -> None:
    """Refuse a launch on a pod itself of rows that the sweep's layout gives to another pod: they
    may be done or running there, and a run must not start on two pods. `this_pod` is this
    machine's name in the layout (None: unknown, so no recorded row is taken for its own); rows
    new to the sweep may run here (the laptop's next launch finds them in this pod's plan)."""
    recorded = recorded_split([PodRecord(this_pod or "", dict(layout))], run_ids) if layout else None
    if recorded is None:
        return
    elsewhere: dict[str, list[str]] = {}
    for run_id in run_ids:
        host = recorded.placed.get(run_id)
        if host is not None and host != this_pod:
            elsewhere.setdefault(host, []).append(run_id)
    if not elsewhere:
        return
    n = sum(len(ids) for ids in elsewhere.values())
    on = "; ".join(f"{host}: {rows_text(len(ids))} ({some_of(ids)})" for host, ids in elsewhere.items())
    me = f"this pod is {this_pod} there" if this_pod else "no launch from the laptop has told this machine its name"
    when = f" at {recorded.when}" if recorded.when else ""
    raise RefusedError(
        f"sweep {sweep} was launched from a laptop on {', '.join(recorded.hosts)}{when}; {rows_text(n)} of this launch "
        f"{'is' if n == 1 else 'are'} recorded on other pods, where {'it' if n == 1 else 'they'} may be done or "
        f"running: {on} ({me})", where=where,
        hint=f"launch from the laptop with {recorded.host_args()} (the recorded pods: each row runs on its own), "
             "or with the pods you want and --reassign (moves only the rows that have not started)")


def some_of(items: list[str], limit: int = 3) -> str:
    """The first `limit` items, then how many more: 'a, b, c, ... 4 more'."""
    return ", ".join(items[:limit]) + (f", ... {len(items) - limit} more" if len(items) > limit else "")


def rows_text(n: int) -> str:
    """'1 row', '3 rows': how launch messages count rows."""
    return f"{n} row{'' if n == 1 else 's'}"


def subset_csv(text: str, rows: Iterable[int] | None = None, config_refs: Mapping[int, str] | None = None) -> str:
    """The sweep CSV with only `rows` (0-based data row indices; None: all) and the config column
    of row i replaced by `config_refs[i]` (the uploaded copy of a config file).

    Rows are parsed as `sweepctl.sweep.spec` parses them (blank records are not rows). Each kept row is
    written back on its original line, padded with blank lines, so line numbers still match the
    laptop's file; a row whose config column does not change is copied as it was written."""
    keep = None if rows is None else set(rows)
    refs = dict(config_refs or {})
    lines = text.lstrip("\ufeff").splitlines(keepends=True)
    reader = csv.reader(lines, strict=True)
    out = io.StringIO()
    written_lines, prev_end, row_index = 0, 0, -1
    config_col: int | None = None
    for fields in reader:
        start, prev_end = prev_end + 1, reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        record = "".join(lines[start - 1:prev_end])
        if config_col is None:  # the header
            names = [f.strip() for f in fields]
            config_col = names.index("config") if "config" in names else -1
        else:
            row_index += 1
            if keep is not None and row_index not in keep:
                continue
            new_ref = refs.get(row_index)
            if new_ref is not None and 0 <= config_col < len(fields) and fields[config_col].strip() != new_ref:
                rewritten = io.StringIO()
                csv.writer(rewritten, lineterminator="\n").writerow(
                    [*fields[:config_col], new_ref, *fields[config_col + 1:]])
                record = rewritten.getvalue()
        if not record.endswith("\n"):
            record += "\n"  # the file's last line had no newline
        out.write("\n" * max(0, start - 1 - written_lines))
        written_lines = max(written_lines, start - 1) + record.count("\n")
        out.write(record)
    return out.getvalue()


# --- status of several hosts ---------------------------------------------------------------------

@dataclass
class HostAnswer:
    """What one host said to `status --json`: its model, or why it did not answer (`error`, shown
    as `host b: <error>`, e.g. "unreachable — connection refused by ..."). After a failed refresh
    in `--watch`, `model` is its last answer and `age_s` how old that is."""

    host: str
    model: dict[str, Any] | None
    error: str | None = None
    age_s: float | None = None


def merge_status(answers: list[HostAnswer], *, host_column: bool = True) -> dict[str, Any]:
    """One status dict (the shape `sweepctl.cli.render.status.render` draws) out of several hosts' dicts.

    Runs, GPUs, sessions and disks get a `host` key (unless `host_column` is False: one host, drawn
    exactly as on the pod); `hosts` lists every host with its error, so a host that did not
    answer is shown as such while the others still report."""
    counts = dict.fromkeys(RUN_STATES, 0)
    merged: dict[str, Any] = {"runs": [], "gpus": [], "sessions": [], "disks": [], "hosts": []}
    sweeps, roots = [], []
    for a in answers:
        m = a.model or {}
        merged["hosts"].append({"host": a.host, "ok": a.error is None, "error": a.error, "age_s": a.age_s,
                                "out_root": m.get("out_root"), "sweep": m.get("sweep")})
        if not m:
            continue
        for state, n in (m.get("counts") or {}).items():
            counts[state] = counts.get(state, 0) + n
        for key in ("runs", "gpus", "sessions", "disks"):
            merged[key] += [{"host": a.host, **item} if host_column else item for item in m.get(key) or []]
        if m.get("sweep") and m["sweep"] not in sweeps:
            sweeps.append(m["sweep"])
        roots.append(f"{a.host}:{m.get('out_root')}" if host_column else str(m.get("out_root")))
    merged["counts"] = counts
    if not host_column and len(answers) == 1 and answers[0].model:  # one pod: its slots and ETA as they are
        merged.update({k: answers[0].model[k] for k in ("slots", "eta") if k in answers[0].model})
    merged["sweep"] = ", ".join(sweeps) or None
    merged["out_root"] = ", ".join(roots) or "(no host answered)"
    return merged


def default_shards(gpu_count: int, gpus_per_shard: int, *, where: str, problem: str | None = None) -> int:
    """One shard per GPU (per K GPUs with --gpus-per-shard K): what `launch` uses without --shards."""
    n = gpu_count // max(1, gpus_per_shard)
    if n < 1:
        seen = f"{gpu_count} GPU(s) visible" + (f" ({problem})" if problem else "")
        raise SweepctlError(f"no shard count given and {seen}, {gpus_per_shard} per shard", where=where,
                            hint="pass --shards N (or --host HOST=N); rows with device='cpu' need no GPU")
    return n
