"""Where to connect: `~/.ssh/config` resolved into an `SSHTarget`, the way `ssh` itself would.

The user's ssh config is the one place a pod's address, user, keys and jump hosts are written, so
sweepctl reads it (through paramiko's parser) instead of growing flags of its own: `--host pod`
then means what `ssh pod` means. Resolution is pure data; connecting is ssh.py's job.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

from sweepctl.errors import RemoteError
from sweepctl.transport.base import DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE_S, home_tilde


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
        raise RemoteError(f"cannot read {home_tilde(path)}: {e}", where=host,
                          hint="fix the ssh config (compare with `ssh -G HOST`)") from None
    try:
        port = port_given or int(opts.get("port", 22))
    except ValueError:
        raise RemoteError(f"bad Port {opts.get('port')!r} in {home_tilde(path)}", where=host) from None
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
