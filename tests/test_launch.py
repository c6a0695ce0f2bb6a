"""Launching sweeps for real: a private tmux server, the shard runner, the real trainer on tiny CPU models.

Each test drives the `sweepctl` CLI in-process and waits on the run directories with deadlines.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from cli import run_cli
from sweep_helpers import Workspace, panes, wait_until
from sweepctl.pod.tmux import Tmux
from sweepctl.state import runs
from sweepctl.train import contract
from sweepctl.views import status

pytest_plugins = ["sweep_fixtures"]

RUN_TIMEOUT = 240  # seconds for a handful of tiny runs on a busy 2-core machine


def wait_for(predicate, what: str, timeout: float = RUN_TIMEOUT):
    """wait_until, with every pane's text in the failure message (what the runners said)."""
    return wait_until(predicate, timeout=timeout, what=what, explain=lambda: panes(os.environ["SWEEPCTL_TMUX_SOCKET"]))


def summaries(ws: Workspace, ids: list[str]) -> dict[str, dict] | None:
    found = {i: runs.read_json(ws.run_dir(i) / runs.SUMMARY) for i in ids}
    return found if all(v is not None for v in found.values()) else None


def states(ws: Workspace) -> dict[str, str]:
    model = status.collect(ws.out_root, with_gpus=False, with_sessions=False)
    return {r["run_id"]: r["state"] for r in model["runs"]}


def pane_done(tmux_socket: str, session: str) -> str | None:
    """The pane's last sweepctl line once the session's runner has ended."""
    info = Tmux(tmux_socket).session(session)
    if info is None or info.alive:
        return None
    lines = [line for line in Tmux(tmux_socket).capture(session) if "[sweepctl" in line]
    return lines[-1] if lines else None


def test_six_rows_over_two_shards_complete_and_a_relaunch_skips_them(
        workspace: Workspace, tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    ids = [f"row{i}" for i in range(6)]
    csv = ws.csv([(i, "") for i in ids])
    r = run_cli(capsys, "launch", str(csv), "--shards", "2", "--no-wandb")
    assert r.code == 0, r.err
    assert "started sweep-0: CPU slot 0, 3 rows" in r.out
    assert "started sweep-1: CPU slot 1, 3 rows" in r.out
    assert f"attach: tmux -S {tmux_socket} attach -t sweep-0" in r.out
    assert f"status: sweepctl status --out-root {ws.out_root}" in r.out

    done = wait_for(lambda: summaries(ws, ids), "all six summaries")
    for i, run_id in enumerate(ids):
        d = ws.run_dir(run_id)
        assert done[run_id]["ok"] is True, done[run_id]
        assert [f for f in contract.COMPLETE_FILES if not (d / f).exists()] == []
        meta = json.loads((d / runs.METADATA).read_text())
        assert meta["cuda_visible_devices"] == str(i % 2)
        assert meta["sweep"] == {"name": "sweep", "row_index": i, "shard_index": i % 2, "shard_count": 2,
                                 "schedule": "static"}
        assert meta["attempt"] == 1
        owner = runs.read_json(d / runs.OWNER)
        assert owner["session"] == f"sweep-{i % 2}"
        assert "wandb_log=False" in (d / contract.COMMAND).read_text()
        assert "eval iter 20" in (d / runs.STDOUT_LOG).read_text()

    for shard in (0, 1):
        last = wait_until(lambda s=shard: pane_done(tmux_socket, f"sweep-{s}"), what=f"sweep-{shard} to end")
        assert f"sweep-{shard} done: 3 ok, 0 failed, 0 interrupted, 0 skipped" in last
        log = (ws.out_root / ".sweeps" / "sweep" / f"shard-{shard}.log").read_text()
        assert all(f"row{i}: ok" in log for i in range(shard, 6, 2))
    manifest = ws.out_root / ".sweeps" / "sweep"
    assert {p.name for p in manifest.iterdir()} >= {"sweep.csv", "plan.json", "launch.json", "launches.jsonl"}
    launch = json.loads((manifest / "launch.json").read_text())
    assert launch["options"]["shards"] == 2 and launch["sweepctl_version"] and launch["host"]

    r = run_cli(capsys, "status", "--json")
    assert r.code == 0, r.err
    model = json.loads(r.out)
    assert set(model) == {"out_root", "sweep", "counts", "runs", "gpus", "sessions", "disks", "retry_command", "slots", "eta"}
    assert model["retry_command"] == f"sweepctl launch {csv} --out-root {ws.out_root} --retry-failed"
    assert [set(d) for d in model["disks"]] == [{"free_bytes", "total_bytes", "volume", "read_only", "full"}]
    assert (model["disks"][0]["read_only"], model["disks"][0]["full"]) == (False, False)
    assert model["slots"] == [{"devices": "0", "sessions": ["sweep-0"], "alive": []},
                              {"devices": "1", "sessions": ["sweep-1"], "alive": []}]
    assert 0 < model["disks"][0]["free_bytes"] <= model["disks"][0]["total_bytes"]
    assert model["counts"] == {"pending": 0, "running": 0, "ok": 6, "failed": 0, "stale": 0, "cancelled": 0}
    assert [set(run) for run in model["runs"]] == [set(status.RUN_KEYS)] * 6
    assert [run["shard"] for run in model["runs"]] == [0, 1, 0, 1, 0, 1]
    assert all(run["iter"] == 20 and run["max_iters"] == 20 and run["val_loss"] > 0 for run in model["runs"])
    assert {s["name"]: s["alive"] for s in model["sessions"]} == {"sweep-0": False, "sweep-1": False}

    before = {i: (ws.run_dir(i) / runs.SUMMARY).stat().st_mtime_ns for i in ids}
    r = run_cli(capsys, "launch", str(csv), "--shards", "2", "--no-wandb")
    assert r.code == 0, r.err
    assert "6 runs: 6 skip" in r.out and "nothing to start" in r.out
    assert {i: (ws.run_dir(i) / runs.SUMMARY).stat().st_mtime_ns for i in ids} == before


def test_kill_9_shows_failed_or_stale_never_running_and_retry_failed_resumes(
        workspace: Workspace, tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    csv = ws.csv([("victim", "max_iters=1500 lr_decay_iters=1500 eval_interval=20 log_interval=20")])
    assert run_cli(capsys, "launch", str(csv), "--shards", "1").code == 0
    d = ws.run_dir("victim")

    def training() -> int | None:
        owner = runs.read_json(d / runs.OWNER) or {}
        if (d / runs.CHECKPOINT).exists() and owner.get("child_pid") and not (d / runs.SUMMARY).exists():
            return owner["child_pid"]
        return None

    trainer = wait_for(training, "the trainer to checkpoint and train on")
    assert states(ws)["victim"] == "running"
    os.kill(trainer, signal.SIGKILL)  # our own child process, by pid
    # kill() returns before the kernel has torn the process down; from then on it must never read as running
    wait_until(lambda: not runs.pid_alive(trainer), timeout=10, interval=0.001, what="the kill to land")
    seen = []
    deadline = time.monotonic() + 60
    while not (d / runs.SUMMARY).exists():  # look as often as we can: no moment may read as running
        seen.append(states(ws)["victim"])
        assert time.monotonic() < deadline, "the runner never wrote a summary"
    seen.append(states(ws)["victim"])
    assert set(seen) <= {"stale", "failed"}, seen
    summary = runs.read_json(d / runs.SUMMARY)
    assert (summary["ok"], summary["error_class"], summary["written_by"]) == (False, "signal", "sweepctl runner")
    assert "SIGKILL" in summary["error"]

    r = run_cli(capsys, "launch", str(csv), "--shards", "1")
    assert r.code == 2, r.out + r.err
    assert "1 failed run(s)" in r.err and "victim (signal: trainer killed by SIGKILL" in r.err
    assert "--retry-failed" in r.err

    wait_until(lambda: pane_done(tmux_socket, "sweep-0"), what="the shard runner to end")
    r = run_cli(capsys, "launch", str(csv), "--shards", "1", "--retry-failed")
    assert r.code == 0, r.err
    assert "1 resume" in r.out and "replaced sweep-0" in r.out
    done = wait_for(lambda: (s := runs.read_json(d / runs.SUMMARY)) and s.get("ok") is not False and s,
                    "the resumed run to finish")
    assert done["ok"] is True and done["iter_num"] == 1500
    assert done["resumed_from_iter"] is not None and done["resumed_from_iter"] >= 0
    owner = runs.read_json(d / runs.OWNER)
    assert (owner["attempt"], owner["resume"], owner["argv"][-1]) == (2, True, "resume=True")
    assert runs.backups_of(d, runs.SUMMARY) and runs.backups_of(d, runs.STDOUT_LOG)
    assert json.loads((d / runs.METADATA).read_text())["attempt"] == 2


def test_rerun_needs_force_for_an_ok_run_and_keeps_bak_copies(
        workspace: Workspace, tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    ws.gpus.set(2)
    csv = ws.csv([("again", "")])
    assert run_cli(capsys, "launch", str(csv), "--shards", "1").code == 0
    d = ws.run_dir("again")
    first = wait_for(lambda: summaries(ws, ["again"]), "the first run")["again"]
    assert first["ok"] is True

    r = run_cli(capsys, "rerun", "again")
    assert r.code == 2 and "finished ok" in r.err and "--force" in r.err
    assert runs.backups_of(d, runs.SUMMARY) == []

    r = run_cli(capsys, "rerun", "again", "--force", "--gpu", "1")
    assert r.code == 0, r.err
    assert "started rerun-again" in r.out and "CUDA_VISIBLE_DEVICES=1" in r.out

    def second_done() -> dict | None:
        s = runs.read_json(d / runs.SUMMARY)
        owner = runs.read_json(d / runs.OWNER) or {}
        return s if s and owner.get("attempt") == 2 and s.get("start_time", 0) > first["start_time"] else None

    again = wait_for(second_done, "the rerun to finish")
    assert again["ok"] is True
    for name in (runs.STDOUT_LOG, runs.SUMMARY, runs.METRICS):
        baks = runs.backups_of(d, name)
        assert len(baks) == 1, (name, baks)
    assert json.loads(runs.backups_of(d, runs.SUMMARY)[0].read_text())["start_time"] == first["start_time"]
    meta = json.loads((d / runs.METADATA).read_text())
    assert meta["cuda_visible_devices"] == "1" and meta["attempt"] == 2
    assert wait_until(lambda: pane_done(tmux_socket, "rerun-again"), what="rerun-again to end")
    assert (ws.out_root / ".sweeps" / "sweep" / "rerun-again.log").exists()


def test_dynamic_schedule_runs_every_row_once(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    ids = ["d0", "d1", "d2", "d3"]
    csv = ws.csv([(i, "") for i in ids], name="dyn")
    r = run_cli(capsys, "launch", str(csv), "--shards", "2", "--schedule", "dynamic")
    assert r.code == 0, r.err
    assert "started sweep-0: CPU slot 0, claims rows" in r.out
    done = wait_for(lambda: summaries(ws, ids), "all four summaries")
    assert all(s["ok"] for s in done.values())
    claims = list((ws.out_root / ".sweeps" / "dyn" / "claims").glob("*/*"))
    assert sorted(p.name for p in claims) == ids
    for run_id in ids:
        meta = json.loads((ws.run_dir(run_id) / runs.METADATA).read_text())
        shard = runs.read_json(ws.run_dir(run_id) / runs.OWNER)["shard"]
        assert meta["attempt"] == 1 and meta["sweep"]["schedule"] == "dynamic"
        assert meta["cuda_visible_devices"] == str(shard) and meta["sweep"]["shard_index"] == shard
    model = status.collect(ws.out_root, with_gpus=False, with_sessions=False)
    assert {r["shard"] for r in model["runs"]} <= {0, 1} and None not in {r["shard"] for r in model["runs"]}


def test_a_failed_row_is_retried_and_does_not_stop_the_shard(
        workspace: Workspace, tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    ws.gpus.set(1)  # the first row asks for CUDA, which this machine does not have: it fails in the trainer
    csv = ws.csv([("broken", "device='cuda'"), ("fine", "")])
    r = run_cli(capsys, "launch", str(csv), "--shards", "1", "--max-retries", "1")
    assert r.code == 0, r.err
    done = wait_for(lambda: summaries(ws, ["broken", "fine"]), "both rows")
    assert done["fine"]["ok"] is True
    assert (done["broken"]["ok"], done["broken"]["error_class"]) == (False, "exception")
    assert runs.read_json(ws.run_dir("broken") / runs.OWNER)["attempt"] == 2
    assert len(runs.backups_of(ws.run_dir("broken"), runs.STDOUT_LOG)) == 1
    last = wait_until(lambda: pane_done(tmux_socket, "sweep-0"), what="sweep-0 to end")
    assert "1 ok, 1 failed" in last and "failed: broken" in last


def test_stop_interrupts_the_trainers_and_leaves_the_sessions(
        workspace: Workspace, tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    csv = ws.csv([("endless", "max_iters=1000000 lr_decay_iters=1000000 eval_interval=100000 heartbeat_interval_s=0.5"),
                  ("next", "")])
    assert run_cli(capsys, "launch", str(csv), "--shards", "1").code == 0
    d = ws.run_dir("endless")
    wait_for(lambda: (runs.read_json(d / runs.HEARTBEAT) or {}).get("phase") == "training", "training to start")
    r = run_cli(capsys, "stop")
    assert r.code == 1 and "--shard I or --all" in r.err
    r = run_cli(capsys, "stop", "--all")
    assert r.code == 0, r.err
    assert "sent SIGINT to runner pid" in r.out
    summary = wait_until(lambda: runs.read_json(d / runs.SUMMARY), timeout=60, what="the interrupted summary")
    assert (summary["status"], summary["error_class"]) == ("interrupted", "signal")
    last = wait_until(lambda: pane_done(tmux_socket, "sweep-0"), what="the runner to end")
    assert "done (stopped)" in last and "1 interrupted" in last
    assert not ws.run_dir("next").exists()  # no new row after a stop
    assert Tmux(tmux_socket).session("sweep-0") is not None  # left for inspection
    assert states(ws) == {"endless": "failed", "next": "pending"}
    r = run_cli(capsys, "logs", "endless", "-n", "3")
    assert r.code == 0 and "interrupted by SIGINT" in r.out


def test_logs_follow_ends_with_the_run(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    csv = ws.csv([("short", "")])
    assert run_cli(capsys, "launch", str(csv), "--shards", "1").code == 0
    wait_for(lambda: (ws.run_dir("short") / runs.STDOUT_LOG).exists(), "stdout.log")
    start = time.monotonic()
    r = run_cli(capsys, "logs", "short", "-f", "-n", "1")
    assert r.code == 0, r.err
    assert "eval iter 20" in r.out
    assert time.monotonic() - start < RUN_TIMEOUT
    assert runs.read_json(ws.run_dir("short") / runs.SUMMARY)["ok"] is True


def test_logs_of_an_unknown_run(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(capsys, "logs", "nope")
    assert r.code == 1
    assert r.err.strip() == (f"error: nope: no run nope in {workspace.out_root}: no launched sweep plans it and it "
                             f"has no directory — see the run_ids with: sweepctl status --out-root {workspace.out_root}")



def test_a_row_asking_for_two_gpus_runs_under_torchrun(workspace: Workspace, capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """K > 1: `torchrun --standalone --nproc_per_node=K` (DDP over gloo on the CPU here)."""
    from sweep_helpers import TINY

    ws = workspace
    csv = ws.root / "ddp.csv"
    overrides = TINY.replace("gradient_accumulation_steps=1", "gradient_accumulation_steps=2")
    csv.write_text(f'run_id,config,seed,overrides,notes,gpus\npair,base,1,"{overrides}",,2\n')
    r = run_cli(capsys, "launch", str(csv), "--shards", "1", "--gpus-per-shard", "2")
    assert r.code == 0, r.err
    assert "started sweep-0: CPU slot 0, 1 rows" in r.out  # two processes; the trainer says so
    s = wait_for(lambda: summaries(ws, ["pair"]), "the DDP run")["pair"]
    assert (s["ok"], s["ddp"], s["world_size"]) == (True, True, 2), s
    owner = runs.read_json(ws.run_dir("pair") / runs.OWNER)
    assert owner["argv"][1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert json.loads((ws.run_dir("pair") / runs.METADATA).read_text())["cuda_visible_devices"] == "0,1"
