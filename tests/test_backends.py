"""The backend seam: engines are chosen by name in one registry, and a new one is one module plus a
`register` call. The toy backend below is written as a file on sys.path, as a user would, registered,
and then driven through the real `sweepctl launch --backend toy`, `status`, `stop` and `rerun`: its
rows run in one background runner process (no tmux), and its rerun in a real tmux session."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cli import run_cli
from sweep_helpers import Workspace, panes, wait_until
from sweepctl import backends
from sweepctl.errors import SweepctlError
from sweepctl.state import runs

pytest_plugins = ["sweep_fixtures"]

TOY = '''
"""A toy engine: every row runs in one background process on this machine, without tmux."""

import subprocess
import sys
import time

from sweepctl import launch
from sweepctl.backends.base import RerunCommand, Started
from sweepctl.pod.gpus import GpuQuery

SESSION = "toy-0"  # the runner's name in its state file (toy-0.json), which `sweepctl stop` reads


class ToyBackend:
    name = "toy"
    places_rows = True
    engine_flags = ()

    def options(self, request):
        return launch.LaunchOptions(shards=1, schedule="dynamic", backend=self.name, **request.common)

    def preflight(self, csv_path, options, settings):
        def here(plan, out_root):  # no GPUs, no tmux: only the data and the out-root matter
            return GpuQuery([]), launch.storage_checks(plan, out_root)

        return launch.prepare(csv_path, options, settings, checks=here)

    def sessions(self, preview):
        return []

    def refuse(self, preview):
        launch.refuse_if_needed(preview)

    def start(self, preview):
        self.refuse(preview)
        if not preview.todo:
            return Started([])
        launched_at = time.time()
        launch.write_manifest(preview, launch_id="toy", launched_at=launched_at, shards=[])
        argv = [sys.executable, "-m", "sweepctl", "runner", str(preview.sweep_dir), "--session", SESSION,
                "--launched-at", repr(launched_at), "--stale-after", repr(preview.settings.stale_after_s)]
        for row in preview.todo:
            argv += ["--only", row.run_id]
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        return Started([], notes=[f"toy: {len(preview.todo)} row(s) in runner pid {child.pid}"],
                       record={"toy_pid": child.pid})

    def rerun(self, plan, run_id, *, sweep_dir, launched, session, settings, force, gpu):
        argv = [sys.executable, "-m", "sweepctl", "runner", str(sweep_dir), "--only", run_id, "--session", session,
                "--launched-at", repr(time.time()), "--force"]
        return RerunCommand(argv, devices="toy")


BACKEND = ToyBackend()
'''


@pytest.fixture()
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The toy backend, one module in a folder on sys.path, and its one register call."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toy_backend.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(folder))
    backends.register("toy", "toy_backend")
    yield
    backends.unregister("toy")
    monkeypatch.delitem(__import__("sys").modules, "toy_backend", raising=False)


def test_the_built_in_backends_and_an_unknown_name() -> None:
    assert {"tmux", "ray", "slurm"} <= set(backends.names())
    assert [backends.get(n).places_rows for n in ("tmux", "ray", "slurm")] == [False, True, True]
    assert backends.of_launch({}).name == "tmux"  # a launch.json from before backends were named
    assert backends.of_launch({"options": {"backend": "ray"}}).name == "ray"
    with pytest.raises(SweepctlError) as e:
        backends.get("kubernetes")
    assert e.value.message == f"--backend must be one of {', '.join(backends.names())}, got 'kubernetes'"
    with pytest.raises(SweepctlError) as e:
        backends.get("rya")
    assert e.value.hint == "did you mean --backend ray?"


def test_a_name_is_registered_once() -> None:
    with pytest.raises(SweepctlError) as e:
        backends.register("tmux", "somewhere.else")
    assert e.value.message == "backend 'tmux' is already sweepctl.backends.tmux"


def test_flags_the_chosen_backend_would_ignore_are_refused(workspace: Workspace,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    csv = str(workspace.csv([("a", "")]))
    r = run_cli(capsys, "launch", csv, "--ray-address", "10.0.0.5:6379", "--dry-run")
    assert (r.code, r.out) == (1, "")
    assert r.err == ("error: --ray-address means nothing to --backend tmux — drop --ray-address, or pass "
                     "--backend ray\n")
    r = run_cli(capsys, "launch", csv, "--backend", "slurm", "--shards", "2", "--runs-per-gpu", "2")
    assert (r.code, r.out) == (1, "")
    assert r.err == ("error: --shards, --runs-per-gpu place rows on tmux shards; with --backend slurm, slurm places "
                     "each row on a node with the GPUs it asks for (the CSV's gpus column) — drop --shards, "
                     "--runs-per-gpu\n")
    assert not workspace.out_root.exists()


def test_launch_backend_slurm_writes_the_job_array(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    """Any registered backend starts from `launch`: Slurm's start is the job script to submit."""
    ws = workspace
    csv = ws.csv([("a", ""), ("b", "")], name="grid")
    r = run_cli(capsys, "launch", str(csv), "--backend", "slurm", "--json")
    assert r.code == 0, r.err
    model = json.loads(r.out)
    sweep_dir = ws.out_root / ".sweeps" / "grid"
    script = sweep_dir / "grid.sbatch"
    assert [c["what"].split()[0] for c in model["checks"]] == ["data", "out-root"]  # not this machine's GPUs, tmux
    assert (model["backend"], model["started"], model["script"]) == ("slurm", [], str(script))
    assert model["notes"] == [f"wrote {script}: 2 array tasks (--array=0-1, --gres=gpu:1); manifest in {sweep_dir}",
                              f"submit: sbatch {script}"]
    assert model["status_command"] == f"sweepctl status --out-root {ws.out_root} --sweep grid"
    assert json.loads((sweep_dir / "launch.json").read_text())["options"]["backend"] == "slurm"


def test_a_toy_backend_is_one_module_and_one_register_call(
        toy: None, workspace: Workspace, tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    long = "max_iters=100000 lr_decay_iters=100000 eval_interval=50 log_interval=50"
    csv = ws.csv([("a", long), ("b", "")])
    assert "toy" in backends.names()
    r = run_cli(capsys, "launch", str(csv), "--backend", "tyo")
    assert r.code == 1 and r.err.endswith(" got 'tyo' — did you mean --backend toy?\n"), r.err

    r = run_cli(capsys, "launch", str(csv), "--backend", "toy", "--no-wandb")
    assert r.code == 0, r.out + r.err
    sweep_dir = ws.out_root / ".sweeps" / "sweep"
    record = json.loads((sweep_dir / "launch.json").read_text())
    lines = r.out.splitlines()
    note = next(line for line in lines if line.startswith("toy: "))
    pid = int(note.rsplit(" ", 1)[1])
    assert note == f"toy: 2 row(s) in runner pid {pid}"
    assert lines[-1] == note  # no attach line: nothing started in tmux; no status hint: the toy gave none
    assert "2 runs: 2 run" in r.out and record["options"]["backend"] == "toy"
    try:
        metrics = ws.run_dir("a") / runs.METRICS
        wait_until(lambda: metrics.exists() and metrics.stat().st_size > 0, timeout=240,
                   what="row a to train in the toy's runner")
        r = run_cli(capsys, "status", "--json")
        status = json.loads(r.out)
        assert {x["run_id"]: x["state"] for x in status["runs"]} == {"a": "running", "b": "pending"}

        r = run_cli(capsys, "stop", "--all")
        assert r.code == 0, r.err
        assert r.out.splitlines()[0] == f"sent SIGINT to runner pid {pid} (toy-0)"
        wait_until(lambda: not runs.pid_alive(pid), timeout=120, what="the toy's runner to end")
        assert (runs.read_json(ws.run_dir("a") / runs.SUMMARY) or {})["status"] == "interrupted"
        assert not ws.run_dir("b").exists()  # a stopped runner starts no new row

        r = run_cli(capsys, "rerun", "b")
        assert r.code == 0, r.err
        assert r.out.splitlines()[0] == ("started rerun-b (pending before): CUDA_VISIBLE_DEVICES=toy; its previous "
                                         "files are kept as .bak-<time>")
        wait_until(lambda: (runs.read_json(ws.run_dir("b") / runs.SUMMARY) or {}).get("ok") is True, timeout=240,
                   what="the toy's rerun of b in tmux session rerun-b", explain=lambda: panes(tmux_socket))
        r = run_cli(capsys, "status", "--json")
        assert {x["run_id"]: x["state"] for x in json.loads(r.out)["runs"]} == {"a": "failed", "b": "ok"}
    finally:
        if runs.pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_an_installed_package_adds_a_backend_with_an_entry_point(
        workspace: Workspace, tmp_path: Path) -> None:
    """The command line as a user runs it, in a fresh process: the toy module and a package that
    declares it (`[project.entry-points."sweepctl.backends"] toy = "toy_backend"`, what pip writes
    as entry_points.txt) on the path, and nothing registered by hand."""
    site = tmp_path / "site"
    (site / "toy_backend-0.1.dist-info").mkdir(parents=True)
    (site / "toy_backend.py").write_text(textwrap.dedent(TOY))
    (site / "toy_backend-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-backend\n"
                                                                 "Version: 0.1\n")
    (site / "toy_backend-0.1.dist-info" / "entry_points.txt").write_text("[sweepctl.backends]\ntoy = toy_backend\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    csv = str(workspace.csv([("a", ""), ("b", "")]))

    def sweepctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sweepctl", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    dry = sweepctl("launch", csv, "--backend", "toy", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-1] == "dry run: would start no session; nothing written, nothing started."
    assert "2 runs: 2 run" in dry.stdout and not workspace.out_root.exists()
    typo = sweepctl("launch", csv, "--backend", "tyo")
    assert typo.returncode == 1
    assert typo.stderr == ("error: --backend must be one of ray, slurm, tmux, toy, got 'tyo' — did you mean "
                           "--backend toy?\n")
