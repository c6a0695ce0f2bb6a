"""Run an argv and move files on the machine that runs the shards: this one, or a pod over SSH.

    with open_transport("pod") as t:            # sweepctl.remote.open_transport
        t.run(["ls", "-la", "/mnt/pod_artifacts"]).stdout
        t.put("sweeps/fineweb.csv", "/mnt/pod_artifacts/outputs/.sweeps/fineweb/fineweb.csv")
        t.sync_dir_from("/mnt/pod_artifacts/outputs", "outputs/", progress=bar_update)

One abstraction (`Transport`) with a subclass per kind, after skypilot's `command_runner`:
`LocalTransport` (subprocess) and `SSHTransport` (paramiko) give the same answers for the same
argv, so a command's code does not care where it runs. Import from here, not from the modules:

    base.py        the Transport interface, Result, the defaults and helpers both kinds share
    sync.py        sync_dir_from: copy only what changed, atomically, never delete (`pull`)
    local.py       LocalTransport: this machine, through subprocess
    ssh.py         SSHTransport: a pod through paramiko, one connection, SFTP for files
    target.py      SSHTarget: `~/.ssh/config` resolved, as `ssh` would
    hostkeys.py    the known_hosts policy: unknown keys only when asked, changed keys never
    auth.py        public-key authentication, and what was tried when it fails
    channel.py     one remote command on one channel: its pid, its output, killing it
    system_ssh.py  the system `ssh` argv for what paramiko cannot do (an interactive terminal)

This package is the only place that imports paramiko, and it does so lazily (inside the SSH code
paths) so that `sweepctl --help` and every local command stay instant; importing it loads none.

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

from sweepctl.transport.auth import DEFAULT_IDENTITY_FILES
from sweepctl.transport.base import (
    DEFAULT_AUTH_TIMEOUT,
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_KEEPALIVE_S,
    STDERR_TAIL_LINES,
    Result,
    StrInput,
    Transport,
)
from sweepctl.transport.hostkeys import GLOBAL_KNOWN_HOSTS
from sweepctl.transport.local import LocalTransport
from sweepctl.transport.ssh import SSHTransport
from sweepctl.transport.sync import (
    CHECKPOINT_PATTERNS,
    ProgressCallback,
    RemoteFile,
    SyncReport,
    is_checkpoint,
)
from sweepctl.transport.system_ssh import system_ssh_argv
from sweepctl.transport.target import SSHTarget, default_ssh_config_path, resolve_ssh_target

__all__ = [
    "CHECKPOINT_PATTERNS",
    "DEFAULT_AUTH_TIMEOUT",
    "DEFAULT_COMMAND_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_IDENTITY_FILES",
    "DEFAULT_KEEPALIVE_S",
    "GLOBAL_KNOWN_HOSTS",
    "STDERR_TAIL_LINES",
    "LocalTransport",
    "ProgressCallback",
    "RemoteFile",
    "Result",
    "SSHTarget",
    "SSHTransport",
    "StrInput",
    "SyncReport",
    "Transport",
    "default_ssh_config_path",
    "is_checkpoint",
    "resolve_ssh_target",
    "system_ssh_argv",
]
