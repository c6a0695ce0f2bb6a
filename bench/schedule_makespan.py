"""Static vs dynamic vs longest-first: how long does a sweep with uneven run lengths take on N workers?

    python bench/schedule_makespan.py                 # pure simulation of both policies (instant)
    python bench/schedule_makespan.py --real          # the runner's real claim code, sleeping workers
    python bench/schedule_makespan.py --real --unit 0.05 --workers 4 8 --order shuffled

The sweep is shaped like the reference one: 96 rows, 66 six-layer runs (1 unit each) and 30
48-layer runs (8 units each), in CSV order — by default grouped as the reference CSV is (every
6-layer row, then every 48-layer row, three seeds per config); `--order` tries others.

Policies:
  static   row i goes to worker i % N, which runs its rows in order (`launch --schedule static`);
  dynamic  a free worker claims the next unclaimed row in CSV order (the runner before LPT);
  LPT      a free worker claims the longest unclaimed row, ties in CSV order: what
           `launch --schedule dynamic` does now (`sweepctl.sweep.plan.claim_order`, here on run lengths).

`--real` starts N processes: static workers walk their rows, dynamic and LPT workers claim rows
with `sweepctl.runner.claimed_rows` (the O_CREAT|O_EXCL claim files the shard runner uses) in CSV
order or in `sweepctl.sweep.plan.longest_first` order, and sleep length x unit seconds per row as a
stand-in trainer; makespan is wall time / unit. Without it, the same policies are simulated
exactly. Either way the table shows makespan next to the lower bound max(longest run, total / N).

Slots (`launch --runs-per-gpu K`): `--runs-per-gpu 1 2 4` adds a second table, the same sweep on N
GPUs with K LPT slots each. A packed run is slower than a run alone: each neighbour adds `x` of its
time alone, so it takes length x (1 + (K-1) x); `x` is per preset (`--extra 6l=X 48l=X`; 1.0 means
packing gains nothing, 0 means the neighbours are free). No GPU figure is built in: by default the
table spans x = 0.25, 0.5, 1.0; plug in a measurement from bench/packing.py
(x = (K x tok/s alone / summed tok/s of K - 1) / (K - 1)).

    python bench/schedule_makespan.py --runs-per-gpu 1 2 4 --workers 8
    python bench/schedule_makespan.py --runs-per-gpu 1 2 4 --workers 8 --extra 6l=0.3 48l=0.7
"""

from __future__ import annotations

import argparse
import heapq
import multiprocessing as mp
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHORT, LONG = 1.0, 8.0  # 6-layer vs 48-layer run length, in units


def reference_sweep(order: str, seed: int) -> list[float]:
    """Run lengths in CSV order: 22 six-layer configs x 3 seeds, then 10 48-layer configs x 3 seeds."""
    lengths = [SHORT] * 66 + [LONG] * 30
    if order == "interleaved":  # each 48-layer config right after its 6-layer sibling
        lengths = []
        shorts, longs = 66, 30
        while shorts or longs:
            take = min(shorts, 7)
            lengths += [SHORT] * take
            shorts -= take
            if longs:
                take = min(longs, 3)
                lengths += [LONG] * take
                longs -= take
    elif order == "shuffled":
        random.Random(seed).shuffle(lengths)
    elif order == "long-first":  # every 48-layer row before the 6-layer rows
        lengths.sort(reverse=True)
    return lengths


def lower_bound(lengths: list[float], workers: int) -> float:
    return max(max(lengths), sum(lengths) / workers)


def simulate_static(lengths: list[float], workers: int) -> float:
    loads = [0.0] * workers
    for i, length in enumerate(lengths):
        loads[i % workers] += length
    return max(loads)


def lpt_order(lengths: list[float]) -> list[int]:
    from sweepctl.sweep.plan import longest_first  # the order the shard runners claim in

    return longest_first(lengths)


def simulate_dynamic(lengths: list[float], workers: int, order: list[int] | None = None) -> float:
    free = [(0.0, w) for w in range(workers)]  # (time the worker is free, worker index)
    heapq.heapify(free)
    end = 0.0
    for i in order if order is not None else range(len(lengths)):  # the next row goes to whoever is free first
        length = lengths[i]
        t, w = heapq.heappop(free)
        end = max(end, t + length)
        heapq.heappush(free, (t + length, w))
    return end


def _worker(schedule: str, worker: int, workers: int, lengths: list[float], unit: float, claims: str,
            ready: Any) -> None:
    from sweepctl.runner import claimed_rows

    ids = [f"row{i:03d}" for i in range(len(lengths))]
    if schedule == "lpt":
        ids = [ids[i] for i in lpt_order(lengths)]
    ready.wait()  # every worker is up before the clock starts
    mine = ids[worker::workers] if schedule == "static" else claimed_rows(ids, Path(claims), worker)
    for run_id in mine:
        time.sleep(lengths[int(run_id[3:])] * unit)  # the stand-in trainer


def measure(schedule: str, lengths: list[float], workers: int, unit: float) -> float:
    # imported once here, inherited by the forked workers

    ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
    ready = ctx.Barrier(workers + 1)
    with tempfile.TemporaryDirectory() as claims:
        procs = [ctx.Process(target=_worker, args=(schedule, w, workers, lengths, unit, claims, ready))
                 for w in range(workers)]
        for p in procs:
            p.start()
        ready.wait()
        t0 = time.perf_counter()
        for p in procs:
            p.join()
        return (time.perf_counter() - t0) / unit


def packed_lengths(lengths: list[float], k: int, extra: dict[str, float]) -> list[float]:
    """Each row's length when it shares its GPU with K-1 others for its whole life (the busy middle of
    a sweep; at the tail a run may end up alone, so this errs long)."""
    return [length * (1 + (k - 1) * extra["48l" if length == LONG else "6l"]) for length in lengths]


def slots_table(lengths: list[float], gpus: list[int], ks: list[int], extras: list[dict[str, float]]) -> None:
    """Makespan of the LPT schedule on N GPUs x K slots, and the GPU-hours (in units) it holds the GPUs."""
    print()
    print("slots: N GPUs x K runs per GPU, LPT claims; a packed run takes length x (1 + (K-1) x)")
    header = (f"{'GPUs':>4}  {'K':>2}  {'x 6l':>5}  {'x 48l':>5}  {'makespan':>8}  {'vs K=1':>6}  "
              f"{'GPU-units':>9}")
    print(header)
    print("-" * len(header))
    order = lpt_order(lengths)
    for n in gpus:
        alone = simulate_dynamic(lengths, n, order)
        for extra in extras:
            for k in ks:
                span = simulate_dynamic(packed_lengths(lengths, k, extra), n * k, order)
                print(f"{n:>4}  {k:>2}  {extra['6l']:>5.2f}  {extra['48l']:>5.2f}  {span:>8.2f}  "
                      f"{alone / span:>5.2f}x  {span * n:>9.2f}")


def _extra(words: list[str] | None) -> list[dict[str, float]]:
    if not words:
        return [{"6l": x, "48l": x} for x in (0.25, 0.5, 1.0)]
    given = dict(w.split("=", 1) for w in words)
    unknown = set(given) - {"6l", "48l"}
    if unknown:
        raise SystemExit(f"--extra takes 6l=X and 48l=X, got {', '.join(sorted(unknown))}")
    return [{"6l": float(given.get("6l", 1.0)), "48l": float(given.get("48l", 1.0))}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="worker counts (shards)")
    ap.add_argument("--order", choices=("grouped", "interleaved", "shuffled", "long-first"), default="grouped",
                    help="CSV order of the 6-layer and 48-layer rows")
    ap.add_argument("--seed", type=int, default=0, help="for --order shuffled")
    ap.add_argument("--real", action="store_true", help="run worker processes with the runner's claim code")
    ap.add_argument("--unit", type=float, default=0.02, help="seconds per unit with --real")
    ap.add_argument("--runs-per-gpu", type=int, nargs="+", metavar="K",
                    help="also simulate K slots per GPU (e.g. 1 2 4) on each --workers count of GPUs")
    ap.add_argument("--extra", nargs="+", metavar="PRESET=X",
                    help="time a packed run's neighbour adds, as a fraction of its time alone: 6l=X 48l=X "
                         "(default: a table over X = 0.25, 0.5, 1.0)")
    args = ap.parse_args()

    lengths = reference_sweep(args.order, args.seed)
    how = f"real claims, sleeping workers, 1 unit = {args.unit:g} s" if args.real else "simulated"
    print(f"{len(lengths)} rows ({lengths.count(SHORT)} x {SHORT:g} unit, {lengths.count(LONG)} x {LONG:g} units, "
          f"total {sum(lengths):g} units), order {args.order}, {how}")
    policies = ("static", "dynamic", "LPT")
    header = f"{'workers':>7}  {'lower bound':>11}" + "".join(f"  {p:>8}  {'/bound':>6}" for p in policies)
    print(header)
    print("-" * len(header))
    for n in args.workers:
        bound = lower_bound(lengths, n)
        if args.real:
            spans = [measure(p.lower(), lengths, n, args.unit) for p in policies]
        else:
            spans = [simulate_static(lengths, n), simulate_dynamic(lengths, n),
                     simulate_dynamic(lengths, n, lpt_order(lengths))]
        print(f"{n:>7}  {bound:>11.2f}" + "".join(f"  {m:>8.2f}  {m / bound:>6.2f}" for m in spans))
    if args.runs_per_gpu:
        slots_table(lengths, args.workers, args.runs_per_gpu, _extra(args.extra))


if __name__ == "__main__":
    main()
