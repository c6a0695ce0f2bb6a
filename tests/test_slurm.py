"""`sweepctl export slurm`: the sbatch script is valid bash, and one array task run here, with
SLURM_ARRAY_TASK_ID set and the #SBATCH lines read as comments, makes exactly its row's run directory.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cli import run_cli
from sweep_helpers import TINY, Workspace, tiny
from sweepctl.state import runs
from sweepctl.train import contract

pytest_plugins = ["sweep_fixtures"]


def directives(script: Path) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.read_text().splitlines() if line.startswith("#SBATCH ")]


def run_task(script: Path, row: str | None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    if row is not None:
        env["SLURM_ARRAY_TASK_ID"] = row
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=timeout)


def test_one_array_task_run_here_makes_exactly_its_rows_run_directory(
        workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    csv = ws.csv([("a", ""), ("b", ""), ("c", "")], name="grid")
    script = ws.root / "grid.sbatch"
    r = run_cli(capsys, "export", "slurm", str(csv), "--concurrency", "2", "-o", str(script), "--no-wandb")
    assert r.code == 0, r.err
    sweep_dir = ws.out_root / ".sweeps" / "grid"
    assert f"wrote {script}: 3 array tasks (--array=0-2%2, --gres=gpu:1); manifest in {sweep_dir}" in r.out
    assert f"submit: sbatch {script}" in r.out
    assert directives(script) == ["--job-name=grid", "--array=0-2%2", "--gres=gpu:1",
                                  f"--output={sweep_dir}/slurm/%A_%a.out"]
    assert "\nset -euo pipefail\n" in script.read_text()
    assert "\nrows_by_task=(0 1 2)\n" in script.read_text()  # equal rows: CSV order
    assert os.access(script, os.X_OK) and (sweep_dir / "slurm").is_dir()  # sbatch will not create --output's folder
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    # the same manifest as launch: status and report read a Slurm sweep like any other
    assert {"grid.csv", "plan.json", "launch.json", "launches.jsonl"} <= {p.name for p in sweep_dir.iterdir()}
    record = json.loads((sweep_dir / "launch.json").read_text())
    assert record["options"]["backend"] == "slurm" and record["options"]["script"] == str(script)

    done = run_task(script, "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    d = ws.run_dir("b")
    assert (runs.read_json(d / runs.SUMMARY) or {}).get("ok") is True
    assert [f for f in contract.COMPLETE_FILES if not (d / f).exists()] == []
    assert sorted(p.name for p in ws.out_root.iterdir()) == [".cache", ".sweeps", "b"]  # no other row ran (.cache: the sweep's compile cache)
    meta = json.loads((d / runs.METADATA).read_text())
    assert (meta["sweep"]["name"], meta["sweep"]["row_index"], meta["attempt"]) == ("grid", 1, 1)
    assert "wandb_log=False" in (d / contract.COMMAND).read_text()
    assert runs.read_json(d / runs.OWNER)["session"] == "slurm-1"
    assert "b: ok" in (sweep_dir / "slurm-1.log").read_text()

    # submitting again runs only what is not ok: this row's task now skips it
    before = (d / runs.SUMMARY).stat().st_mtime_ns
    again = run_task(script, "1", timeout=60)
    assert again.returncode == 0 and "b: already ok; skipped" in again.stdout, again.stdout + again.stderr
    assert (d / runs.SUMMARY).stat().st_mtime_ns == before

    r = run_cli(capsys, "status", "--json", "--sweep", "grid")
    assert json.loads(r.out)["counts"] == {"pending": 2, "running": 0, "ok": 1, "failed": 0, "stale": 0,
                                                "cancelled": 0}


def test_script_defaults_gpu_count_and_refusals(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    csv = ws.root / "wide.csv"
    # "two" trains twice as long (max_iters=40): its task comes first
    csv.write_text(f'run_id,config,seed,overrides,notes,gpus\none,base,1,"{TINY}",,1\n'
                   f'two,base,2,"{tiny("max_iters=40")}",,2\n')
    r = run_cli(capsys, "export", "slurm", str(csv))
    assert r.code == 0, r.err
    script = ws.out_root / ".sweeps" / "wide" / "wide.sbatch"  # default: next to the manifest
    assert directives(script)[1:3] == ["--array=0-1", "--gres=gpu:2"]  # no %C without --concurrency
    assert subprocess.run(["bash", "-n", str(script)], timeout=30).returncode == 0
    assert "\nrows_by_task=(1 0)\n" in script.read_text()  # Slurm starts tasks in index order: longest first

    retrying = ws.root / "retrying.sbatch"
    r = run_cli(capsys, "export", "slurm", str(csv), "--max-retries", "2", "--retry-failed", "-o", str(retrying))
    assert r.code == 0, r.err
    assert " runner " in (text := retrying.read_text()) and "--max-retries 2" in text and "--on-failed retry" in text

    r = run_cli(capsys, "export", "slurm", str(csv), "--gpus-per-task", "1")
    assert r.code == 1
    assert f"{csv}:3: 'two' asks for 2 GPUs but each array task gets 1; use --gpus-per-task 2" in r.err

    no_id = run_task(script, None, timeout=30)
    assert no_id.returncode != 0 and "SLURM_ARRAY_TASK_ID" in no_id.stderr
    past_end = run_task(script, "7", timeout=60)
    assert past_end.returncode == 1 and "no such task: the --array range must match the plan" in past_end.stderr
    assert sorted(p.name for p in ws.out_root.iterdir()) == [".sweeps"]


def test_the_script_execs_the_exporting_python_or_sweepctl_python_even_from_a_path_with_a_space(
        workspace: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace
    csv = ws.csv([("a", ""), ("b", "")], name="grid")
    stand_ins = ws.root / "py dir"
    stand_ins.mkdir()
    for name in ("python", "other python"):  # each records the argv it was given, and runs nothing
        path = stand_ins / name
        path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$0" "$@" > {shlex.quote(str(stand_ins))}/argv\n')
        path.chmod(0o755)
    with monkeypatch.context() as m:
        m.setattr(sys, "executable", str(stand_ins / "python"))
        r = run_cli(capsys, "export", "slurm", str(csv), "--no-wandb")
    assert r.code == 0, r.err
    sweep_dir = ws.out_root / ".sweeps" / "grid"
    script = sweep_dir / "grid.sbatch"

    done = run_task(script, "1", timeout=30)
    assert done.returncode == 0, done.stderr
    argv = (stand_ins / "argv").read_text().splitlines()
    launched_at = argv[-1]
    assert argv == [str(stand_ins / "python"), "-m", "sweepctl", "runner", str(sweep_dir), "--max-retries", "0",
                    "--stale-after", "120.0", "--stall-after", "1800.0", "--row-index", "1", "--devices", "",
                    "--session", "slurm-1", "--launched-at", launched_at]
    assert launched_at.isdigit()

    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    other = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "0", "CUDA_VISIBLE_DEVICES": "3",
                                                       "SWEEPCTL_PYTHON": str(stand_ins / "other python")},
                           capture_output=True, text=True, timeout=30)
    assert other.returncode == 0, other.stderr
    argv = (stand_ins / "argv").read_text().splitlines()
    assert argv[0] == str(stand_ins / "other python")
    assert argv[-8:-2] == ["--row-index", "0", "--devices", "3", "--session", "slurm-0"]
