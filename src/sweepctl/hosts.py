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
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sweepctl.errors import SweepctlError

RUN_STATES = ("pending", "running", "ok", "failed", "stale")  # the order status counts them in


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


def subset_csv(text: str, rows: Iterable[int] | None = None, config_refs: Mapping[int, str] | None = None) -> str:
    """The sweep CSV with only `rows` (0-based data row indices; None: all) and the config column
    of row i replaced by `config_refs[i]` (the uploaded copy of a config file).

    Rows are parsed as `sweepctl.spec` parses them (blank records are not rows). Each kept row is
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
    """One status dict (the shape `sweepctl.status.render` draws) out of several hosts' dicts.

    Runs, GPUs and sessions get a `host` key (unless `host_column` is False: one host, drawn
    exactly as on the pod); `hosts` lists every host with its error, so a host that did not
    answer is shown as such while the others still report."""
    counts = dict.fromkeys(RUN_STATES, 0)
    merged: dict[str, Any] = {"runs": [], "gpus": [], "sessions": [], "hosts": []}
    sweeps, roots = [], []
    for a in answers:
        m = a.model or {}
        merged["hosts"].append({"host": a.host, "ok": a.error is None, "error": a.error, "age_s": a.age_s,
                                "out_root": m.get("out_root"), "sweep": m.get("sweep")})
        if not m:
            continue
        for state, n in (m.get("counts") or {}).items():
            counts[state] = counts.get(state, 0) + n
        for key in ("runs", "gpus", "sessions"):
            merged[key] += [{"host": a.host, **item} if host_column else item for item in m.get(key) or []]
        if m.get("sweep") and m["sweep"] not in sweeps:
            sweeps.append(m["sweep"])
        roots.append(f"{a.host}:{m.get('out_root')}" if host_column else str(m.get("out_root")))
    merged["counts"] = counts
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
