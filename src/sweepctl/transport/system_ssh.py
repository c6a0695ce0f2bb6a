"""The system `ssh` client, for what paramiko cannot do: an interactive terminal (`sweepctl attach`).

`tmux attach` needs a real terminal on both ends, which is the system client's job. The argv built
here gives it this package's policies (timeouts, keepalive, the host-key rule of hostkeys.py) and,
when HOME is not the password database's home, the same config and known_hosts files that the
paramiko side reads, so both clients agree on where a host is and which key it must have.
"""

from __future__ import annotations

import os
import pwd
import shlex
from collections.abc import Sequence

from sweepctl.transport.base import DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE_S
from sweepctl.transport.target import default_ssh_config_path, resolve_ssh_target


def system_ssh_argv(host: str, remote_argv: Sequence[str], *, tty: bool = True,
                    accept_new_host_key: bool = False,
                    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> list[str]:
    """The `ssh` argv that runs `remote_argv` on `host` with this package's policies, for
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
