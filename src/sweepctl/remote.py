"""How a command runs on the pod: the same `sweepctl` subcommand, over a transport.

    with open_transport("pod", accept_new_host_key=flag) as t:
        result = remote_sweepctl(t, ["status", "--json"], settings.remote_bin,
                                 expect_version=__version__)   # one SSH round trip
        table = json.loads(result.stdout)

The pod's sweepctl is the one `bootstrap` installed (`DEFAULT_REMOTE_BIN`, overridden by
`--remote-bin` / `SWEEPCTL_REMOTE_BIN` / the project file through `sweepctl.settings`). A missing
or different-version remote sweepctl is one error saying to run `sweepctl bootstrap --host HOST`.

A remote sweepctl that fails with one of sweepctl's own errors comes back as the same kind of
error (same exit code: 1 user error, 2 refused, 3 remote), its message prefixed with the host,
so `launch --host` refuses exactly as `launch` on the pod would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from sweepctl.errors import RefusedError, RemoteError, SweepctlError
from sweepctl.transport import (
    DEFAULT_COMMAND_TIMEOUT,
    LocalTransport,
    Result,
    SSHTransport,
    StrInput,
    Transport,
)

__all__ = ["DEFAULT_REMOTE_BIN", "check_remote_version", "open_transport", "raise_for_result", "remote_sweepctl",
           "stream_sweepctl"]

# Where `bootstrap` installs sweepctl on a pod; equal to sweepctl.settings.DEFAULT_REMOTE_BIN (a
# test keeps them equal) but not imported from there, so this module stays cheap to import.
DEFAULT_REMOTE_BIN = "/opt/sweepctl-venv/bin/sweepctl"
MISSING_EXIT = 127  # what a POSIX shell (and LocalTransport) reports for a command that is not there
_VERSION_MISMATCH_EXIT = 96  # chosen outside sweepctl's own codes (0-3, 130)
_GUARD_MARK = "sweepctl-guard:"  # first word of the guard's own stderr lines, so they are unmistakable
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# Runs on the pod, in the same round trip as the command: check the binary and its version, then
# exec the command. `sh -c SCRIPT NAME ARG...` passes our values as "$@", never pasted into code.
_GUARD_SCRIPT = f"""
bin=$1; want=$2; shift 2
if [ ! -x "$bin" ]; then echo "{_GUARD_MARK} missing" >&2; exit {MISSING_EXIT}; fi
got=$("$bin" --version 2>/dev/null | tail -n 1)
got=${{got##* }}
if [ "$got" != "$want" ]; then echo "{_GUARD_MARK} version $got" >&2; exit {_VERSION_MISMATCH_EXIT}; fi
exec "$bin" "$@"
"""


def open_transport(host: str | None, accept_new_host_key: bool = False, *,
                   connect_timeout: float | None = None, ssh_config_path: str | None = None) -> Transport:
    """This machine when `host` is None, else the pod behind the ssh alias `host` (connects lazily,
    on the first call, so building one costs nothing)."""
    if host is None:
        return LocalTransport()
    return SSHTransport(host, accept_new_host_key=accept_new_host_key, connect_timeout=connect_timeout,
                        ssh_config_path=ssh_config_path)


def _bootstrap_hint(transport: Transport) -> str:
    return f"run `sweepctl bootstrap --host {transport.host}`"


def _missing(transport: Transport, remote_bin: str) -> RemoteError:
    return RemoteError(f"sweepctl is not installed at {remote_bin}", where=transport.host,
                       hint=_bootstrap_hint(transport) + " (or point --remote-bin / SWEEPCTL_REMOTE_BIN at it)")


def _mismatch(transport: Transport, remote_bin: str, remote_version: str, local_version: str) -> RemoteError:
    if not remote_version:
        return RemoteError(f"{remote_bin} is there but `--version` fails (a broken install?)",
                           where=transport.host, hint=_bootstrap_hint(transport) + " to reinstall it")
    return RemoteError(f"the pod has sweepctl {remote_version}, this machine has {local_version}",
                       where=transport.host, hint=_bootstrap_hint(transport) + " to install the same version")


def check_remote_version(transport: Transport, remote_bin: str, local_version: str) -> str:
    """Return the pod's sweepctl version; raise RemoteError (bootstrap hint) if missing or different.

    One round trip. Commands that run something anyway should pass `expect_version` to
    `remote_sweepctl` instead, which checks in the same round trip as the command.
    """
    result = transport.run([remote_bin, "--version"], timeout=DEFAULT_COMMAND_TIMEOUT)
    if result.exit_code in (MISSING_EXIT, 126):
        raise _missing(transport, remote_bin)
    lines = result.stdout.strip().splitlines()
    version = lines[-1].split()[-1] if result.ok and lines else ""
    if version != local_version:
        raise _mismatch(transport, remote_bin, version, local_version)
    return version


def remote_sweepctl(transport: Transport, args: Sequence[str], remote_bin: str = DEFAULT_REMOTE_BIN, *,
                    expect_version: str | None = None, timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
                    stdin: StrInput = None, check: bool = True) -> Result:
    """Run `<remote_bin> <args...>` through `transport` and return its Result.

    `expect_version`: refuse (without running the command) unless the pod's sweepctl reports this
    version, checked in the same round trip. `check`: a failure becomes an error of the same kind
    the pod raised (exit 1/2/3 -> SweepctlError/RefusedError/RemoteError), else a RemoteError with
    the exit code and stderr tail; with `check=False` only a missing/mismatched binary raises.
    """
    result = transport.run(_guarded_argv(args, remote_bin, expect_version), timeout=timeout, stdin=stdin)
    _raise_for_guard(transport, result, remote_bin, expect_version)
    if check and not result.ok:
        raise _remote_failure(transport, [remote_bin, *args], result)
    return result


def stream_sweepctl(transport: Transport, args: Sequence[str], remote_bin: str = DEFAULT_REMOTE_BIN, *,
                    expect_version: str | None = None, timeout: float | None = None) -> Iterator[str]:
    """`remote_sweepctl` for a command that prints as it goes (`logs -f`): yield its stdout lines
    as they arrive, then raise as `remote_sweepctl(check=True)` would if it failed. The version
    check happens in the same round trip, before the command runs."""
    result = yield from transport.stream(_guarded_argv(args, remote_bin, expect_version), timeout=timeout,
                                         check=False)
    _raise_for_guard(transport, result, remote_bin, expect_version)
    if not result.ok:
        raise _remote_failure(transport, [remote_bin, *args], result)


def _guarded_argv(args: Sequence[str], remote_bin: str, expect_version: str | None) -> list[str]:
    if expect_version is None:
        return [remote_bin, *args]
    return ["sh", "-c", _GUARD_SCRIPT, "sweepctl-guard", remote_bin, expect_version, *args]


def _raise_for_guard(transport: Transport, result: Result, remote_bin: str, expect_version: str | None) -> None:
    """A missing or different-version sweepctl, as the guard (or the shell) reported it."""
    guard_line = next((line for line in result.stderr.splitlines() if line.startswith(_GUARD_MARK)), None)
    if result.exit_code in (MISSING_EXIT, 126) and (expect_version is None or guard_line):
        raise _missing(transport, remote_bin)
    if expect_version is not None and result.exit_code == _VERSION_MISMATCH_EXIT and guard_line:
        found = guard_line.removeprefix(_GUARD_MARK).strip().removeprefix("version").strip()
        raise _mismatch(transport, remote_bin, found, expect_version)


def raise_for_result(transport: Transport, args: Sequence[str], result: Result,
                     remote_bin: str = DEFAULT_REMOTE_BIN) -> None:
    """For a `check=False` caller that first used the output (a refused `launch --json` still
    prints its pre-flight table): raise what `check=True` would have raised."""
    if not result.ok:
        raise _remote_failure(transport, [remote_bin, *args], result)


def _remote_failure(transport: Transport, argv: list[str], result: Result) -> SweepctlError:
    """The pod's own `error: ...` line, re-raised as the same kind of error; else the stderr tail."""
    lines = [_ANSI.sub("", line).rstrip() for line in result.stderr.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    kinds: dict[int, type[SweepctlError]] = {1: SweepctlError, 2: RefusedError, 3: RemoteError}
    if starts and result.exit_code in kinds:
        # The pod's message already says where and what to do; add which machine said it. It runs
        # to the end of stderr: a spec error lists one problem per line.
        message = "\n".join(lines[starts[-1]:]).removeprefix("error: ").strip()
        return kinds[result.exit_code](message, where=transport.host)
    return transport.error_for(argv, result)
