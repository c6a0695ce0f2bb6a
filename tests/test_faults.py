"""Faults a pod really has (issue 16), each reproduced for real: a full tmpfs, a read-only bind mount,
NUL bytes in a CSV, symlinks, garbage heartbeats, stray run_ids, two launches on two tmux servers.

None of them may kill a shard or make sweepctl read or write outside the out-root.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import run_cli
from sweep_helpers import Workspace, kill_tmux_server, panes, wait_until
from sweepctl.cli.render import status as status_view
from sweepctl.runner import RunnerOptions, ShardRunner
from sweepctl.state import runs
from sweepctl.views import status
from test_runner import FAKE_TRAINER, make_plan, run_shard
from volumes import fill, free_bytes, read_only_bind, small_tmpfs

pytest_plugins = ["sweep_fixtures"]

RUN_TIMEOUT = 240  # seconds for a handful of tiny runs on a busy 2-core machine


@pytest.fixture()
def fake(tmp_path: Path) -> Path:
    path = tmp_path / "fake_trainer.py"
    path.write_text(FAKE_TRAINER)
    return path


def on_cpu(plan):
    """The plan with every row on the CPU, so a rerun of it needs no GPU."""
    return plan.model_copy(update={"runs": [r.model_copy(update={"config": r.config.model_copy(update={"device": "cpu"})})
                                            for r in plan.runs]})


def plain(pane: str) -> str:
    """A pane with its clock times and free-space figures made stable."""
    pane = re.sub(r"\[sweepctl (\S+) \d\d:\d\d:\d\d\]", r"[sweepctl \1 T]", pane)
    pane = re.sub(r"runner pid \d+", "runner pid P", pane)
    pane = re.sub(r"\([\d,.]+ MiB free\)", "(N MiB free)", pane)
    return re.sub(r"in \d+ s", "in S s", pane)


def temp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name)


def wait_for(predicate, what: str, timeout: float = RUN_TIMEOUT):
    return wait_until(predicate, timeout=timeout, what=what, explain=lambda: panes(os.environ["SWEEPCTL_TMUX_SOCKET"]))


# --- 1. a full volume ----------------------------------------------------------------------------

@contextlib.contextmanager
def paused_between_saves(run_dir: Path) -> Iterator[None]:
    """SIGSTOP the run's trainer at a moment when it holds no partial checkpoint; SIGCONT after."""
    pid = runs.read_json(run_dir / runs.HEARTBEAT)["pid"]
    deadline = time.monotonic() + 60
    while True:
        os.kill(pid, signal.SIGSTOP)
        if not list(run_dir.glob(".ckpt.pt.tmp-*")):
            break
        os.kill(pid, signal.SIGCONT)  # mid-save: let it finish and try again
        assert time.monotonic() < deadline, f"trainer {pid} was always saving"
        time.sleep(0.05)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_full_volume_fails_the_row_not_the_shard_and_retry_failed_resumes_from_the_last_checkpoint(
        workspace: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """fallocate fills a small tmpfs while a run checkpoints: the trainer's save fails, its partial
    checkpoint goes, the summary says `disk`, the next row still runs, status says so, and once the
    space is back `--retry-failed` resumes from the last good checkpoint."""
    ws = workspace
    # launch's pre-flight wants 1 GiB free; a tmpfs that big would take that much memory once filled
    monkeypatch.setattr("sweepctl.launch.MIN_FREE_BYTES", 1 << 20)
    wide = "n_layer=2 n_embd=128"  # a checkpoint of about 5 MB
    with small_tmpfs(ws.root / "vol", size_mib=16) as vol:
        ws.out_root = vol / "out"
        monkeypatch.setenv("SWEEPCTL_OUT_ROOT", str(ws.out_root))
        csv = ws.csv([("big", f"{wide} max_iters=400 lr_decay_iters=400 eval_interval=10 log_interval=10"),
                      ("after", wide)])
        assert run_cli(capsys, "launch", str(csv), "--shards", "1").code == 0
        big = ws.run_dir("big")
        wait_for(lambda: "eval iter 20:" in _text(big / runs.STDOUT_LOG), "big's checkpoint at iter 10")
        assert (big / runs.CHECKPOINT).stat().st_size > 2 << 20
        # Filled while big's trainer is stopped between two saves: a partial checkpoint present now
        # would be removed when its save fails, and give the next row room for a whole one.
        with paused_between_saves(big):
            filler = fill(vol, leave_bytes=1 << 20)  # start files, logs and a summary fit; a checkpoint does not

        done = wait_for(lambda: all((ws.run_dir(r) / runs.SUMMARY).exists() for r in ("big", "after")),
                        "both rows to end")
        assert done
        for run_id in ("big", "after"):
            summary = runs.read_json(ws.run_dir(run_id) / runs.SUMMARY)
            assert (summary["ok"], summary["status"], summary["error_class"]) == (False, "failed", "disk"), summary
            assert re.fullmatch(rf"No space left on device writing {ws.run_dir(run_id)}/\S+ \([\d,.]+ MiB free\)",
                                summary["error"]), summary["error"]
        assert temp_files(ws.out_root) == []  # no partial checkpoint or JSON keeps the volume full
        shard_log = ws.out_root / ".sweeps" / "sweep" / "shard-0.log"
        wait_for(lambda: "sweep-0 done" in _text(shard_log), "the runner's last line")
        log = shard_log.read_text()
        assert "unexpected" not in log and "Traceback" not in log
        assert plain(log.splitlines()[-1]) == \
            "[sweepctl sweep-0 T] sweep-0 done: 0 ok, 2 failed, 0 interrupted, 0 skipped in S s; failed: big, after"

        model = status.collect(ws.out_root, with_gpus=False, with_sessions=False)
        assert (model["disks"][0]["volume"], model["disks"][0]["full"]) == (str(vol), True)
        text = render_text(model)
        assert f"no space left on {vol} (" in text
        assert (f"2 run(s) failed writing to a full or read-only volume (big, after); once there is space, they "
                f"resume from their last checkpoint: sweepctl launch {csv} --out-root {ws.out_root} --retry-failed"
                in text)

        import torch

        last_good = torch.load(big / runs.CHECKPOINT, weights_only=False)["iter_num"]
        assert last_good >= 10
        filler.unlink()
        from sweepctl.pod.tmux import Tmux

        # its last line is written just before it exits: a relaunch while the pane lives is refused
        wait_for(lambda: not ((s := Tmux(os.environ["SWEEPCTL_TMUX_SOCKET"]).session("sweep-0")) and s.alive),
                 "sweep-0's runner to exit")
        r = run_cli(capsys, "launch", str(csv), "--shards", "1", "--retry-failed")
        assert r.code == 0, r.err
        wait_for(lambda: (runs.read_json(big / runs.SUMMARY) or {}).get("ok") is True, "big to finish on retry")
        resumed = runs.read_json(big / runs.SUMMARY)
        assert (resumed["iter_num"], resumed["resumed_from_iter"]) == (400, last_good)
        assert "resuming from ckpt.pt" in (ws.out_root / ".sweeps" / "sweep" / "shard-0.log").read_text()
        wait_for(lambda: (runs.read_json(ws.run_dir("after") / runs.SUMMARY) or {}).get("ok") is True, "after")
        kill_tmux_server(os.environ["SWEEPCTL_TMUX_SOCKET"])
        ws.reap()


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def render_text(model: dict) -> str:
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=400, color_system=None).print(status_view.render(model))
    return out.getvalue()


def test_a_volume_too_full_for_even_a_summary_stops_the_shard_saying_why(tmp_path: Path, fake: Path) -> None:
    with small_tmpfs(tmp_path / "vol", size_mib=1) as vol:
        plan = make_plan(vol, fake, {"a": "ok", "b": "ok"})
        sweep_dir = tmp_path / "sweeps"  # the shard's own log on another volume: the pane and log say why
        sweep_dir.mkdir()
        fill(vol, leave_bytes=0)
        pane = io.BytesIO()
        runner = ShardRunner(plan, RunnerOptions(sweep_dir=sweep_dir, shard=0, devices="0", session="sweep-0"),
                             pane=pane)
        assert runner.run() == 1
        a = vol / "out" / "a"
        assert plain(pane.getvalue().decode()) == (
            "[sweepctl sweep-0 T] sweep t: runner pid P, CUDA_VISIBLE_DEVICES=0, schedule static\n"
            "[sweepctl sweep-0 T] a: attempt 1, run (pending)\n"
            f"[sweepctl sweep-0 T] a: failed (disk: No space left on device writing {a}/runner.json (N MiB free))\n"
            "[sweepctl sweep-0 T] stopping this shard: No space left on device writing "
            f"{a}/summary.json (N MiB free); its other rows stay as they are. Free space or make the volume "
            "writable, then: sweepctl launch SWEEP.csv --retry-failed\n"
            "[sweepctl sweep-0 T] sweep-0 done: 0 ok, 1 failed, 0 interrupted, 0 skipped in S s; failed: a\n")
        assert runs.read_json(sweep_dir / "shard-0.json")["stopped_by"].startswith("No space left on device writing")
        assert temp_files(vol) == []


# --- 2. a read-only volume -----------------------------------------------------------------------

def test_a_runner_on_a_read_only_volume_stops_its_shard_saying_why(tmp_path: Path, fake: Path) -> None:
    plan = make_plan(tmp_path, fake, {"a": "ok", "b": "ok"})
    out = tmp_path / "out"
    (out / ".sweeps" / "t").mkdir(parents=True)
    with read_only_bind(out):
        pane = io.BytesIO()
        runner = ShardRunner(plan, RunnerOptions(sweep_dir=out / ".sweeps" / "t", shard=0, devices="0",
                                                 session="sweep-0"), pane=pane)
        assert runner.run() == 1
        log = out / ".sweeps" / "t" / "shard-0"
        assert plain(pane.getvalue().decode()) == (
            "[sweepctl sweep-0 T] sweep t: runner pid P, CUDA_VISIBLE_DEVICES=0, schedule static\n"
            f"[sweepctl sweep-0 T] stopping this shard: Read-only file system writing {log}.log (N MiB free); its "
            "other rows stay as they are. Free space or make the volume writable, then: sweepctl launch SWEEP.csv "
            "--retry-failed\n"
            f"[sweepctl sweep-0 T] cannot write shard-0.json: Read-only file system writing {log}.json "
            "(N MiB free)\n"
            "[sweepctl sweep-0 T] sweep-0 done: 0 ok, 0 failed, 0 interrupted, 0 skipped in S s\n")
    assert not (out / "a").exists()


def test_rerun_and_launch_refuse_a_read_only_out_root_up_front(
        workspace: Workspace, capsys: pytest.CaptureFixture[str], fake: Path) -> None:
    ws = workspace
    plan = on_cpu(make_plan(ws.root, fake, {"a": "ok"}))
    sweep_dir = ws.out_root / ".sweeps" / "t"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "plan.json").write_text(plan.model_dump_json())
    (ws.out_root / "a").mkdir()
    csv = ws.csv([("a", "")], name="t")
    with read_only_bind(ws.out_root):
        r = run_cli(capsys, "rerun", "a", "--force")
        assert r.code == 1 and r.out == ""
        assert r.err.strip() == (
            f"error: a: {ws.out_root} is not writable (a read-only volume, or no write permission): nothing could "
            f"be saved — remount it read-write (mount -o remount,rw {ws.out_root}), then: sweepctl rerun a")
        r = run_cli(capsys, "launch", str(csv), "--shards", "1")
        assert r.code == 1
        assert f"pre-flight failed: out-root {ws.out_root}: {ws.out_root} is not writable" in r.err
        model = status.collect(ws.out_root, with_gpus=False, with_sessions=False)
        assert (model["disks"][0]["volume"], model["disks"][0]["read_only"]) == (str(ws.out_root), True)
        disk_line = next(line for line in render_text(model).splitlines() if line.startswith("disk:"))
        assert re.fullmatch(rf"disk: {ws.out_root} is read-only \([\d,.]+ GiB free of [\d,]+ GiB\): no run can save "
                            rf"anything; remount it read-write \(mount -o remount,rw {ws.out_root}\)", disk_line)
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["plan.json"]
    assert not (ws.out_root / "a" / runs.SUMMARY).exists()


# --- 3. bad bytes --------------------------------------------------------------------------------

def test_validate_refuses_nul_and_control_characters_in_every_column(
        workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    csv = workspace.root / "bad.csv"
    csv.write_bytes(b"run_id,config,seed,overrides,notes\n"
                    b"ok-row,base,1,device='cpu',\n"
                    b"nul-row,base,2,\"device='cpu' wandb_project='a\x00b'\",\n"
                    b"esc-row,base,3,device='cpu',\"see \x1b[2J here\"\n"
                    b"r\x07,base,4,,\n")
    r = run_cli(capsys, "validate", str(csv))
    assert r.code == 1 and r.out == ""
    assert r.err.splitlines() == [
        f"error: {csv}:3: column 'overrides' has a NUL byte at character 30: no command line can carry it; "
        f"remove NULs: tr -d '\\000' < {csv} > fixed.csv",
        f"error: {csv}:4: column 'notes' has control character U+001B at character 5: no command line can carry "
        "it; delete it from the CSV",
        f"error: {csv}:5: column 'run_id' has control character U+0007 at character 2: no command line can carry "
        "it; delete it from the CSV",
        f"error: {csv}:5: run_id 'r\\x07' is not a safe directory name (letters, digits, '.', '_', '-'; starts "
        "with a letter or digit)",
        "4 problem(s); nothing was started.",
    ]


def test_a_row_whose_argument_holds_a_nul_byte_fails_alone_and_the_next_row_runs(tmp_path: Path, fake: Path) -> None:
    """A plan.json written before validate knew better: the NUL reaches the runner, not the shard's end."""
    plan = make_plan(tmp_path, fake, {"bad": "ok", "good": "ok"})
    bad = plan.run("bad")
    plan = plan.model_copy(update={"runs": [bad.model_copy(update={"argv": [*bad.argv, "wandb_project=a\x00b"]}),
                                            plan.run("good")]})
    _runner, code, pane = run_shard(tmp_path, plan)
    assert code == 1
    summary = runs.read_json(tmp_path / "out" / "bad" / runs.SUMMARY)
    assert (summary["ok"], summary["error_class"], summary["error"]) == (
        False, "nonzero_exit", "could not start the trainer: embedded null byte")
    assert runs.read_json(tmp_path / "out" / "good" / runs.SUMMARY)["ok"] is True
    assert "sweep-0 done: 1 ok, 1 failed, 0 interrupted, 0 skipped" in pane


def test_a_row_that_raises_anywhere_ends_with_a_summary_and_the_shard_goes_on(
        tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = make_plan(tmp_path, fake, {"boom": "ok", "fine": "ok"})
    real = ShardRunner._prepare

    def prepare(self: ShardRunner, directory: Path, action: str) -> None:
        if directory.name == "boom":
            raise RuntimeError("a bug in preparing the row")
        real(self, directory, action)

    monkeypatch.setattr(ShardRunner, "_prepare", prepare)
    _runner, code, pane = run_shard(tmp_path, plan)
    summary = runs.read_json(tmp_path / "out" / "boom" / runs.SUMMARY)
    assert (summary["error_class"], summary["error"]) == ("exception", "RuntimeError: a bug in preparing the row")
    assert runs.read_json(tmp_path / "out" / "fine" / runs.SUMMARY)["ok"] is True
    assert code == 1 and "boom: failed (exception: RuntimeError: a bug in preparing the row)" in pane


def test_validate_warns_about_a_secret_in_a_cell_without_echoing_it(
        workspace: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_API_TOKEN", "s3cr3t-value-42")
    csv = workspace.root / "s.csv"
    csv.write_text("run_id,config,seed,overrides,notes\nr1,base,1,device='cpu',key s3cr3t-value-42\n")
    r = run_cli(capsys, "validate", str(csv))
    assert r.code == 0
    assert "s3cr3t-value-42" not in r.out + r.err
    assert (f"{csv}:2: warning: column 'notes' holds the value of $MY_API_TOKEN; plan.json and runner.json would "
            "keep it. Pass it through the environment instead of the CSV") in r.out + r.err


# --- 4. stray run_ids ----------------------------------------------------------------------------

@pytest.mark.parametrize("typed", ["../x", "/abs/dir", "..", "a/b", ".hidden"])
def test_commands_that_take_a_run_id_take_only_a_run_id(
        workspace: Workspace, capsys: pytest.CaptureFixture[str], typed: str) -> None:
    outside = workspace.root / "x"
    outside.mkdir()
    (outside / runs.STDOUT_LOG).write_text("secret outside the out-root\n")
    workspace.out_root.mkdir()
    typed = typed.replace("/abs/dir", str(outside))
    expected = (f"error: {typed!r} is not a run_id (letters, digits, '.', '_', '-', starting with a letter or "
                "digit, at most 128 characters) — see the run_ids with: sweepctl status")
    for argv in (["logs", typed], ["logs", typed, "-f"], ["rerun", typed, "--force"]):
        r = run_cli(capsys, *argv)
        assert (r.code, r.out, r.err.strip()) == (1, "", expected), argv
    r = run_cli(capsys, "attach", typed)
    assert r.code == 1 and r.err.startswith(f"error: {typed!r} is not a run_id")


def test_logs_follow_of_a_run_no_sweep_knows_is_refused_with_a_did_you_mean(
        workspace: Workspace, capsys: pytest.CaptureFixture[str], fake: Path) -> None:
    ws = workspace
    plan = make_plan(ws.root, fake, {"fineweb-mhc-6l-s1337": "ok"})
    (ws.out_root / ".sweeps" / "t").mkdir(parents=True)
    (ws.out_root / ".sweeps" / "t" / "plan.json").write_text(plan.model_dump_json())
    r = run_cli(capsys, "logs", "fineweb-mhc-6l-s1338", "-f")
    assert r.code == 1 and r.out == ""
    assert r.err.strip() == (f"error: fineweb-mhc-6l-s1338: no run fineweb-mhc-6l-s1338 in {ws.out_root}: no launched "
                             "sweep plans it and it has no directory — did you mean fineweb-mhc-6l-s1337? sweepctl "
                             "logs fineweb-mhc-6l-s1337 -f")
    r = run_cli(capsys, "logs", "fineweb-mhc-6l-s1337")
    assert r.code == 1
    assert r.err.strip() == (f"error: fineweb-mhc-6l-s1337: no stdout.log in {ws.out_root / 'fineweb-mhc-6l-s1337'} yet"
                             " — it has not started; wait for it with: sweepctl logs fineweb-mhc-6l-s1337 -f")


# --- 5. symlinks ---------------------------------------------------------------------------------

def test_a_symlinked_run_directory_is_never_written_through(
        workspace: Workspace, capsys: pytest.CaptureFixture[str], fake: Path) -> None:
    ws = workspace
    elsewhere = ws.root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / runs.SUMMARY).write_text('{"ok": true}')
    (elsewhere / runs.STDOUT_LOG).write_text("someone else's log\n")
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    plan = on_cpu(make_plan(ws.root, fake, {"linked": "ok", "real": "ok"}))
    sweep_dir = ws.out_root / ".sweeps" / "t"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "plan.json").write_text(plan.model_dump_json())
    link = ws.out_root / "linked"
    link.symlink_to(elsewhere)

    r = run_cli(capsys, "rerun", "linked", "--force")
    assert (r.code, r.out) == (1, "")
    assert r.err.strip() == f"error: linked: run directory {link} is a symlink; sweepctl reads and writes only real " \
                            f"directories in the out-root — see the run_ids with: sweepctl status --out-root {ws.out_root}"
    r = run_cli(capsys, "logs", "linked")
    assert r.code == 1 and "someone else's log" not in r.out and f"run directory {link} is a symlink" in r.err
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before


def test_a_runner_never_writes_through_a_symlinked_run_directory(tmp_path: Path, fake: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / runs.SUMMARY).write_text('{"ok": true}')
    (elsewhere / runs.STDOUT_LOG).write_text("someone else's log\n")
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    plan = make_plan(tmp_path, fake, {"linked": "ok", "real": "ok"})
    sweep_dir = tmp_path / "out" / ".sweeps" / "t"
    sweep_dir.mkdir(parents=True)
    link = tmp_path / "out" / "linked"
    link.symlink_to(elsewhere)
    runner = ShardRunner(plan, RunnerOptions(sweep_dir=sweep_dir, shard=0, devices="0", session="sweep-0",
                                             force=True, launched_at=time.time() + 5), pane=io.BytesIO())
    assert runner.run() == 1
    assert [(o.run_id, o.result) for o in runner.outcomes] == [("linked", "failed"), ("real", "ok")]
    assert runner.outcomes[0].detail == (f"run directory {link} is a symlink; sweepctl never writes through one "
                                         "(make it a real directory)")
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before


def test_a_symlinked_file_in_a_run_directory_is_refused_by_name(tmp_path: Path, fake: Path) -> None:
    plan = make_plan(tmp_path, fake, {"a": "ok"})
    d = tmp_path / "out" / "a"
    d.mkdir(parents=True)
    target = tmp_path / "precious.log"
    target.write_text("not sweepctl's\n")
    (d / runs.STDOUT_LOG).symlink_to(target)
    runner, code, _pane = run_shard(tmp_path, plan)
    assert code == 1 and target.read_text() == "not sweepctl's\n"
    assert runner.outcomes[0].detail == (f"{d}/stdout.log is a symlink; sweepctl never writes through one (move it "
                                         f"away: mv {d}/stdout.log {d}/stdout.log.link)")


# --- 6. an unreadable heartbeat beside a checkpoint -------------------------------------------------

@pytest.mark.parametrize("heartbeat", [None, b"\x00\x00garbage", b"[1, 2]", b'{"ts": "yesterday", "pid": "x"}'])
def test_a_checkpoint_with_a_missing_or_garbage_heartbeat_is_stale_and_resumed(
        tmp_path: Path, fake: Path, heartbeat: bytes | None) -> None:
    plan = make_plan(tmp_path, fake, {"a": "ok"})
    d = tmp_path / "out" / "a"
    d.mkdir(parents=True)
    (d / runs.CHECKPOINT).write_bytes(b"a checkpoint")
    if heartbeat is not None:
        (d / runs.HEARTBEAT).write_bytes(heartbeat)
    view = runs.read_run(d, stale_after_s=120)
    assert view.state == "stale"
    _runner, code, _pane = run_shard(tmp_path, plan)
    assert code == 0
    assert json.loads((d / "seen.json").read_text())["argv"][-1] == "resume=True"
    assert (d / runs.CHECKPOINT).read_bytes() == b"a checkpoint"  # kept, not moved aside


# --- 7. two launches, one stop ---------------------------------------------------------------------

@pytest.fixture()
def second_tmux() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="swtmux2", dir="/tmp")
    socket = os.path.join(d, "sock")
    yield socket
    kill_tmux_server(socket)
    shutil.rmtree(d, ignore_errors=True)


def test_stop_all_stops_the_runners_of_every_launch_and_a_refused_launch_writes_nothing(
        workspace: Workspace, tmux_socket: str, second_tmux: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace
    endless = "max_iters=1000000 lr_decay_iters=1000000 eval_interval=100000 heartbeat_interval_s=0.5"
    csv = ws.csv([("first", endless), ("second", endless)])

    def training(run_id: str) -> bool:
        return (runs.read_json(ws.run_dir(run_id) / runs.HEARTBEAT) or {}).get("phase") == "training"

    assert run_cli(capsys, "launch", str(csv), "--shards", "1").code == 0
    wait_for(lambda: training("first"), "the first launch's trainer")
    monkeypatch.setenv("SWEEPCTL_TMUX_SOCKET", second_tmux)  # the same sweep, from another tmux server
    assert run_cli(capsys, "launch", str(csv), "--shards", "1").code == 0
    wait_for(lambda: training("second"), "the second launch's trainer")
    runners = {r: runs.read_json(ws.run_dir(r) / runs.OWNER)["runner_pid"] for r in ("first", "second")}
    assert runners["first"] != runners["second"]
    launch_json = ws.out_root / ".sweeps" / "sweep" / "launch.json"
    recorded = launch_json.read_bytes()

    r = run_cli(capsys, "launch", str(csv), "--shards", "1", "--force")  # refused: both rows are running
    assert r.code == 2 and "--force would restart 2 running run(s): first, second" in r.err
    assert launch_json.read_bytes() == recorded

    r = run_cli(capsys, "stop", "--all", "--json")
    assert r.code == 0, r.err
    assert sorted(s["pid"] for s in json.loads(r.out)["sent"] if s["kind"] == "runner") == sorted(runners.values())
    for run_id in ("first", "second"):
        summary = wait_until(lambda r=run_id: runs.read_json(ws.run_dir(r) / runs.SUMMARY), timeout=RUN_TIMEOUT,
                             what=f"{run_id}'s interrupted summary")
        assert (summary["status"], summary["error_class"]) == ("interrupted", "signal")
    for pid in runners.values():
        wait_until(lambda p=pid: not runs.pid_alive(p), timeout=RUN_TIMEOUT, what=f"runner {pid} to end")
    r = run_cli(capsys, "stop", "--all")
    assert (r.code, r.out.strip()) == (0, "nothing to stop: no live runner")


def test_the_tests_own_volume_helpers_leave_no_mount(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "vol", size_mib=1) as vol:
        assert os.path.ismount(vol) and free_bytes(vol) > 0
    assert not os.path.ismount(tmp_path / "vol")
    assert subprocess.run(["findmnt", str(tmp_path / "vol")], capture_output=True).returncode != 0
