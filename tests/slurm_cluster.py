"""A real single-node Slurm on loopback, with its own munge: what `sbatch` of an exported script meets.

Use it from a test module by registering it as a plugin:

    pytest_plugins = ["slurm_cluster"]  # slurm_cluster

    def test_array(slurm_cluster, workspace):
        job = slurm_cluster.sbatch(script)            # SLURM_CONF already points at this cluster
        tasks = slurm_cluster.wait_finished(job)      # {"0": "COMPLETED", "1": "COMPLETED", ...}

The cluster is Debian's `slurm-wlm` (22.05): `munged`, `slurmctld` and `slurmd`, each in the
foreground as a child of the test, configured entirely from files in one temp directory (its own
slurm.conf and gres.conf, state and spool directories, logs, pid files, a fresh munge key and
socket). The machine's /etc/slurm, /etc/munge and the system munge are never read: every Slurm
command gets SLURM_CONF, and slurm.conf's `AuthInfo=socket=...` sends its munge calls to the
private socket. The node declares `gpus` GPUs as gres on stand-in character devices (`mknod` with
NVIDIA's major number 195; nothing opens them), so `--gres=gpu:N` is scheduled and Slurm sets
CUDA_VISIBLE_DEVICES for each task as on a GPU node.

What it takes here (root in a container, no systemd, no cgroup delegation), found by starting it:
- `munged -F` runs as root without `--force`; it insists that the socket's directory is
  searchable by everyone (0711: mkdtemp's 0700 makes it exit) and writable only by its owner. The
  key is 0400 and random. The socket path must fit a Unix socket (~100 bytes): the directory is a
  short one under /tmp, not pytest's tmp_path.
- `ProctrackType=proctrack/linuxproc` and `TaskPlugin=task/none`: no cgroup plugin is loaded, so
  slurmd starts without a cgroup hierarchy of its own. `SlurmUser` and `SlurmdUser` are the user
  running the tests (root here, the only way it was tried): no `slurm` user is needed. `JobAcctGatherType=jobacct_gather/none` and
  `AccountingStorageType=accounting_storage/none`: no slurmdbd. `MailProg=/bin/true`: Debian's
  default mail program is not installed.
- `SlurmctldHost` must be this machine's short hostname (`hostname -s`) or slurmctld refuses to
  run as the controller; the node gets the same name with `NodeAddr=127.0.0.1`, and slurmd is
  started with `-N` so it never guesses.
- gres.conf's `File=` must name character or block devices: with plain files slurmd logs "is not
  a valid character or block device" (it still counts them). Without permission to mknod (not
  root) the fixture uses plain files and says so in `gres_note`, which `logs()` shows first.
- The node's `CPUs` is the number this process may run on (its affinity, which a container's cpuset
  limits): a count above what slurmd finds drains the node.
- Ports are picked free, and a start whose port was taken meanwhile is tried again on others:
  slurmd exits at once on a taken port, slurmctld only after about 10 s of retrying its bind.
- Startup to an idle node takes about half a second here; `MinJobAge=600` keeps finished jobs in
  `squeue -t all` (there is no accounting database to ask), and `KillWait` is how long a
  cancelled job's processes get between SIGTERM and SIGKILL.
- Messages about PMIx ("can not load PMIx library") are Slurm scanning its MPI plugins; harmless.

Teardown (also when the test failed): cancel every job of this cluster and wait until none is
left, then SIGTERM slurmd, slurmctld and munged by their own pids (never by name); a job step that
is still there (slurmstepd outlives slurmd by design) is found by the slurmd.log it holds open and
SIGKILLed with the processes under it; then the directory is removed. Skipped with the reason
when the binaries are absent (`scripts/setup-env --test` installs slurmctld, slurmd, slurm-client
and munge).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
SBIN = ("/usr/sbin", "/usr/bin")  # munged and the daemons live in sbin, which a user's PATH may lack
READY_TIMEOUT_S = 20.0  # idle within ~0.5 s here; a loaded CI box gets room
STOP_TIMEOUT_S = 20.0  # slurmctld saves its state before it exits: a few seconds
PORT_ATTEMPTS = 3
KILL_WAIT_S = 20  # a cancelled job's runner and trainer write their summaries within this
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
                      "BOOT_FAIL", "DEADLINE"})


def free_port() -> int:
    """A loopback port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def need_slurm() -> None:
    missing = [b for b in BINARIES if binary(b) is None]
    if missing:
        pytest.skip(f"Slurm not installed (no {', '.join(missing)}): `scripts/setup-env --test` installs "
                    "slurmctld, slurmd, slurm-client and munge")


@dataclass
class SlurmCluster:
    """munged + slurmctld + slurmd for one node, `gpus` gres GPUs, all files under `root`."""

    root: Path
    gpus: int = 2
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    cpus: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))  # the CPUs this process may use
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    gres_note: str = ""
    pick_port: Callable[[], int] = free_port  # slurmctld's and slurmd's ports, two per start attempt

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge.sock"

    @property
    def env(self) -> dict[str, str]:
        """The environment for a Slurm command: this cluster's conf, no SLURM_* from outside (pytest
        itself may run inside a Slurm job)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        return env

    # start -------------------------------------------------------------------------------------
    def start(self) -> None:
        for d in ("state", "spool", "log", "dev"):
            (self.root / d).mkdir(exist_ok=True)
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._make_devices()
        # slurmd reads gres.conf from slurm.conf's directory
        (self.root / "gres.conf").write_text(
            f"NodeName={self.node} Name=gpu File={self.root / 'dev'}/nvidia[0-{self.gpus - 1}]\n")
        self._spawn("munged", [binary("munged") or "munged", "-F", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={self.root / 'munged.pid'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}",
                               f"--seed-file={self.root / 'munged.seed'}"])
        self._wait(lambda: self.munge_socket.exists(), "munged's socket")
        for attempt in range(PORT_ATTEMPTS):
            # a free port can be taken by someone else before slurmctld binds it: try others
            self.conf.write_text(self._slurm_conf(self.pick_port(), self.pick_port()))
            self._spawn("slurmctld", [binary("slurmctld") or "slurmctld", "-D", "-f", str(self.conf)])
            self._spawn("slurmd", [binary("slurmd") or "slurmd", "-D", "-f", str(self.conf), "-N", self.node])
            try:
                self._wait(lambda: self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip() == "idle",
                           "the node to be idle")
                return
            except RuntimeError:
                if attempt == PORT_ATTEMPTS - 1 or "Address already in use" not in self.logs():
                    raise
                self._stop("slurmd", "slurmctld")

    def _make_devices(self) -> None:
        for i in range(self.gpus):
            path = self.root / "dev" / f"nvidia{i}"
            try:
                os.mknod(path, 0o600 | 0o020000, os.makedev(195, i))  # S_IFCHR: what /dev/nvidiaN is
            except PermissionError:
                path.touch()
                self.gres_note = "gres devices are plain files (no permission to mknod): slurmd logs an error"

    def _slurm_conf(self, ctld_port: int, d_port: int) -> str:
        r = self.root
        return "\n".join([
            "ClusterName=sweepctltest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={d_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"SlurmUser={getpass.getuser()}",  # root here; no `slurm` user needed
            f"SlurmdUser={getpass.getuser()}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MailProg=/bin/true",
            "ReturnToService=2",
            "MinJobAge=600",
            f"KillWait={KILL_WAIT_S}",
            "GresTypes=gpu",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} Gres=gpu:{self.gpus} State=UNKNOWN",
            f"PartitionName=main Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.root / "log" / f"{name}.stderr").open("wb")
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env)
        log.close()

    def _wait(self, ready: object, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready():  # type: ignore[operator]
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"Slurm did not start ({what}; exited: {dead or 'none'}):\n{self.logs()}")
            time.sleep(0.05)  # a poll interval inside a deadline loop

    # use ---------------------------------------------------------------------------------------
    def run(self, *argv: str, check: bool = True, timeout: float = 30,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """A Slurm client command (sbatch, squeue, scancel, ...) against this cluster."""
        full = [binary(argv[0]) or argv[0], *argv[1:]]
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, env={**self.env, **(env or {})})
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}\n{self.logs()}")
        return proc

    def sbatch(self, script: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
        """Submit; the job id."""
        return self.run("sbatch", "--parsable", *args, str(script), env=env).stdout.strip().split(";")[0]

    def submit_pasted(self, command: str, env: Mapping[str, str] | None = None) -> str:
        """Run `command` (an `sbatch ...` line as a user would paste it) in bash; the job id."""
        proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30,
                              env={**self.env, **(env or {})})
        found = re.fullmatch(r"Submitted batch job (\d+)\n", proc.stdout)
        if proc.returncode != 0 or not found:
            raise AssertionError(f"{command} exited {proc.returncode}: {proc.stdout}{proc.stderr}\n{self.logs()}")
        return found.group(1)

    def tasks(self, job: str) -> dict[str, str]:
        """Array task index -> Slurm state, one entry per task (pending ones too)."""
        out = self.run("squeue", "-h", "-r", "-t", "all", "-j", job, "-o", "%K %T", check=False).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def wait_finished(self, job: str, timeout: float = 180) -> dict[str, str]:
        """Poll until every task of `job` is in a terminal state; its tasks' states."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.tasks(job)
            if states and set(states.values()) <= TERMINAL:
                return states
            if time.monotonic() > deadline:
                pytest.fail(f"job {job} not finished after {timeout:g} s: {states}\n{self.logs()}")
            time.sleep(0.2)  # a poll interval inside a deadline loop

    def logs(self, lines: int = 15) -> str:
        """The tail of every daemon's log, to explain a failure."""
        out = [self.gres_note] if self.gres_note else []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace").strip().splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    # stop --------------------------------------------------------------------------------------
    def stop(self, *, cancel: bool = True) -> None:
        """Cancel this cluster's jobs and wait for them to end, then stop each daemon by its pid, and
        kill any job step that outlived them. `cancel=False` skips straight to the kill."""
        try:
            if cancel and self.procs and all(p.poll() is None for p in self.procs.values()):
                self._cancel_all()
        finally:
            self._stop("slurmd", "slurmctld", "munged")
            self._kill_leftover_steps()

    def _kill_leftover_steps(self) -> None:
        """A job step lives on without slurmd (slurmstepd is a daemon of its own, and ignores SIGTERM):
        one whose cancel did not finish in time, or that ran when slurmctld died, is found by the
        file only this cluster's steps hold open, its slurmd.log, and SIGKILLed after every process
        under it (its runner, its trainer)."""
        log = str(self.root / "log" / "slurmd.log")
        table = _process_table()
        for step in [pid for pid in table if _holds_open(pid, log)]:
            for pid in [*_descendants(step, table), step]:  # the job first: it must not outlive its step
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _stop(self, *names: str) -> None:
        for name in names:
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _cancel_all(self) -> None:
        jobs = self.run("squeue", "-h", "-o", "%A", check=False).stdout.split()
        if not jobs:
            return
        self.run("scancel", *sorted(set(jobs)), check=False)
        deadline = time.monotonic() + KILL_WAIT_S + 30
        while self.run("squeue", "-h", "-o", "%A", check=False).stdout.strip() and time.monotonic() < deadline:
            time.sleep(0.2)  # a poll interval inside a deadline loop


def _process_table() -> dict[int, int]:
    """pid -> parent pid, from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            table[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    return table


def _descendants(pid: int, table: dict[int, int]) -> list[int]:
    """Every process under `pid`, deepest first."""
    children = [c for c, parent in table.items() if parent == pid]
    return [d for c in children for d in [*_descendants(c, table), c]]


def _holds_open(pid: int, path: str) -> bool:
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).startswith(path):  # " (deleted)" follows once the file is removed
                    return True
    return False


@pytest.fixture
def slurm_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlurmCluster]:
    """A running one-node Slurm with 2 gres GPUs; SLURM_CONF points at it for this test."""
    need_slurm()
    root = Path(tempfile.mkdtemp(prefix="swslurm", dir="/tmp"))
    root.chmod(0o711)  # munged: every user must reach its socket
    cluster = SlurmCluster(root)
    try:
        cluster.start()
        for var in [v for v in os.environ if v.startswith("SLURM_")]:
            monkeypatch.delenv(var)
        monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
        yield cluster
    finally:
        cluster.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(root)
