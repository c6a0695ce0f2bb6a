"""What launch refuses, and what it would do, before anything trains: pre-flight, the run table,
live sessions, the manifest. Run directories are written by hand here; nothing here trains a model
except the one shard a partially refused launch starts."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from cli import run_cli
from sweep_helpers import Workspace, wait_until
from sweepctl.launch import LaunchOptions, prepare, write_manifest
from sweepctl.pod.tmux import Tmux
from sweepctl.settings import load_settings
from sweepctl.state import runs
from sweepctl.sweep.hosts import layout_json, place, subset_csv
from test_runs import LockHolder, dead_pid

pytest_plugins = ["sweep_fixtures"]


def no_tmux_server(socket: str) -> bool:
    return Tmux(socket).sessions() == [] and not Tmux(socket).server.is_alive()


def failed_run(ws: Workspace, run_id: str, error_class: str = "oom") -> None:
    runs.write_json_atomic(ws.run_dir(run_id) / runs.SUMMARY,
                           {"ok": False, "status": "failed", "error_class": error_class, "error": "CUDA out of memory"})


def test_failed_rows_refuse_a_plain_launch_and_nothing_is_written(
        workspace: Workspace, tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    csv = ws.csv([("a", ""), ("b", ""), ("c", "")])
    failed_run(ws, "b")
    runs.write_json_atomic(ws.run_dir("c") / runs.SUMMARY, {"ok": True})
    r = run_cli(capsys, "launch", str(csv), "--shards", "2")
    assert r.code == 2
    assert f"launch refused: 1 failed run(s) in {ws.out_root}: b (oom: CUDA out of memory)" in r.err
    assert "--retry-failed" in r.err and "--skip-failed" in r.err and "--force" in r.err
    assert not (ws.out_root / ".sweeps").exists()
    assert no_tmux_server(tmux_socket)

    r = run_cli(capsys, "launch", str(csv), "--shards", "2", "--skip-failed", "--dry-run")
    assert r.code == 0, r.err
    assert "3 runs: 1 run, 2 skip" in r.out and "would start sweep-0" in r.out and "sweep-1" not in r.out
    r = run_cli(capsys, "launch", str(csv), "--shards", "2", "--retry-failed", "--dry-run")
    assert r.code == 0 and "1 restart" in r.out and "would start sweep-0, sweep-1" in r.out
    r = run_cli(capsys, "launch", str(csv), "--shards", "2", "--force", "--dry-run")
    assert r.code == 0 and "3 runs: 2 restart, 1 run" in r.out
    r = run_cli(capsys, "launch", str(csv), "--shards", "2", "--force", "--skip-failed")
    assert r.code == 1 and "alternatives" in r.err
    assert not (ws.out_root / ".sweeps").exists()
    r = run_cli(capsys, "launch", str(csv), "--shards", "2", "--reassign")
    assert r.code == 1 and "--reassign moves rows between pods: it needs --host" in r.err and "--host pod1" in r.err
    assert not (ws.out_root / ".sweeps").exists()


def test_a_shard_without_a_gpu_is_refused_unless_the_rows_run_on_the_cpu(
        workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    gpu_csv = ws.csv([("a", "device='cuda'"), ("b", "device='cuda'")], name="gpu")
    ws.gpus.set(1)
    r = run_cli(capsys, "launch", str(gpu_csv), "--shards", "2", "--dry-run")
    assert r.code == 1
    assert "pre-flight failed: GPUs: 1 visible, 2 needed for 2 shard(s) x 1: shard(s) 1 would have no GPU" in r.err
    assert "lower --shards" in r.err
    ws.gpus.set(2)
    r = run_cli(capsys, "launch", str(gpu_csv), "--shards", "2", "--dry-run")
    assert r.code == 0, r.err
    assert "2 visible; shards use 0, 1" in r.out
    r = run_cli(capsys, "launch", str(gpu_csv), "--shards", "1", "--gpus-per-shard", "4", "--dry-run")
    assert r.code == 1 and "devices 2, 3 missing" in r.err
    assert all(call.startswith("--query-gpu=") for call in ws.gpus.calls())  # never the process list

    ws.gpus.set(0)
    cpu_csv = ws.csv([("a", ""), ("b", "")], name="cpu")
    r = run_cli(capsys, "launch", str(cpu_csv), "--shards", "2", "--dry-run")
    assert r.code == 0 and "every row runs on the CPU" in r.out


def test_missing_or_broken_data_is_refused(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    csv = ws.csv([("a", "")])
    (ws.data_dir / "fineweb_val_000000.bin").unlink()
    r = run_cli(capsys, "launch", str(csv), "--shards", "1")
    assert r.code == 1 and f"data {ws.data_dir}: no val shards" in r.err
    (ws.data_dir / "fineweb_val_000000.bin").write_bytes(b"\0" * 2000)
    r = run_cli(capsys, "launch", str(csv), "--shards", "1")
    assert r.code == 1 and "1 bad shard(s), e.g. fineweb_val_000000.bin" in r.err
    assert not ws.out_root.exists()


def test_an_invalid_csv_starts_nothing(workspace: Workspace, tmux_socket: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    csv = workspace.root / "bad.csv"
    csv.write_text("run_id,config,seed,overrides,notes\na,base,1,n_layr=2,\nb,base,x,,\n")
    r = run_cli(capsys, "launch", str(csv), "--shards", "2")
    assert r.code == 1
    assert f"{csv}:2:" in r.err and f"{csv}:3:" in r.err and "nothing was started" in r.err
    assert no_tmux_server(tmux_socket)


def test_running_rows_are_never_started_twice_and_force_refuses_them(
        workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    csv = ws.csv([("live", ""), ("crashed", ""), ("gone", "")])
    holder = LockHolder(ws.run_dir("live"))
    try:
        runs.write_json_atomic(ws.run_dir("crashed") / runs.HEARTBEAT,
                               {"ts": time.time(), "iter": 7, "pid": dead_pid(), "host": runs.HOST})
        (ws.run_dir("crashed") / runs.CHECKPOINT).write_bytes(b"state")
        runs.write_json_atomic(ws.run_dir("gone") / runs.HEARTBEAT,
                               {"ts": time.time() - 3600, "iter": 7, "pid": 1, "host": "old-pod"})
        preview = prepare(csv, LaunchOptions(shards=1), load_settings())
        assert {r.run_id: (r.state, r.action) for r in preview.rows} == {
            "live": ("running", "skip"), "crashed": ("stale", "resume"), "gone": ("stale", "restart")}
        r = run_cli(capsys, "launch", str(csv), "--shards", "1", "--dry-run")
        assert r.code == 0, r.err
        assert "running; never started twice" in r.out and "heartbeat is old" in r.out
        r = run_cli(capsys, "launch", str(csv), "--shards", "1", "--force")
        assert r.code == 2 and "--force would restart 1 running run(s): live" in r.err
    finally:
        holder.release()


def test_a_live_session_refuses_its_shard_only(
        workspace: Workspace, tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    busy = Tmux(tmux_socket)
    busy.start("sweep-0", [sys.executable, "-c", "import sys; sys.stdin.read()"], env={}, cwd=ws.root)
    csv = ws.csv([("a", ""), ("b", "")])
    r = run_cli(capsys, "launch", str(csv), "--shards", "2")
    assert r.code == 2
    assert "started sweep-1" in r.out and "not started, their tmux sessions are still running: sweep-0" in r.err
    assert busy.session("sweep-0").alive  # never killed
    wait_until(lambda: runs.read_json(ws.run_dir("b") / runs.OWNER), what="shard 1 to take its row")
    assert not ws.run_dir("a").exists()
    assert json.loads((ws.out_root / ".sweeps" / "sweep" / "launch.json").read_text())["shards_started"] == [1]

    r = run_cli(capsys, "launch", str(csv), "--shards", "1", "--name", "other")
    assert r.code == 2 and "every shard's tmux session is still running: sweep-0" in r.err
    assert not (ws.out_root / ".sweeps" / "other").exists()


def test_manifest_copies_the_csv_and_config_files_and_the_plan_points_at_them(workspace: Workspace) -> None:
    ws = workspace
    config = ws.root / "configs" / "tiny.py"
    config.parent.mkdir()
    config.write_text("n_layer = 1\nn_embd = 32\nn_head = 2\n")
    csv = ws.root / "files.csv"
    csv.write_text('run_id,config,seed,overrides,notes\nf,configs/tiny.py,1,"device=\'cpu\'",\n')
    preview = prepare(csv, LaunchOptions(shards=1), load_settings())
    copy = ws.out_root / ".sweeps" / "files" / "configs" / "tiny.py"
    assert preview.plan.runs[0].argv[3] == str(copy)
    write_manifest(preview, launch_id="L", launched_at=time.time(), shards=[0])
    assert copy.read_text() == config.read_text()
    assert (ws.out_root / ".sweeps" / "files" / "files.csv").read_text() == csv.read_text()
    config.write_text("n_layer = 2\nn_embd = 32\nn_head = 2\n")
    write_manifest(prepare(csv, LaunchOptions(shards=1), load_settings()), launch_id="M", launched_at=time.time(),
                   shards=[0])
    assert "n_layer = 2" in copy.read_text()
    assert "n_layer = 1" in runs.backups_of(copy.parent, "tiny.py")[0].read_text()  # the old copy is kept
    history = (ws.out_root / ".sweeps" / "files" / "launches.jsonl").read_text().splitlines()
    assert [json.loads(line)["launch_id"] for line in history] == ["L", "M"]


def test_status_without_a_manifest_lists_every_run_directory(
        workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    failed_run(ws, "x", "nan")
    runs.write_json_atomic(ws.run_dir("y") / runs.SUMMARY, {"ok": True, "iter_num": 5, "max_iters": 5,
                                                            "last_eval": {"train": 1.5, "val": 1.75}})
    ws.gpus.set(["0, NVIDIA H200, 87, 70000, 143771"])
    r = run_cli(capsys, "status", "--json")
    assert r.code == 0, r.err
    model = json.loads(r.out)
    assert model["sweep"] is None and model["sessions"] == []
    assert [(x["run_id"], x["state"], x["error_class"]) for x in model["runs"]] == [("x", "failed", "nan"),
                                                                                  ("y", "ok", None)]
    assert model["runs"][1]["val_loss"] == 1.75
    assert model["gpus"] == [{"index": 0, "name": "NVIDIA H200", "utilization": 87.0, "memory_used_mib": 70000.0,
                              "memory_total_mib": 143771.0}]
    r = run_cli(capsys, "status", "--state", "failed")
    assert r.code == 0 and "x" in r.out and "│ y " not in r.out and "1 ok, 1 failed" in r.out
    assert "NVIDIA H200" in r.out and "70,000 / 143,771" in r.out
    r = run_cli(capsys, "status", "--state", "broken")
    assert r.code == 1 and "--state must be one of" in r.err


def test_rerun_of_a_run_in_no_sweep(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(capsys, "rerun", "nope", "--force")
    assert r.code == 1 and "nope is in no launched sweep" in r.err


def test_launch_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(capsys, "launch", "--help")
    for flag in ("--shards", "--out-root", "--data-dir", "--no-wandb", "--dry-run", "--force", "--retry-failed",
                 "--skip-failed", "--fail-fast", "--schedule", "--gpus-per-shard", "--max-retries", "--name",
                 "--stall-after", "--run-timeout"):
        assert flag in r.out, flag
    assert "│ runner " not in run_cli(capsys, "--help").out  # the hidden command stays hidden


def test_dry_run_leaves_no_trace(workspace: Workspace, tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    csv = workspace.csv([("a", "")])
    r = run_cli(capsys, "launch", str(csv), "--shards", "1", "--dry-run")
    assert r.code == 0 and "nothing written, nothing started" in r.out
    assert not workspace.out_root.exists() and no_tmux_server(tmux_socket)
    assert not Path(tmux_socket).exists()


def test_rerun_picks_the_given_or_the_least_busy_gpus(workspace: Workspace) -> None:
    from sweep_helpers import gpu_row
    from sweepctl.backends.tmux import rerun_devices as _rerun_devices
    from sweepctl.errors import SweepctlError

    workspace.gpus.set([gpu_row(0, util=95), gpu_row(1, util=0, used=40000), gpu_row(2, util=0, used=10),
                        gpu_row(3, util=60)])
    assert _rerun_devices(None, "x", 1, "cuda", None) == "2"
    assert _rerun_devices(None, "x", 2, None, None) == "1,2"
    assert _rerun_devices(None, "x", 2, "cuda", 2) == "2,3"
    with pytest.raises(SweepctlError, match="GPU\\(s\\) 4 not visible"):
        _rerun_devices(None, "x", 2, "cuda", 3)
    workspace.gpus.set(0)
    with pytest.raises(SweepctlError, match="needs 1 GPU\\(s\\) and 0 are visible"):
        _rerun_devices(None, "x", 1, "cuda", None)


def test_a_launch_on_a_pod_never_starts_rows_the_laptop_gave_to_another_pod(
        workspace: Workspace, tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    ids = [f"row{i}" for i in range(6)]
    csv = ws.csv([(run_id, "") for run_id in ids])
    # What `launch --host pod1=1 --host pod2=1` leaves on every pod: row0, 2, 4 on pod1; row1, 3, 5 on pod2.
    sweep_dir = ws.out_root / ".sweeps" / "sweep"
    layout = layout_json("sweep", "/laptop/sweep.csv", place(ids, [("pod1", 1), ("pod2", 1)], None, sweep="sweep"),
                         ts=time.time())
    record = sweep_dir / "upload" / "hosts.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps(layout))
    recorded_there = f"{record}: sweep sweep was launched from a laptop on pod1, pod2 at {layout['time']}; "

    def files() -> list[str]:
        return sorted(str(p.relative_to(ws.out_root)) for p in ws.out_root.rglob("*"))

    # Someone logged into this machine launches the whole CSV: no launch from the laptop ever told it
    # which pod it is, so every recorded row belongs to another pod. A dry run says so too.
    for dry_run in ([], ["--dry-run"]):
        r = run_cli(capsys, "launch", str(csv), "--shards", "2", *dry_run)
        assert r.code == 2, r.out + r.err
        line = " ".join(r.err.split())
        assert line.startswith(f"error: {recorded_there}6 rows of this launch are recorded on other pods, where they "
                               "may be done or running: pod1: 3 rows (row0, row2, row4); pod2: 3 rows (row1, row3, "
                               "row5) (no launch from the laptop has told this machine its name)"), line
        assert "launch from the laptop with --host pod1=1 --host pod2=1 (the recorded pods" in line
        assert "--reassign (moves only the rows that have not started)" in line
        assert files() == [".sweeps", ".sweeps/sweep", ".sweeps/sweep/upload", ".sweeps/sweep/upload/hosts.json"]
        assert no_tmux_server(tmux_socket)

    # The laptop's launch on pod2: its rows only (row1 and row3 are done), and its name in the layout.
    for run_id in ("row1", "row3"):
        runs.write_json_atomic(ws.run_dir(run_id) / runs.SUMMARY, {"ok": True})
    own = record.parent / "sweep.csv"
    own.write_text(subset_csv(csv.read_text(), [1, 3, 5]))
    r = run_cli(capsys, "launch", str(own), "--shards", "1", "--name", "sweep", "--placed-on", "pod2")
    assert r.code == 0, r.out + r.err
    assert "started sweep-0" in r.out
    launched = json.loads((sweep_dir / "launch.json").read_text())
    assert launched["pod"] == "pod2" and launched["host"] == runs.HOST
    wait_until(lambda: not any(s.alive for s in Tmux(tmux_socket).sessions()), what="pod2's runner to finish")
    assert runs.read_json(ws.run_dir("row5") / runs.SUMMARY)["ok"] is True

    # Now this machine knows it is pod2: the whole CSV is refused for pod1's rows, and nothing changes.
    before = {p: (ws.out_root / p).read_bytes() for p in files() if (ws.out_root / p).is_file()}
    sessions = [(s.name, s.alive) for s in Tmux(tmux_socket).sessions()]
    r = run_cli(capsys, "launch", str(csv), "--shards", "2")
    assert r.code == 2, r.out + r.err
    assert " ".join(r.err.split()).startswith(
        f"error: {recorded_there}3 rows of this launch are recorded on other pods, where they may be done or running: "
        "pod1: 3 rows (row0, row2, row4) (this pod is pod2 there)")
    assert {p: (ws.out_root / p).read_bytes() for p in files() if (ws.out_root / p).is_file()} == before
    assert [(s.name, s.alive) for s in Tmux(tmux_socket).sessions()] == sessions
    assert not any(ws.run_dir(run_id).exists() for run_id in ("row0", "row2", "row4"))

    # pod2's own rows, with a row new to the sweep, launched on pod2 by hand: they start, and the
    # manifest keeps pod2's name for the next launch here.
    mine = ws.csv([("row1", ""), ("row3", ""), ("row5", ""), ("row6", "")], name="mine")
    r = run_cli(capsys, "launch", str(mine), "--shards", "1", "--name", "sweep")
    assert r.code == 0, r.out + r.err
    assert "4 runs: 1 run, 3 skip" in r.out and "replaced sweep-0" in r.out, r.out  # the ended session of the last one
    assert json.loads((sweep_dir / "launch.json").read_text())["pod"] == "pod2"
    wait_until(lambda: not any(s.alive for s in Tmux(tmux_socket).sessions()), what="the runner of row6 to finish")
    assert runs.read_json(ws.run_dir("row6") / runs.SUMMARY)["ok"] is True

    # A manifest copied to another machine (as `pull` does) names the pod it came from, not that machine.
    launched = json.loads((sweep_dir / "launch.json").read_text())
    runs.write_json_atomic(sweep_dir / "launch.json", dict(launched, host="another-machine"))
    r = run_cli(capsys, "launch", str(mine), "--shards", "1", "--name", "sweep", "--dry-run")
    assert r.code == 2 and "pod2: 3 rows (row1, row3, row5) (no launch from the laptop has told" in " ".join(
        r.err.split())

    record.write_text('{"sweep": "sweep", "placed": ')  # a record cut short: any row could be another pod's
    r = run_cli(capsys, "launch", str(mine), "--shards", "1", "--name", "sweep", "--dry-run")
    assert r.code == 1 and f"{record}: cannot read the record of which pod runs which row of sweep sweep" in r.err
