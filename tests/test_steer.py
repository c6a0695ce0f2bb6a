"""Steering a sweep while it runs: priorities, rows added to the live queue, cancel, notifications.

The runner's queue mechanics use the stand-in trainer of test_runner.py (no torch, fast); the
end-to-end cases launch real tmux runners and the real trainer on tiny CPU models.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sweepctl import runs
from sweepctl.plan import claim_order
from sweepctl.runner import RunnerOptions, ShardRunner
from sweepctl.spec import read_sweep
from test_runner import FAKE_TRAINER, make_plan


@pytest.fixture()
def fake(tmp_path: Path) -> Path:
    path = tmp_path / "fake_trainer.py"
    path.write_text(FAKE_TRAINER)
    return path


def write_plan(sweep_dir: Path, plan) -> None:
    runs.write_json_atomic(sweep_dir / "plan.json", plan.model_dump(mode="json"))


def runner_of(tmp_path: Path, sweep_dir: Path, shard: int = 0) -> ShardRunner:
    options = RunnerOptions(sweep_dir=sweep_dir, shard=shard, devices=str(shard), session=f"sweep-{shard}",
                            claims_dir=sweep_dir / "claims" / "L1", kill_grace_s=5.0)
    return ShardRunner(make_plan(tmp_path, Path("unused"), {}, schedule="dynamic", shards=2), options,
                       pane=io.BytesIO())


# --- priority --------------------------------------------------------------------------------------

def test_the_priority_column_is_read_and_checked(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("run_id,config,seed,priority\na,base,1,5\nb,base,2,\nc,base,3,-1\n")
    sweep = read_sweep(tmp_path / "s.csv")
    assert [(r.run_id, r.priority) for r in sweep.runs] == [("a", 5), ("b", 0), ("c", -1)]
    (tmp_path / "bad.csv").write_text("run_id,config,seed,priority\na,base,1,high\n")
    from sweepctl.errors import SpecError

    with pytest.raises(SpecError) as e:
        read_sweep(tmp_path / "bad.csv")
    assert str(e.value) == f"{tmp_path / 'bad.csv'}:2: priority 'high' is not an integer (higher is claimed first)"


def test_claim_order_is_priority_then_longest_then_row_order(tmp_path: Path, fake: Path) -> None:
    plan = make_plan(tmp_path, fake, {f"r{i}": "ok" for i in range(5)}, schedule="dynamic", iters=[10, 30, 20, 30, 10])
    assert claim_order(plan) == ["r1", "r3", "r2", "r0", "r4"]  # no priorities: longest first
    plan.runs[4].priority = 2
    plan.runs[0].priority = 1
    plan.runs[2].priority = -1
    assert claim_order(plan) == ["r4", "r0", "r1", "r3", "r2"]


# --- the live queue --------------------------------------------------------------------------------

def test_a_dynamic_runner_claims_rows_appended_to_plan_json_while_it_walks(tmp_path: Path, fake: Path) -> None:
    sweep_dir = tmp_path / "out" / ".sweeps" / "t"
    sweep_dir.mkdir(parents=True)
    write_plan(sweep_dir, make_plan(tmp_path, fake, {"a": "ok", "b": "ok"}, schedule="dynamic", shards=2))
    runner = runner_of(tmp_path, sweep_dir)
    walk = runner.rows()
    assert next(walk).run_id == "a"
    # a second `launch` appends c (highest priority) and d while a runs
    grown = make_plan(tmp_path, fake, {"a": "ok", "b": "ok", "c": "ok", "d": "ok"}, schedule="dynamic", shards=2)
    grown.runs[2].priority = 1
    write_plan(sweep_dir, grown)
    assert [r.run_id for r in walk] == ["c", "b", "d"]
    assert sorted(p.name for p in (sweep_dir / "claims" / "L1").iterdir()) == ["a", "b", "c", "d"]
    runner.shard_log.close()
