"""The shard runner's mechanics, with small stand-in trainer scripts (no torch) so each case is fast:
stalls, timeouts, deaths without a summary, retries, the run table per row, claims under contention.

The real trainer is exercised end to end in test_launch.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sweepctl.runner import RunnerOptions, ShardRunner, claimed_rows, trainer_command
from sweepctl.state import runs
from sweepctl.sweep.plan import Plan, PlannedRun, ShardPlan

FAKE_TRAINER = textwrap.dedent('''
    """A stand-in trainer: behaves as told by its first argument, keeps the run-directory contract."""
    import json, os, signal, sys, threading, time
    mode, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)

    def write(name, obj):
        tmp = os.path.join(out, f".{name}.{os.getpid()}.tmp")  # one per process: a 2-GPU row runs two
        with open(tmp, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, os.path.join(out, name))

    def beat(it):
        write("heartbeat.json", {"ts": time.time(), "iter": it, "max_iters": 10, "pid": os.getpid(),
                                 "host": os.uname().nodename})

    def summary(ok, status, error_class=None):
        write("summary.json", {"ok": ok, "status": status, "error_class": error_class, "iter_num": 1})

    write("seen.json", {"argv": sys.argv, "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "context": json.loads(os.environ.get("SWEEPCTL_RUN_CONTEXT", "null"))})
    print("fake trainer", mode, flush=True)
    if mode != "hang-hard":
        signal.signal(signal.SIGTERM, lambda *a: (summary(False, "interrupted", "signal"), sys.exit(143)))
        signal.signal(signal.SIGINT, lambda *a: (summary(False, "interrupted", "signal"), sys.exit(130)))
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "ok":
        beat(10); summary(True, "completed")
    elif mode in ("hang", "hang-hard"):
        beat(0); threading.Event().wait()
    elif mode == "progress":
        it = 0
        while True:
            it += 1; beat(it); time.sleep(0.05)
    elif mode == "exit3":
        sys.exit(3)
    elif mode == "sigkill":
        beat(3); os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "fail-once":
        marker = os.path.join(out, "failed-once")
        if os.path.exists(marker):
            beat(10); summary(True, "completed")
        else:
            open(marker, "w").close(); summary(False, "failed", "exception"); sys.exit(1)
''')


@pytest.fixture()
def fake(tmp_path: Path) -> Path:
    path = tmp_path / "fake_trainer.py"
    path.write_text(FAKE_TRAINER)
    return path


def make_plan(tmp_path: Path, fake: Path, modes: dict[str, str], *, schedule: str = "static", shards: int = 1,
              gpus: int = 1, iters: list[int] | None = None) -> Plan:
    out = tmp_path / "out"
    planned = []
    for i, (run_id, mode) in enumerate(modes.items()):
        planned.append(PlannedRun(run_id=run_id, line=i + 2, row_index=i,
                                  shard=i % shards if schedule == "static" else None, seed=i, gpus=gpus,
                                  config={"out_dir": str(out / run_id), "max_iters": iters[i] if iters else 10},
                                  argv=["python", str(fake), mode, str(out / run_id)]))
    shard_plans = [ShardPlan(index=s, devices=[s * gpus + k for k in range(gpus)],
                             run_ids=[r.run_id for r in planned if r.shard == s]) for s in range(shards)]
    return Plan(sweep="t", shard_count=shards, schedule=schedule, gpus_per_shard=gpus,  # type: ignore[arg-type]
                shards=shard_plans, runs=planned)


def run_shard(tmp_path: Path, plan: Plan, **options) -> tuple[ShardRunner, int, str]:
    sweep_dir = tmp_path / "out" / ".sweeps" / "t"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    pane = io.BytesIO()
    defaults = {"sweep_dir": sweep_dir, "shard": 0, "devices": "0", "session": "sweep-0", "kill_grace_s": 5.0}
    runner = ShardRunner(plan, RunnerOptions(**{**defaults, **options}), pane=pane)
    code = runner.run()
    return runner, code, pane.getvalue().decode()


def summary_of(tmp_path: Path, run_id: str) -> dict:
    return runs.read_json(tmp_path / "out" / run_id / runs.SUMMARY)


def test_ok_run_tees_output_and_records_its_context(tmp_path: Path, fake: Path) -> None:
    plan = make_plan(tmp_path, fake, {"a": "ok"}, gpus=2)
    _runner, code, pane = run_shard(tmp_path, plan, devices="4,5,6")
    assert code == 0
    d = tmp_path / "out" / "a"
    assert "fake trainer ok" in (d / runs.STDOUT_LOG).read_text()
    assert "fake trainer ok" in pane and "a: ok" in pane
    assert "sweep-0 done: 1 ok, 0 failed, 0 interrupted, 0 skipped" in pane.splitlines()[-1]
    log = (tmp_path / "out" / ".sweeps" / "t" / "shard-0.log").read_text()
    assert "fake trainer ok" in log and "sweep-0 done" in log
    seen = json.loads((d / "seen.json").read_text())
    assert seen["cvd"] == "4,5"  # a 2-GPU row takes the first two of the shard's devices
    assert seen["context"] == {"sweep": {"name": "t", "row_index": 0, "shard_index": 0, "shard_count": 1,
                                         "schedule": "static"}, "attempt": 1}
    owner = runs.read_json(d / runs.OWNER)
    assert owner["attempt"] == 1 and owner["cuda_visible_devices"] == "4,5" and owner["session"] == "sweep-0"
    assert not runs.lock_held(d)


def test_trainer_command_uses_this_python_and_torchrun_for_several_gpus() -> None:
    argv = ["python", "-m", "sweepctl.train", "base", "seed=1"]
    assert trainer_command(argv, gpus=1, resume=False) == [sys.executable, "-m", "sweepctl.train", "base", "seed=1"]
    assert trainer_command(argv, gpus=4, resume=True) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
        "-m", "sweepctl.train", "base", "seed=1", "resume=True"]


def test_a_stalled_trainer_is_ended_and_marked_stalled(tmp_path: Path, fake: Path) -> None:
    plan = make_plan(tmp_path, fake, {"stuck": "hang"})
    start = time.monotonic()
    _, code, pane = run_shard(tmp_path, plan, stall_after_s=1.0)
    assert code == 1
    s = summary_of(tmp_path, "stuck")
    assert (s["ok"], s["status"], s["error_class"]) == (False, "failed", "stalled")
    assert "no progress for 1 s" in s["error"] and "no progress" in pane
    assert time.monotonic() - start < 30


def test_a_trainer_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path, fake: Path) -> None:
    plan = make_plan(tmp_path, fake, {"stuck": "hang-hard"})
    _, code, _ = run_shard(tmp_path, plan, stall_after_s=1.0, kill_grace_s=1.0)
    s = summary_of(tmp_path, "stuck")
    assert code == 1
    assert (s["error_class"], s["exit_code"], s["written_by"]) == ("stalled", -9, "sweepctl runner")


def test_run_timeout_ends_a_run_that_keeps_advancing(tmp_path: Path, fake: Path) -> None:
    plan = make_plan(tmp_path, fake, {"slow": "progress"})
    _, code, _ = run_shard(tmp_path, plan, stall_after_s=1.0, run_timeout_s=2.0)
    s = summary_of(tmp_path, "slow")
    assert code == 1 and s["error_class"] == "timeout" and "--run-timeout 2 s" in s["error"]


@pytest.mark.parametrize(("mode", "error_class", "fragment"), [
    ("exit3", "nonzero_exit", "exited with status 3 without writing a summary"),
    ("sigkill", "signal", "killed by SIGKILL (signal 9)"),
])
def test_a_trainer_that_dies_without_a_summary_gets_one(tmp_path: Path, fake: Path, mode: str, error_class: str,
                                                       fragment: str) -> None:
    plan = make_plan(tmp_path, fake, {"dead": mode, "after": "ok"})
    _, code, _ = run_shard(tmp_path, plan)
    s = summary_of(tmp_path, "dead")
    assert code == 1
    assert (s["ok"], s["error_class"], s["written_by"]) == (False, error_class, "sweepctl runner")
    assert fragment in s["error"]
    assert summary_of(tmp_path, "after")["ok"] is True  # a failed row does not stop the shard


def test_fail_fast_stops_the_shard_at_the_first_failure(tmp_path: Path, fake: Path) -> None:
    plan = make_plan(tmp_path, fake, {"dead": "exit3", "after": "ok"})
    _, code, pane = run_shard(tmp_path, plan, fail_fast=True)
    assert code == 1 and "--fail-fast" in pane
    assert not (tmp_path / "out" / "after").exists()


def test_max_retries_retries_and_keeps_each_attempts_logs(tmp_path: Path, fake: Path) -> None:
    plan = make_plan(tmp_path, fake, {"flaky": "fail-once"})
    _, code, pane = run_shard(tmp_path, plan, max_retries=2)
    d = tmp_path / "out" / "flaky"
    assert code == 0 and summary_of(tmp_path, "flaky")["ok"] is True
    assert runs.read_json(d / runs.OWNER)["attempt"] == 2
    assert len(runs.backups_of(d, runs.STDOUT_LOG)) == 1 and len(runs.backups_of(d, runs.SUMMARY)) == 1
    assert json.loads(runs.backups_of(d, runs.SUMMARY)[0].read_text())["error_class"] == "exception"
    assert "retry 1 of 2" in pane


def test_the_run_table_per_row(tmp_path: Path, fake: Path) -> None:
    """ok skipped; an earlier failure skipped (or retried when asked); stale resumed from its checkpoint."""
    plan = make_plan(tmp_path, fake, {"done": "ok", "broke": "ok", "crashed": "ok", "wiped": "ok"})
    out = tmp_path / "out"
    runs.write_json_atomic(out / "done" / runs.SUMMARY, {"ok": True})
    runs.write_json_atomic(out / "broke" / runs.SUMMARY, {"ok": False, "error_class": "oom"})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for rid in ("crashed", "wiped"):
        runs.write_json_atomic(out / rid / runs.HEARTBEAT, {"ts": time.time(), "iter": 4, "pid": dead.pid,
                                                            "host": runs.HOST})
        (out / rid / runs.STDOUT_LOG).write_text("attempt 1\n")
    (out / "crashed" / runs.CHECKPOINT).write_bytes(b"state")
    runner, code, _pane = run_shard(tmp_path, plan, launched_at=time.time() + 1)
    assert code == 0
    assert {o.run_id: o.result for o in runner.outcomes} == {"done": "skipped", "broke": "skipped",
                                                             "crashed": "ok", "wiped": "ok"}
    crashed = json.loads((out / "crashed" / "seen.json").read_text())
    assert crashed["argv"][-1] == "resume=True"
    assert "attempt 1" in runs.backups_of(out / "crashed", runs.STDOUT_LOG)[0].read_text()
    wiped = json.loads((out / "wiped" / "seen.json").read_text())
    assert wiped["argv"][-1] != "resume=True"  # no checkpoint: start over, the old files kept aside
    assert runs.backups_of(out / "wiped", runs.HEARTBEAT)

    runner, _, _ = run_shard(tmp_path, plan, on_failed="retry", launched_at=time.time() + 1)
    assert {o.run_id: o.result for o in runner.outcomes}["broke"] == "ok"


def test_force_reruns_only_results_older_than_the_launch(tmp_path: Path, fake: Path) -> None:
    plan = make_plan(tmp_path, fake, {"a": "ok"})
    runs.write_json_atomic(tmp_path / "out" / "a" / runs.SUMMARY, {"ok": True})
    runner, _, _ = run_shard(tmp_path, plan, force=True, launched_at=time.time() - 3600)
    assert runner.outcomes[0].result == "skipped"  # finished after this launch: another runner did it
    runner, _, _ = run_shard(tmp_path, plan, force=True, launched_at=time.time() + 1)
    assert runner.outcomes[0].result == "ok"
    assert runs.backups_of(tmp_path / "out" / "a", runs.SUMMARY)


def test_a_row_whose_lock_is_held_is_not_started_twice(tmp_path: Path, fake: Path) -> None:
    from test_runs import LockHolder

    plan = make_plan(tmp_path, fake, {"busy": "ok"})
    holder = LockHolder(tmp_path / "out" / "busy")
    try:
        runner, _, pane = run_shard(tmp_path, plan)
    finally:
        holder.release()
    assert runner.outcomes[0].result == "skipped" and "another process is running it" in pane
    assert not (tmp_path / "out" / "busy" / "seen.json").exists()


CLAIMER = """
import sys
from pathlib import Path
from sweepctl.runner import claimed_rows
ids = [f"row{i:02d}" for i in range(int(sys.argv[2]))]
sys.stdin.readline()  # start together
print(" ".join(claimed_rows(ids, Path(sys.argv[1]), int(sys.argv[3]))), flush=True)
"""


def test_dynamic_claims_never_give_a_row_twice_under_contention(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(claims), "50", str(i)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for i in range(8)]
    for p in procs:  # all are started before any may claim
        p.stdin.write("go\n")
        p.stdin.flush()
    got = [p.communicate(timeout=60)[0].split() for p in procs]
    flat = [rid for ids in got for rid in ids]
    assert sorted(flat) == [f"row{i:02d}" for i in range(50)]  # every row once, none twice
    for shard, ids in enumerate(got):
        for rid in ids:
            assert json.loads((claims / rid).read_text())["shard"] == shard
    assert list(claimed_rows(["row00"], claims, 9)) == []


def test_dynamic_runners_share_the_rows(tmp_path: Path, fake: Path) -> None:
    plan = make_plan(tmp_path, fake, {f"r{i}": "ok" for i in range(4)}, schedule="dynamic", shards=2)
    claims = tmp_path / "out" / ".sweeps" / "t" / "claims" / "L1"
    first, _, _ = run_shard(tmp_path, plan, claims_dir=claims)
    second, _, _ = run_shard(tmp_path, plan, shard=1, session="sweep-1", claims_dir=claims)
    assert [o.run_id for o in first.outcomes] == ["r0", "r1", "r2", "r3"]
    assert second.outcomes == []  # nothing left to claim
    assert os.listdir(claims) and sorted(os.listdir(claims)) == ["r0", "r1", "r2", "r3"]


def test_dynamic_runners_claim_the_longest_rows_first(tmp_path: Path, fake: Path) -> None:
    # Plan order is r0..r4; by estimated cost (max_iters here) it is r1, r3 (a tie: row order), r2, r0, r4.
    plan = make_plan(tmp_path, fake, {f"r{i}": "ok" for i in range(5)}, schedule="dynamic", shards=2,
                     iters=[10, 30, 20, 30, 10])
    claims = tmp_path / "out" / ".sweeps" / "t" / "claims" / "L1"
    first = ShardRunner(plan, RunnerOptions(sweep_dir=tmp_path, shard=0, devices="0", session="sweep-0",
                                            claims_dir=claims), pane=io.BytesIO())
    second = ShardRunner(plan, RunnerOptions(sweep_dir=tmp_path, shard=1, devices="1", session="sweep-1",
                                             claims_dir=claims), pane=io.BytesIO())
    walks = {0: first.rows(), 1: second.rows()}
    taken = []  # (shard, run_id): the two runners take turns, as two GPUs that finish alike would
    for shard in (0, 1, 0, 1, 0, 1):
        row = next(walks[shard], None)
        if row is not None:
            taken.append((shard, row.run_id))
    assert taken == [(0, "r1"), (1, "r3"), (0, "r2"), (1, "r0"), (0, "r4")]
    assert json.loads((claims / "r3").read_text())["shard"] == 1
    first.shard_log.close()
    second.shard_log.close()
    # a static shard keeps its plan order: the order matters only for who claims what first
    static = make_plan(tmp_path, fake, {f"r{i}": "ok" for i in range(3)}, iters=[10, 30, 20])
    runner = ShardRunner(static, RunnerOptions(sweep_dir=tmp_path, shard=0, devices="0", session="sweep-0"),
                         pane=io.BytesIO())
    assert [r.run_id for r in runner.rows()] == ["r0", "r1", "r2"]
    runner.shard_log.close()


def test_the_cost_estimate_ranks_deep_presets_above_shallow_ones_and_scales_with_tokens(tmp_path: Path) -> None:
    from sweepctl.sweep.plan import claim_order, longest_first, run_cost
    from sweepctl.sweep.plan import make_plan as plan_of
    from sweepctl.sweep.spec import read_sweep
    from sweepctl.train.config import resolve_config

    def cost(preset: str, *overrides: str) -> float:
        return run_cost(resolve_config(preset, list(overrides)))

    assert cost("base", "max_iters=10000") == 2 * cost("base")  # proportional to tokens
    assert cost("base", "batch_size=64") == 2 * cost("base")
    assert cost("base", "gradient_accumulation_steps=8") == 2 * cost("base")
    for variant in ("base", "hc", "mhc"):
        assert cost(f"{variant}_48l") > 1.3 * cost(variant)
    # a field missing from an older plan.json reads as its default
    from sweepctl.sweep.plan import PlannedRun

    older = PlannedRun.model_validate_json('{"run_id": "r", "line": 2, "row_index": 0, "shard": 0, "seed": 1, '
                                           '"gpus": 1, "config": {"out_dir": "/o/r"}, "argv": []}')
    assert run_cost(older.config) == cost("base") and older.config.out_dir == "/o/r"
    assert longest_first([1.0, 3.0, 2.0, 3.0]) == [1, 3, 2, 0]
    # the reference sweep's shape: every 6-layer row first in the CSV, the 48-layer rows last
    rows = [f"s{i},{p},{i},\"device='cpu'\"," for i, p in enumerate(["base", "mhc", "mhc_48l", "hc", "base_48l"])]
    (tmp_path / "s.csv").write_text("run_id,config,seed,overrides,notes\n" + "\n".join(rows) + "\n")
    plan = plan_of(read_sweep(tmp_path / "s.csv"), shards=2, schedule="dynamic", out_root=tmp_path / "out")
    assert claim_order(plan)[:2] == ["s2", "s4"]  # equal tokens: mhc_48l's extra HC parameters put it first
    assert claim_order(plan)[2:] == ["s0", "s1", "s3"]  # equal FLOPs: row order


def test_planning_and_running_rows_import_no_torch() -> None:
    code = ("import sys, sweepctl.sweep.plan, sweepctl.runner, sweepctl.cli.remote_cmds; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
