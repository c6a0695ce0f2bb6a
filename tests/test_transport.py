"""Transport tests against a real OpenSSH sshd on loopback (tests/sshd.py) and real subprocesses.

The same behaviour tests run on LocalTransport and SSHTransport: a command's code must not care
where it runs. Host-key, auth and connection failures are checked for their one-line messages.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import random
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sweepctl import __version__
from sweepctl.errors import RefusedError, RemoteError, SweepctlError
from sweepctl.remote import DEFAULT_REMOTE_BIN, check_remote_version, open_transport, remote_sweepctl
from sweepctl.transport import LocalTransport, SSHTransport, Transport, resolve_ssh_target, system_ssh_argv

if TYPE_CHECKING:
    from sshd import SSHPod

# The ssh_keys / ssh_pod / ssh_pod_untrusted fixtures. Registered as a plugin (not imported at the
# top) so pytest can still rewrite its asserts; its helpers are imported inside the tests.
pytest_plugins = ["sshd"]

FAST_S = 5.0  # "fails fast": well under the kernel's minutes, well over a loaded CI box's jitter


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text, f"error is not one line: {text!r}"
    return text


@pytest.fixture(params=["local", "ssh", "ssh-no-sftp"])
def transport(request: pytest.FixtureRequest) -> Iterator[Transport]:
    """The same tests on this machine, over SSH to the loopback pod, and to the pod with its
    sshd's `Subsystem sftp` line removed (files then go over the exec channel)."""
    if request.param == "local":
        t: Transport = LocalTransport()
    else:
        pod = request.getfixturevalue("ssh_pod")
        if request.param == "ssh-no-sftp":
            pod.without_sftp()
        t = SSHTransport("pod")
    with t:
        yield t
    if isinstance(t, SSHTransport):
        assert t.has_sftp in (None, request.param == "ssh")  # the fallback ran only where it had to


# -- ssh config resolution (pure) ---------------------------------------------------------------


def test_resolve_ssh_target_follows_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = tmp_path / "config"
    config.write_text(
        "Host gpu\n  HostName 10.1.2.3\n  Port 2222\n  User ubuntu\n  IdentityFile ~/.ssh/pod_key\n"
        "  ProxyJump bastion\n  ServerAliveInterval 5\n  ConnectTimeout 3\n  HashKnownHosts yes\n"
        "Host *\n  User fallback\n")
    t = resolve_ssh_target("gpu", config)
    assert (t.hostname, t.port, t.user, t.proxy_jump) == ("10.1.2.3", 2222, "ubuntu", "bastion")
    assert t.identity_files == (f"{tmp_path}/.ssh/pod_key",)
    assert (t.keepalive_s, t.connect_timeout, t.hash_known_hosts) == (5, 3.0, True)
    assert t.known_hosts_files == (f"{tmp_path}/.ssh/known_hosts",)
    assert t.host_key_name == "[10.1.2.3]:2222"

    other = resolve_ssh_target("root@203.0.113.7:22022", config)
    assert (other.hostname, other.port, other.user) == ("203.0.113.7", 22022, "root")
    plain = resolve_ssh_target("box", config)
    assert (plain.hostname, plain.port, plain.user, plain.host_key_name) == ("box", 22, "fallback", "box")
    with pytest.raises(RemoteError, match="bad port"):
        resolve_ssh_target("box:ssh", config)


def test_modules_do_not_import_paramiko_until_used() -> None:
    code = "import sys, sweepctl.transport, sweepctl.remote; print('paramiko' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_default_remote_bin_is_where_bootstrap_installs() -> None:
    from sweepctl.settings import DEFAULT_REMOTE_BIN as SETTINGS_DEFAULT

    assert DEFAULT_REMOTE_BIN == SETTINGS_DEFAULT


# -- commands: same answers locally and over SSH -------------------------------------------------

TRICKY_ARGS = ["a b", "it's", '"quoted"', "$HOME", "`id`", "$(id)", "; echo pwned", "*", "\\", "new\nline",
               "ünïcode", "", "--flag", "a|b&c>d"]


def test_run_passes_argv_exactly(transport: Transport) -> None:
    result = transport.run(["printf", "%s|", *TRICKY_ARGS])
    assert result.exit_code == 0
    assert result.stdout == "|".join(TRICKY_ARGS) + "|"
    assert result.stderr == ""


def test_run_reports_exit_code_stdout_and_stderr(transport: Transport) -> None:
    result = transport.run(["sh", "-c", 'echo out; echo "err 1" >&2; echo "err 2" >&2; exit 7'])
    assert (result.exit_code, result.stdout, result.stderr) == (7, "out\n", "err 1\nerr 2\n")
    assert not result.ok
    with pytest.raises(RemoteError) as e:
        transport.run(["sh", "-c", 'echo "err 1" >&2; echo "err 2" >&2; exit 7'], check=True)
    text = one_line(e.value)
    assert f"{transport.host}:" in text and "exit code 7" in text and "err 1 | err 2" in text
    assert e.value.exit_code == 3


def test_missing_command_is_exit_127(transport: Transport) -> None:
    assert transport.run(["no-such-command-sweepctl-test"]).exit_code == 127


def test_run_feeds_stdin_and_env(transport: Transport) -> None:
    assert transport.run(["cat"], stdin="line 1\nline 2\n").stdout == "line 1\nline 2\n"
    result = transport.run(["sh", "-c", 'printf %s "$SWEEPCTL_T"'], env={"SWEEPCTL_T": "a b;$c"})
    assert result.stdout == "a b;$c"


def unique_sleep() -> list[str]:
    """A `sleep` argv no other process on this machine has, so the test can find it by cmdline."""
    return ["sleep", f"{30 + random.random():.9f}"]


def running(argv: list[str]) -> list[int]:
    """Pids of processes whose command line is exactly `argv` (the "pod" is this machine)."""
    wanted = "\0".join(argv).encode() + b"\0"
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "cmdline").read_bytes() == wanted:
                    pids.append(int(proc.name))
    return pids


def wait_until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + FAST_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)  # poll interval inside a deadline


def wait_gone(argv: list[str]) -> None:
    wait_until(lambda: not running(argv), f"{argv} still running after it was abandoned")


def test_run_timeout_abandons_and_kills_the_command(transport: Transport) -> None:
    sleep = unique_sleep()
    start = time.monotonic()
    with pytest.raises(RemoteError) as e:
        transport.run(["sh", "-c", '"$@"; echo never', "sh", *sleep], timeout=0.5)
    assert time.monotonic() - start < FAST_S
    assert "did not finish within 0.5s" in one_line(e.value)
    wait_gone(sleep)  # the whole process group, not just the shell we started
    assert transport.run(["echo", "still usable"]).stdout == "still usable\n"


def test_closing_a_stream_early_kills_the_command(transport: Transport) -> None:
    sleep = unique_sleep()  # stands in for `tail -F` on a log that stopped growing
    lines = transport.stream(["sh", "-c", 'echo first; exec "$@"', "sh", *sleep], timeout=20)
    assert next(lines) == "first"
    wait_until(lambda: running(sleep), "the command never started")
    lines.close()  # what Ctrl-C during `logs -f` does
    wait_gone(sleep)


def test_stream_yields_lines_as_they_arrive(transport: Transport, tmp_path: Path) -> None:
    flag = tmp_path / "go"
    # The command prints one line, then waits for the test: a buffered stream would never get
    # "first" out before the command ends, and next() would hit the stream's timeout instead.
    script = 'echo first; while [ ! -e "$1" ]; do sleep 0.05; done; echo second; printf tail'
    lines = transport.stream(["sh", "-c", script, "sh", str(flag)], timeout=20)
    assert next(lines) == "first"
    flag.touch()
    assert list(lines) == ["second", "tail"]


def test_stream_failure_raises_after_the_lines(transport: Transport) -> None:
    got = []
    with pytest.raises(RemoteError) as e:
        for line in transport.stream(["sh", "-c", "echo one; echo two; echo bad >&2; exit 4"]):
            got.append(line)
    assert got == ["one", "two"]
    assert "exit code 4" in one_line(e.value) and "bad" in str(e.value)


def test_put_get_exists(transport: Transport, tmp_path: Path) -> None:
    src = tmp_path / "local" / "command.sh"
    src.parent.mkdir()
    src.write_text("#!/bin/sh\necho hi\n")
    src.chmod(0o755)
    remote = tmp_path / "remote" / "deep" / "er" / "command.sh"
    assert not transport.exists(str(remote))
    transport.put(src, str(remote))  # parents created
    assert transport.exists(str(remote))
    assert remote.read_text() == src.read_text()
    assert stat.S_IMODE(remote.stat().st_mode) == 0o755  # still executable
    assert [p.name for p in remote.parent.iterdir()] == ["command.sh"]  # no temp file left
    back = tmp_path / "back" / "command.sh"
    transport.get(str(remote), back)
    assert back.read_text() == src.read_text()
    assert int(back.stat().st_mtime) == int(remote.stat().st_mtime)
    with pytest.raises(RemoteError) as e:
        transport.get(str(tmp_path / "absent.txt"), tmp_path / "x")
    assert "no such file" in one_line(e.value)
    assert not (tmp_path / "x").exists()


def test_binary_files_round_trip_byte_for_byte(transport: Transport, tmp_path: Path) -> None:
    """A checkpoint is binary: every byte value, a NUL and a lone \\r must survive both ways."""
    src = tmp_path / "ckpt.pt"
    src.write_bytes(bytes(range(256)) * 4097 + b"\r\x00end")  # > 1 MiB: several channel reads
    remote = tmp_path / "pod" / "run" / "ckpt.pt"
    transport.put(src, str(remote))
    assert remote.read_bytes() == src.read_bytes()
    back = tmp_path / "back.pt"
    transport.get(str(remote), back)
    assert back.read_bytes() == src.read_bytes()


def _make_run_dirs(root: Path) -> None:
    for rel, content in {"run-a/stdout.log": "step 1\n", "run-a/summary.json": '{"ok": true}',
                         "run-a/ckpt.pt": "weights" * 100, "run-b/metrics.jsonl": "{}\n",
                         "run-b/sub dir/notes.txt": "spaces in names"}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def test_sync_dir_from_copies_only_what_changed(transport: Transport, tmp_path: Path) -> None:
    remote = tmp_path / "pod" / "outputs"
    _make_run_dirs(remote)
    local = tmp_path / "laptop" / "outputs"
    ticks: list[tuple[int, int, str]] = []
    first = transport.sync_dir_from(str(remote), local, progress=lambda d, t, f: ticks.append((d, t, f)))
    copied = ["run-a/stdout.log", "run-a/summary.json", "run-b/metrics.jsonl", "run-b/sub dir/notes.txt"]
    assert first.copied == copied
    assert first.skipped_checkpoints == ["run-a/ckpt.pt"]
    assert not (local / "run-a" / "ckpt.pt").exists()
    for rel in copied:
        assert (local / rel).read_bytes() == (remote / rel).read_bytes()
        assert int((local / rel).stat().st_mtime) == int((remote / rel).stat().st_mtime)
    total = sum((remote / rel).stat().st_size for rel in copied)
    assert ticks[-1][:2] == (total, total) and first.bytes_copied == total

    second = transport.sync_dir_from(str(remote), local)
    assert (second.copied, second.unchanged) == ([], 4)

    log = remote / "run-a" / "stdout.log"
    log.write_text("step 1\nstep 2\n")
    os.utime(log, (time.time() + 10, time.time() + 10))
    (local / "run-b" / "laptop-notes.md").write_text("mine")  # local-only files are never deleted
    third = transport.sync_dir_from(str(remote), local)
    assert third.copied == ["run-a/stdout.log"]
    assert (local / "run-a" / "stdout.log").read_text() == "step 1\nstep 2\n"
    assert (local / "run-b" / "laptop-notes.md").read_text() == "mine"

    with_ckpt = transport.sync_dir_from(str(remote), local, include_checkpoints=True)
    assert with_ckpt.copied == ["run-a/ckpt.pt"]
    assert (local / "run-a" / "ckpt.pt").read_bytes() == (remote / "run-a" / "ckpt.pt").read_bytes()

    with pytest.raises(RemoteError, match="no such directory"):
        transport.sync_dir_from(str(tmp_path / "nothing-here"), local)


# -- SSH connection: reuse, reconnect, jumps ------------------------------------------------------


def test_one_connection_serves_every_call(ssh_pod: SSHPod, tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_text("x")
    with SSHTransport("pod") as t:
        assert t.calls == 0 and t.connections == 0  # lazy: nothing until the first call
        for i in range(3):
            assert t.run(["echo", str(i)]).stdout == f"{i}\n"
        t.put(src, str(tmp_path / "g.txt"))
        t.get(str(tmp_path / "g.txt"), tmp_path / "h.txt")
        assert (t.calls, t.connections) == (3, 1)
    accepted = ssh_pod.server.log.read_text().count("Accepted publickey")
    assert accepted == 1


def test_reconnects_when_the_connection_dropped_between_calls(ssh_pod: SSHPod) -> None:
    with SSHTransport("pod") as t:
        assert t.run(["echo", "1"]).ok
        t._client.get_transport().close()  # what a network blip during `status --watch` leaves behind
        assert t.run(["echo", "2"]).stdout == "2\n"
        assert (t.calls, t.connections) == (2, 2)


def test_proxy_jump_reaches_the_target_through_the_jump_host(ssh_pod: SSHPod) -> None:
    ssh_pod.add_host("pod-behind", HostName="127.0.0.1", Port=ssh_pod.port, User=getpass.getuser(),
                     IdentityFile=ssh_pod.identity, IdentitiesOnly="yes", ProxyJump="pod")
    with SSHTransport("pod-behind") as t:
        assert t.run(["echo", "via jump"]).stdout == "via jump\n"
        # The target's connection rides a channel of the jump host's connection, not a socket.
        assert type(t._client.get_transport().sock).__name__ == "Channel"
        assert t._jump is not None and t._jump.host == "pod"
    assert ssh_pod.server.log.read_text().count("Accepted publickey") == 2


def test_proxy_command_is_honoured(ssh_pod: SSHPod) -> None:
    ssh_pod.add_host("pod-cmd", HostName="127.0.0.1", Port=ssh_pod.port, User=getpass.getuser(),
                     IdentityFile=ssh_pod.identity, IdentitiesOnly="yes",
                     ProxyCommand=f"ssh -F {ssh_pod.config} -W %h:%p pod")
    with SSHTransport("pod-cmd") as t:
        assert t.run(["echo", "via command"]).stdout == "via command\n"
        assert type(t._client.get_transport().sock).__name__ == "ProxyCommand"


def test_agent_keys_are_used(ssh_pod: SSHPod, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent did not create its socket"
            time.sleep(0.01)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(ssh_pod.identity)], env=env, check=True, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=30)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        # No usable IdentityFile: only the agent can log us in.
        ssh_pod.add_host("pod-agent", HostName="127.0.0.1", Port=ssh_pod.port, User=getpass.getuser(),
                         IdentityFile=ssh_pod.home / ".ssh" / "not-there")
        with SSHTransport("pod-agent") as t:
            assert t.run(["echo", "agent"]).stdout == "agent\n"
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_server_env_reaches_remote_commands(ssh_pod: SSHPod) -> None:
    ssh_pod.set_server_env({"SWEEPCTL_OUT_ROOT": "/tmp/out root", "SWEEPCTL_TMUX_SOCKET": "/tmp/t.sock"})
    with SSHTransport("pod") as t:
        out = t.run(["sh", "-c", 'printf "%s|%s" "$SWEEPCTL_OUT_ROOT" "$SWEEPCTL_TMUX_SOCKET"']).stdout
    assert out == "/tmp/out root|/tmp/t.sock"


# -- SSH failures: one line, fast, what to do ---------------------------------------------------


def test_unreachable_port_fails_fast_with_one_line(ssh_pod: SSHPod) -> None:
    from sshd import free_port

    ssh_pod.add_host("pod-down", HostName="127.0.0.1", Port=free_port(), User=getpass.getuser(),
                     IdentityFile=ssh_pod.identity)
    start = time.monotonic()
    with pytest.raises(RemoteError) as e, SSHTransport("pod-down") as t:
        t.run(["true"])
    assert time.monotonic() - start < FAST_S
    text = one_line(e.value)
    assert text.startswith("pod-down: connection refused by 127.0.0.1:")
    assert "Port" in text and e.value.exit_code == 3


def test_silent_server_times_out(ssh_pod: SSHPod) -> None:
    # A port that accepts TCP but never speaks SSH (a hung pod, a wrong service).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        ssh_pod.add_host("pod-hung", HostName="127.0.0.1", Port=silent.getsockname()[1],
                         User=getpass.getuser(), IdentityFile=ssh_pod.identity, ConnectTimeout=1)
        start = time.monotonic()
        with pytest.raises(RemoteError) as e, SSHTransport("pod-hung") as t:
            t.run(["true"])
        assert time.monotonic() - start < FAST_S
    assert "pod-hung: timed out connecting to 127.0.0.1:" in one_line(e.value)


def test_wrong_key_fails_fast_and_says_what_was_tried(ssh_pod: SSHPod) -> None:
    stranger = ssh_pod.ssh_dir / "id_stranger"
    stranger.write_bytes(ssh_pod.keys.stranger.read_bytes())
    stranger.chmod(0o600)
    ssh_pod.add_host("pod-stranger", HostName="127.0.0.1", Port=ssh_pod.port, User=getpass.getuser(),
                     IdentityFile=stranger, IdentitiesOnly="yes")
    start = time.monotonic()
    with pytest.raises(RemoteError) as e, SSHTransport("pod-stranger") as t:
        t.run(["true"])
    assert time.monotonic() - start < FAST_S
    text = one_line(e.value)
    assert text.startswith(f"pod-stranger: authentication as {getpass.getuser()} on 127.0.0.1:")
    assert "~/.ssh/id_stranger (rejected)" in text and "ssh-add" in text and "IdentityFile" in text
    assert "PRIVATE KEY" not in text


def test_passphrase_protected_key_is_named_not_prompted(ssh_pod: SSHPod) -> None:
    locked = ssh_pod.ssh_dir / "id_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-f", str(locked)],
                   check=True, capture_output=True, timeout=30)
    ssh_pod.add_host("pod-locked", HostName="127.0.0.1", Port=ssh_pod.port, User=getpass.getuser(),
                     IdentityFile=locked, IdentitiesOnly="yes")
    with pytest.raises(RemoteError) as e, SSHTransport("pod-locked") as t:
        t.run(["true"])
    text = one_line(e.value)
    assert "~/.ssh/id_locked (passphrase-protected, not in ssh-agent)" in text
    assert "correct horse" not in text


# -- host keys ----------------------------------------------------------------------------------


def test_unknown_host_key_is_refused_with_the_way_to_accept_it(ssh_pod_untrusted: SSHPod) -> None:
    from sshd import fingerprint

    pod = ssh_pod_untrusted
    with pytest.raises(RemoteError) as e, SSHTransport("pod") as t:
        t.run(["true"])
    text = one_line(e.value)
    assert text.startswith(f"pod: unknown host key for {pod.host_key_name}")
    assert fingerprint(pod.keys.host_a.with_suffix(".pub")) in text  # the same one ssh-keygen shows
    assert "--accept-new-host-key" in text
    assert not pod.known_hosts.exists()  # nothing recorded without the flag


def test_accept_new_host_key_records_it_and_later_connections_need_no_flag(ssh_pod_untrusted: SSHPod) -> None:
    pod = ssh_pod_untrusted
    with SSHTransport("pod", accept_new_host_key=True) as t:
        assert t.run(["echo", "ok"]).stdout == "ok\n"
    key_type, key_b64 = pod.keys.host_a.with_suffix(".pub").read_text().split()[:2]
    assert pod.known_hosts.read_text() == f"{pod.host_key_name} {key_type} {key_b64}\n"
    assert stat.S_IMODE(pod.known_hosts.stat().st_mode) == 0o600
    # OpenSSH's own client agrees the host is now known.
    found = subprocess.run(["ssh-keygen", "-F", pod.host_key_name, "-f", str(pod.known_hosts)],
                           capture_output=True, timeout=30)
    assert found.returncode == 0
    with SSHTransport("pod") as t:
        assert t.run(["echo", "again"]).stdout == "again\n"
    # Entries hashed by `ssh-keygen -H` (as many distributions configure) still match.
    subprocess.run(["ssh-keygen", "-H", "-f", str(pod.known_hosts)], check=True, capture_output=True, timeout=30)
    assert pod.known_hosts.read_text().startswith("|1|")
    with SSHTransport("pod") as t:
        assert t.run(["echo", "hashed"]).stdout == "hashed\n"


def test_accepted_key_is_hashed_when_config_asks_and_dirs_are_created_private(
        ssh_pod_untrusted: SSHPod) -> None:
    pod = ssh_pod_untrusted
    known = pod.home / "fresh-dir" / "known_hosts"
    pod.add_host("pod-hashed", HostName="127.0.0.1", Port=pod.port, User=getpass.getuser(),
                 IdentityFile=pod.identity, IdentitiesOnly="yes", UserKnownHostsFile=known,
                 HashKnownHosts="yes")
    with SSHTransport("pod-hashed", accept_new_host_key=True) as t:
        assert t.run(["true"]).ok
    assert stat.S_IMODE(known.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    line = known.read_text()
    assert line.startswith("|1|") and pod.host_key_name not in line
    found = subprocess.run(["ssh-keygen", "-F", pod.host_key_name, "-f", str(known)], capture_output=True,
                           timeout=30)
    assert found.returncode == 0


def test_changed_host_key_is_always_refused_with_both_fingerprints(ssh_pod: SSHPod) -> None:
    from sshd import fingerprint

    before = ssh_pod.known_hosts.read_bytes()
    ssh_pod.server.start(host_key=ssh_pod.keys.host_b)  # the "pod" was re-created: same address, new key
    old_fp = fingerprint(ssh_pod.keys.host_a.with_suffix(".pub"))
    new_fp = fingerprint(ssh_pod.keys.host_b.with_suffix(".pub"))
    assert old_fp != new_fp
    for accept in (False, True):  # the flag accepts new keys, never changed ones
        with pytest.raises(RemoteError) as e, SSHTransport("pod", accept_new_host_key=accept) as t:
            t.run(["true"])
        text = one_line(e.value)
        assert text.startswith(f"pod: HOST KEY CHANGED for {ssh_pod.host_key_name}")
        assert old_fp in text and new_fp in text and "ssh-keygen -R" in text
    assert ssh_pod.known_hosts.read_bytes() == before


# -- the system ssh client (attach) ---------------------------------------------------------------


def test_system_ssh_argv_uses_the_same_config_and_host_key_policy(ssh_pod: SSHPod) -> None:
    argv = system_ssh_argv("pod", ["printf", "%s|", "a b", "$HOME"], tty=False)
    assert "StrictHostKeyChecking=yes" in argv and argv[argv.index("-F") + 1] == str(ssh_pod.config)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert (out.returncode, out.stdout) == (0, "a b|$HOME|")


def test_system_ssh_refuses_an_unknown_host_too(ssh_pod_untrusted: SSHPod) -> None:
    argv = system_ssh_argv("pod", ["true"], tty=False)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 255 and "Host key verification failed" in out.stderr


# -- the pod's sweepctl ---------------------------------------------------------------------------


@pytest.fixture
def fake_remote_bin(tmp_path: Path) -> Path:
    """A stand-in pod sweepctl whose behaviour each test picks by its first argument."""
    path = tmp_path / "fakebin" / "sweepctl"
    path.parent.mkdir()
    path.write_text(f"""#!/bin/sh
case "$1" in
  --version) echo "sweepctl {__version__}" ;;
  echo) shift; printf '%s|' "$@" ;;
  touch) touch "$2" ;;
  refuse) echo "some progress output"; echo "error: run r1 is running — stop it first" >&2; exit 2 ;;
  crash) echo "Traceback (most recent call last):" >&2; echo "ZeroDivisionError: boom" >&2; exit 70 ;;
  spec) printf 'error: s.csv:2: unknown key lr\ns.csv:3: bad seed\n' >&2; exit 1 ;;
esac
""")
    path.chmod(0o755)
    return path


def test_open_transport_picks_the_kind() -> None:
    assert isinstance(open_transport(None), LocalTransport)
    remote = open_transport("pod", accept_new_host_key=True)
    assert isinstance(remote, SSHTransport) and remote.accept_new_host_key and remote.connections == 0


def test_remote_sweepctl_checks_the_version_in_the_same_round_trip(ssh_pod: SSHPod) -> None:
    with open_transport("pod") as t:
        result = remote_sweepctl(t, ["--help"], ssh_pod.remote_bin, expect_version=__version__)
        assert "Usage" in result.stdout
        assert t.calls == 1  # `status --host` for 1,000 runs is one command, so one round trip
        assert check_remote_version(t, ssh_pod.remote_bin, __version__) == __version__


def test_remote_sweepctl_passes_args_exactly(ssh_pod: SSHPod, fake_remote_bin: Path) -> None:
    with open_transport("pod") as t:
        result = remote_sweepctl(t, ["echo", *TRICKY_ARGS], str(fake_remote_bin), expect_version=__version__)
    assert result.stdout == "|".join(TRICKY_ARGS) + "|"


def test_missing_remote_sweepctl_says_to_bootstrap(ssh_pod: SSHPod, tmp_path: Path) -> None:
    absent = str(tmp_path / "no-venv" / "bin" / "sweepctl")
    with open_transport("pod") as t:
        for attempt in (lambda: remote_sweepctl(t, ["status"], absent),
                        lambda: remote_sweepctl(t, ["status"], absent, expect_version=__version__),
                        lambda: check_remote_version(t, absent, __version__)):
            with pytest.raises(RemoteError) as e:
                attempt()
            text = one_line(e.value)
            assert text.startswith(f"pod: sweepctl is not installed at {absent}")
            assert "run `sweepctl bootstrap --host pod`" in text


def test_other_remote_version_is_refused_before_the_command_runs(
        ssh_pod: SSHPod, fake_remote_bin: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with open_transport("pod") as t:
        with pytest.raises(RemoteError) as e:
            remote_sweepctl(t, ["touch", str(marker)], str(fake_remote_bin), expect_version="9.9.9")
        text = one_line(e.value)
        assert f"the pod has sweepctl {__version__}, this machine has 9.9.9" in text
        assert "bootstrap --host pod" in text
        assert not marker.exists()
        with pytest.raises(RemoteError, match="bootstrap --host pod"):
            check_remote_version(t, str(fake_remote_bin), "9.9.9")


def test_pod_errors_come_back_as_the_same_kind(ssh_pod: SSHPod, fake_remote_bin: Path) -> None:
    with open_transport("pod") as t:
        with pytest.raises(RefusedError) as refused:
            remote_sweepctl(t, ["refuse"], str(fake_remote_bin))
        assert one_line(refused.value) == "pod: run r1 is running — stop it first"
        assert refused.value.exit_code == 2
        with pytest.raises(RemoteError) as crashed:
            remote_sweepctl(t, ["crash"], str(fake_remote_bin))
        text = one_line(crashed.value)
        assert "failed with exit code 70" in text and "ZeroDivisionError: boom" in text
        with pytest.raises(SweepctlError) as spec:
            remote_sweepctl(t, ["spec"], str(fake_remote_bin))
        assert str(spec.value) == "pod: s.csv:2: unknown key lr\ns.csv:3: bad seed"  # one line per problem
        assert spec.value.exit_code == 1
        unchecked = remote_sweepctl(t, ["refuse"], str(fake_remote_bin), check=False)
        assert (unchecked.exit_code, unchecked.stdout) == (2, "some progress output\n")

