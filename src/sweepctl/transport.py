"""Run an argv and move files on the machine that runs the shards: this one, or a pod over SSH.

    with open_transport("pod") as t:            # sweepctl.remote.open_transport
        t.run(["ls", "-la", "/mnt/pod_artifacts"]).stdout
        t.put("sweeps/fineweb.csv", "/mnt/pod_artifacts/outputs/.sweeps/fineweb/fineweb.csv")
        t.sync_dir_from("/mnt/pod_artifacts/outputs", "outputs/", progress=bar_update)

One abstraction (`Transport`) with a subclass per kind, after skypilot's `command_runner`:
`LocalTransport` (subprocess) and `SSHTransport` (paramiko) give the same answers for the same
argv, so a command's code does not care where it runs.

This is the only module that imports paramiko, and it does so lazily (inside the SSH code paths)
so that `sweepctl --help` and every local command stay instant.

SSH semantics, in short (each choice is commented where it is made):
- the host is a `~/.ssh/config` alias (or `[user@]host[:port]`); HostName, User, Port,
  IdentityFile, IdentitiesOnly, ProxyJump, ProxyCommand, HostKeyAlias, UserKnownHostsFile,
  ConnectTimeout, ServerAliveInterval, Compression and HashKnownHosts are honoured;
- host keys are checked against `~/.ssh/known_hosts` (hashed and `[host]:port` entries too); an
  unknown key is refused unless `accept_new_host_key`, which records it; a changed key is always
  refused, whatever the flag or the config's StrictHostKeyChecking says;
- one connection serves every call of one `SSHTransport` (and reconnects if it dropped between
  calls); `calls` counts remote command executions so tests can count round trips;
- a command we stop waiting for (timeout, a `logs -f` stream closed early) is killed on the pod
  with its process group: sshd itself never signals a command when its channel closes;
- every failure is one `RemoteError` line naming the host and what to do next; no secrets.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import getpass
import os
import posixpath
import pwd
import selectors
import shlex
import signal
import socket
import stat
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweepctl.errors import RemoteError

if TYPE_CHECKING:  # only for annotations: importing paramiko at runtime is deferred
    import paramiko

DEFAULT_COMMAND_TIMEOUT = 120.0  # seconds; a remote `sweepctl status --json` takes well under one
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds for TCP connect, SSH banner and key exchange
DEFAULT_AUTH_TIMEOUT = 15.0  # seconds; an agent may need a moment (hardware keys)
DEFAULT_KEEPALIVE_S = 15  # NAT boxes and cloud load balancers drop idle TCP after ~60-350 s
STDERR_TAIL_LINES = 5  # how much of a failed command's stderr goes into the one-line error
CHECKPOINT_PATTERNS = ("*.pt", "*.pth", "*.ckpt")  # large model states; `pull` skips them unless asked
_POLL_S = 0.2  # how often a blocked read wakes up to check its deadline

StrInput = str | bytes | None
ProgressCallback = Callable[[int, int, str], None]  # (bytes done, bytes total, file being copied)


@dataclass(frozen=True)
class Result:
    """What a command did: its exit code and everything it printed (decoded as UTF-8)."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        """The last non-empty stderr lines joined into one line, for a one-line error message."""
        kept = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return " | ".join(kept[-lines:])


@dataclass(frozen=True)
class RemoteFile:
    """One regular file under a directory being synced: path relative to it, size, mtime (s)."""

    relpath: str
    size: int
    mtime: float


@dataclass
class SyncReport:
    """What `sync_dir_from` did, for the CLI's summary line."""

    copied: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped_checkpoints: list[str] = field(default_factory=list)
    bytes_copied: int = 0


def is_checkpoint(relpath: str) -> bool:
    """Checkpoints are big and rarely needed on a laptop, so `pull` copies them only when asked."""
    name = posixpath.basename(relpath)
    return any(fnmatch.fnmatch(name, pattern) for pattern in CHECKPOINT_PATTERNS)


def _decode(data: bytes) -> str:
    # Training logs can hold any bytes (a crashed tokenizer, a binary dumped by mistake); never
    # fail a status call over one bad byte.
    return data.decode("utf-8", errors="replace")


def _as_bytes(data: StrInput) -> bytes:
    if data is None:
        return b""
    return data.encode() if isinstance(data, str) else data


def _short_command(argv: Sequence[str], limit: int = 120) -> str:
    text = shlex.join(argv)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _with_env(argv: Sequence[str], env: Mapping[str, str] | None) -> list[str]:
    # `env K=V argv` instead of SSH "env" requests: sshd accepts only AcceptEnv names (LANG, LC_*
    # on Debian), while `env` works on every POSIX host and keeps local and remote identical.
    if not env:
        return list(argv)
    return ["env", *(f"{k}={v}" for k, v in env.items()), *argv]


def _home_tilde(path: str | os.PathLike[str]) -> str:
    """Show paths under HOME as `~/...`: shorter, and no user names in messages."""
    text = str(path)
    home = os.path.expanduser("~")
    return "~" + text[len(home):] if home != "~" and text.startswith(home + os.sep) else text


class Transport(ABC):
    """Run argvs and move files on one machine. Use as a context manager so it gets closed.

    `host` names the machine in every error message. Remote paths are POSIX paths on that machine;
    they are never expanded by a shell (`~` means a directory called `~`), so pass absolute ones.
    """

    host: str

    # -- commands ---------------------------------------------------------------------------

    @abstractmethod
    def run(self, argv: Sequence[str], timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
            stdin: StrInput = None, *, check: bool = False,
            env: Mapping[str, str] | None = None) -> Result:
        """Run `argv` to completion and return its exit code and output.

        A command still running after `timeout` seconds is abandoned and raises `RemoteError`
        (None: no limit). `check=True` turns a non-zero exit into a `RemoteError` carrying the
        exit code and the last lines of stderr. `env` is set for this command only.
        """

    @abstractmethod
    def stream(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True,
               env: Mapping[str, str] | None = None) -> Generator[str, None, Result]:
        """Yield the command's stdout lines (without the newline) as they arrive.

        For `logs -f` and watch loops. Stderr is kept and reported if the command fails
        (`check`). Closing the generator early (a `break`, Ctrl-C) stops reading and abandons the
        command. `timeout` bounds the whole stream (None: until the command exits).
        The generator's return value (`result = yield from t.stream(...)`) is the command's
        Result (stdout empty: it was yielded), so a caller with `check=False` can map the exit
        code and stderr itself, as `remote.stream_sweepctl` does.
        """

    def check_connection(self) -> None:
        """Raise `RemoteError` (one line, what to do) unless the machine runs commands."""
        result = self.run(["true"], timeout=DEFAULT_CONNECT_TIMEOUT + DEFAULT_AUTH_TIMEOUT)
        if not result.ok:
            raise RemoteError(f"`true` exited with {result.exit_code}: {result.stderr_tail()}",
                              where=self.host, hint="check the login shell and its startup files")

    # -- files ------------------------------------------------------------------------------

    @abstractmethod
    def put(self, local: str | os.PathLike[str], remote: str) -> None:
        """Copy a local file to `remote`, creating parent directories; atomic (temp + rename);
        keeps the mode bits and mtime."""

    @abstractmethod
    def get(self, remote: str, local: str | os.PathLike[str]) -> None:
        """Copy the file `remote` to `local`, creating parent directories; atomic; keeps mtime."""

    @abstractmethod
    def exists(self, remote: str) -> bool:
        """Whether `remote` exists (file, directory, anything)."""

    @abstractmethod
    def list_files(self, remote_dir: str) -> list[RemoteFile]:
        """Every regular file under `remote_dir`, recursively (symlinks are not followed)."""

    @abstractmethod
    def _fetch(self, remote: str, local: Path, progress: Callable[[int], None] | None) -> None:
        """Copy one file to `local` (which the caller then moves into place)."""

    def sync_dir_from(self, remote_dir: str, local_dir: str | os.PathLike[str], *,
                      include_checkpoints: bool = False,
                      progress: ProgressCallback | None = None,
                      include: Callable[[str], bool] | None = None) -> SyncReport:
        """Make `local_dir` hold every file of `remote_dir`, copying only what changed.

        `include(relpath)` narrows the copy to some files (e.g. one sweep's run directories out of
        an out_root) while keeping the listing to one round trip for the whole tree.

        A file is unchanged when its size and whole-second mtime match (what rsync checks by
        default); copied files get the remote mtime so the next sync sees them as unchanged.
        Local files that vanished remotely are kept: never delete a user's results. Checkpoints
        (`CHECKPOINT_PATTERNS`) are skipped unless `include_checkpoints`. `progress(done, total,
        relpath)` is called as bytes arrive, with the total of what needs copying.
        """
        local_root = Path(local_dir)
        report = SyncReport()
        todo: list[RemoteFile] = []
        for item in self.list_files(remote_dir):
            if include is not None and not include(item.relpath):
                continue
            if not include_checkpoints and is_checkpoint(item.relpath):
                report.skipped_checkpoints.append(item.relpath)
                continue
            target = _safe_join(local_root, item.relpath, self.host)
            try:
                st = target.stat()
            except FileNotFoundError:
                todo.append(item)
                continue
            if st.st_size == item.size and int(st.st_mtime) == int(item.mtime):
                report.unchanged += 1
            else:
                todo.append(item)
        total = sum(item.size for item in todo)
        done = 0
        if progress:
            progress(0, total, "")
        for item in todo:
            target = _safe_join(local_root, item.relpath, self.host)
            target.parent.mkdir(parents=True, exist_ok=True)
            tick = _progress_ticker(progress, done, total, item.relpath) if progress else None
            source = posixpath.join(remote_dir, item.relpath)
            _atomic_download(lambda tmp, _src=source, _tick=tick: self._fetch(_src, tmp, _tick), target)
            # The listed mtime, not "now": the next sync compares against the remote's listing.
            os.utime(target, (item.mtime, item.mtime))
            done += item.size
            report.copied.append(item.relpath)
            report.bytes_copied += target.stat().st_size
        if progress:
            progress(total, total, "")
        return report

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:  # noqa: B027 - LocalTransport holds nothing to close
        """Release connections. Safe to call twice."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _failed(self, argv: Sequence[str], result: Result) -> RemoteError:
        tail = result.stderr_tail()
        return RemoteError(
            f"`{_short_command(argv)}` failed with exit code {result.exit_code}"
            + (f": {tail}" if tail else " (no stderr)"), where=self.host)

    def _timed_out(self, argv: Sequence[str], timeout: float) -> RemoteError:
        return RemoteError(f"`{_short_command(argv)}` did not finish within {timeout:g}s",
                           where=self.host,
                           hint="the machine may be overloaded; retry, or raise the timeout")


def _progress_ticker(progress: ProgressCallback, base: int, total: int, relpath: str) -> Callable[[int], None]:
    # A file still being written (a live run's stdout.log) can grow past its listed size; the
    # bar is capped so it never reads more than 100%.
    def tick(done_in_file: int) -> None:
        progress(min(base + done_in_file, total), total, relpath)

    return tick


def _safe_join(root: Path, relpath: str, host: str) -> Path:
    # A listing is data from another machine: a name with `..` must not write outside `root`.
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise RemoteError(f"refusing to copy a file named {relpath!r} (it escapes the target directory)",
                          where=host)
    return root.joinpath(*parts)


def _atomic_download(fetch: Callable[[Path], None], target: Path) -> None:
    # Download next to the target, then rename: an interrupted pull never leaves a half file
    # that a later sync would take for complete.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fetch(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Local


class LocalTransport(Transport):
    """This machine, through subprocess: what every command uses without `--host`."""

    host = "localhost"

    def run(self, argv: Sequence[str], timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
            stdin: StrInput = None, *, check: bool = False,
            env: Mapping[str, str] | None = None) -> Result:
        argv = list(argv)
        try:
            # A new session (process group) so a timeout kills the whole tree: killing only the
            # child leaves grandchildren holding the pipes open and `communicate` waiting on them.
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True,
                                    env=_merged_env(env))
        except FileNotFoundError:
            # Same answer as a remote shell gives, so callers test one exit code for "missing".
            return _checked(self, argv, Result(127, "", f"{argv[0]}: command not found\n"), check)
        except PermissionError:
            return _checked(self, argv, Result(126, "", f"{argv[0]}: permission denied\n"), check)
        try:
            out, err = proc.communicate(_as_bytes(stdin), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise self._timed_out(argv, timeout or 0.0) from None
        except BaseException:  # Ctrl-C: do not leave the command running behind our back
            _kill_group(proc)
            raise
        return _checked(self, argv, Result(proc.returncode, _decode(out), _decode(err)), check)

    def stream(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True,
               env: Mapping[str, str] | None = None) -> Generator[str, None, Result]:
        argv = list(argv)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True,
                                    env=_merged_env(env))
        except (FileNotFoundError, PermissionError):
            missing = Result(127, "", f"{argv[0]}: command not found\n")
            if check:
                raise self._failed(argv, missing) from None
            return missing
        deadline = None if timeout is None else time.monotonic() + timeout
        assert proc.stdout is not None and proc.stderr is not None  # both are PIPEs above
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        pending, err = b"", b""
        try:
            while sel.get_map():
                if deadline is not None and time.monotonic() > deadline:
                    raise self._timed_out(argv, timeout or 0.0)
                for key, _ in sel.select(_POLL_S):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                    elif key.data == "err":
                        err += chunk
                    else:
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            yield _decode(line)
            if pending:
                yield _decode(pending)
            proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise self._timed_out(argv, timeout or 0.0) from None
        finally:
            sel.close()
            if proc.poll() is None:
                _kill_group(proc)
            proc.stdout.close()
            proc.stderr.close()
        result = Result(proc.returncode, "", _decode(err))
        if check and proc.returncode != 0:
            raise self._failed(argv, result)
        return result

    def put(self, local: str | os.PathLike[str], remote: str) -> None:
        self._copy(Path(local), Path(remote))

    def get(self, remote: str, local: str | os.PathLike[str]) -> None:
        self._copy(Path(remote), Path(local))

    def exists(self, remote: str) -> bool:
        return os.path.lexists(remote)

    def list_files(self, remote_dir: str) -> list[RemoteFile]:
        root = Path(remote_dir)
        if not root.is_dir():
            raise RemoteError(f"{remote_dir}: no such directory", where=self.host)
        found = []
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                st = path.lstat()
                if stat.S_ISREG(st.st_mode):
                    found.append(RemoteFile(path.relative_to(root).as_posix(), st.st_size, st.st_mtime))
        return sorted(found, key=lambda f: f.relpath)

    def _fetch(self, remote: str, local: Path, progress: Callable[[int], None] | None) -> None:
        import shutil

        shutil.copyfile(remote, local)
        if progress:
            progress(local.stat().st_size)

    def _copy(self, src: Path, dst: Path) -> None:
        import shutil

        if not src.is_file():
            raise RemoteError(f"{src}: no such file", where=self.host)
        dst.parent.mkdir(parents=True, exist_ok=True)
        _atomic_download(lambda tmp: shutil.copy2(src, tmp), dst)


def _merged_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if not env else {**os.environ, **env}


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _checked(transport: Transport, argv: Sequence[str], result: Result, check: bool) -> Result:
    if check and not result.ok:
        raise transport._failed(argv, result)
    return result


# ---------------------------------------------------------------------------------------------
# SSH: where to connect


@dataclass(frozen=True)
class SSHTarget:
    """Everything needed to reach one host, resolved from `~/.ssh/config` (pure data)."""

    alias: str  # what the user typed: used in every message
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]  # from IdentityFile; empty means OpenSSH's default id_* files
    identities_only: bool
    proxy_jump: str | None
    proxy_command: str | None
    host_key_alias: str | None
    known_hosts_files: tuple[str, ...]  # user files: the first one receives accepted keys
    hash_known_hosts: bool
    connect_timeout: float
    keepalive_s: int
    compression: bool

    @property
    def host_key_name(self) -> str:
        """The name this host's key is filed under in known_hosts, as OpenSSH writes it."""
        if self.host_key_alias:
            return self.host_key_alias  # OpenSSH files an alias as-is, without the port
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


DEFAULT_IDENTITY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


def default_ssh_config_path() -> Path:
    return Path(os.path.expanduser("~/.ssh/config"))


def resolve_ssh_target(host: str, ssh_config_path: str | os.PathLike[str] | None = None, *,
                       connect_timeout: float | None = None,
                       proxy_jump_override: str | None = None) -> SSHTarget:
    """Resolve `host` (an alias, or `[user@]host[:port]`) through the ssh config, like `ssh` does."""
    import paramiko

    user_given, name, port_given = _split_destination(host)
    path = Path(ssh_config_path) if ssh_config_path else default_ssh_config_path()
    try:
        config = paramiko.SSHConfig.from_path(str(path)) if path.is_file() else paramiko.SSHConfig()
        opts = config.lookup(name)
    except (OSError, ValueError, paramiko.SSHException) as e:
        raise RemoteError(f"cannot read {_home_tilde(path)}: {e}", where=host,
                          hint="fix the ssh config (compare with `ssh -G HOST`)") from None
    try:
        port = port_given or int(opts.get("port", 22))
    except ValueError:
        raise RemoteError(f"bad Port {opts.get('port')!r} in {_home_tilde(path)}", where=host) from None
    jump = proxy_jump_override if proxy_jump_override is not None else opts.get("proxyjump")
    known = tuple(os.path.expanduser(p) for p in (opts.get("userknownhostsfile") or "").split()) \
        or (os.path.expanduser("~/.ssh/known_hosts"),)
    return SSHTarget(
        alias=host,
        hostname=opts.get("hostname", name),
        port=port,
        user=user_given or opts.get("user") or getpass.getuser(),
        identity_files=tuple(os.path.expanduser(p) for p in opts.get("identityfile", [])),
        identities_only=opts.get("identitiesonly", "no").lower() == "yes",
        proxy_jump=None if not jump or jump.lower() == "none" else jump,
        proxy_command=None if opts.get("proxycommand", "none").lower() == "none" else opts["proxycommand"],
        host_key_alias=opts.get("hostkeyalias"),
        known_hosts_files=known,
        hash_known_hosts=opts.get("hashknownhosts", "no").lower() == "yes",
        connect_timeout=connect_timeout or float(opts.get("connecttimeout", DEFAULT_CONNECT_TIMEOUT)),
        keepalive_s=int(opts.get("serveraliveinterval", DEFAULT_KEEPALIVE_S)),
        compression=opts.get("compression", "no").lower() == "yes",
    )


def _split_destination(host: str) -> tuple[str | None, str, int | None]:
    """`user@name:port` -> (user, name, port); the alias lookup uses `name`, as `ssh user@alias` does."""
    user, _, rest = host.rpartition("@")
    name, port = rest, None
    # One colon means a port; more than one is an IPv6 address (write `[::1]:2222` for a port).
    if rest.startswith("[") and "]:" in rest:
        name, port_text = rest[1:].split("]:", 1)
        port = int(port_text) if port_text.isdigit() else None
    elif rest.count(":") == 1:
        name, port_text = rest.split(":")
        if not port_text.isdigit():
            raise RemoteError(f"bad port {port_text!r}", where=host, hint="write HOST or USER@HOST:PORT")
        port = int(port_text)
    if not name:
        raise RemoteError("empty host name", where=host, hint="pass an alias from ~/.ssh/config")
    return user or None, name, port


# ---------------------------------------------------------------------------------------------
# SSH: host keys


class _UnknownHostKey(Exception):
    def __init__(self, name: str, key: paramiko.PKey):
        super().__init__(name)
        self.name, self.key = name, key


@dataclass
class _KnownHosts:
    """The known_hosts files in effect for one target: read all, append accepted keys to the first."""

    user_files: tuple[str, ...]
    hash_names: bool

    def load_into(self, client: paramiko.SSHClient, host: str) -> None:
        # "system" host keys in paramiko's terms: read for checking, never rewritten by paramiko
        # (its save_host_keys would rewrite the user's file and drop lines it cannot parse).
        for path in (*GLOBAL_KNOWN_HOSTS, *self.user_files):
            if not os.path.isfile(path):
                continue
            try:
                client.load_system_host_keys(path)
            except Exception as e:  # paramiko raises InvalidHostKey (not an SSHException) on bad base64
                raise RemoteError(f"cannot read {_home_tilde(path)}: {e}", where=host,
                                  hint="fix or remove the broken line (see `ssh-keygen -F HOST -f FILE`)") from None

    def record(self, name: str, key: paramiko.PKey) -> str:
        """Append `name key` to the user's known_hosts, creating it private (0700 dir, 0600 file)."""
        import paramiko

        path = self.user_files[0]
        entry = paramiko.HostKeys.hash_host(name) if self.hash_names else name
        directory = os.path.dirname(path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        needs_newline = False
        if os.path.isfile(path) and os.path.getsize(path) > 0:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        # O_APPEND: a concurrent `ssh` writing the same file loses nothing; 0600 as ssh creates it.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(("\n" if needs_newline else "") + f"{entry} {key.get_name()} {key.get_base64()}\n")
        return path


def _host_key_policy(store: _KnownHosts, accept_new: bool) -> paramiko.MissingHostKeyPolicy:
    """The policy paramiko consults when known_hosts has no key for the host (never on a mismatch:
    paramiko itself raises BadHostKeyException then, which we turn into a refusal)."""
    import paramiko

    class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
        # Deliberately not AutoAddPolicy/WarningPolicy: trusting a first key silently is how a
        # man-in-the-middle gets in. The user accepts a new key explicitly, once.
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
            if not accept_new:
                raise _UnknownHostKey(hostname, key)
            store.record(hostname, key)
            client.get_host_keys().add(hostname, key.get_name(), key)

    return KnownHostsPolicy()


# ---------------------------------------------------------------------------------------------
# SSH: authentication


class _AuthFailed(Exception):
    def __init__(self, tried: list[str], extra: str = ""):
        super().__init__("authentication failed")
        self.tried, self.extra = tried, extra


def _auth_strategy(target: SSHTarget) -> Any:
    """Public-key auth in OpenSSH's spirit: IdentityFile keys, then ssh-agent keys, then the
    default `~/.ssh/id_*` when no IdentityFile is set; records what was tried for the error."""
    import paramiko
    from paramiko.auth_strategy import AuthStrategy

    class KeyAuth(AuthStrategy):
        def __init__(self) -> None:
            super().__init__(ssh_config=None)

        def authenticate(self, transport: paramiko.Transport) -> list[str]:
            tried: list[str] = []
            seen: set[bytes] = set()
            files = target.identity_files or tuple(os.path.expanduser(p) for p in DEFAULT_IDENTITY_FILES)
            encrypted_pubs: set[bytes] = set()

            def attempt(key: paramiko.PKey) -> bool:
                seen.add(key.asbytes())
                try:
                    remaining = transport.auth_publickey(target.user, key)
                except paramiko.AuthenticationException:  # includes BadAuthenticationType
                    return False
                except (paramiko.SSHException, EOFError, OSError):
                    if transport.is_active():
                        raise
                    # sshd hangs up after MaxAuthTries (6) keys: an agent full of keys does that.
                    raise _AuthFailed(tried, "the server closed the connection after too many keys "
                                             "(MaxAuthTries); set IdentitiesOnly yes with the right "
                                             "IdentityFile") from None
                if remaining:  # the server wants a second factor (password, OTP)
                    raise _AuthFailed(tried, f"the server also wants {'/'.join(remaining)}, which sweepctl "
                                             "does not do; allow key-only login for this user")
                return True

            for path in files:
                shown = _home_tilde(path)
                if not os.path.exists(path):
                    if target.identity_files:  # defaults that do not exist are not worth a mention
                        tried.append(f"{shown} (missing)")
                    continue
                try:
                    key = paramiko.PKey.from_path(path)
                except (paramiko.PasswordRequiredException, TypeError):
                    # (TypeError: what `cryptography` raises for an encrypted OpenSSH-format key.)
                    # Never prompt (commands run in scripts and watch loops); the agent may hold it.
                    pub = _public_blob(path + ".pub")
                    if pub:
                        encrypted_pubs.add(pub)
                    tried.append(f"{shown} (passphrase-protected, not in ssh-agent)")
                    continue
                except (paramiko.SSHException, OSError, ValueError) as e:
                    tried.append(f"{shown} (unreadable: {type(e).__name__})")
                    continue
                if attempt(key):
                    return tried
                tried.append(f"{shown} (rejected)")

            agent_keys: tuple[Any, ...] = ()
            agent = None
            try:
                agent = paramiko.Agent()
                agent_keys = agent.get_keys()
            except paramiko.SSHException:
                agent_keys = ()
            try:
                usable = [k for k in agent_keys if k.asbytes() not in seen]
                if target.identities_only:
                    # IdentitiesOnly: only agent keys that belong to a configured IdentityFile.
                    wanted = {_public_blob(p + ".pub") for p in target.identity_files} | encrypted_pubs
                    usable = [k for k in usable if k.asbytes() in wanted]
                rejected = 0
                for key in usable:
                    if attempt(key):
                        # A passphrase-protected file whose key the agent held was not a failure.
                        return tried
                    rejected += 1
            finally:
                if agent is not None:
                    agent.close()
            if agent_keys:
                tried.append(f"{rejected} ssh-agent key(s) (rejected)" if rejected
                             else "ssh-agent (no usable key)")
            else:
                tried.append("ssh-agent (no keys)" if os.environ.get("SSH_AUTH_SOCK") else "no ssh-agent")
            raise _AuthFailed(tried)

    return KeyAuth()


def _public_blob(pub_path: str) -> bytes | None:
    import base64

    try:
        with open(pub_path) as f:
            return base64.b64decode(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# SSH: the transport


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
        store = _KnownHosts(t.known_hosts_files, t.hash_known_hosts)
        try:
            store.load_into(client, self.host)
            client.set_missing_host_key_policy(_host_key_policy(store, self.accept_new_host_key))
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
                auth_strategy=_auth_strategy(t),
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
        if isinstance(e, _UnknownHostKey):
            return RemoteError(
                f"unknown host key for {e.name} ({e.key.get_name()} {e.key.fingerprint}); refusing to connect",
                where=where,
                hint=f"check the fingerprint with your provider, then rerun with --accept-new-host-key "
                     f"to record it in {_home_tilde(t.known_hosts_files[0])}")
        if isinstance(e, paramiko.BadHostKeyException):
            return RemoteError(
                f"HOST KEY CHANGED for {t.host_key_name}: known_hosts has {e.expected_key.get_name()} "
                f"{e.expected_key.fingerprint}, the server now offers {e.key.get_name()} {e.key.fingerprint}; "
                "refusing to connect (a re-created pod, or someone in the middle)",
                where=where,
                hint=f"if the pod was re-created, run `ssh-keygen -R '{t.host_key_name}' -f "
                     f"{_home_tilde(t.known_hosts_files[0])}` and reconnect with --accept-new-host-key")
        if isinstance(e, _AuthFailed):
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

    def _start(self, argv: Sequence[str], env: Mapping[str, str] | None) -> _RemoteCommand:
        chan = self._open_session()
        # The remote login shell parses one string; shlex.join makes it see exactly our argv.
        # The wrapper reports the command's pid first (then execs it, so pid and exit status are
        # the command's own): sshd will not signal a command when its channel closes, so a
        # command we abandon (timeout, `logs -f` left with Ctrl-C) is killed by pid instead.
        chan.exec_command(shlex.join(["sh", "-c", _PID_WRAPPER, "sh", *_with_env(argv, env)]))
        self.calls += 1
        return _RemoteCommand(chan)

    def _abandon(self, command: _RemoteCommand) -> None:
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
                self.run(["sh", "-c", _KILL_SCRIPT, "sh", str(command.pid)], timeout=DEFAULT_CONNECT_TIMEOUT)
        finally:
            self._killing = False

    def run(self, argv: Sequence[str], timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
            stdin: StrInput = None, *, check: bool = False,
            env: Mapping[str, str] | None = None) -> Result:
        import paramiko

        argv = list(argv)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            command = self._start(argv, env)
        except paramiko.SSHException as e:
            raise self._lost(argv, e) from None
        chan, out = command.chan, bytearray()
        try:
            if stdin is not None:
                chan.sendall(_as_bytes(stdin))
            chan.shutdown_write()  # EOF on the remote stdin, so `cat`-like commands finish
            for stream_name, chunk in _channel_chunks(chan, deadline):
                if stream_name == "out":
                    out.extend(chunk)
                else:
                    command.feed_stderr(chunk)
            code = self._exit_status(chan)
        except _Deadline:
            raise self._timed_out(argv, timeout or 0.0) from None
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise self._lost(argv, e) from None
        finally:
            self._abandon(command)
        return _checked(self, argv, Result(code, _decode(bytes(out)), _decode(command.stderr)), check)

    def stream(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True,
               env: Mapping[str, str] | None = None) -> Generator[str, None, Result]:
        import paramiko

        argv = list(argv)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            command = self._start(argv, env)
        except paramiko.SSHException as e:
            raise self._lost(argv, e) from None
        chan, pending = command.chan, b""
        try:
            chan.shutdown_write()
            for stream_name, chunk in _channel_chunks(chan, deadline):
                if stream_name == "err":
                    command.feed_stderr(chunk)
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield _decode(line)
            if pending:
                yield _decode(pending)
            code = self._exit_status(chan)
        except _Deadline:
            raise self._timed_out(argv, timeout or 0.0) from None
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise self._lost(argv, e) from None
        finally:
            self._abandon(command)  # also when the caller stops reading early (GeneratorExit)
        result = Result(code, "", _decode(command.stderr))
        if check and code != 0:
            raise self._failed(argv, result)
        return result

    def _exit_status(self, chan: paramiko.Channel) -> int:
        if not chan.exit_status_ready():
            transport = chan.get_transport()
            if transport is None or not transport.is_active():
                raise EOFError("connection closed before the exit status arrived")
        return _exit_code(chan.recv_exit_status())

    def _lost(self, argv: Sequence[str], e: BaseException) -> RemoteError:
        self._drop()  # the next call reconnects
        return RemoteError(f"connection lost while running `{_short_command(argv)}` ({type(e).__name__})",
                           where=self.host, hint="check the pod's network and load, then retry")

    # -- files ------------------------------------------------------------------------------

    def _sftp(self) -> paramiko.SFTPClient:
        if self._sftp_client is None or self._sftp_client.sock.closed:
            self._sftp_client = self._connected().open_sftp()
        return self._sftp_client

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
        try:
            attrs = self._sftp().stat(remote)
        except OSError as e:
            raise self._sftp_error(e, remote) from None
        _atomic_download(lambda tmp: self._fetch(remote, tmp, None), target)
        if attrs.st_mtime is not None:
            os.utime(target, (attrs.st_mtime, attrs.st_mtime))

    def exists(self, remote: str) -> bool:
        try:
            self._sftp().lstat(remote)
        except FileNotFoundError:
            return False
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise self._sftp_error(e, remote) from None
        return True

    def _fetch(self, remote: str, local: Path, progress: Callable[[int], None] | None) -> None:
        try:
            self._sftp().get(remote, str(local), callback=(lambda done, _total: progress(done)) if progress else None)
        except OSError as e:
            raise self._sftp_error(e, remote) from None

    def _mkdirs(self, remote_dir: str) -> None:
        if remote_dir in ("", "/"):
            return
        sftp = self._sftp()
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
        raise self._failed(["find", remote_dir], result)

    def _walk_sftp(self, remote_dir: str, prefix: str = "") -> list[RemoteFile]:
        sftp = self._sftp()
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


class _Deadline(Exception):
    pass


_PID_MARK = b"@sweepctl-pid "
# `$$` of this `sh -c` becomes the command's pid through `exec`; "$@" is the argv, never re-parsed.
_PID_WRAPPER = 'printf "' + _PID_MARK.decode() + '%s\\n" "$$" >&2; exec "$@"'
# Kill the command's process group (its children too: a shell pipeline, a `tail -F`); the group
# is the ssh session's own, made by sshd's setsid for this one command. Just the pid when `ps`
# is missing (minimal images).
_KILL_SCRIPT = ('pg=$(ps -o pgid= -p "$1" 2>/dev/null | tr -d " "); '
                'if [ -n "$pg" ] && [ "$pg" -gt 1 ]; then kill -TERM "-$pg"; else kill -TERM "$1"; fi '
                '2>/dev/null; exit 0')


@dataclass
class _RemoteCommand:
    """A command running on the pod: its channel, and its pid once the wrapper has reported it."""

    chan: paramiko.Channel
    pid: int | None = None
    _stderr: bytearray = field(default_factory=bytearray)
    _pid_line_done: bool = False

    def feed_stderr(self, chunk: bytes) -> None:
        self._stderr.extend(chunk)
        if self._pid_line_done or b"\n" not in self._stderr:
            return
        self._pid_line_done = True
        first, _, rest = bytes(self._stderr).partition(b"\n")
        if first.startswith(_PID_MARK) and first[len(_PID_MARK):].isdigit():
            self.pid = int(first[len(_PID_MARK):])
            self._stderr = bytearray(rest)  # the marker is ours, not the command's output

    @property
    def stderr(self) -> bytes:
        return bytes(self._stderr)

    def await_pid(self, timeout: float = 2.0) -> None:
        """Read until the pid line arrives (the wrapper's first act: one round trip at most),
        discarding stdout, which nobody will read now."""
        import select

        deadline = time.monotonic() + timeout
        while not self._pid_line_done and not self.chan.exit_status_ready() and not self.chan.closed:
            if self.chan.recv_stderr_ready():
                self.feed_stderr(self.chan.recv_stderr(65536))
            elif self.chan.recv_ready():
                self.chan.recv(65536)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                select.select([self.chan], [], [], min(left, _POLL_S))


def _channel_chunks(chan: paramiko.Channel, deadline: float | None) -> Iterator[tuple[str, bytes]]:
    """Yield ("out"|"err", bytes) until the command's output ends; raise _Deadline when late.

    Waits with select() on the channel (paramiko signals stdout and stderr data, and close, on one
    pipe), so a quiet command costs no CPU and data is handed on the moment it arrives.
    """
    import select

    while True:
        got = False
        while chan.recv_ready():
            yield "out", chan.recv(65536)
            got = True
        while chan.recv_stderr_ready():
            yield "err", chan.recv_stderr(65536)
            got = True
        if got:
            continue
        if (chan.eof_received and chan.exit_status_ready()) or chan.closed:
            # stdout reached EOF and the exit status is in; drain whatever stderr is left.
            while chan.recv_stderr_ready():
                yield "err", chan.recv_stderr(65536)
            return
        wait = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
        if wait <= 0:
            raise _Deadline
        select.select([chan], [], [], wait)


def _exit_code(code: int) -> int:
    # paramiko reports -1 when the server sent no exit status (killed by a signal, or the
    # connection closed first): make it the shell's "killed" convention rather than a negative.
    return 255 if code < 0 else code


# ---------------------------------------------------------------------------------------------
# The system ssh client, for what paramiko cannot do (an interactive terminal)


def system_ssh_argv(host: str, remote_argv: Sequence[str], *, tty: bool = True,
                    accept_new_host_key: bool = False,
                    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> list[str]:
    """The `ssh` argv that runs `remote_argv` on `host` with this module's policies, for
    `attach` (`tmux attach` needs a real terminal, which is the system client's job)."""
    argv = ["ssh"]
    if tty:
        argv.append("-t")  # a command given on the line gets no pty by default; tmux needs one
    argv += [
        # Fail in seconds, not after the kernel's minutes of SYN retries, when the pod is gone.
        "-o", f"ConnectTimeout={connect_timeout:g}",
        # Keep an attached-but-idle session alive through NAT and cloud idle timeouts.
        "-o", f"ServerAliveInterval={DEFAULT_KEEPALIVE_S}",
        # The same host-key policy as the paramiko side, whatever the user's config says:
        # unknown keys only with the explicit flag; changed keys never.
        "-o", "StrictHostKeyChecking=" + ("accept-new" if accept_new_host_key else "yes"),
    ]
    home = os.path.expanduser("~")
    try:
        passwd_home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        passwd_home = home
    if os.path.realpath(home) != os.path.realpath(passwd_home):
        # ssh takes `~` from the password database, not $HOME; when HOME points elsewhere (tests,
        # a relocated home) name the files paramiko used, so both clients agree on config and keys.
        config = default_ssh_config_path()
        if config.is_file():
            argv += ["-F", str(config)]
        known = resolve_ssh_target(host).known_hosts_files
        argv += ["-o", "UserKnownHostsFile=" + " ".join(known)]
    argv += [host, shlex.join(remote_argv)]
    return argv


__all__ = [
    "CHECKPOINT_PATTERNS",
    "DEFAULT_COMMAND_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "LocalTransport",
    "RemoteFile",
    "Result",
    "SSHTarget",
    "SSHTransport",
    "SyncReport",
    "Transport",
    "is_checkpoint",
    "resolve_ssh_target",
    "system_ssh_argv",
]
