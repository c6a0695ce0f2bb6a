"""Host keys: the known_hosts policy, one rule for every connection sweepctl makes.

- a key known_hosts already holds for the host is accepted (hashed and `[host]:port` entries too,
  the global /etc/ssh files as well as the user's);
- an unknown key is refused, naming its fingerprint, unless `accept_new_host_key` (the CLI's
  `--accept-new-host-key`), which appends it to the user's first known_hosts file;
- a changed key is always refused, with both fingerprints, whatever the flag or the config's
  StrictHostKeyChecking says: a re-created pod and a man in the middle look the same from here,
  and only the user can tell them apart.

`system_ssh.py` passes the same policy to the system `ssh` client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sweepctl.errors import RemoteError
from sweepctl.transport.base import home_tilde

if TYPE_CHECKING:  # only for annotations: importing paramiko at runtime is deferred
    import paramiko

    from sweepctl.transport.target import SSHTarget

GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


class _UnknownHostKey(Exception):
    def __init__(self, name: str, key: paramiko.PKey):
        super().__init__(name)
        self.name, self.key = name, key


@dataclass
class KnownHosts:
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
                raise RemoteError(f"cannot read {home_tilde(path)}: {e}", where=host,
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


def host_key_policy(store: KnownHosts, accept_new: bool) -> paramiko.MissingHostKeyPolicy:
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


def host_key_refusal(e: BaseException, target: SSHTarget, where: str) -> RemoteError | None:
    """The one-line refusal for a connection that failed over its host key; None for any other failure."""
    import paramiko

    if isinstance(e, _UnknownHostKey):
        return RemoteError(
            f"unknown host key for {e.name} ({e.key.get_name()} {e.key.fingerprint}); refusing to connect",
            where=where,
            hint=f"check the fingerprint with your provider, then rerun with --accept-new-host-key "
                 f"to record it in {home_tilde(target.known_hosts_files[0])}")
    if isinstance(e, paramiko.BadHostKeyException):
        return RemoteError(
            f"HOST KEY CHANGED for {target.host_key_name}: known_hosts has {e.expected_key.get_name()} "
            f"{e.expected_key.fingerprint}, the server now offers {e.key.get_name()} {e.key.fingerprint}; "
            "refusing to connect (a re-created pod, or someone in the middle)",
            where=where,
            hint=f"if the pod was re-created, run `ssh-keygen -R '{target.host_key_name}' -f "
                 f"{home_tilde(target.known_hosts_files[0])}` and reconnect with --accept-new-host-key")
    return None
