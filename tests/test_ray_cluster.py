"""`sweepctl ray up/down`: the commands sent to each pod, in order, and a real head over loopback SSH.

Most tests use a stand-in `ray` (a script next to a stand-in sweepctl) on this machine through the
local transport: several pods cannot exist here, and the order and content of what each is sent is
the point. One test starts a real Ray head on the loopback sshd "pod" and stops it by its pids.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cli import run_cli
from sweep_helpers import Workspace
from sweepctl.backends import ray_backend, ray_cluster
from sweepctl.errors import RemoteError, SweepctlError
from sweepctl.transport import LocalTransport

if TYPE_CHECKING:
    from sshd import SSHPod

pytest_plugins = ["sshd", "sweep_fixtures"]


def free_port() -> int:
    from sshd import free_port  # imported late: pytest must load `sshd` as a plugin first (assert rewriting)

    return free_port()

FAKE_RAY = textwrap.dedent("""\
    #!/bin/sh
    # stand-in `ray`: logs each call (argv, RAY_AUTH_MODE), answers like Ray 2.60.0 would
    echo "$* | auth=${RAY_AUTH_MODE:-unset}" >> "$FAKE_RAY_LOG"
    case "$1" in
      --version) echo "ray, version ${FAKE_RAY_VERSION:-2.60.0}" ;;
      get-auth-token) echo "tok-123" ;;
      start) case " $* " in *" --head "*) echo "  ray start --address='10.1.2.3:6379'" ;; esac ;;
      stop) echo "Stopped all 7 Ray processes." ;;
    esac
""")


@pytest.fixture()
def fake_pods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, list[str]]:
    """(remote_bin, call log, hosts opened): every "pod" is this machine with a stand-in ray."""
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    ray = venv / "ray"
    ray.write_text(FAKE_RAY)
    ray.chmod(0o755)
    log = tmp_path / "ray-calls.log"
    monkeypatch.setenv("FAKE_RAY_LOG", str(log))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where the workers' token lands
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    return str(venv / "sweepctl"), log, []


def opener(hosts: list[str]):
    def open_(host: str) -> LocalTransport:
        hosts.append(host)
        return LocalTransport()
    return open_


def test_argv_for_head_worker_and_stop() -> None:
    ray = ray_cluster.ray_executable("/opt/sweepctl-venv/bin/sweepctl")
    assert ray == "/opt/sweepctl-venv/bin/ray"
    assert ray_cluster.head_argv(ray) == [
        ray, "start", "--head", "--port", "6379", "--dashboard-host", "127.0.0.1",
        "--node-manager-port", "8076", "--object-manager-port", "8077", "--disable-usage-stats"]
    assert ray_cluster.worker_argv(ray, "10.0.0.5:6379", ray_cluster.Ports(7000, 7001, 7002), ["--num-gpus=8"]) == [
        ray, "start", "--address", "10.0.0.5:6379", "--node-manager-port", "7001", "--object-manager-port", "7002",
        "--disable-usage-stats", "--num-gpus=8"]
    assert ray_cluster.stop_argv(ray) == [ray, "stop"]
    out = "\x1b[1mTo add another node to this Ray cluster, run\x1b[0m\n  ray start --address='192.0.2.2:46379'\n"
    assert ray_cluster.parse_head_address(out) == "192.0.2.2:46379"
    assert ray_cluster.parse_version("ray, version 2.60.0\n") == "2.60.0"


def test_the_pinned_ray_is_the_extra_in_pyproject() -> None:
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert f'ray = ["ray=={ray_backend.RAY_VERSION}"]' in pyproject


def test_up_checks_every_pod_starts_the_head_then_joins_workers_with_its_token(
        fake_pods: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    remote_bin, log, hosts = fake_pods
    lines: list[str] = []
    up = ray_cluster.ray_up("head", ["w1", "w2"], remote_bin=remote_bin, opener=opener(hosts), progress=lines.append)
    assert (up.head, up.address, up.workers) == ("head", "10.1.2.3:6379", ["w1", "w2"])
    assert hosts == ["head", "w1", "w2"]
    calls = log.read_text().splitlines()
    start = " ".join(ray_cluster.head_argv("X")[2:])
    join = " ".join(ray_cluster.worker_argv("X", "10.1.2.3:6379")[2:])
    assert calls == ["--version | auth=unset"] * 3 + [
        "get-auth-token --generate | auth=unset",
        f"start {start} | auth=token",  # token mode forced: never an open cluster
        f"start {join} | auth=token",
        f"start {join} | auth=token"]
    token = tmp_path / "home" / ".ray" / "auth_token"
    assert token.read_text() == "tok-123" and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert lines[-1] == "w2: joined 10.1.2.3:6379"


def test_up_refuses_a_pod_without_the_pinned_ray_before_starting_anything(
        fake_pods: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote_bin, log, hosts = fake_pods
    monkeypatch.setenv("FAKE_RAY_VERSION", "2.9.3")
    with pytest.raises(RemoteError, match=r"is Ray 2\.9\.3, sweepctl needs 2\.60\.0") as e:
        ray_cluster.ray_up("head", ["w1"], remote_bin=remote_bin, opener=opener(hosts))
    assert "pip install 'ray==2.60.0'" in str(e.value)
    assert log.read_text().splitlines() == ["--version | auth=unset"]  # stopped at the first pod

    missing = str(tmp_path / "elsewhere" / "sweepctl")
    with pytest.raises(RemoteError, match=f"no Ray at {tmp_path}/elsewhere/ray") as e:
        ray_cluster.ray_up("head", [], remote_bin=missing, opener=opener(hosts))
    assert f"{tmp_path}/elsewhere/pip install 'ray==2.60.0'" in str(e.value)


def test_down_stops_workers_then_head(fake_pods: tuple[str, Path, list[str]], capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    remote_bin, log, hosts = fake_pods
    stopped = ray_cluster.ray_down(["w1", "head"], remote_bin=remote_bin, opener=opener(hosts))
    assert stopped == hosts == ["w1", "head"]
    assert log.read_text().splitlines() == ["stop | auth=unset"] * 2


def test_ray_down_cli_runs_ray_stop_on_each_pod_over_ssh(
        ssh_pod: SSHPod, fake_pods: tuple[str, Path, list[str]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    remote_bin, log, _ = fake_pods
    ssh_pod.add_host("pod2", HostName="127.0.0.1", Port=ssh_pod.port, IdentityFile=ssh_pod.identity,
                     IdentitiesOnly="yes", UserKnownHostsFile=ssh_pod.known_hosts, HostKeyAlias=f"[127.0.0.1]:{ssh_pod.port}",
                     BatchMode="yes")
    ssh_pod.set_server_env({"FAKE_RAY_LOG": str(log)})
    r = run_cli(capsys, "ray", "down", "--head", "pod", "--worker", "pod2", "--remote-bin", remote_bin)
    assert r.code == 0, r.err
    assert r.out.splitlines() == ["pod2: ray stopped", "pod: ray stopped"]  # workers first
    assert log.read_text().splitlines() == ["stop | auth=unset"] * 2


def test_ray_backend_without_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is not installed
    with pytest.raises(SweepctlError) as e:
        ray_backend.import_ray()
    assert "the Ray backend needs Ray" in str(e.value) and "pip install 'sweepctl[ray]'" in str(e.value)


def test_launch_backend_ray_without_ray_refuses_with_the_install_command(
        workspace: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    r = run_cli(capsys, "launch", str(workspace.csv([("a", "")])), "--backend", "ray")
    assert r.code == 1
    assert "pre-flight failed: Ray auto: the Ray backend needs Ray, which is not installed" in r.err
    assert "pip install 'sweepctl[ray]'" in r.err
    assert not workspace.out_root.exists()


def test_a_node_without_the_launch_volume_gets_the_plan_and_config_copies(tmp_path: Path) -> None:
    """A task on a node that does not mount the driver's out_root writes what its trainer argv names."""
    here = tmp_path / "driver" / ".sweeps" / "s"
    (here / "configs").mkdir(parents=True)
    (here / "plan.json").write_text('{"plan": 1}')
    (here / "configs" / "mhc.py").write_text("n_layer = 6\n")
    (here / "configs" / "mhc.py.bak-20260101-000000").write_text("old\n")  # a superseded copy stays home
    files = ray_backend.manifest_files(here)
    assert sorted(files) == ["configs/mhc.py", "plan.json"]
    there = tmp_path / "node" / ".sweeps" / "s"
    ray_backend._materialize(there, files)
    assert (there / "configs" / "mhc.py").read_text() == "n_layer = 6\n" and (there / "plan.json").exists()
    (there / "plan.json").write_text("theirs")
    ray_backend._materialize(there, files)
    assert (there / "plan.json").read_text() == "theirs"  # a node's own copy is never overwritten


def test_an_address_nothing_listens_on_fails_in_seconds_not_minutes() -> None:
    port = free_port()
    start = time.monotonic()
    with pytest.raises(SweepctlError, match=f"no Ray cluster answers at 127.0.0.1:{port}") as e:
        ray_backend._probe(f"127.0.0.1:{port}")
    assert "sweepctl ray up" in str(e.value) and time.monotonic() - start < ray_backend.CONNECT_TIMEOUT_S + 1


# --- a real head over SSH --------------------------------------------------------------------------

def _pids_under(marker: str) -> list[int]:
    """Processes whose command line names `marker` (our private temp dir), and their children."""
    found, parents = [], {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(entry.name)
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(pid)
    children = [pid for pid, ppid in parents.items() if ppid in found and pid not in found]
    return found + children


def _stop(pids: list[int]) -> None:
    """SIGTERM our Ray processes by pid, then SIGKILL what is left after a grace period (never `ray stop`)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and not _zombie(p) for p in pids):
            time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def test_ray_up_starts_a_real_head_on_a_pod_over_ssh(
        ssh_pod: SSHPod, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    pod_home = tmp_path / "pod-home"
    pod_home.mkdir()
    # The pod's ~ is a temp dir (its token goes there); the pod's sweepctl is this checkout's.
    ssh_pod.set_server_env({"HOME": str(pod_home), "RAY_USAGE_STATS_ENABLED": "0"})
    monkeypatch.setenv("SWEEPCTL_REMOTE_BIN", ssh_pod.remote_bin)
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short (Ray's sockets live under it), and ours alone
    gcs, nm, om = free_port(), free_port(), free_port()
    extra = [f"--temp-dir={temp}", f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
             "--num-cpus=1", "--num-gpus=0"]
    try:
        r = run_cli(capsys, "ray", "up", "--head", "pod", "--port", str(gcs), "--node-manager-port", str(nm),
                    "--object-manager-port", str(om), *(f"--start-arg={a}" for a in extra))
        assert r.code == 0, r.out + r.err
        ray_bin = str(Path(ssh_pod.remote_bin).with_name("ray"))
        assert f"pod: Ray 2.60.0 at {ray_bin}" in r.out
        address = next(line for line in r.out.splitlines() if "head started at" in line).rsplit(" ", 1)[1]
        assert address.endswith(f":{gcs}")
        assert f"launch:    sweepctl launch CSV --backend ray --ray-address {address} --host pod" in r.out
        with socket.create_connection(("127.0.0.1", gcs), timeout=5):
            pass  # the head's GCS listens where we asked
        assert (pod_home / ".ray" / "auth_token").read_text().strip()  # token made on the pod, for its workers
        assert _pids_under(temp), "no Ray process runs under our temp dir"
    finally:
        _stop(_pids_under(temp))
        with contextlib.suppress(OSError):
            import shutil

            shutil.rmtree(temp)
