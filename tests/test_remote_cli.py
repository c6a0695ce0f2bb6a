"""`--host`: the CLI driving a "pod" over a real OpenSSH sshd on loopback (tests/sshd.py).

The pod is this machine seen through sshd: its sessions get their own out_root, data dir, private
tmux socket and stand-in nvidia-smi through the server's SetEnv (`Pod.env`), and run this
checkout's sweepctl (`SWEEPCTL_REMOTE_BIN`). The laptop side is the test process itself, with
the workspace's settings, so every path a test checks shows which side wrote it.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli import CliResult, run_cli
from sweep_helpers import FAKE_BIN, TINY, Workspace, gpu_row, kill_tmux_server, panes, wait_until
from sweepctl import __version__
from sweepctl.state import runs
from sweepctl.state.manifest import sweep_dir
from sweepctl.train import contract
from sweepctl.transport import SSHTransport, system_ssh_argv

pytest_plugins = ["sshd", "sweep_fixtures"]

RUN_TIMEOUT = 240  # seconds for a handful of tiny CPU runs on a busy 2-core machine
FAST_S = 5.0  # "fails fast": no kernel SYN retries, no hanging banner


@dataclass
class Pod:
    """One loopback "pod": an sshd, the alias that reaches it, and what its sessions see."""

    alias: str
    server: object  # sshd.SSHServer
    out_root: Path
    tmux_socket: str
    data_dir: Path
    gpus: int = 0

    def env(self, **extra: str) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        env = {
            "SWEEPCTL_OUT_ROOT": str(self.out_root),
            "SWEEPCTL_DATA_DIR": str(self.data_dir),
            "SWEEPCTL_TMUX_SOCKET": self.tmux_socket,
            "SWEEPCTL_VOLUME": str(self.out_root.parent / f"{self.alias}-volume"),  # never the real /mnt
            # sshd starts sessions in the account's real home: no ./sweepctl.toml there may count
            "SWEEPCTL_PROJECT_FILE": str(self.out_root.parent / f"{self.alias}-sweepctl.toml"),
            "PATH": f"{FAKE_BIN}:{venv_bin}:/usr/local/bin:/usr/bin:/bin",
            "FAKE_NVIDIA_SMI_ROWS": ";".join(gpu_row(i) for i in range(self.gpus)),
            "OMP_NUM_THREADS": "1",  # two trainers on a shared 2-core machine
            "COLUMNS": "200",
        }
        return {**env, **extra}

    def start(self, **extra: str) -> None:
        self.server.start(server_env=self.env(**extra))  # type: ignore[attr-defined]

    def run_dir(self, run_id: str) -> Path:
        return self.out_root / run_id

    def cleanup(self, ws: Workspace) -> None:
        kill_tmux_server(self.tmux_socket)
        Workspace(ws.root, self.out_root, ws.data_dir, ws.gpus).reap()
        self.server.stop()  # type: ignore[attr-defined]
        shutil.rmtree(os.path.dirname(self.tmux_socket), ignore_errors=True)


def _socket() -> str:
    return os.path.join(tempfile.mkdtemp(prefix="swpod", dir="/tmp"), "sock")  # Unix socket paths are short


@pytest.fixture
def pod(ssh_pod, workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pod]:
    """`pod`: the ssh_pod server, its sessions set up as a pod with no GPUs."""
    monkeypatch.setenv("SWEEPCTL_REMOTE_BIN", ssh_pod.remote_bin)
    p = Pod("pod", ssh_pod.server, workspace.root / "pod-out", _socket(), workspace.data_dir)
    p.start()
    yield p
    p.cleanup(workspace)


@pytest.fixture
def pod2(ssh_pod, pod: Pod, workspace: Workspace) -> Iterator[Pod]:
    """`pod2`: a second sshd on another port (another host key, out_root, tmux server), one GPU."""
    from sshd import SSHServer

    workdir = workspace.root / "sshd2"
    workdir.mkdir()
    server = SSHServer(workdir=workdir, authorized_keys=ssh_pod.server.authorized_keys,
                       host_key=ssh_pod.keys.host_b)
    p = Pod("pod2", server, workspace.root / "pod2-out", _socket(), workspace.data_dir, gpus=1)
    p.start()
    ssh_pod.add_host("pod2", HostName="127.0.0.1", Port=server.port, User=getpass.getuser(),
                     IdentityFile=ssh_pod.identity, IdentitiesOnly="yes", UserKnownHostsFile=ssh_pod.known_hosts,
                     BatchMode="yes")
    key_type, key = ssh_pod.keys.host_b.with_suffix(".pub").read_text().split()[:2]
    with ssh_pod.known_hosts.open("a") as f:
        f.write(f"[127.0.0.1]:{server.port} {key_type} {key}\n")
    yield p
    p.cleanup(workspace)


@pytest.fixture
def transports(monkeypatch: pytest.MonkeyPatch) -> list[SSHTransport]:
    """Every SSHTransport the CLI opens during the test, to count connections and round trips."""
    from sweepctl import remote

    opened: list[SSHTransport] = []
    real = remote.open_transport

    def counting(host, accept_new_host_key=False, **kw):
        t = real(host, accept_new_host_key, **kw)
        opened.append(t)
        return t

    monkeypatch.setattr(remote, "open_transport", counting)
    return opened


def one_line(r: CliResult) -> str:
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, f"not one line: {r.err!r}"
    return lines[0]


def wait_for(predicate, what: str, *sockets: str, timeout: float = RUN_TIMEOUT):
    return wait_until(predicate, timeout=timeout, what=what, interval=0.2,
                      explain=lambda: "\n".join(panes(s) for s in sockets))


def summaries(p: Pod, ids: list[str]) -> dict[str, dict] | None:
    found = {i: runs.read_json(p.run_dir(i) / runs.SUMMARY) for i in ids}
    return found if all(v is not None for v in found.values()) else None


def fabricate_ok_runs(out_root: Path, n: int, sweep: str = "big") -> list[str]:
    """n finished run directories and the plan.json of a sweep listing them: status input, no training."""
    from sweepctl.sweep.plan import Plan, PlannedRun, ShardPlan
    from sweepctl.train.config import TrainConfig

    ids = [f"run-{i:04d}" for i in range(n)]
    config = TrainConfig().model_dump(mode="json")
    for i, run_id in enumerate(ids):
        runs.write_json_atomic(out_root / run_id / runs.SUMMARY,
                               {"ok": True, "iter_num": 400, "max_iters": 400, "tok_per_s": 9e4,
                                "last_eval": {"train": 2.9, "val": 3.0 + i / 1e4}})
    planned = [PlannedRun(run_id=r, line=i + 2, row_index=i, shard=i % 8, seed=i, gpus=1, config=config,
                          argv=["python", "-m", "sweepctl.train", "base"]) for i, r in enumerate(ids)]
    plan = Plan(sweep=sweep, shard_count=8, schedule="static", gpus_per_shard=1,
                shards=[ShardPlan(index=s, devices=[s], run_ids=[]) for s in range(8)], runs=planned)
    manifest = sweep_dir(out_root, sweep)
    manifest.mkdir(parents=True)
    (manifest / "plan.json").write_text(plan.model_dump_json())
    runs.write_json_atomic(manifest / "launch.json", {"ts": time.time()})
    return ids


# -- host keys, unreachable hosts, versions -------------------------------------------------------


def test_unknown_host_key_is_refused_until_accepted_and_then_recorded(
        ssh_pod_untrusted, workspace: Workspace, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SWEEPCTL_REMOTE_BIN", ssh_pod_untrusted.remote_bin)
    ssh_pod_untrusted.set_server_env({"SWEEPCTL_OUT_ROOT": str(workspace.root / "pod-out")})

    r = run_cli(capsys, "status", "--host", "pod")
    assert r.code == 3
    line = one_line(r)
    assert line.startswith(f"error: pod: unknown host key for {ssh_pod_untrusted.host_key_name}")
    assert "--accept-new-host-key" in line
    assert not ssh_pod_untrusted.known_hosts.exists()

    r = run_cli(capsys, "status", "--host", "pod", "--accept-new-host-key")
    assert r.code == 0, r.err
    assert "no runs" in r.out
    assert ssh_pod_untrusted.host_key_name in ssh_pod_untrusted.known_hosts.read_text()
    assert run_cli(capsys, "status", "--host", "pod").code == 0  # recorded: no flag needed any more


def test_a_changed_host_key_is_refused_even_with_the_accept_flag(
        pod: Pod, ssh_pod, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "status", "--host", "pod").code == 0
    ssh_pod.server.start(host_key=ssh_pod.keys.host_b, server_env=pod.env())  # the pod was re-created
    for extra in ([], ["--accept-new-host-key"]):
        r = run_cli(capsys, "status", "--host", "pod", *extra)
        assert r.code == 3
        line = one_line(r)
        assert "HOST KEY CHANGED" in line and "ssh-keygen -R" in line


def test_unreachable_host_and_wrong_key_fail_fast_with_one_line(
        pod: Pod, ssh_pod, workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    from sshd import free_port

    ssh_pod.add_host("pod-down", HostName="127.0.0.1", Port=free_port(), User=getpass.getuser(),
                     IdentityFile=ssh_pod.identity, IdentitiesOnly="yes")
    stranger = ssh_pod.ssh_dir / "id_stranger"
    stranger.write_bytes(ssh_pod.keys.stranger.read_bytes())
    stranger.chmod(0o600)
    ssh_pod.add_host("pod-stranger", HostName="127.0.0.1", Port=ssh_pod.port, User=getpass.getuser(),
                     IdentityFile=stranger, IdentitiesOnly="yes", UserKnownHostsFile=ssh_pod.known_hosts)
    csv = workspace.csv([("r0", "")])
    for host, expected in (("pod-down", "error: pod-down: connection refused by 127.0.0.1:"),
                           ("pod-stranger", f"error: pod-stranger: authentication as {getpass.getuser()}")):
        for argv in (["status"], ["logs", "r0"], ["launch", str(csv), "--shards", "1"], ["pull"]):
            start = time.monotonic()
            r = run_cli(capsys, *argv, "--host", host)
            assert time.monotonic() - start < FAST_S, argv
            assert r.code == 3, (argv, r.err)
            assert one_line(r).startswith(expected), (argv, r.err)
    assert not (pod.out_root / ".sweeps").exists()  # nothing was uploaded anywhere


def test_a_different_or_missing_remote_sweepctl_says_to_bootstrap(
        pod: Pod, workspace: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    old = workspace.root / "old-venv" / "bin" / "sweepctl"
    old.parent.mkdir(parents=True)
    old.write_text("#!/bin/sh\necho 'sweepctl 0.0.1'\n")
    old.chmod(0o755)
    monkeypatch.setenv("SWEEPCTL_HOST", "pod")  # the host can come from the environment too
    r = run_cli(capsys, "status", "--remote-bin", str(old))
    assert r.code == 3
    assert one_line(r) == (f"error: pod: the pod has sweepctl 0.0.1, this machine has {__version__} — "
                           "run `sweepctl bootstrap --host pod` to install the same version")
    r = run_cli(capsys, "status", "--host", "pod", "--remote-bin", str(workspace.root / "nowhere" / "sweepctl"))
    assert r.code == 3 and "sweepctl is not installed at" in r.err and "sweepctl bootstrap --host pod" in r.err


def test_a_bad_csv_is_refused_on_the_laptop_before_any_connection(
        pod: Pod, workspace: Workspace, transports: list[SSHTransport], capsys: pytest.CaptureFixture[str]) -> None:
    csv = workspace.root / "bad.csv"
    csv.write_text('run_id,config,seed,overrides,notes\nr0,base,1,"n_layr=2",\nr1,nope,2,,\n')
    r = run_cli(capsys, "launch", str(csv), "--host", "pod", "--shards", "1")
    assert r.code == 1
    assert f"error: {csv}:2: overrides: unknown setting 'n_layr'" in r.err and f"error: {csv}:3: config 'nope'" in r.err
    assert [t.connections for t in transports] == []  # validated here; the pod was never contacted
    good = workspace.csv([("r0", "")])
    r = run_cli(capsys, "launch", str(good), "--host", "pod", "--host", "pod2", "--backend", "ray")
    assert r.code == 1 and "--backend ray runs its driver on one pod; got 2: pod, pod2" in r.err
    assert [t.connections for t in transports] == []


# -- status: one round trip, --json, --watch --------------------------------------------------------


def test_status_of_a_1000_run_sweep_is_one_round_trip(
        pod: Pod, transports: list[SSHTransport], capsys: pytest.CaptureFixture[str]) -> None:
    fabricate_ok_runs(pod.out_root, 1000)

    r = run_cli(capsys, "status", "--host", "pod")
    assert r.code == 0, r.err
    assert [(t.connections, t.calls) for t in transports] == [(1, 1)]  # version check + status: one command
    # beyond 200 runs, a summary by group and state; --all (forwarded to no pod: it is drawn here) lists them
    assert f"sweep big in {pod.out_root}: 1000 runs, by group" in r.out and "1000 ok" in r.out
    assert "run-0999" not in r.out and "every run: sweepctl status --host pod --all" in r.out
    transports.clear()
    r = run_cli(capsys, "status", "--host", "pod", "--all")
    assert [(t.connections, t.calls) for t in transports] == [(1, 1)]
    assert "│ run-0999 " in r.out

    transports.clear()
    r = run_cli(capsys, "status", "--host", "pod", "--json", "--state", "ok")
    assert [(t.connections, t.calls) for t in transports] == [(1, 1)]
    model = json.loads(r.out)  # the pod's JSON, passed through
    assert model["counts"]["ok"] == 1000 and len(model["runs"]) == 1000 and model["out_root"] == str(pod.out_root)


def test_status_watch_keeps_going_through_a_dropped_connection(
        pod: Pod, ssh_pod, transports: list[SSHTransport], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sshd import _children
    from sweepctl.cli import on_pods, remote_opts

    fabricate_ok_runs(pod.out_root, 3)
    pods = remote_opts.resolve(["pod"], None, False)
    models = on_pods.watch_models(pods, ["status", "--json"], interval=0)

    first = next(models)
    assert first["counts"]["ok"] == 3 and not any(h["error"] for h in first["hosts"])
    # The pod's sshd goes away mid-watch: its connection process (ours, by pid) and the listener.
    for pid in _children(ssh_pod.server.proc.pid):
        os.kill(pid, signal.SIGTERM)
    ssh_pod.server.stop()
    down = next(models)
    assert down["counts"]["ok"] == 3  # the last answer stays on screen ...
    (h,) = down["hosts"]
    assert h["error"].startswith("unreachable — ") and h["age_s"] is not None  # ... with the error under it
    pod.start()  # back on the same port
    again = next(models)
    assert again["hosts"][0]["error"] is None and again["counts"]["ok"] == 3
    assert transports[0].connections == 2  # reconnected, on the same transport
    models.close()

    # The command itself draws every refresh (two here, then the test stops the loop).
    real = on_pods.watch_models
    monkeypatch.setattr(on_pods, "watch_models",
                        lambda p, a, interval: (m for m, _ in zip(real(p, a, interval=0), range(2), strict=False)))
    r = run_cli(capsys, "status", "--host", "pod", "--watch")
    assert r.code == 0, r.err
    # not a terminal here: one line per change, and the two refreshes are the same
    (line,) = r.out.splitlines()
    assert line.endswith("  3 ok — 3/3 runs finished, 100% of iterations, ETA 0s"), r.out


def test_pull_from_a_pod_without_sftp_goes_over_the_exec_channel(
        pod: Pod, workspace: Workspace, transports: list[SSHTransport], capsys: pytest.CaptureFixture[str]) -> None:
    """Minimal images and hardened sshd configs have no `Subsystem sftp`: paramiko's SFTP then fails
    with "Channel closed."; the files come over `cat` instead."""
    ids = fabricate_ok_runs(pod.out_root, 3)
    pod.server.sftp = False
    pod.start()  # the same port and environment, without the Subsystem sftp line
    dest = workspace.root / "pulled"
    r = run_cli(capsys, "pull", "--host", "pod", "--to", str(dest))
    assert r.code == 0, r.err
    for run_id in ids:
        assert (dest / run_id / runs.SUMMARY).read_bytes() == (pod.out_root / run_id / runs.SUMMARY).read_bytes()
    assert [t.has_sftp for t in transports] == [False]


# -- a sweep over SSH, end to end -------------------------------------------------------------------


def test_launch_status_logs_rerun_pull_report_over_ssh(
        pod: Pod, workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    config = ws.root / "configs" / "tiny.py"  # a config file the pod has never seen
    config.parent.mkdir()
    config.write_text("n_layer = 1\nn_embd = 32\nn_head = 2\n")
    csv = ws.root / "sweep.csv"
    csv.write_text("run_id,config,seed,overrides,notes\n"
                   f'row0,configs/tiny.py,1,"{TINY}",from a file\n'
                   f'row1,base,2,"{TINY}",a preset\n')

    r = run_cli(capsys, "launch", str(csv), "--host", "pod", "--shards", "1", "--no-wandb", "--dry-run")
    assert r.code == 0, r.err
    assert "pre-flight" in r.out and "dry run: would start sweep-0" in r.out
    assert not pod.out_root.exists()  # a dry run uploads to a temp dir and writes nothing there

    r = run_cli(capsys, "launch", str(csv), "--host", "pod", "--shards", "1", "--no-wandb")
    assert r.code == 0, r.err
    assert "2 runs: 2 run" in r.out and "started sweep-0: CPU slot 0, 2 rows" in r.out
    assert "attach: sweepctl attach --host pod 0" in r.out and "status: sweepctl status --host pod" in r.out
    upload = pod.out_root / ".sweeps" / "sweep" / "upload"
    assert (upload / "sweep.csv").read_text() == csv.read_text()  # the CSV as written ...
    assert (upload / "configs" / "tiny.py").read_text() == config.read_text()  # ... next to its config file
    plan = json.loads((pod.out_root / ".sweeps" / "sweep" / "plan.json").read_text())
    assert plan["runs"][0]["argv"][3] == str(pod.out_root / ".sweeps" / "sweep" / "configs" / "tiny.py")
    assert not (ws.out_root / ".sweeps").exists()  # nothing written on the laptop side

    def all_ok() -> dict | None:
        r = run_cli(capsys, "status", "--host", "pod", "--json")
        model = json.loads(r.out) if r.code == 0 else {}
        done = model.get("counts", {}).get("ok") == 2 and not any(s["alive"] for s in model["sessions"])
        return model if done else None

    model = wait_for(all_ok, "status over SSH to reach all-ok with the shard finished", pod.tmux_socket)
    assert [(x["run_id"], x["state"], x["shard"]) for x in model["runs"]] == [("row0", "ok", 0), ("row1", "ok", 0)]
    r = run_cli(capsys, "status", "--host", "pod")
    assert r.code == 0 and "2 ok" in r.out and "row1" in r.out and "finished: sweep-0" in r.out

    r = run_cli(capsys, "logs", "row0", "--host", "pod")
    assert r.code == 0 and "eval iter 20" in r.out
    r = run_cli(capsys, "logs", "row0", "--host", "pod", "-n", "2")
    assert r.out.splitlines() == (pod.run_dir("row0") / runs.STDOUT_LOG).read_text().splitlines()[-2:]
    r = run_cli(capsys, "logs", "nosuch", "--host", "pod")
    assert r.code == 1
    assert one_line(r) == (f"error: pod: nosuch: no run nosuch in {pod.out_root}: no launched sweep plans it and it "
                           f"has no directory — see the run_ids with: sweepctl status --out-root {pod.out_root}")
    r = run_cli(capsys, "logs", "../row0", "--host", "pod")  # refused here, before the pod is asked
    assert (r.code, one_line(r)) == (1, "error: '../row0' is not a run_id (letters, digits, '.', '_', '-', starting "
                                        "with a letter or digit, at most 128 characters) — see the run_ids with: "
                                        "sweepctl status")

    r = run_cli(capsys, "rerun", "row0", "--host", "pod")
    assert r.code == 2 and "finished ok" in r.err and "--force" in r.err
    first = runs.read_json(pod.run_dir("row0") / runs.SUMMARY)
    r = run_cli(capsys, "rerun", "row0", "--host", "pod", "--force")
    assert r.code == 0, r.err
    assert "started rerun-row0 (ok before)" in r.out
    assert "attach: sweepctl attach --host pod row0" in r.out and "logs:   sweepctl logs row0 -f --host pod" in r.out
    d = pod.run_dir("row0")
    wait_for(lambda: (runs.read_json(d / runs.OWNER) or {}).get("attempt") == 2, "the rerun to start", pod.tmux_socket)
    r = run_cli(capsys, "logs", "row0", "--host", "pod", "-f")  # follows until the run ends
    assert r.code == 0 and "eval iter 20" in r.out
    second = wait_for(lambda: runs.read_json(d / runs.SUMMARY), "the rerun's summary", pod.tmux_socket)
    assert second["ok"] is True and second["start_time"] > first["start_time"]
    for name in (runs.STDOUT_LOG, runs.SUMMARY):
        assert len(runs.backups_of(d, name)) == 1, name
    wait_for(lambda: not any(s["alive"] for s in json.loads(run_cli(capsys, "status", "--host", "pod", "--json").out)
                             ["sessions"]), "rerun-row0 to end", pod.tmux_socket)

    r = run_cli(capsys, "stop", "--all", "--host", "pod")
    assert r.code == 0 and "nothing to stop: no live runner" in r.out

    dest = ws.root / "pulled"
    r = run_cli(capsys, "pull", "--host", "pod", "--to", str(dest))
    assert r.code == 0, r.err
    assert "pod: sweep sweep: copied" in r.out and "checkpoint(s) skipped" in r.out
    for run_id in ("row0", "row1"):
        for name in contract.COMPLETE_FILES:
            if name != runs.CHECKPOINT:
                assert (dest / run_id / name).read_bytes() == (pod.run_dir(run_id) / name).read_bytes()
        assert not (dest / run_id / runs.CHECKPOINT).exists()
    assert (dest / ".sweeps" / "sweep" / "plan.json").exists()
    r = run_cli(capsys, "pull", "--host", "pod", "--to", str(dest))
    assert "copied 0 file(s) (0 B)" in r.out  # the second pull copies nothing
    r = run_cli(capsys, "pull", "--host", "pod", "--to", str(dest), "--checkpoints")
    assert "copied 2 file(s)" in r.out and (dest / "row0" / runs.CHECKPOINT).exists()
    local = run_cli(capsys, "status", "--out-root", str(dest), "--json")  # the pulled copy reads as a sweep
    assert json.loads(local.out)["counts"]["ok"] == 2
    cache = pod.out_root / ".cache" / "torch-compile"
    assert (cache / "triton").is_dir()  # the runner made the sweep's compile cache next to the outputs
    (cache / "kernel.so").write_bytes(b"compiled for the pod's GPU")
    r = run_cli(capsys, "pull", "--host", "pod", "--to", str(ws.root / "everything"), "--all")
    assert r.code == 0 and "pod: every run: copied" in r.out
    assert (ws.root / "everything" / ".sweeps" / "sweep" / "upload" / "configs" / "tiny.py").exists()
    assert not (ws.root / "everything" / ".cache").exists()  # --all leaves the pod's compile cache there

    r = run_cli(capsys, "report", "--host", "pod", "--format", "csv")
    assert r.code == 0, r.err
    assert r.out.splitlines()[0].startswith("group,variant,runs,ok")
    assert {line.split(",")[0] for line in r.out.splitlines()[1:]} == {"row0", "row1"}


def test_stop_over_ssh_interrupts_a_live_run(pod: Pod, workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    csv = workspace.csv([("long", "max_iters=100000 lr_decay_iters=100000 eval_interval=1000 log_interval=50")])
    assert run_cli(capsys, "launch", str(csv), "--host", "pod", "--shards", "1").code == 0
    d = pod.run_dir("long")
    wait_for(lambda: (runs.read_json(d / runs.HEARTBEAT) or {}).get("iter"), "the run to train", pod.tmux_socket)

    r = run_cli(capsys, "stop", "--host", "pod", "--shard", "0")
    assert r.code == 0, r.err
    assert "sent SIGINT to runner pid" in r.out and "(sweep-0)" in r.out and "Relaunch with --retry-failed" in r.out
    summary = wait_for(lambda: runs.read_json(d / runs.SUMMARY), "the interrupted summary", pod.tmux_socket)
    assert summary["status"] == "interrupted" and summary["ok"] is False


def test_attach_execs_ssh_into_the_pods_tmux_session(
        pod: Pod, ssh_pod, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import pty

    subprocess.run(["tmux", "-S", pod.tmux_socket, "new-session", "-d", "-s", "sweep-3", "sleep 120"], check=True,
                   timeout=10)
    execs: list[list[str]] = []
    monkeypatch.setattr(os, "execvp", lambda file, argv: execs.append(list(argv)))
    assert run_cli(capsys, "attach", "--host", "pod", "3").code == 0
    assert run_cli(capsys, "attach", "--host", "pod", "my.run").code == 0
    subprocess.run(["tmux", "-S", os.environ["SWEEPCTL_TMUX_SOCKET"], "new-session", "-d", "-s", "sweep-2", "sleep 120"],
                   check=True, timeout=10)
    assert run_cli(capsys, "attach", "2").code == 0
    remote_bin = os.environ["SWEEPCTL_REMOTE_BIN"]
    assert execs[0] == system_ssh_argv("pod", [remote_bin, "attach", "sweep-3"])
    assert execs[0][:2] == ["ssh", "-t"] and execs[1][-1].endswith("attach rerun-my_run")
    assert execs[2] == ["tmux", "-S", os.environ["SWEEPCTL_TMUX_SOCKET"], "attach", "-t", "sweep-2"]

    # The argv really attaches: run it on a terminal, see the client on the pod's tmux, detach it.
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(execs[0], stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True,
                            env={**os.environ, "TERM": "xterm"})
    os.close(terminal)
    try:
        def clients() -> str:
            return subprocess.run(["tmux", "-S", pod.tmux_socket, "list-clients", "-F", "#{session_name}"],
                                  capture_output=True, text=True, timeout=10).stdout.strip()

        assert wait_until(clients, timeout=30, what="a client attached over ssh") == "sweep-3"
        subprocess.run(["tmux", "-S", pod.tmux_socket, "detach-client", "-s", "sweep-3"], check=True, timeout=10)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            while os.read(controller, 65536):  # drain, so ssh never blocks writing to the terminal
                pass
        os.close(controller)


# -- several pods -------------------------------------------------------------------------------------


def test_one_sweep_over_two_pods_one_table_and_a_host_down(
        pod: Pod, pod2: Pod, workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    csv = ws.csv([("row0", ""), ("row1", ""), ("row2", "")])
    hosts = ["--host", "pod", "--host", "pod2"]

    # A failed run on pod2 makes its pre-flight refuse: then nothing starts on either pod.
    runs.write_json_atomic(pod2.run_dir("row1") / runs.SUMMARY, {"ok": False, "error_class": "oom", "error": "OOM"})
    r = run_cli(capsys, "launch", str(csv), "--host", "pod=1", "--host", "pod2", "--no-wandb")
    assert r.code == 2, r.out + r.err
    assert one_line(r).startswith("error: pod2: launch refused: 1 failed run(s)")
    assert "nothing started on any host" in r.out
    assert not (pod.out_root / ".sweeps" / "sweep" / "plan.json").exists() and not pod.run_dir("row0").exists()
    assert not (pod.out_root / ".sweeps" / "sweep" / "upload" / "hosts.json").exists()  # no record of a rehearsal
    shutil.rmtree(pod2.run_dir("row1"))

    # pod gets 1 shard by HOST=N; pod2 one per GPU (its nvidia-smi shows one): 2 shards in all.
    r = run_cli(capsys, "launch", str(csv), "--host", "pod=1", "--host", "pod2", "--no-wandb")
    assert r.code == 0, r.err
    assert "pod: 2 rows on sweep-0 " in r.out and "pod2: 1 row on sweep-0 " in r.out
    assert "pod: started sweep-0: CPU slot 0, 2 rows" in r.out  # pod has no GPU; pod2 has a stand-in one
    assert "pod2: started sweep-0: CUDA_VISIBLE_DEVICES=0, 1 rows" in r.out
    assert "status: sweepctl status --host pod --host pod2" in r.out
    for p, ids in ((pod, ["row0", "row2"]), (pod2, ["row1"])):
        plan = json.loads((p.out_root / ".sweeps" / "sweep" / "plan.json").read_text())
        assert [x["run_id"] for x in plan["runs"]] == ids and plan["shard_count"] == 1
        layout = json.loads((p.out_root / ".sweeps" / "sweep" / "upload" / "hosts.json").read_text())
        assert [(h["host"], h["first_shard"], h["row_indices"]) for h in layout["hosts"]] == [
            ("pod", 0, [0, 2]), ("pod2", 1, [1])]
        assert layout["placed"] == {"row0": "pod", "row1": "pod2", "row2": "pod"}

    wait_for(lambda: summaries(pod, ["row0", "row2"]) and summaries(pod2, ["row1"]), "three summaries on two pods",
             pod.tmux_socket, pod2.tmux_socket)
    assert not (pod2.run_dir("row0")).exists() and not (pod.run_dir("row1")).exists()  # each row ran once

    def merged() -> dict | None:
        model = json.loads(run_cli(capsys, "status", *hosts, "--json").out)
        return model if model["counts"]["ok"] == 3 else None

    model = wait_for(merged, "the merged status to reach all-ok", pod.tmux_socket, pod2.tmux_socket)
    assert [(x["host"], x["run_id"]) for x in model["runs"]] == [("pod", "row0"), ("pod", "row2"), ("pod2", "row1")]
    assert [h["host"] for h in model["hosts"]] == ["pod", "pod2"] and all(h["ok"] for h in model["hosts"])
    assert model["out_root"] == f"pod:{pod.out_root}, pod2:{pod2.out_root}"
    r = run_cli(capsys, "status", *hosts)
    assert r.code == 0 and "┃ host ┃ run_id" in r.out and "3 ok" in r.out
    assert "│ pod2 │ row1 " in r.out

    r = run_cli(capsys, "logs", "row1", *hosts, "-n", "1")  # only pod2 has it
    assert r.code == 0 and r.out.strip() == (pod2.run_dir("row1") / runs.STDOUT_LOG).read_text().splitlines()[-1]
    r = run_cli(capsys, "report", *hosts, "--format", "json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert sorted((x["host"], x["run_id"]) for x in data["runs"]) == [("pod", "row0"), ("pod", "row2"),
                                                                       ("pod2", "row1")]
    r = run_cli(capsys, "stop", "--all", *hosts)
    assert r.code == 0 and "pod: nothing to stop" in r.out and "pod2: nothing to stop" in r.out
    r = run_cli(capsys, "pull", *hosts, "--to", str(ws.root / "pulled"))
    assert r.code == 0, r.err
    assert (ws.root / "pulled" / "pod" / "row2" / runs.SUMMARY).exists()
    assert (ws.root / "pulled" / "pod2" / "row1" / runs.SUMMARY).exists()
    assert not (ws.root / "pulled" / "pod2" / "row0").exists()

    # The pods in the other order, pod2 with 2 shards: by the rule row1 would now go to pod, but
    # every row stays where it ran, so each pod only finds its own ok rows and skips them.
    r = run_cli(capsys, "launch", str(csv), "--host", "pod2=2", "--host", "pod=1", "--no-wandb")
    assert r.code == 0, r.err
    assert "pod2: 1 row on sweep-0..sweep-1" in r.out and "pod: 2 rows on sweep-0 " in r.out
    assert "nothing to start: every run is ok" in r.out
    assert not (pod.run_dir("row1")).exists() and not (pod2.run_dir("row0")).exists()

    pod2.server.stop()  # one pod goes away; the other still reports
    r = run_cli(capsys, "status", *hosts)
    assert r.code == 3
    assert "row0" in r.out and "row2" in r.out and "row1" not in r.out and "2 ok" in r.out
    assert "host pod2: unreachable — connection refused by 127.0.0.1:" in r.out
    assert one_line(r).startswith("error: pod2: connection refused by 127.0.0.1:")


def test_a_relaunch_never_moves_a_row_to_another_pod_and_reassign_moves_only_unstarted_rows(
        pod: Pod, pod2: Pod, workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    # row1 opens pod2's only shard and trains until stopped, so row3 and row5 wait behind it.
    csv = workspace.csv([(f"row{i}", "max_iters=1000000" if i == 1 else "") for i in range(6)])
    r = run_cli(capsys, "launch", str(csv), "--host", "pod=1", "--host", "pod2=1", "--no-wandb")
    assert r.code == 0, r.err

    def layout(p: Pod) -> dict:
        return json.loads((p.out_root / ".sweeps" / "sweep" / "upload" / "hosts.json").read_text())

    def live(p: Pod) -> bool:
        model = json.loads(run_cli(capsys, "status", "--host", p.alias, "--json").out)
        return any(s["alive"] for s in model["sessions"])

    first = layout(pod)
    assert first == layout(pod2) and first["placed"] == {f"row{i}": "pod2" if i % 2 else "pod" for i in range(6)}

    # pod alone would take pod2's rows, row1 running there included: refused before anything is sent.
    r = run_cli(capsys, "launch", str(csv), "--host", "pod=1", "--no-wandb")
    assert r.code == 2, r.out + r.err
    line = one_line(r)
    assert line.startswith(f"error: sweep sweep was launched on pod, pod2 at {first['time']}; this launch names "
                           "pod: pod2 is left out (3 rows recorded there).")
    assert "relaunch with --host pod=1 --host pod2=1 (the recorded pods), or add --reassign" in line
    assert layout(pod) == first
    assert [x["run_id"] for x in json.loads((pod.out_root / ".sweeps/sweep/plan.json").read_text())["runs"]] == [
        "row0", "row2", "row4"]

    # --reassign while pod2's runner lives: it would still start row3 and row5 itself.
    wait_for(lambda: (pod2.run_dir("row1") / runs.HEARTBEAT).exists(), "row1 to start on pod2", pod2.tmux_socket)
    r = run_cli(capsys, "launch", str(csv), "--host", "pod=1", "--reassign", "--no-wandb")
    assert r.code == 2 and "pod2 still has live session(s) sweep-0, whose runners would start the 2 rows" in r.err
    assert layout(pod2) == first

    assert run_cli(capsys, "stop", "--all", "--host", "pod2").code == 0  # row1 ends interrupted: it started
    wait_for(lambda: not live(pod2) and not live(pod) and summaries(pod, ["row0", "row2", "row4"]),
             "both pods' runners to finish", pod.tmux_socket, pod2.tmux_socket)
    r = run_cli(capsys, "launch", str(csv), "--host", "pod=1", "--reassign", "--no-wandb")
    assert r.code == 0, r.err
    assert "--reassign moves rows that have not started: pod2 -> pod: 2 rows" in r.out
    assert "pod2 keeps 1 row started there (row1): launched nowhere now; add --host pod2 to launch them there" in r.out
    assert "5 runs: 2 run, 3 skip" in r.out  # row3 and row5 run, row0, row2, row4 are ok; row1 is not pod's
    wait_for(lambda: summaries(pod, ["row3", "row5"]), "row3 and row5 on pod", pod.tmux_socket)
    assert not pod2.run_dir("row3").exists() and not pod2.run_dir("row5").exists()  # each row on one pod
    assert not pod.run_dir("row1").exists()
    moved = dict(first["placed"], row3="pod", row5="pod")
    assert layout(pod)["placed"] == moved and layout(pod2) == layout(pod)  # the left-out pod's record too

    # The record now says pod: a plain relaunch there is fine, and pod2 may come back for its row1.
    wait_for(lambda: not live(pod), "pod's runner to finish", pod.tmux_socket)
    r = run_cli(capsys, "launch", str(csv), "--host", "pod=1", "--no-wandb")
    assert r.code == 0, r.err
    assert "pod2 keeps 1 row started there (row1)" in r.out and "nothing to start: every run is ok" in r.out
    r = run_cli(capsys, "launch", str(csv), "--host", "pod=1", "--host", "pod2=1", "--no-wandb", "--skip-failed",
                "--dry-run")
    assert r.code == 0, r.err
    assert "pod: 5 rows on sweep-0 " in r.out and "pod2: 1 row on sweep-0 " in r.out


def test_reassign_forget_moves_a_lost_pods_rows_and_refuses_a_pod_that_answers(
        pod: Pod, pod2: Pod, workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    csv = workspace.csv([("row0", ""), ("row1", "")])
    r = run_cli(capsys, "launch", str(csv), "--host", "pod=1", "--host", "pod2=1", "--no-wandb")
    assert r.code == 0, r.err  # row0 on pod, row1 on pod2

    def layout() -> dict:
        return json.loads((pod.out_root / ".sweeps" / "sweep" / "upload" / "hosts.json").read_text())

    def idle() -> bool:
        model = json.loads(run_cli(capsys, "status", "--host", "pod", "--json").out)
        return not any(s["alive"] for s in model["sessions"])

    first = layout()
    wait_for(lambda: summaries(pod, ["row0"]) and summaries(pod2, ["row1"]) and idle(), "both rows to finish",
             pod.tmux_socket, pod2.tmux_socket)
    r = run_cli(capsys, "launch", str(csv), "--host", "pod=1", "--forget", "pod2", "--no-wandb")
    assert r.code == 1 and "--forget pod2: only with --reassign" in one_line(r)
    r = run_cli(capsys, "launch", str(csv), "--host", "pod=1", "--reassign", "--forget", "pod2", "--no-wandb")
    assert r.code == 2 and "--forget pod2 says pod2 is gone for good, but it answered, so it is not gone" in one_line(r)
    assert "use --reassign without --forget pod2" in r.err and layout() == first

    pod2.server.stop()  # the pod is terminated, with its volume
    r = run_cli(capsys, "launch", str(csv), "--host", "pod=1", "--reassign", "--no-wandb")
    assert r.code == 3 and "which did not answer" in r.err and "add --forget pod2" in one_line(r)
    r = run_cli(capsys, "launch", str(csv), "--host", "pod=1", "--reassign", "--forget", "pod2", "--no-wandb")
    assert r.code == 0, r.out + r.err
    assert "--forget pod2: pod2 is forgotten (lost with its volume); 1 row recorded there start over: row1 -> pod" \
        in r.out
    assert "2 runs: 1 run, 1 skip" in r.out
    after = layout()
    assert after["placed"] == {"row0": "pod", "row1": "pod"} and [h["host"] for h in after["hosts"]] == ["pod"]
    wait_for(lambda: summaries(pod, ["row1"]), "row1 to run over on pod", pod.tmux_socket)


# -- bootstrap over SSH -------------------------------------------------------------------------------


@pytest.mark.slow
def test_bootstrap_over_ssh_installs_this_wheel_and_keeps_ssh_access(
        ssh_pod, workspace: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import sysconfig

    from sweepctl.pod.bootstrap import WHEEL_MARKER

    pod_home, volume = workspace.root / "pod-home", workspace.root / "pod-volume"
    (pod_home / ".ssh").mkdir(parents=True)
    provider_keys = ssh_pod.keys.client.with_suffix(".pub").read_bytes()  # what the provider injected
    authorized = pod_home / ".ssh" / "authorized_keys"
    authorized.write_bytes(provider_keys)
    (volume / ".ssh").mkdir(parents=True)  # persisted keys, with a stale authorized_keys of their own
    (volume / ".ssh" / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    (volume / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAAstale stale@volume\n")
    ssh_pod.server.authorized_keys = authorized  # sshd reads the pod home's file: bootstrap must keep it
    ssh_pod.set_server_env({
        "HOME": str(pod_home), "SWEEPCTL_VOLUME": str(volume), "PATH": "/usr/local/bin:/usr/bin:/bin",
        # sshd starts sessions in the account's real home, where bootstrap would write ./sweepctl.toml
        "SWEEPCTL_PROJECT_FILE": str(volume / "sweepctl.toml"),
        # No package index here: the deps come from this test venv, sweepctl from the uploaded wheel.
        "PYTHONPATH": sysconfig.get_path("purelib"), "PIP_NO_INDEX": "1", "PIP_NO_DEPS": "1",
    })
    venv = workspace.root / "pod-venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    args = ["bootstrap", "--host", "pod", "--venv", str(venv), "--python", base_python, "--no-apt",
            "--out-root", str(volume / "outputs"), "--data-dir", str(volume / "data")]

    r = run_cli(capsys, *args)
    assert r.code == 0, r.out + r.err
    assert "│ sweepctl wheel   │ ok " in r.out  # the row the laptop adds for the wheel it installed
    assert (venv / WHEEL_MARKER).read_text().startswith("wheel sha256 ")
    assert f"project file: {volume / 'sweepctl.toml'}" in r.out
    assert authorized.read_bytes() == provider_keys  # never rewritten: nobody is locked out
    assert (pod_home / ".ssh" / "id_ed25519").read_text().endswith("secret\n")
    assert (venv / "bin" / "sweepctl").exists()

    r = run_cli(capsys, *args)  # a second run changes nothing and uploads nothing
    assert r.code == 0, r.out + r.err
    assert "no changes: everything was already in place" in r.out, r.out
    # Still reachable, and the pod's new sweepctl is this version (the remote version check passes).
    monkeypatch.setenv("SWEEPCTL_REMOTE_BIN", str(venv / "bin" / "sweepctl"))
    r = run_cli(capsys, "status", "--host", "pod", "--out-root", str(volume / "outputs"))
    assert r.code == 0, r.err
