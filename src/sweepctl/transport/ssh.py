"""A pod over SSH, through paramiko: one connection for the life of an `SSHTransport`.

The only kind of transport that talks to another machine, so the only module (with its helpers
in this package: target.py, hostkeys.py, auth.py, channel.py) that imports paramiko, and it does
so lazily, inside the SSH code paths, so that `sweepctl --help` and every local command stay
instant. The choices, each commented where it is made:
- connect through what `~/.ssh/config` says (target.py): TCP, ProxyJump (a channel through the
  jump host, itself an `SSHTransport`) or ProxyCommand; timeouts on the banner, the key
  exchange, authentication and every channel; keepalive so idle connections survive NAT;
- host keys by hostkeys.py's rule, keys by auth.py's; every failure to connect is one
  `RemoteError` line naming the host and the next thing to try;
- one connection serves every call (and reconnects if it dropped between calls); `calls` counts
  remote command executions so tests can count round trips;
- a command we stop waiting for is killed on the pod with its process group (channel.py);
- files go over SFTP, atomically (temp + posix-rename); a tree is listed with one `find`. A pod
  whose sshd has no SFTP subsystem (minimal images, hardened configs) gets the same operations
  over the exec channel instead (`cat`, `mkdir -p`, `mv`, as `scp -O` and rsync do).
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shlex
import socket
import stat
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweepctl.errors import RemoteError
from sweepctl.transport.auth import AuthFailed, auth_strategy
from sweepctl.transport.base import (
    DEFAULT_AUTH_TIMEOUT,
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    Result,
    StrInput,
    Transport,
    as_bytes,
    checked_result,
    decode_output,
    short_command,
    with_env,
)
from sweepctl.transport.channel import (
    KILL_SCRIPT,
    PID_WRAPPER,
    Deadline,
    RemoteCommand,
    channel_chunks,
    channel_exit_code,
)
from sweepctl.transport.hostkeys import KnownHosts, host_key_policy, host_key_refusal
from sweepctl.transport.sync import RemoteFile, atomic_download
from sweepctl.transport.target import SSHTarget, resolve_ssh_target

if TYPE_CHECKING:  # only for annotations: importing paramiko at runtime is deferred
    import paramiko


class SSHTransport(Transport):
    """A pod over SSH (paramiko), one connection for the life of the object.

    Connects on first use. `calls` counts remote command executions (run/stream), `connections`
    counts SSH connections opened (a reconnect after a drop adds one).
    """

    def __init__(self, host: str, *, accept_new_host_key: bool = False,
                 connect_timeout: float | None = None,
                 ssh_config_path: str | os.PathLike[str] | None = None,
                 _proxy_jump_override: str | None = None):
        self.host = host
        self.accept_new_host_key = accept_new_host_key
        self._connect_timeout = connect_timeout
        self._ssh_config_path = ssh_config_path
        self._proxy_jump_override = _proxy_jump_override
        self._target: SSHTarget | None = None
        self._client: paramiko.SSHClient | None = None
        self._sftp_client: paramiko.SFTPClient | None = None
        self.has_sftp: bool | None = None  # None until the first file operation asks the pod
        self._jump: SSHTransport | None = None
        self.calls = 0
        self.connections = 0
        self._killing = False

    @property
    def target(self) -> SSHTarget:
        if self._target is None:
            self._target = resolve_ssh_target(self.host, self._ssh_config_path,
                                              connect_timeout=self._connect_timeout,
                                              proxy_jump_override=self._proxy_jump_override)
        return self._target

    # -- connection -------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the connection now (otherwise the first call does); reuse it if it is alive."""
        self._connected()

    @property
    def connected(self) -> bool:
        """Whether a live connection is held now: after a failed call, False means the pod could
        not be reached (or dropped us), True that it answered and the command itself failed."""
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def _connected(self) -> paramiko.SSHClient:
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self._drop()  # it died between calls (pod rebooted, network blip): start over
        self._client = self._open_client()
        self.connections += 1
        return self._client

    def _open_client(self) -> paramiko.SSHClient:
        import paramiko

        t = self.target
        sock = self._open_socket(t)
        client = paramiko.SSHClient()
        store = KnownHosts(t.known_hosts_files, t.hash_known_hosts)
        try:
            store.load_into(client, self.host)
            client.set_missing_host_key_policy(host_key_policy(store, self.accept_new_host_key))
            client.connect(
                # paramiko files the key under `[hostname]:port` unless port is 22; pass what
                # OpenSSH would look up (HostKeyAlias is filed bare) - the socket is already open.
                hostname=t.host_key_alias or t.hostname,
                port=22 if t.host_key_alias else t.port,
                username=t.user,
                sock=sock,
                banner_timeout=t.connect_timeout,  # a port that accepts TCP but never says "SSH-2.0"
                # Key exchange must finish within this. Longer than the banner's limit: when this
                # one expires first paramiko only says "No existing session", not what went wrong.
                timeout=2 * t.connect_timeout,
                auth_timeout=DEFAULT_AUTH_TIMEOUT,  # a server that never answers an auth request
                channel_timeout=t.connect_timeout,  # opening each command's channel
                compress=t.compression,
                allow_agent=False, look_for_keys=False,  # both handled by our strategy, which reports
                auth_strategy=auth_strategy(t),
            )
            transport = client.get_transport()
            assert transport is not None  # connect() succeeded
            if t.keepalive_s > 0:
                # An idle `status --watch` connection must survive NAT/firewall idle timeouts.
                transport.set_keepalive(t.keepalive_s)
        except BaseException as e:
            client.close()
            with contextlib.suppress(Exception):
                sock.close()
            if self._jump is not None:
                self._jump.close()
                self._jump = None
            if isinstance(e, Exception):
                raise self._connect_error(e) from None
            raise
        return client

    def _open_socket(self, t: SSHTarget) -> Any:
        """A connected byte stream to the target's sshd: TCP, a jump host's channel, or a command."""
        import paramiko

        if t.proxy_jump:
            # ProxyJump a,b: reach b through a (b's own ProxyJump is replaced, as `ssh -J` does),
            # then open a direct-tcpip channel from b to the target.
            *earlier, last = [hop.strip() for hop in t.proxy_jump.split(",")]
            self._jump = SSHTransport(last, accept_new_host_key=self.accept_new_host_key,
                                      connect_timeout=self._connect_timeout,
                                      ssh_config_path=self._ssh_config_path,
                                      _proxy_jump_override=",".join(earlier) if earlier else None)
            jump_client = self._jump._connected()
            jump_transport = jump_client.get_transport()
            assert jump_transport is not None
            try:
                return jump_transport.open_channel("direct-tcpip", (t.hostname, t.port), ("127.0.0.1", 0),
                                                   timeout=t.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as e:
                self._jump.close()
                self._jump = None
                raise RemoteError(f"jump host {last} could not reach {t.hostname}:{t.port} ({e})",
                                  where=self.host,
                                  hint=f"check HostName/Port for {self.host} and that {last} allows "
                                       "TCP forwarding (AllowTcpForwarding)") from None
        if t.proxy_command:
            try:
                return paramiko.ProxyCommand(t.proxy_command)
            except paramiko.SSHException as e:
                raise RemoteError(f"ProxyCommand failed to start: {e}", where=self.host,
                                  hint=f"check ProxyCommand for {self.host} in ~/.ssh/config") from None
        try:
            return socket.create_connection((t.hostname, t.port), timeout=t.connect_timeout)
        except OSError as e:
            raise self._connect_error(e) from None

    def _connect_error(self, e: BaseException) -> RemoteError:
        """One line for every way a connection can fail, each with the next thing to try."""
        import paramiko

        t = self.target
        addr = f"{t.hostname}:{t.port}"
        where = self.host
        if isinstance(e, RemoteError):
            return e
        refusal = host_key_refusal(e, t, where)
        if refusal is not None:
            return refusal
        if isinstance(e, AuthFailed):
            tried = "; ".join(e.tried) if e.tried else "no keys"
            return RemoteError(
                f"authentication as {t.user} on {addr} failed" + (f": {e.extra}" if e.extra else "")
                + f"; tried {tried}",
                where=where,
                hint=f"load the right key with `ssh-add KEY`, or set IdentityFile for Host {self.host} in "
                     "~/.ssh/config")
        if isinstance(e, socket.gaierror):
            return RemoteError(f"cannot resolve host name {t.hostname!r}", where=where,
                               hint=f"check HostName for Host {self.host} in ~/.ssh/config, and your network")
        if isinstance(e, ConnectionRefusedError):
            return RemoteError(f"connection refused by {addr}", where=where,
                               hint="is the pod running, and is sshd on that port? check Port in ~/.ssh/config")
        if isinstance(e, (TimeoutError, socket.timeout)) or (
                isinstance(e, paramiko.SSHException)
                and any(w in str(e) for w in ("banner", "timed out", "No existing session"))):
            return RemoteError(f"timed out connecting to {addr} after {t.connect_timeout:g}s", where=where,
                               hint="is the pod up and reachable (VPN, firewall, ProxyJump)? "
                                    "ConnectTimeout in ~/.ssh/config sets the limit")
        if isinstance(e, OSError) and e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return RemoteError(f"no route to {addr}", where=where,
                               hint="check the network (VPN?) and HostName in ~/.ssh/config")
        if isinstance(e, (EOFError, ConnectionResetError)):
            return RemoteError(f"{addr} closed the connection during the SSH handshake", where=where,
                               hint="the pod's sshd may be starting or rate-limiting (MaxStartups); retry")
        return RemoteError(f"cannot connect to {addr}: {type(e).__name__}: {e}", where=where,
                           hint="try `ssh -v " + self.host + "` to see more")

    def _open_session(self) -> paramiko.Channel:
        import paramiko

        for attempt in (1, 2):
            transport = self._connected().get_transport()
            assert transport is not None
            try:
                return transport.open_session(timeout=self.target.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError):
                # The connection looked alive but was not (it dropped while idle); no command
                # has started, so one fresh connection is safe to try.
                self._drop()
                if attempt == 2:
                    raise RemoteError("the SSH connection keeps dropping", where=self.host,
                                      hint="check the pod's network and load; retry") from None
        raise AssertionError("unreachable")

    # -- commands ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _running(self, argv: Sequence[str], env: Mapping[str, str] | None,
                 timeout: float | None) -> Iterator[tuple[RemoteCommand, float | None]]:
        """Start `argv` on the pod; yield the command and its deadline (None: no limit).

        What `run` and `stream` share: a late or dropped command becomes one `RemoteError`, and
        the command is abandoned (killed if still running) on the way out, also when a stream's
        reader stops early (GeneratorExit passes through here)."""
        import paramiko

        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            chan = self._open_session()
            # The remote login shell parses one string; shlex.join makes it see exactly our argv.
            # The wrapper reports the command's pid first (then execs it, so pid and exit status are
            # the command's own): sshd will not signal a command when its channel closes, so a
            # command we abandon (timeout, `logs -f` left with Ctrl-C) is killed by pid instead.
            chan.exec_command(shlex.join(["sh", "-c", PID_WRAPPER, "sh", *with_env(argv, env)]))
            self.calls += 1
            command = RemoteCommand(chan)
        except paramiko.SSHException as e:
            raise self._lost(argv, e) from None
        try:
            yield command, deadline
        except Deadline:
            raise self._timed_out(argv, timeout or 0.0) from None
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise self._lost(argv, e) from None
        finally:
            self._abandon(command)

    def _abandon(self, command: RemoteCommand) -> None:
        """Close the channel; if the command may still be running, kill its process group."""
        chan = command.chan
        transport = chan.get_transport()
        if command.pid is None and not chan.exit_status_ready() and transport is not None and transport.is_active():
            command.await_pid()  # stdout may have been read before the pid line on stderr arrived
        finished = chan.exit_status_ready()
        chan.close()
        # Not after a lost connection (that would mean reconnecting just to clean up), and not
        # for the kill command itself (no chain of killers if the pod is stuck).
        if finished or command.pid is None or self._killing or transport is None or not transport.is_active():
            return
        self._killing = True
        try:
            with contextlib.suppress(RemoteError):
                self.run(["sh", "-c", KILL_SCRIPT, "sh", str(command.pid)], timeout=DEFAULT_CONNECT_TIMEOUT)
        finally:
            self._killing = False

    def run(self, argv: Sequence[str], timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
            stdin: StrInput = None, *, check: bool = False,
            env: Mapping[str, str] | None = None) -> Result:
        argv = list(argv)
        out = bytearray()
        with self._running(argv, env, timeout) as (command, deadline):
            for chunk in self._stdout(command, deadline, stdin):
                out.extend(chunk)
            code = self._exit_status(command.chan)
        return checked_result(self, argv, Result(code, decode_output(bytes(out)), decode_output(command.stderr)), check)

    def stream(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True,
               env: Mapping[str, str] | None = None) -> Generator[str, None, Result]:
        argv = list(argv)
        pending = b""
        # Leaving the `with` abandons the command, also when the caller stops reading early.
        with self._running(argv, env, timeout) as (command, deadline):
            for chunk in self._stdout(command, deadline):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield decode_output(line)
            if pending:
                yield decode_output(pending)
            code = self._exit_status(command.chan)
        result = Result(code, "", decode_output(command.stderr))
        if check and code != 0:
            raise self.error_for(argv, result)
        return result

    def _stdout(self, command: RemoteCommand, deadline: float | None, stdin: StrInput = None) -> Iterator[bytes]:
        """The command's stdout as it comes, after `stdin` and an EOF on it (so `cat`-like commands
        finish); its stderr goes to the command's tail as it comes."""
        chan = command.chan
        if stdin is not None:
            chan.sendall(as_bytes(stdin))
        chan.shutdown_write()
        for stream_name, chunk in channel_chunks(chan, deadline):
            if stream_name == "err":
                command.feed_stderr(chunk)
            else:
                yield chunk

    def _exit_status(self, chan: paramiko.Channel) -> int:
        if not chan.exit_status_ready():
            transport = chan.get_transport()
            if transport is None or not transport.is_active():
                raise EOFError("connection closed before the exit status arrived")
        return channel_exit_code(chan.recv_exit_status())

    def _lost(self, argv: Sequence[str], e: BaseException) -> RemoteError:
        self._drop()  # the next call reconnects
        return RemoteError(f"connection lost while running `{short_command(argv)}` ({type(e).__name__})",
                           where=self.host, hint="check the pod's network and load, then retry")

    # -- files ------------------------------------------------------------------------------

    def _sftp(self) -> paramiko.SFTPClient | None:
        """The SFTP session, or None when the pod's sshd has no SFTP subsystem: files then go
        over the exec channel (the `_exec_*` methods)."""
        import paramiko

        if self.has_sftp is False:
            return None
        if self._sftp_client is None or self._sftp_client.sock.closed:
            client = self._connected()
            try:
                self._sftp_client = client.open_sftp()
            except paramiko.SSHException as e:
                transport = client.get_transport()
                if transport is None or not transport.is_active():
                    raise self._lost(["sftp"], e) from None
                # The connection is fine and the subsystem request was refused ("Channel closed."):
                # sshd_config has no `Subsystem sftp` line.
                self.has_sftp = False
                return None
            self.has_sftp = True
        return self._sftp_client

    def _exec_error(self, result: Result, path: str) -> RemoteError:
        err = result.stderr
        if "No such file" in err or "not found" in err.lower():
            return RemoteError(f"{path}: no such file or directory", where=self.host)
        if "Permission denied" in err:
            return RemoteError(f"{path}: permission denied", where=self.host,
                               hint=f"check the owner of the path and the User for {self.host}")
        return RemoteError(f"{path}: {result.stderr_tail() or f'exit code {result.exit_code}'}", where=self.host)

    def _exec_put(self, src: Path, st: os.stat_result, remote: str) -> None:
        """put without SFTP: the bytes on stdin to `cat`, into a temp file renamed into place."""
        script = ('set -e; tmp="$1.part-$2"; trap \'rm -f "$tmp"\' EXIT; mkdir -p "$(dirname "$1")"; '
                  'cat > "$tmp"; chmod "$3" "$tmp"; touch -d "@$4" "$tmp" 2>/dev/null || true; mv -f "$tmp" "$1"')
        result = self.run(["sh", "-c", script, "sh", remote, str(os.getpid()), f"{stat.S_IMODE(st.st_mode):o}",
                           f"{st.st_mtime:.6f}"], stdin=src.read_bytes(), timeout=None)
        if not result.ok:
            raise self._exec_error(result, remote)

    def _exec_mtime(self, remote: str) -> float:
        result = self.run(["stat", "-c", "%Y", "--", remote])
        if not result.ok:
            raise self._exec_error(result, remote)
        return float(result.stdout.strip())

    def _exec_fetch(self, remote: str, local: Path, progress: Callable[[int], None] | None) -> None:
        """get without SFTP: `cat` the file, reading the channel's bytes as they come (no decoding:
        checkpoints are binary)."""
        import paramiko

        done = 0
        argv = ["cat", "--", remote]
        with self._running(argv, None, None) as (command, deadline), open(local, "wb") as f:
            for chunk in self._stdout(command, deadline):
                f.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done)
            try:
                code = self._exit_status(command.chan)
            except (paramiko.SSHException, EOFError) as e:
                raise self._lost(argv, e) from None
        if code != 0:
            raise self._exec_error(Result(code, "", decode_output(command.stderr)), remote)

    def _sftp_error(self, e: OSError, path: str) -> RemoteError:
        if e.errno == errno.ENOENT or isinstance(e, FileNotFoundError):
            return RemoteError(f"{path}: no such file or directory", where=self.host)
        if e.errno == errno.EACCES or isinstance(e, PermissionError):
            return RemoteError(f"{path}: permission denied", where=self.host,
                               hint=f"check the owner of the path and the User for {self.host}")
        return RemoteError(f"{path}: {e}", where=self.host)

    def put(self, local: str | os.PathLike[str], remote: str) -> None:
        import paramiko

        src = Path(local)
        st = src.stat()
        sftp = self._sftp()
        if sftp is None:
            return self._exec_put(src, st, remote)
        self._mkdirs(posixpath.dirname(remote))
        tmp = f"{remote}.part-{os.getpid()}"
        try:
            sftp.put(str(src), tmp)
            sftp.chmod(tmp, stat.S_IMODE(st.st_mode))  # command.sh must stay executable
            sftp.utime(tmp, (st.st_atime, st.st_mtime))
            # posix-rename replaces atomically, so a reader on the pod never sees half a file.
            sftp.posix_rename(tmp, remote)
        except OSError as e:
            with contextlib.suppress(OSError):
                sftp.remove(tmp)
            raise self._sftp_error(e, remote) from None
        except paramiko.SSHException as e:
            raise self._lost(["sftp", "put", remote], e) from None

    def get(self, remote: str, local: str | os.PathLike[str]) -> None:
        target = Path(local)
        target.parent.mkdir(parents=True, exist_ok=True)
        sftp = self._sftp()
        if sftp is None:
            mtime: float | None = self._exec_mtime(remote)
        else:
            try:
                mtime = sftp.stat(remote).st_mtime
            except OSError as e:
                raise self._sftp_error(e, remote) from None
        atomic_download(lambda tmp: self.fetch_file(remote, tmp, None), target)
        if mtime is not None:
            os.utime(target, (mtime, mtime))

    def exists(self, remote: str) -> bool:
        sftp = self._sftp()
        if sftp is None:
            return self.run(["sh", "-c", 'test -e "$1" || test -L "$1"', "sh", remote]).ok
        try:
            sftp.lstat(remote)
        except FileNotFoundError:
            return False
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise self._sftp_error(e, remote) from None
        return True

    def fetch_file(self, remote: str, local: Path, progress: Callable[[int], None] | None) -> None:
        sftp = self._sftp()
        if sftp is None:
            return self._exec_fetch(remote, local, progress)
        try:
            sftp.get(remote, str(local), callback=(lambda done, _total: progress(done)) if progress else None)
        except OSError as e:
            raise self._sftp_error(e, remote) from None

    def _mkdirs(self, remote_dir: str) -> None:
        if remote_dir in ("", "/"):
            return
        sftp = self._sftp()
        assert sftp is not None, "without SFTP, put makes its directories itself"
        try:
            if stat.S_ISDIR(sftp.stat(remote_dir).st_mode or 0):
                return
            raise RemoteError(f"{remote_dir}: exists and is not a directory", where=self.host)
        except FileNotFoundError:
            pass
        self._mkdirs(posixpath.dirname(remote_dir))
        try:
            sftp.mkdir(remote_dir)
        except OSError as e:
            # Someone else (another laptop, a shard) may have created it in the meantime.
            if not self.exists(remote_dir):
                raise self._sftp_error(e, remote_dir) from None

    def list_files(self, remote_dir: str) -> list[RemoteFile]:
        """One `find` round trip for the whole tree (a pull of 1,000 runs must not be 1,000 SFTP
        listdirs over a slow link); falls back to walking with SFTP where GNU find is missing."""
        result = self.run(["find", remote_dir, "-type", "f", "-printf", r"%s\t%T@\t%P\0"],
                          timeout=DEFAULT_COMMAND_TIMEOUT)
        if result.ok:
            files = []
            for record in result.stdout.split("\0"):
                if record:
                    size, mtime, rel = record.split("\t", 2)
                    files.append(RemoteFile(rel, int(size), float(mtime)))
            return sorted(files, key=lambda f: f.relpath)
        if "No such file" in result.stderr:
            raise RemoteError(f"{remote_dir}: no such directory", where=self.host)
        if result.exit_code == 127 or "printf" in result.stderr:  # no find, or busybox find
            return self._walk_sftp(remote_dir)
        raise self.error_for(["find", remote_dir], result)

    def _walk_sftp(self, remote_dir: str, prefix: str = "") -> list[RemoteFile]:
        sftp = self._sftp()
        if sftp is None:
            raise RemoteError("cannot list files: the pod has neither SFTP nor GNU find", where=self.host,
                              hint="install findutils (or openssh-sftp-server) on the pod")
        try:
            entries = sftp.listdir_attr(posixpath.join(remote_dir, prefix) if prefix else remote_dir)
        except OSError as e:
            raise self._sftp_error(e, remote_dir) from None
        files: list[RemoteFile] = []
        for entry in entries:
            rel = f"{prefix}/{entry.filename}" if prefix else entry.filename
            mode = entry.st_mode or 0
            if stat.S_ISDIR(mode):
                files.extend(self._walk_sftp(remote_dir, rel))
            elif stat.S_ISREG(mode):
                files.append(RemoteFile(rel, entry.st_size or 0, float(entry.st_mtime or 0)))
        return sorted(files, key=lambda f: f.relpath)

    # -- lifetime ---------------------------------------------------------------------------

    def _drop(self) -> None:
        if self._sftp_client is not None:
            with contextlib.suppress(Exception):
                self._sftp_client.close()
            self._sftp_client = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        if self._jump is not None:
            self._jump.close()
            self._jump = None

    def close(self) -> None:
        self._drop()
