"""A real OpenSSH server on loopback, and a throwaway HOME whose ~/.ssh/config reaches it as `pod`.

Use it from any test module by registering it as a plugin (importing the fixtures by name works
too, but trips ruff's F811 on every test that takes them):

    pytest_plugins = ["sshd"]  # ssh_keys, ssh_pod, ssh_pod_untrusted

    def test_status_over_ssh(ssh_pod, monkeypatch, capsys):
        # HOME is the temp home for this test: `--host pod` reaches 127.0.0.1:<port> with a key
        # from ssh_pod.home/.ssh and a known_hosts that already trusts the server.
        monkeypatch.setenv("SWEEPCTL_REMOTE_BIN", ssh_pod.remote_bin)  # this checkout's sweepctl
        ssh_pod.set_server_env({"SWEEPCTL_OUT_ROOT": str(out_root)})   # what the "pod" sees
        result = run_cli(capsys, "status", "--host", "pod")

`ssh_pod` trusts the server's host key already (what most tests want); `ssh_pod_untrusted` leaves
known_hosts empty (host-key tests). The server runs as the current user, so remote commands run
on this machine, see this filesystem, and can use this checkout's venv by absolute path
(`ssh_pod.remote_bin`, e.g. as SWEEPCTL_REMOTE_BIN). Its sessions get sshd's default environment
(HOME from the password database, a short PATH), not the test's: pass `env=` to the transport, or
`ssh_pod.set_server_env({...})` to give every remote command the variables a test needs.

Never touches the machine's own ~/.ssh: HOME is monkeypatched, SSH_AUTH_SOCK removed, and every
path in the client config is absolute. sshd is stopped by its pid at teardown.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
READY_TIMEOUT_S = 10.0  # sshd is listening within ~30 ms here; 10 s covers a loaded CI box


def _need_openssh() -> None:
    if not (os.path.exists(SSHD) and os.path.exists(SSH_KEYGEN)):
        pytest.skip("OpenSSH server not installed (`.ci/run` installs openssh-server)")


def keygen(path: Path, comment: str = "sweepctl-test") -> Path:
    """An unencrypted Ed25519 key pair at `path` / `path.pub` (ssh-keygen: the real format)."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return path


def fingerprint(pub_path: Path) -> str:
    """`SHA256:...` as ssh-keygen prints it: an independent check on our own fingerprints."""
    out = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(pub_path)],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    return out.split()[1]


def free_port() -> int:
    """A loopback port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SSHKeys:
    """Key pairs made once per test session: two host keys (to fake a re-created pod), the
    authorized client key, and a stranger's key the server does not accept."""

    host_a: Path
    host_b: Path
    client: Path
    stranger: Path


@dataclass
class SSHServer:
    """`sshd -D` on 127.0.0.1:`port`, configured entirely from files under `workdir`."""

    workdir: Path
    authorized_keys: Path
    host_key: Path
    port: int = 0
    sftp: bool = True  # False: no `Subsystem sftp` line, as on minimal images and hardened pods
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "sshd.log"

    def start(self, *, host_key: Path | None = None, server_env: Mapping[str, str] | None = None) -> None:
        """Start (or restart on the same port) and return once it answers with an SSH banner."""
        if self.proc is not None:
            self.stop()
        if host_key is not None:
            self.host_key = host_key
        if os.geteuid() == 0:
            # Privilege separation needs this empty root-owned directory when sshd runs as root;
            # Debian creates it at boot via the service unit, which containers do not run.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        for _attempt in range(5):
            port = self.port or free_port()
            config = self.workdir / "sshd_config"
            config.write_text(self._config(port, server_env))
            # -D: stay in the foreground so our pid is sshd's; -e/-E: log to a file we can show.
            proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(self.log)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            if self._wait_ready(proc, port):
                self.proc, self.port = proc, port
                return
            if self.port:  # a fixed port (restart) that will not come up: no point retrying
                break
        raise RuntimeError(f"sshd did not start: {self._log_tail()}")

    def _config(self, port: int, server_env: Mapping[str, str] | None) -> str:
        lines = [
            f"ListenAddress 127.0.0.1:{port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",  # absolute: never the user's own
            "StrictModes no",  # temp dirs are not owned/moded the way sshd insists on for ~/.ssh
            "UsePAM no",  # PAM would need the system's session stack (and root)
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",  # CI runs as root; keys only
            f"AllowUsers {getpass.getuser()}",
            "AllowTcpForwarding yes",  # ProxyJump tests hop through this same server
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "LoginGraceTime 20",
            "MaxStartups 100",  # parallel connections in one test must not be throttled
            "LogLevel VERBOSE",
        ]
        if self.sftp:
            lines.append("Subsystem sftp internal-sftp")  # no dependency on where sftp-server is installed
        if server_env:
            # SetEnv values are shell-like words; quote them so paths with spaces survive.
            lines.append("SetEnv " + " ".join(f'{k}="{v}"' for k, v in server_env.items()))
        return "\n".join(lines) + "\n"

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False  # exited: port taken, bad config (see the log)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(64).startswith(b"SSH-"):
                    return True
            time.sleep(0.01)  # a poll interval inside a deadline loop, not a fixed wait
        proc.kill()
        proc.wait()
        return False

    def _log_tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return " | ".join(text.strip().splitlines()[-5:])

    def stop(self) -> None:
        """Stop our sshd by pid (never by name). Sessions already open end with their clients."""
        if self.proc is None:
            return
        # Let per-connection sshd processes finish first (clients have just closed): once the
        # listener is gone they would be orphans nobody here reaps.
        deadline = time.monotonic() + 5
        while self.proc.poll() is None and _children(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None


def _children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (from /proc; empty where there is no /proc)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # Field 4 is the ppid; split after the ")" that ends the command name.
            if int(entry.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.parent.name))
    return found


@dataclass
class SSHPod:
    """What a test needs to talk to the server: the alias, the temp HOME and its files."""

    alias: str
    home: Path
    server: SSHServer
    keys: SSHKeys
    identity: Path  # the client's private key, inside home/.ssh

    @property
    def ssh_dir(self) -> Path:
        return self.home / ".ssh"

    @property
    def config(self) -> Path:
        return self.ssh_dir / "config"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def host_key_name(self) -> str:
        return f"[127.0.0.1]:{self.port}"

    @property
    def remote_bin(self) -> str:
        """This checkout's `sweepctl`: on loopback the "pod" shares our filesystem."""
        return str(Path(sys.executable).with_name("sweepctl"))

    def add_host(self, alias: str, **options: object) -> str:
        """Append a `Host alias` block (keyword = ssh option) and return the alias."""
        lines = [f"Host {alias}"] + [f"    {k} {v}" for k, v in options.items()]
        with self.config.open("a") as f:
            f.write("\n" + "\n".join(lines) + "\n")
        return alias

    def set_server_env(self, env: Mapping[str, str]) -> None:
        """Restart sshd (same port, same host key) so every remote command gets `env` (SetEnv):
        e.g. SWEEPCTL_OUT_ROOT / SWEEPCTL_TMUX_SOCKET for a `sweepctl ... --host pod` test."""
        self.server.start(server_env=env)

    def without_sftp(self) -> None:
        """Restart sshd (same port, same host key) with no SFTP subsystem."""
        self.server.sftp = False
        self.server.start()

    def trust_host_key(self, host_key: Path | None = None) -> None:
        """Record the server's (or `host_key`'s) public key in known_hosts, as `ssh` would."""
        pub = (host_key or self.server.host_key).with_suffix(".pub").read_text().split()
        with self.known_hosts.open("a") as f:
            f.write(f"{self.host_key_name} {pub[0]} {pub[1]}\n")
        self.known_hosts.chmod(0o600)


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> SSHKeys:
    _need_openssh()
    d = tmp_path_factory.mktemp("ssh-keys")
    return SSHKeys(host_a=keygen(d / "host_a"), host_b=keygen(d / "host_b"),
                   client=keygen(d / "client"), stranger=keygen(d / "stranger"))


def _make_pod(tmp_path: Path, keys: SSHKeys, monkeypatch: pytest.MonkeyPatch, *, trusted: bool) -> Iterator[SSHPod]:
    server_dir = tmp_path / "sshd"
    server_dir.mkdir()
    authorized = server_dir / "authorized_keys"
    shutil.copy(keys.client.with_suffix(".pub"), authorized)
    server = SSHServer(workdir=server_dir, authorized_keys=authorized, host_key=keys.host_a)
    home = tmp_path / "home"
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    identity = ssh_dir / "id_pod"
    shutil.copy(keys.client, identity)
    identity.chmod(0o600)
    shutil.copy(keys.client.with_suffix(".pub"), identity.with_suffix(".pub"))
    # The process's HOME is the temp home; paramiko (expanduser) follows it. No agent: a
    # developer's loaded keys must not make an auth test pass or fail.
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    server.start()
    pod = SSHPod(alias="pod", home=home, server=server, keys=keys, identity=identity)
    pod.config.write_text("")
    # Absolute paths everywhere: the system `ssh` takes ~ from the password database, not HOME.
    pod.add_host("pod", HostName="127.0.0.1", Port=server.port, User=getpass.getuser(),
                 IdentityFile=identity, IdentitiesOnly="yes", UserKnownHostsFile=pod.known_hosts,
                 BatchMode="yes")
    pod.config.chmod(0o600)
    if trusted:
        pod.trust_host_key()
    try:
        yield pod
    finally:
        server.stop()


@pytest.fixture
def ssh_pod(tmp_path: Path, ssh_keys: SSHKeys, monkeypatch: pytest.MonkeyPatch) -> Iterator[SSHPod]:
    """A running sshd reachable as `pod`, its host key already in known_hosts."""
    yield from _make_pod(tmp_path, ssh_keys, monkeypatch, trusted=True)


@pytest.fixture
def ssh_pod_untrusted(tmp_path: Path, ssh_keys: SSHKeys, monkeypatch: pytest.MonkeyPatch) -> Iterator[SSHPod]:
    """Like `ssh_pod`, but known_hosts does not exist yet: the first connection meets an unknown key."""
    yield from _make_pod(tmp_path, ssh_keys, monkeypatch, trusted=False)
