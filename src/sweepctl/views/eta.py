"""A sweep's GPU-hours, ETA and cost, from its run directories. Pure: status and report call it.

    est = estimate(plan, views, now=time.time(), slots=4, price=3.5)
    est["gpu_hours_used"], est["gpu_hours_left"], est["eta_s"], est["cost_left"]

GPU-hours of one attempt are its wall time x its GPUs, divided by the runs that shared those GPUs
(a packed run's slot holds 1/K of the GPU). Only the current attempt of each run is counted:
earlier attempts' summaries are `.bak-` copies that status does not read (it stays fast on
thousands of runs).

What is left is costed from the throughput observed in this sweep, per model shape
(`sweepctl.state.slots.memory_key`: tokens trained / wall seconds of every attempt that trained, so
start-up and compile time count, and packed runs are measured packed). A shape not seen yet
falls back to the FLOPs estimate the dynamic schedule uses (`plan.run_cost`), scaled by the
FLOPs per second observed over every shape; with nothing observed, nothing is estimated.
The ETA replays the claim order (longest first) over the live slots.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Mapping, Sequence
from typing import Any

from sweepctl.state.runs import RunView
from sweepctl.state.slots import memory_key
from sweepctl.sweep.plan import Plan, longest_first, run_cost
from sweepctl.train.config import TrainConfig

# States with nothing left to run: a cancelled row ends as the researcher asked and is never claimed.
FINISHED = ("ok", "failed", "cancelled")
# every config field that memory_key, tokens_of or run_cost reads
shape_of = operator.attrgetter("hc_disable", "hc_num_streams", "mhc", "v_residual", "n_layer", "n_embd", "n_head",
                               "batch_size", "block_size", "vocab_size", "dtype", "compile_model", "max_iters",
                               "gradient_accumulation_steps")


def share(owner: Mapping[str, Any] | None) -> int:
    """How many runs shared this attempt's GPUs: K for a packed slot, 1 for a run alone."""
    slot = (owner or {}).get("slot") or {}
    k = slot.get("runs_per_gpu") if isinstance(slot, dict) else None
    return int(k) if isinstance(k, int) and k > 1 and not slot.get("alone") else 1


def attempt_gpu_hours(summary: Mapping[str, Any] | None, owner: Mapping[str, Any] | None, *, gpus: int,
                      now: float | None = None) -> float | None:
    """GPU-hours of the current attempt: a finished one from its summary, a running one (now given)
    from the runner's start time."""
    seconds = None
    if summary is not None and isinstance(summary.get("elapsed_s"), (int, float)):
        seconds = float(summary["elapsed_s"])
    elif now is not None and owner is not None and isinstance(owner.get("started"), (int, float)) \
            and owner.get("ended") is None:
        seconds = max(0.0, now - float(owner["started"]))
    if seconds is None:
        return None
    return seconds * gpus / share(owner) / 3600.0


def tokens_of(config: TrainConfig) -> int:
    """Tokens a whole run trains on (every rank together)."""
    return config.max_iters * config.tokens_per_iter


def _observed(view: RunView, tpi: int, now: float) -> tuple[float, float] | None:
    """(tokens trained, wall seconds) of the current attempt, when it trained at all."""
    s, owner, hb = view.summary, view.owner or {}, view.heartbeat or {}
    if s is not None:
        trained = int(s.get("iter_num") or 0) - int(s.get("resumed_from_iter") or 0)
        secs = s.get("elapsed_s")
    elif view.state == "running" and not owner.get("resume") and isinstance(owner.get("started"), (int, float)):
        trained, secs = int(hb.get("iter") or 0), now - float(owner["started"])
    else:
        return None
    if trained <= 0 or not isinstance(secs, (int, float)) or secs <= 0:
        return None
    return trained * tpi, float(secs)


def estimate(plan: Plan, views: Mapping[str, RunView], *, now: float, slots: int,
             price: float | None = None) -> dict[str, Any]:
    """The sweep's counts, GPU-hours used and left, ETA under `slots` live slots, and cost."""
    # each shape's key, tokens and FLOPs once: status redraws this for thousands of rows of few shapes
    keys, tokens, costs, tpis = {}, {}, {}, {}
    shapes: dict[tuple[Any, ...], tuple[str, int, float, int]] = {}
    for r in plan.runs:
        shape = shape_of(r.config)
        if shape not in shapes:
            shapes[shape] = (memory_key(r.config), tokens_of(r.config), run_cost(r.config), r.config.tokens_per_iter)
        keys[r.run_id], tokens[r.run_id], costs[r.run_id], tpis[r.run_id] = shapes[shape]
    done = running = left = cancelled = 0
    used = 0.0
    seen: dict[str, list[float]] = {}  # shape -> [tokens, seconds]
    for run in plan.runs:
        view = views.get(run.run_id)
        if view is None:
            continue
        if view.state in ("ok", "failed"):
            done += 1
        elif view.state == "cancelled":
            cancelled += 1
        elif view.state == "running":
            running += 1
        else:
            left += 1
        hours = attempt_gpu_hours(view.summary, view.owner, gpus=run.gpus,
                                  now=now if view.state == "running" else None)
        used += hours or 0.0
        if (obs := _observed(view, tpis[run.run_id], now)) is not None:
            acc = seen.setdefault(keys[run.run_id], [0.0, 0.0])
            acc[0] += obs[0]
            acc[1] += obs[1]

    per_token = {keys[rid]: costs[rid] / max(tokens[rid], 1) for rid in keys}
    flops = sum(per_token[k] * t for k, (t, _) in seen.items())
    secs_seen = sum(s for _, s in seen.values())
    flops_rate = flops / secs_seen if flops > 0 and secs_seen > 0 else None  # FLOPs per wall second of a run
    remaining: list[tuple[str, float, float]] = []  # (run_id, slot-seconds left, gpu factor)
    basis: dict[str, str] = {}
    unknown = 0
    for run in plan.runs:
        view = views.get(run.run_id)
        if view is None or view.state in FINISHED:
            continue
        key = keys[run.run_id]
        todo_tokens = float(tokens[run.run_id])
        if view.state == "running":
            it = int((view.heartbeat or {}).get("iter") or 0)
            todo_tokens = max(0.0, todo_tokens - it * tpis[run.run_id])
        if key in seen and seen[key][0] > 0:
            secs = todo_tokens / (seen[key][0] / seen[key][1])
            basis[key] = f"observed {seen[key][0] / seen[key][1]:,.0f} tok/s per run"
        elif flops_rate:
            secs = todo_tokens * per_token[key] / flops_rate
            basis.setdefault(key, "FLOPs estimate (not observed yet)")
        else:
            unknown += 1
            continue
        packed = plan.runs_per_gpu if run.gpus == 1 else 1
        remaining.append((run.run_id, secs, run.gpus / packed))
    hours_left = None if unknown else sum(s * f for _, s, f in remaining) / 3600.0
    eta = None if unknown or (remaining and slots < 1) else _makespan(plan, views, remaining, slots, costs)
    out: dict[str, Any] = {
        "runs_done": done, "runs_running": running, "runs_left": left, "runs_cancelled": cancelled, "slots": slots,
        "gpu_hours_used": round(used, 4),
        "gpu_hours_left": None if hours_left is None else round(hours_left, 4),
        "eta_s": None if eta is None else round(eta, 1),
        "basis": basis, "not_estimated": unknown, "gpu_hour_price": price,
        "cost_used": None, "cost_left": None,
    }
    if price is not None:
        out["cost_used"] = round(used * price, 2)
        out["cost_left"] = None if hours_left is None else round(hours_left * price, 2)
    return out


def _makespan(plan: Plan, views: Mapping[str, RunView], remaining: Sequence[tuple[str, float, float]],
              slots: int, costs: Mapping[str, float]) -> float:
    """Seconds until the last row ends: running rows finish first on their slots, then the rest are
    claimed longest first by whichever slot is free (what the dynamic runners do)."""
    left = dict((rid, secs) for rid, secs, _ in remaining)
    running = [left.pop(rid) for rid in list(left) if views[rid].state == "running"]
    free = running + [0.0] * max(0, slots - len(running))  # a slot per running row, at least
    heapq.heapify(free)
    order = [plan.runs[i].run_id for i in longest_first([costs[r.run_id] for r in plan.runs])]
    end = max(free, default=0.0)
    for rid in order:
        if rid in left:
            start = heapq.heappop(free)
            finish = start + left[rid]
            end = max(end, finish)
            heapq.heappush(free, finish)
    return end
