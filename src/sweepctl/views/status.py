"""The status model: every run of a sweep, every GPU, every sweep session — as one plain dict.

    model = collect(Path("/mnt/pod_artifacts/outputs"), stale_after_s=120)   # what --json prints
    console.print(render(model))          # what the table shows: sweepctl.cli.render.status

`collect` is what `sweepctl status --json` prints; a remote status runs that on the pod over SSH
and renders the same dict here, so the table looks the same wherever the runs are. It only
reads: summary.json (finished runs), heartbeat.json and the tail of metrics.jsonl (the others),
nvidia-smi's --query-gpu (never its process list), the tmux session list, and the free space of
the out_root's volume (checkpoints fill it; restarts keep the old ones as `.bak-` copies).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweepctl.pod.gpus import query_gpus
from sweepctl.pod.tmux import shard_session
from sweepctl.state import runs

if TYPE_CHECKING:
    from sweepctl.sweep.plan import Plan

# A volume this full is said in yellow: a checkpoint of a 48-layer model is hundreds of MB, and a
# run that cannot write one fails at its next eval.
LOW_DISK_BYTES = 10 << 30
LOW_DISK_FRACTION = 0.05

RUN_KEYS = ("run_id", "state", "shard", "iter", "max_iters", "train_loss", "val_loss", "tok_per_s", "eta_s",
            "heartbeat_age_s", "error_class")


def collect(out_root: Path, *, sweep: str | None = None, stale_after_s: float = 120.0,
            tmux_socket: str | None = None, state: str | None = None, with_gpus: bool = True,
            with_sessions: bool = True, now: float | None = None, gpu_hour_price: float | None = None
            ) -> dict[str, Any]:
    """The whole status of `sweep` (default: the latest launched; none: every run directory)."""
    # Imported here, not above: a laptop drawing a pod's status, or a status of run directories
    # that no sweep lists, needs neither the plan's models nor pydantic (a tenth of a second).
    from sweepctl.state.manifest import latest_sweep, load_manifest

    out_root = Path(out_root).expanduser().absolute()
    now = time.time() if now is None else now
    name = sweep or latest_sweep(out_root)
    plan: Plan | None = None
    launch: dict[str, Any] = {}
    if name is not None:
        plan, launch = load_manifest(out_root, name)
        entries = [(r.run_id, r.shard, r.config.max_iters) for r in plan.runs]
    else:
        entries = [(name, None, None) for name in runs.run_dir_names(out_root)]
    rows = []
    views: dict[str, runs.RunView] = {}
    root = os.fspath(out_root)
    for run_id, shard, max_iters in entries:
        view = runs.read_run(Path(root, run_id), stale_after_s=stale_after_s, now=now, run_id=run_id)
        views[run_id] = view
        rows.append(run_row(view, shard=shard, max_iters=max_iters))
    counts = {s: sum(1 for r in rows if r["state"] == s) for s in runs.STATES}
    if state is not None:
        rows = [r for r in rows if r["state"] == state]
    gpus = query_gpus() if with_gpus else None
    disks = disk_usage(out_root)
    out_of_space = any(r["error_class"] == "disk" for r in rows)
    for d in disks:  # a run failed for lack of space and space is still short: the volume is full
        d["full"] = full_disk(d) or (out_of_space and not d["read_only"] and low_disk(d))
    found = sessions(tmux_socket, plan) if with_sessions else []
    model = {
        "out_root": str(out_root),
        "sweep": name,
        "counts": counts,
        "runs": rows,
        "gpus": [g.to_json() for g in gpus.gpus] if gpus else [],
        "sessions": found,
        "disks": disks,
        "retry_command": f"sweepctl launch {launch['csv']} --out-root {out_root} --retry-failed"
                         if launch.get("csv") else None,
    }
    if plan is not None:
        model["slots"] = slots_per_gpu(plan, found)
        # a Ray driver or a Slurm array runs rows outside the sweep-<i> sessions: at least the rows
        # running now are running in parallel
        live = max(sum(len(g["alive"]) for g in model["slots"]), counts["running"]) if with_sessions \
            else plan.shard_count
        from sweepctl.views.eta import estimate

        model["eta"] = estimate(plan, views, now=now, slots=live, price=gpu_hour_price)
    return model


def slots_per_gpu(plan: Plan, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """[{devices, sessions, alive}]: the shard sessions (slots) of each GPU group and which are alive."""
    from sweepctl.sweep.plan import cuda_visible_devices

    alive = {s["name"] for s in found if s.get("alive")}
    groups: dict[str, list[str]] = {}
    for i in range(plan.shard_count):
        groups.setdefault(cuda_visible_devices(plan, i), []).append(shard_session(i))
    return [{"devices": d, "sessions": names, "alive": [n for n in names if n in alive]}
            for d, names in groups.items()]


def disk_usage(out_root: Path) -> list[dict[str, Any]]:
    """[{free_bytes, total_bytes, volume, read_only}] of the volume holding out_root (its nearest
    existing parent), or []. `collect` adds `full`."""
    existing = runs.nearest_existing(out_root)
    try:
        usage = shutil.disk_usage(existing)
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        return []
    return [{"free_bytes": usage.free, "total_bytes": usage.total, "volume": str(runs.mount_point(existing)),
             "read_only": read_only}]


def full_disk(disk: dict[str, Any]) -> bool:
    free = disk.get("free_bytes")
    return isinstance(free, int) and free < runs.FULL_BYTES


def low_disk(disk: dict[str, Any]) -> bool:
    free, total = disk.get("free_bytes"), disk.get("total_bytes")
    if not isinstance(free, int) or not isinstance(total, int):
        return False
    return free < LOW_DISK_BYTES or free < LOW_DISK_FRACTION * total


def run_row(view: runs.RunView, *, shard: int | None, max_iters: int | None) -> dict[str, Any]:
    """One run as status shows it; finished runs are read from their summary alone."""
    s, hb = view.summary, view.heartbeat or {}
    if shard is None and view.owner is not None:
        shard = view.owner.get("shard")  # dynamic schedule: the shard that claimed it
    row: dict[str, Any] = dict.fromkeys(RUN_KEYS)
    row.update(run_id=view.run_id, state=view.state, shard=shard, max_iters=max_iters,
               heartbeat_age_s=_round(view.heartbeat_age_s, 1), error_class=view.error_class)
    if s is not None:
        last_eval = s.get("last_eval") or {}
        row.update(iter=s.get("iter_num"), max_iters=s.get("max_iters") or max_iters,
                   train_loss=_first(s.get("last_train_loss"), s.get("train_loss"), last_eval.get("train")),
                   val_loss=_first(last_eval.get("val"), s.get("best_val_loss")),
                   tok_per_s=s.get("tok_per_s"))
        return row
    if view.state == "pending":
        return row
    tail = runs.tail_metrics(os.path.join(view.directory, runs.METRICS))
    it = hb.get("iter")
    row.update(iter=it, max_iters=hb.get("max_iters") or max_iters)
    if tail.train is not None:
        row.update(train_loss=tail.train.get("loss"), tok_per_s=tail.train.get("tok_per_s"))
    if tail.eval is not None:
        row["val_loss"] = _first(tail.eval.get("val"), tail.eval.get("val_loss"))
    if view.state == "running" and isinstance(it, int) and row["max_iters"]:
        rate = _seconds_per_iter(tail)
        if rate is not None:
            row["eta_s"] = round(max(0, row["max_iters"] - it) * rate, 1)
    return row


def _seconds_per_iter(tail: runs.MetricsTail) -> float | None:
    """From the two newest log rows; a resumed run's elapsed clock restarts, so not elapsed/iter."""
    a, b = tail.previous_train, tail.train
    if a is None or b is None:
        return None
    try:
        di = float(b["iter"]) - float(a["iter"])
        dt = float(b["elapsed_s"]) - float(a["elapsed_s"])
    except (KeyError, TypeError, ValueError):
        return None
    return dt / di if di > 0 and dt >= 0 else None


def sessions(socket: str | None, plan: Plan | None) -> list[dict[str, Any]]:
    """sweep-*/rerun-* sessions on the tmux server; a shard session also names its devices."""
    from sweepctl.pod.tmux import SHARD_PREFIX, Tmux, tmux_version

    if tmux_version() is None:
        return []
    try:
        found = Tmux(socket).sessions()
    except Exception:  # a broken server must not break status; the session list is a nicety
        return []
    out = []
    for info in found:
        entry: dict[str, Any] = info.to_json()
        suffix = info.name.removeprefix(SHARD_PREFIX)
        if plan is not None and info.name.startswith(SHARD_PREFIX) and suffix.isdigit() \
                and int(suffix) < plan.shard_count:
            # A CPU-only sweep pins no GPU: say so rather than show a GPU index nobody uses.
            from sweepctl.sweep.plan import cuda_visible_devices

            cpu = all(r.config.device == "cpu" for r in plan.runs)
            entry["devices"] = "cpu" if cpu else cuda_visible_devices(plan, int(suffix))
        out.append(entry)
    return out


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)
