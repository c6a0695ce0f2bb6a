"""The Ray backend on a real local Ray cluster: 4 logical GPUs on the CPU, tiny CPU training runs.

One Ray instance serves the module (starting one costs seconds); tests drive it in-process
(`Driver` on this process's connection) or through `sweepctl launch --backend ray`, whose driver
runs in tmux session sweep-ray on a private tmux server and connects to the same cluster.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from cli import run_cli  # noqa: E402
from sweep_helpers import FAKE_BIN, TINY, Workspace, kill_tmux_server, panes, wait_until  # noqa: E402
from sweepctl import launch  # noqa: E402
from sweepctl.backends import ray_backend  # noqa: E402
from sweepctl.settings import load_settings  # noqa: E402
from sweepctl.state import runs  # noqa: E402
from sweepctl.train import contract  # noqa: E402
from sweepctl.views import status  # noqa: E402
from test_launch import pane_done  # noqa: E402  (the pane's last sweepctl line once it has ended)

pytest_plugins = ["sweep_fixtures", "sshd"]

RUN_TIMEOUT = 240  # a handful of tiny runs on a busy 2-core machine
LOGICAL_GPUS = 4


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray cluster with 4 logical GPUs, for the whole module; shut down at its end."""
    mp = pytest.MonkeyPatch()
    # A throwaway cluster needs no auth token, and none should land in the user's ~/.ray; the drivers
    # that tests start in tmux inherit this from the test process's environment.
    mp.setenv("RAY_AUTH_MODE", "disabled")
    mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
    mp.setenv("OMP_NUM_THREADS", "1")  # workers, and the trainers they start, inherit it: a shared 2-core box
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's Unix socket paths live under it
    context = ray.init(num_cpus=LOGICAL_GPUS, num_gpus=LOGICAL_GPUS, include_dashboard=False, _temp_dir=temp,
                       log_to_driver=False, logging_level="WARNING")
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()
        mp.undo()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture()
def workspace(workspace: Workspace) -> Workspace:
    """The sweep workspace, but its teardown ends only leftover trainers: a Ray task's runner_pid is
    a Ray worker, which outlives the row by design and is Ray's to end (at ray.shutdown)."""

    def reap_trainers() -> None:
        for owner_file in workspace.out_root.glob(f"*/{runs.OWNER}"):
            pid = (runs.read_json(owner_file) or {}).get("child_pid")
            if isinstance(pid, int) and runs.pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # our trainer, by the pid its runner recorded

    workspace.reap = reap_trainers  # type: ignore[method-assign]
    return workspace


def bad_data(ws: Workspace) -> Path:
    """Shards with the right names and the wrong bytes: the trainer refuses them and fails."""
    bad = ws.root / "bad-data"
    bad.mkdir(exist_ok=True)
    for name in ("fineweb_train_000001.bin", "fineweb_val_000000.bin"):
        (bad / name).write_bytes(bytes(range(256)) * 8)
    return bad


def driver_for(ws: Workspace, csv: Path, address: str, launch_id: str, *, max_retries: int = 0
               ) -> tuple[ray_backend.Driver, io.StringIO]:
    """What `launch --backend ray` writes, and a driver on this process's Ray connection."""
    options = ray_backend.RayLaunchOptions(ray_address=address, no_wandb=True, max_retries=max_retries)
    preview = ray_backend.prepare(csv, options, load_settings())
    assert preview.checks[0].ok, preview.checks[0]
    launch.write_manifest(preview, launch_id=launch_id, launched_at=time.time(), shards=[])
    out = io.StringIO()
    driver_options = ray_backend.DriverOptions(sweep_dir=preview.sweep_dir, address=address, launch_id=launch_id,
                                               policy=preview.options)
    return ray_backend.Driver(preview.plan, driver_options, out=out), out


def owner(ws: Workspace, run_id: str) -> dict:
    return runs.read_json(ws.run_dir(run_id) / runs.OWNER) or {}


def test_preflight_asks_the_cluster_for_gpus(workspace: Workspace, ray_address: str) -> None:
    csv = workspace.csv([("a", ""), ("b", "")])
    preview = ray_backend.prepare(csv, ray_backend.RayLaunchOptions(ray_address=ray_address), load_settings())
    ray_check = preview.checks[0]
    assert ray_check.ok and ray_check.what.startswith("Ray ")
    assert f"1 node(s), {LOGICAL_GPUS} GPUs (largest node {LOGICAL_GPUS})" in ray_check.detail
    assert not any(c.what == "GPUs" for c in preview.checks)  # nvidia-smi's line is replaced, not added to
    assert [c.what.split()[0] for c in preview.checks[1:]] == ["data", "out-root", "tmux"]
    assert [r.action for r in preview.rows] == ["run", "run"]


def test_rows_are_submitted_longest_first_as_dynamic_runners_claim(workspace: Workspace, ray_address: str) -> None:
    """Ray gives free GPUs to queued tasks in submission order: the longest rows go first."""
    csv = workspace.csv([("short", "max_iters=2"), ("long", "max_iters=40"), ("mid", "max_iters=10"),
                         ("mid2", "max_iters=10")])
    driver, _ = driver_for(workspace, csv, ray_address, "t-order")
    assert [r.run_id for r in driver.rows_to_run()] == ["long", "mid", "mid2", "short"]


def test_the_driver_lets_a_cancel_marker_decide_as_a_shard_runner_does(workspace: Workspace, ray_address: str) -> None:
    """The driver is not told --include-cancelled: a marked row is skipped; a cancelled row whose
    marker launch --include-cancelled (or rerun) moved aside is submitted again."""
    ws = workspace
    csv = ws.csv([("kept", ""), ("withdrawn", "")])
    for run_id in ("kept", "withdrawn"):
        runs.write_json_atomic(ws.run_dir(run_id) / runs.SUMMARY,
                               {"ok": False, "status": "cancelled", "error_class": "cancelled"})
        runs.write_json_atomic(ws.run_dir(run_id) / runs.CANCEL, {"run_id": run_id})
    runs.backup(ws.run_dir("withdrawn"), [runs.CANCEL])
    driver, _ = driver_for(ws, csv, ray_address, "t-cancel")
    assert [r.run_id for r in driver.rows_to_run()] == ["withdrawn"]
    assert [(r.run_id, r.result, r.detail) for r in driver.results] == [
        ("kept", "skipped", "cancelled (sweepctl cancel)")]


def test_every_row_runs_once_and_overlapping_rows_get_distinct_gpus(workspace: Workspace, ray_address: str) -> None:
    ws = workspace
    ids = [f"row{i}" for i in range(4)]
    driver, out = driver_for(ws, ws.csv([(i, "") for i in ids]), ray_address, "t-once")
    assert driver.run() == 0, out.getvalue()

    log = out.getvalue()
    intervals = {}
    for i, run_id in enumerate(ids):
        d = ws.run_dir(run_id)
        assert (runs.read_json(d / runs.SUMMARY) or {}).get("ok") is True, log
        assert [f for f in contract.COMPLETE_FILES if not (d / f).exists()] == []
        assert runs.backups_of(d, runs.STDOUT_LOG) == [], "ran more than once"
        assert log.count(f"] {run_id}: ok on ") == 1, log
        rec = owner(ws, run_id)
        meta = json.loads((d / runs.METADATA).read_text())
        assert rec["attempt"] == meta["attempt"] == 1
        assert rec["session"] == f"ray/t-once/{run_id}"
        # Ray's GPU assignment reached the trainer, which recorded it
        assert meta["cuda_visible_devices"] == rec["cuda_visible_devices"]
        assert meta["cuda_visible_devices"] in {str(g) for g in range(LOGICAL_GPUS)}
        assert meta["sweep"]["name"] == "sweep" and meta["sweep"]["row_index"] == i
        intervals[run_id] = (rec["started"], rec["ended"], rec["cuda_visible_devices"])
        row_log = (ws.root / "out/.sweeps/sweep/ray/t-once" / f"{run_id}.log").read_text()
        assert "attempt 1, run (pending)" in row_log
        assert "[sweepctl guard" not in row_log  # told `done`: the guard of a row that ended says nothing
    overlapping = [(a, b) for a, b in itertools.combinations(ids, 2)
                   if intervals[a][0] < intervals[b][1] and intervals[b][0] < intervals[a][1]]
    assert overlapping, f"no two rows ran at the same time: {intervals}"
    for a, b in overlapping:
        assert intervals[a][2] != intervals[b][2], f"{a} and {b} overlapped on GPU {intervals[a][2]}"
    assert "sweep-ray done: 4 ok, 0 failed, 0 interrupted, 0 skipped" in log
    state = runs.read_json(ws.out_root / ".sweeps/sweep" / ray_backend.DRIVER_STATE) or {}
    assert state["counts"] == {"ok": 4, "failed": 0, "interrupted": 0, "skipped": 0,
                               "cancelled": 0} and state["finished"]


def test_a_failing_row_is_retried_up_to_the_limit_keeping_each_attempts_logs(
        workspace: Workspace, ray_address: str) -> None:
    ws = workspace
    csv = ws.csv([("good", ""), ("bad", f"data_dir='{bad_data(ws)}'")])
    driver, out = driver_for(ws, csv, ray_address, "t-retry", max_retries=2)
    assert driver.run() == 1, out.getvalue()

    log = out.getvalue()
    d = ws.run_dir("bad")
    summary = runs.read_json(d / runs.SUMMARY) or {}
    assert summary["ok"] is False and summary["status"] == "failed"
    assert owner(ws, "bad")["attempt"] == 3  # the first run and two retries
    assert json.loads((d / runs.METADATA).read_text())["attempt"] == 3
    # each earlier attempt's output and summary kept, none overwritten
    old_logs, old_summaries = runs.backups_of(d, runs.STDOUT_LOG), runs.backups_of(d, runs.SUMMARY)
    assert len(old_logs) == 2 and len(old_summaries) == 2
    for p in [*old_logs, d / runs.STDOUT_LOG]:
        assert "fineweb_train_000001.bin" in p.read_text(), p  # the trainer named the bad shard each time
    assert all(json.loads(p.read_text())["ok"] is False for p in old_summaries)
    row_log = (ws.out_root / ".sweeps/sweep/ray/t-retry/bad.log").read_text()
    assert [f"bad: attempt {n}, " in row_log for n in (1, 2, 3)] == [True] * 3
    assert "bad: attempt 2, restart (retrying a failed run (exception: " in row_log
    assert "; no usable checkpoint, starting over)" in row_log
    assert log.count("] bad: failed") == 1 and ", attempt 3:" in log, log

    assert (runs.read_json(ws.run_dir("good") / runs.SUMMARY) or {})["ok"] is True
    assert owner(ws, "good")["attempt"] == 1 and runs.backups_of(ws.run_dir("good"), runs.STDOUT_LOG) == []
    assert "sweep-ray done: 1 ok, 1 failed, 0 interrupted, 0 skipped" in log and "failed: bad" in log


def test_a_killed_ray_worker_takes_its_trainer_with_it(workspace: Workspace, ray_address: str) -> None:
    """Ray gives a dead worker's GPUs to the next task at once: its trainer must not go on using them."""
    ws = workspace
    long = "max_iters=100000 lr_decay_iters=100000 eval_interval=50 log_interval=50"
    driver, out = driver_for(ws, ws.csv([("orphan", long)]), ray_address, "t-kill")
    thread = threading.Thread(target=driver.run, daemon=True)
    thread.start()
    d = ws.run_dir("orphan")
    wait_for(lambda: (d / runs.METRICS).exists() and (d / runs.METRICS).stat().st_size, "the trainer to be training")
    worker, trainer = owner(ws, "orphan")["runner_pid"], owner(ws, "orphan")["child_pid"]
    os.kill(worker, signal.SIGKILL)  # as the OOM killer or `ray stop --force` would

    wait_for(lambda: not runs.pid_alive(trainer), "the dead worker's trainer to exit", timeout=60)
    summary = runs.read_json(d / runs.SUMMARY) or {}
    assert summary["status"] == "interrupted", summary  # SIGTERM: the trainer wrote its own summary
    assert not runs.lock_held(d)
    row_log = ws.out_root / ".sweeps/sweep/ray/t-kill/orphan.log"
    wait_for(lambda: f"trainer pid {trainer}: it exited after SIGTERM" in row_log.read_text(), "the guard's last line")
    assert f"Ray worker {worker} died; ending its trainer pid {trainer} (orphan) with SIGTERM" in row_log.read_text()
    thread.join(timeout=RUN_TIMEOUT)
    assert "] orphan: failed: WorkerCrashedError" in out.getvalue(), out.getvalue()


def wait_for(predicate, what: str, timeout: float = RUN_TIMEOUT):
    return wait_until(predicate, timeout=timeout, what=what, explain=lambda: panes(os.environ["SWEEPCTL_TMUX_SOCKET"]))


def test_launch_backend_ray_starts_the_driver_in_tmux_and_returns(
        workspace: Workspace, tmux_socket: str, ray_address: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    ids = ["r0", "r1"]
    csv = ws.csv([(i, "") for i in ids])
    r = run_cli(capsys, "launch", str(csv), "--backend", "ray", "--ray-address", ray_address, "--no-wandb")
    assert r.code == 0, r.out + r.err
    assert "started sweep-ray: CUDA_VISIBLE_DEVICES=assigned by Ray per row, 2 rows" in r.out
    assert f"attach: tmux -S {tmux_socket} attach -t sweep-ray" in r.out
    assert f"ray:    {ray_address}" in r.out

    done = wait_for(lambda: pane_done(tmux_socket, ray_backend.DRIVER_SESSION), "the driver to finish")
    assert "sweep-ray done: 2 ok, 0 failed, 0 interrupted, 0 skipped" in done
    for run_id in ids:
        d = ws.run_dir(run_id)
        assert (runs.read_json(d / runs.SUMMARY) or {})["ok"] is True
        assert [f for f in contract.COMPLETE_FILES if not (d / f).exists()] == []
    manifest = ws.out_root / ".sweeps" / "sweep"
    record = json.loads((manifest / "launch.json").read_text())
    assert (record["options"]["backend"], record["options"]["ray_address"]) == ("ray", ray_address)
    assert "sweep-ray done" in (manifest / ray_backend.DRIVER_LOG).read_text()

    model = status.collect(ws.out_root, with_gpus=False, tmux_socket=tmux_socket)
    assert model["counts"]["ok"] == 2 and {"name": "sweep-ray", "alive": False} in model["sessions"]
    r = run_cli(capsys, "launch", str(csv), "--backend", "ray", "--ray-address", ray_address, "--no-wandb")
    assert r.code == 0 and "nothing to start" in r.out, r.out + r.err


def test_rerun_of_a_ray_launched_run_goes_back_to_the_ray_cluster(
        workspace: Workspace, tmux_socket: str, ray_address: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    csv = ws.csv([("again", "")])
    assert run_cli(capsys, "launch", str(csv), "--backend", "ray", "--ray-address", ray_address).code == 0
    wait_for(lambda: pane_done(tmux_socket, ray_backend.DRIVER_SESSION), "the launch's driver to finish")
    first = owner(ws, "again")
    assert first["session"].startswith("ray/") and (runs.read_json(ws.run_dir("again") / runs.SUMMARY) or {})["ok"]

    r = run_cli(capsys, "rerun", "again", "--force", "--gpu", "0")
    assert r.code == 1 and "again: --gpu picks a GPU of this machine, and this run was launched on Ray" in r.err
    assert "drop --gpu: sweepctl rerun --force again" in r.err

    r = run_cli(capsys, "rerun", "again", "--force")
    assert r.code == 0, r.out + r.err
    assert "started rerun-again (ok before): CUDA_VISIBLE_DEVICES=assigned by Ray per row" in r.out
    done = wait_for(lambda: pane_done(tmux_socket, "rerun-again"), "the rerun's driver to finish")
    assert "rerun-again done: 1 ok, 0 failed, 0 interrupted, 0 skipped" in done, done
    d = ws.run_dir("again")
    again = owner(ws, "again")
    # a Ray task ran it (a task session, not a tmux runner), once more, keeping the first run's files
    assert again["session"].startswith("ray/rerun-") and again["session"] != first["session"]
    assert again["started"] > first["ended"]
    assert (runs.read_json(d / runs.SUMMARY) or {})["ok"] is True
    assert len(runs.backups_of(d, runs.STDOUT_LOG)) == 1 and len(runs.backups_of(d, runs.SUMMARY)) == 1
    sweep_dir = ws.out_root / ".sweeps" / "sweep"
    assert f"on Ray {ray_address}; 1 row(s) submitted, 0 skipped" in (sweep_dir / "rerun-again.log").read_text()
    assert (runs.read_json(sweep_dir / "rerun-again.json") or {})["counts"]["ok"] == 1
    assert (runs.read_json(sweep_dir / ray_backend.DRIVER_STATE) or {})["launch_id"] != again["session"].split("/")[1]

    # the cluster is gone: refused before any session starts, naming the run and what to do
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    record = json.loads((sweep_dir / "launch.json").read_text())
    record["options"]["ray_address"] = dead
    runs.write_json_atomic(sweep_dir / "launch.json", record)
    r = run_cli(capsys, "rerun", "again", "--force")
    assert r.code == 1
    assert f"again: this run was launched on Ray, and no Ray cluster answers at {dead}" in r.err
    assert "sweepctl rerun --force again" in r.err
    assert pane_done(tmux_socket, "rerun-again") == done  # the finished pane was left as it was


def test_launch_host_backend_ray_runs_the_driver_on_the_pod(
        workspace: Workspace, ssh_pod, ray_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """What `ray up` tells the user to type: the CSV goes to the pod, whose launch starts the driver there."""
    ws = workspace
    pod_out = tmp_path / "pod-out"
    pod_socket = os.path.join(tempfile.mkdtemp(prefix="swpod", dir="/tmp"), "sock")
    ssh_pod.set_server_env({
        "SWEEPCTL_OUT_ROOT": str(pod_out), "SWEEPCTL_DATA_DIR": str(ws.data_dir), "SWEEPCTL_TMUX_SOCKET": pod_socket,
        "SWEEPCTL_VOLUME": str(tmp_path / "no-volume"), "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1",
        "PATH": f"{FAKE_BIN}:{Path(sys.executable).parent}:/usr/bin:/bin", "FAKE_NVIDIA_SMI_ROWS": ""})
    monkeypatch.setenv("SWEEPCTL_REMOTE_BIN", ssh_pod.remote_bin)
    try:
        csv = ws.csv([("p0", ""), ("p1", "")])
        r = run_cli(capsys, "launch", str(csv), "--backend", "ray", "--ray-address", ray_address, "--host", "pod",
                    "--no-wandb")
        assert r.code == 0, r.out + r.err
        assert "started sweep-ray" in r.out, r.out
        done = wait_until(lambda: pane_done(pod_socket, ray_backend.DRIVER_SESSION), timeout=RUN_TIMEOUT,
                          what="the pod's driver to finish",
                          explain=lambda: panes(pod_socket))
        assert "sweep-ray done: 2 ok, 0 failed" in done
        assert all((runs.read_json(pod_out / i / runs.SUMMARY) or {}).get("ok") for i in ("p0", "p1"))
        assert not ws.out_root.exists()  # the laptop side wrote nothing
        assert json.loads((pod_out / ".sweeps/sweep/launch.json").read_text())["pod"] == "pod"

        # Launched again from the laptop: the pod's record of the sweep says these rows are its own.
        r = run_cli(capsys, "launch", str(csv), "--backend", "ray", "--ray-address", ray_address, "--host", "pod",
                    "--no-wandb", "--dry-run")
        assert r.code == 0, r.out + r.err
        assert "2 runs: 2 skip" in r.out, r.out

        r = run_cli(capsys, "launch", str(csv), "--backend", "ray", "--host", "pod", "--host", "pod2")
        assert r.code == 1 and "--backend ray runs its driver on one pod; got 2: pod, pod2" in r.err
    finally:
        kill_tmux_server(pod_socket)
        shutil.rmtree(os.path.dirname(pod_socket), ignore_errors=True)


def test_stop_cancels_the_rows_and_the_trainers_write_interrupted(
        workspace: Workspace, tmux_socket: str, ray_address: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    long = "max_iters=100000 lr_decay_iters=100000 eval_interval=50 log_interval=50"
    csv = ws.csv([("long0", long), ("long1", long)])
    assert run_cli(capsys, "launch", str(csv), "--backend", "ray", "--ray-address", ray_address).code == 0

    def training() -> bool:  # both trainers in their loops: each has logged a metrics row
        return all((ws.run_dir(i) / runs.METRICS).exists() and (ws.run_dir(i) / runs.METRICS).stat().st_size
                   for i in ("long0", "long1"))

    wait_for(training, "both trainers to be training")
    r = run_cli(capsys, "stop", "--all")
    assert r.code == 0, r.err
    assert "sent SIGINT to runner pid" in r.out and "(sweep-ray)" in r.out
    done = wait_for(lambda: pane_done(tmux_socket, ray_backend.DRIVER_SESSION), "the driver to end")
    assert "sweep-ray done (stopped): 0 ok, 0 failed, 2 interrupted" in done
    for run_id in ("long0", "long1"):
        summary = runs.read_json(ws.run_dir(run_id) / runs.SUMMARY) or {}
        assert summary["status"] == "interrupted", summary
        child = owner(ws, run_id)["child_pid"]
        wait_until(lambda c=child: not runs.pid_alive(c), timeout=30, what=f"{run_id}'s trainer to exit")


def test_a_row_no_node_can_hold_is_refused_up_front(
        workspace: Workspace, ray_address: str, capsys: pytest.CaptureFixture[str]) -> None:
    csv = workspace.root / "big.csv"
    csv.write_text(f'run_id,config,seed,overrides,notes,gpus\nsmall,base,1,"{TINY}",,1\nhuge,base,2,"{TINY}",,8\n')
    r = run_cli(capsys, "launch", str(csv), "--backend", "ray", "--ray-address", ray_address)
    assert r.code == 1
    assert "1 row(s) need more GPUs than any node has, e.g. huge asks for 8" in r.err
    assert not (workspace.out_root / ".sweeps").exists()  # refused before writing anything

    r = run_cli(capsys, "launch", str(csv), "--backend", "ray", "--shards", "2", "--fail-fast")
    assert r.code == 1 and "--shards, --fail-fast place rows on tmux shards" in r.err
