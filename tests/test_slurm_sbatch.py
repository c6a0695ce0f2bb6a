"""`sweepctl export slurm` against a real Slurm (tests/slurm_cluster.py): `sbatch` of the exported
script runs the rows as an array on gres GPUs, and `sweepctl status` reads the sweep back; `scancel`
interrupts the running rows and the `--retry-failed` export the script names resumes them; the
fixture itself starts past a taken port, keeps to its directory and leaves no job behind.

The trainers are the tiny CPU model; only the GPUs are stand-ins (character devices Slurm hands
out as gres). About 90 s in all on 2 busy cores, most of it torch's import in each task.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cli import run_cli
from sweep_helpers import Workspace, tiny, wait_until
from sweepctl.train import contract  # the run directory's file names, wherever the reading side lives

if TYPE_CHECKING:  # imported by pytest as a plugin: importing it here first would skip its assert rewriting
    from slurm_cluster import SlurmCluster

pytest_plugins = ["sweep_fixtures", "slurm_cluster"]


def test_sbatch_runs_the_rows_as_an_array_and_status_reads_them_finished(
        workspace: Workspace, slurm_cluster: SlurmCluster, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # an out-root with a space and a %: #SBATCH lines are read by sbatch, not bash, and --output by its patterns
    ws = replace(workspace, out_root=workspace.root / "out 5% dir")
    monkeypatch.setenv("SWEEPCTL_OUT_ROOT", str(ws.out_root))
    # "long" trains twice as long: task 0 runs it (rows longest first)
    csv = ws.csv([("a", ""), ("long", "max_iters=40 lr_decay_iters=40"), ("c", "")], name="grid")
    r = run_cli(capsys, "export", "slurm", str(csv), "--concurrency", "2", "--no-wandb")
    assert r.code == 0, r.err
    sweep_dir = ws.out_root / ".sweeps" / "grid"
    script = sweep_dir / "grid.sbatch"
    assert r.out == (f"wrote {script}: 3 array tasks (--array=0-2%2, --gres=gpu:1); manifest in {sweep_dir}\n"
                     f"submit: sbatch '{script}'\n"
                     f"status: sweepctl status --out-root '{ws.out_root}' --sweep grid\n")

    # SBATCH_EXPORT=OMP_NUM_THREADS=1: the tasks get that one variable (two trainers on two cores) and
    # none of the rest of this shell's environment (no SWEEPCTL_* settings, no venv on PATH), as on
    # sites that set SBATCH_EXPORT=NONE: the script alone must find the sweep, the data and Python
    job = slurm_cluster.submit_pasted(r.out.splitlines()[1].removeprefix("submit: "),
                                      env={"SBATCH_EXPORT": "OMP_NUM_THREADS=1"})
    states = slurm_cluster.wait_finished(job)
    assert states == {"0": "COMPLETED", "1": "COMPLETED", "2": "COMPLETED"}, _explain(sweep_dir, job)

    watch = shlex.split(r.out.splitlines()[2].removeprefix("status: "))  # the status line export printed
    monkeypatch.delenv("SWEEPCTL_OUT_ROOT")
    r = run_cli(capsys, *watch[1:], "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["counts"] == {"pending": 0, "running": 0, "ok": 3, "failed": 0, "stale": 0,
                                           "cancelled": 0}
    held: list[tuple[str, float, float]] = []  # (GPU, runner took the row, trainer ended) of each task
    for task, (run_id, row) in enumerate([("long", 1), ("a", 0), ("c", 2)]):
        d = ws.run_dir(run_id)
        assert [f for f in contract.COMPLETE_FILES if not (d / f).exists()] == [], run_id
        meta = json.loads((d / contract.METADATA).read_text())
        assert (meta["sweep"]["name"], meta["sweep"]["row_index"], meta["attempt"]) == ("grid", row, 1)
        owner = read_json(d / contract.OWNER)
        assert owner["session"] == f"slurm-{row}"
        held.append((meta["cuda_visible_devices"], owner["started"], (read_json(d / contract.SUMMARY))["end_time"]))
        log = sweep_dir / "slurm" / f"{job}_{task}.out"
        assert f"{run_id}: ok" in log.read_text(), log.read_text()[-2000:]
    # Slurm gave each task one of the node's two gres GPUs, never one a running task held, and the
    # runner passed it on to the trainer. --array=...%2: two tasks ran at once.
    together = [(a, b) for i, a in enumerate(held) for b in held[i + 1:] if a[1] < b[2] and b[1] < a[2]]
    assert {gpu for gpu, _, _ in held} <= {"0", "1"} and together, held
    assert all(a[0] != b[0] for a, b in together), held
    assert sorted(p.name for p in ws.out_root.iterdir()) == [".cache", ".sweeps", "a", "c", "long"]


def test_a_task_of_k_gpus_gets_k_gres_gpus_as_its_devices_and_sweepctl_python_through_export(
        workspace: Workspace, slurm_cluster: SlurmCluster, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    csv = ws.root / "wide.csv"
    csv.write_text("run_id,config,seed,overrides,notes,gpus\n"
                   + "".join(f'{r},base,{i},"{tiny()}",,2\n' for i, r in enumerate(("one", "two"))))
    r = run_cli(capsys, "export", "slurm", str(csv), "--no-wandb")
    assert r.code == 0, r.err
    script = ws.out_root / ".sweeps" / "wide" / "wide.sbatch"
    # a stand-in interpreter that records what each task would run, and trains nothing
    record = ws.root / "record"
    record.write_text('#!/bin/sh\nprintf "%s\\n" "$@" "cvd=$CUDA_VISIBLE_DEVICES" > '
                      f'{shlex.quote(str(ws.root))}/task-$SLURM_ARRAY_TASK_ID.argv\n')
    record.chmod(0o755)

    # the way the script's own comment says to choose another interpreter
    job = slurm_cluster.sbatch(script, f"--export=ALL,SWEEPCTL_PYTHON={record}")
    assert slurm_cluster.wait_finished(job) == {"0": "COMPLETED", "1": "COMPLETED"}
    for task in ("0", "1"):
        argv = (ws.root / f"task-{task}.argv").read_text().splitlines()
        assert argv[-9:-1] == ["--row-index", task, "--devices", "0,1", "--session", f"slurm-{task}",
                               "--launched-at", argv[-2]]  # equal rows: task I runs row I
        assert argv[-2].isdigit() and argv[-1] == "cvd=0,1"  # both of the node's GPUs, as Slurm numbers them for the task


def test_the_cluster_starts_past_a_taken_port_keeps_to_its_directory_and_stops_its_jobs_and_daemons() -> None:
    from slurm_cluster import SlurmCluster, free_port, need_slurm  # after pytest registered it as a plugin

    need_slurm()
    root = Path(tempfile.mkdtemp(prefix="swslurm", dir="/tmp"))
    root.chmod(0o711)
    with socket.socket() as taken:  # slurmd's first port is someone else's
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        second = free_port(), free_port()
        ports = iter([free_port(), taken.getsockname()[1], *second])
        cluster = SlurmCluster(root, pick_port=lambda: next(ports))
        try:
            cluster.start()
            pids = [p.pid for p in cluster.procs.values()]
            node = cluster.run("sinfo", "-h", "-N", "-o", "%N %T %G").stdout
            conf = cluster.conf.read_text()
            paths = re.findall(r"=(/[^\s(]*)", conf + (root / "gres.conf").read_text())
            first_try = (root / "log" / "slurmd.log").read_text()
            sleeper = start_sleeper(cluster)  # a job still running when the test ends: stop() cancels it
        finally:
            cluster.stop()
            shutil.rmtree(root)
    assert not alive(sleeper)
    assert "Address already in use" in first_try
    assert f"\nSlurmctldPort={second[0]}\nSlurmdPort={second[1]}\n" in conf
    assert node == f"{cluster.node} idle gpu:2\n"
    assert len(pids) == 3 and not any(alive(pid) for pid in pids)
    # every path the daemons use is the cluster's own (MailProg aside): never /etc/slurm or the system munge
    assert sorted(p.replace(f"{root}/", "<root>/") for p in paths) == [
        "/bin/true", "<root>/dev/nvidia[0-1]", "<root>/log/slurmctld.log", "<root>/log/slurmd.log",
        "<root>/munge.sock", "<root>/slurmctld.pid", "<root>/slurmd.pid", "<root>/spool", "<root>/state"]


def test_a_job_step_that_outlives_the_daemons_is_killed_by_the_log_file_it_holds() -> None:
    from slurm_cluster import SlurmCluster, need_slurm

    need_slurm()
    root = Path(tempfile.mkdtemp(prefix="swslurm", dir="/tmp"))
    root.chmod(0o711)
    cluster = SlurmCluster(root)
    try:
        cluster.start()
        sleeper = start_sleeper(cluster)
    finally:
        cluster.stop(cancel=False)  # as when slurmctld died, or the cancel ran out of time
        shutil.rmtree(root)
    assert not alive(sleeper)


def start_sleeper(cluster: SlurmCluster) -> int:
    """Submit a job that sleeps for ten minutes; its pid once it runs."""
    root = cluster.root
    script = root / "sleeper.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH --output={root}/sleeper.out\necho $$ > {root}/sleeper.pid\n"
                      "exec sleep 600\n")
    job = cluster.sbatch(script)
    wait_until(lambda: (root / "sleeper.pid").exists() and cluster.tasks(job) == {"N/A": "RUNNING"},
               timeout=60, what="the sleeper job running", explain=cluster.logs)
    return int((root / "sleeper.pid").read_text())


def read_json(path: Path) -> dict[str, Any]:
    """A run file as the trainer or runner wrote it; {} before it exists."""
    return json.loads(path.read_text()) if path.exists() else {}


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, which only waits for its parent to reap it, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # the state field follows the command name


def _explain(sweep_dir: Path, job: str) -> str:
    """Every task's Slurm output, to explain a task that did not complete."""
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted((sweep_dir / "slurm").glob(f"{job}_*.out")))


def test_scancel_interrupts_the_running_rows_and_the_retry_failed_export_resumes_them(
        workspace: Workspace, slurm_cluster: SlurmCluster, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    long = "max_iters=100000 lr_decay_iters=100000 eval_interval=50000"  # scancel always comes first
    csv = ws.csv([("a", long), ("b", long), ("c", long)], name="grid")
    r = run_cli(capsys, "export", "slurm", str(csv), "--no-wandb")
    assert r.code == 0, r.err
    sweep_dir = ws.out_root / ".sweeps" / "grid"
    script = sweep_dir / "grid.sbatch"
    job = slurm_cluster.sbatch(script)

    def status() -> dict[str, Any]:
        r = run_cli(capsys, "status", "--json", "--sweep", "grid")
        assert r.code == 0, r.err
        return json.loads(r.out)

    def training(attempt: int) -> list[str]:
        """The rows whose trainer of this attempt has written a heartbeat after its first step."""
        out = []
        for row in status()["runs"]:
            d = ws.run_dir(row["run_id"])
            meta = read_json(d / contract.METADATA)
            beat = read_json(d / contract.HEARTBEAT)
            if row["state"] == "running" and meta.get("attempt") == attempt and beat.get("pid") == meta.get("pid") \
                    and (beat.get("iter") or 0) > (meta.get("resumed_from_iter") or 0):
                out.append(row["run_id"])
        return out

    # two GPUs: rows a and b train, c waits for a GPU
    wait_until(lambda: training(1) == ["a", "b"], timeout=120, what="rows a and b training",
               explain=lambda: f"{slurm_cluster.tasks(job)}\n{_explain(sweep_dir, job)}")
    slurm_cluster.run("scancel", job)
    assert slurm_cluster.wait_finished(job) == {"0": "CANCELLED", "1": "CANCELLED", "2": "CANCELLED"}

    # Slurm's SIGTERM reached each trainer, which wrote its summary and a checkpoint before KillWait
    model = status()
    assert model["counts"] == {"pending": 1, "running": 0, "ok": 0, "failed": 2, "stale": 0, "cancelled": 0}
    stopped_at = {}
    for run_id in ("a", "b"):
        summary = read_json(ws.run_dir(run_id) / contract.SUMMARY)
        assert (summary["status"], summary["error_class"]) == ("interrupted", "signal"), summary
        assert summary["error"] == f"interrupted by SIGTERM at iter {summary['iter_num']}"
        assert (ws.run_dir(run_id) / contract.CHECKPOINT).is_file()
        stopped_at[run_id] = summary["iter_num"]
    assert not ws.run_dir("c").exists()

    # The same script skips interrupted rows; it names the export that resumes them. Paste it.
    command = next(line.removeprefix("#   ") for line in script.read_text().splitlines()
                   if line.startswith("#   sweepctl export slurm") and "--retry-failed" in line)
    argv = shlex.split(command)
    assert argv[:3] == ["sweepctl", "export", "slurm"] and argv[-2:] == ["-o", str(script)]
    r = run_cli(capsys, *argv[1:])
    assert r.code == 0, r.err
    assert "Submitting this again runs every row that is not ok, resuming from checkpoints." in script.read_text()

    job = slurm_cluster.sbatch(script)
    wait_until(lambda: training(2) == ["a", "b"], timeout=120, what="rows a and b training again",
               explain=lambda: f"{slurm_cluster.tasks(job)}\n{_explain(sweep_dir, job)}")
    for task, run_id in enumerate(("a", "b")):
        meta = json.loads((ws.run_dir(run_id) / contract.METADATA).read_text())
        assert (meta["attempt"], meta["resume"], meta["resumed_from_iter"]) == (2, True, stopped_at[run_id]), meta
        log = (sweep_dir / "slurm" / f"{job}_{task}.out").read_text()
        assert (f"{run_id}: attempt 2, resume (retrying a failed run (signal: interrupted by SIGTERM at iter "
                f"{stopped_at[run_id]}); resuming from {contract.CHECKPOINT})") in log, log
