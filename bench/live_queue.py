"""What the live queue costs a runner: the time of one claim when plan.json is read again before it.

    python bench/live_queue.py                  # 100, 1000 and 3000 rows
    python bench/live_queue.py --rows 96 2000

A dynamic runner re-reads `plan.json` when it changed and walks `claim_order` past the rows
already claimed (one stat each, plus one for a cancel marker), so rows added by a later `launch`
join the queue. The table shows the cost of the first claim, a claim at the middle of the queue,
and a claim right after plan.json was rewritten (the JSON parse); a training run lasts minutes.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from sweepctl.runner import RunnerOptions, ShardRunner
from sweepctl.state import runs
from sweepctl.sweep.plan import Plan, PlannedRun, ShardPlan
from sweepctl.train.config import TrainConfig


def plan_of(n: int, out: Path) -> Plan:
    config = TrainConfig().model_dump(mode="json")
    planned = [PlannedRun(run_id=f"row-{i:05d}", line=i + 2, row_index=i, shard=None, seed=i, gpus=1,
                          config={**config, "out_dir": str(out / f"row-{i:05d}"), "max_iters": 1000 + i % 7},
                          argv=["python", "-m", "sweepctl.train", "base"]) for i in range(n)]
    return Plan(sweep="bench", shard_count=8, schedule="dynamic", gpus_per_shard=1,
                shards=[ShardPlan(index=s, devices=[s], run_ids=[]) for s in range(8)], runs=planned)


def measure(n: int, repeats: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sweep_dir = root / ".sweeps" / "bench"
        sweep_dir.mkdir(parents=True)
        plan = plan_of(n, root)
        runs.write_json_atomic(sweep_dir / "plan.json", plan.model_dump(mode="json"))
        runner = ShardRunner(plan, RunnerOptions(sweep_dir=sweep_dir, shard=0, devices="0", session="sweep-0",
                                                 claims_dir=sweep_dir / "claims" / "L"), pane=io.BytesIO())
        claims = sweep_dir / "claims" / "L"
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            got = runner._claim_next(claims)
            times.append(time.perf_counter() - t0)
            if got is None:
                break
        reread = []
        for _ in range(repeats):
            runs.write_json_atomic(sweep_dir / "plan.json", plan.model_dump(mode="json"))
            for p in list(claims.iterdir())[-1:]:
                p.unlink()  # one row to claim again
            t0 = time.perf_counter()
            runner._claim_next(claims)
            reread.append(time.perf_counter() - t0)
        runner.shard_log.close()
        return times[1], statistics.median(times[n // 2 - 5: n // 2 + 5] or times), statistics.median(reread)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'rows':>6} | {'2nd claim (ms)':>17} | {'mid-queue claim (ms)':>20} | {'claim after plan.json rewrite (ms)':>34}")
    print(f"{'-' * 6}-+-{'-' * 17}-+-{'-' * 20}-+-{'-' * 34}")
    for n in args.rows:
        first, mid, reread = measure(n, args.repeats)
        print(f"{n:>6} | {first * 1e3:>17.2f} | {mid * 1e3:>20.2f} | {reread * 1e3:>34.2f}")


if __name__ == "__main__":
    main()
