"""--host, --remote-bin, --accept-new-host-key: what every pod-facing command shares.

A command that acts on a pod adds the three options and two lines:

    def stop(..., host: list[str] | None = remote_opts.HOST, remote_bin: str | None = remote_opts.REMOTE_BIN,
             accept_new_host_key: bool = remote_opts.ACCEPT_NEW_HOST_KEY) -> None:
        if pods := remote_opts.resolve(host, remote_bin, accept_new_host_key):
            return on_pods.stop(pods, remote_opts.forwarded())

`resolve` returns None when no host is given (flag, SWEEPCTL_HOST, or the project file's `host` /
`hosts`), and the command runs here. Otherwise `forwarded()` rebuilds the command's own flags from
what was typed, so the pod runs the same subcommand with the same meaning; the pod's sweepctl is
checked to be this version in the same round trip as the command (`sweepctl.remote`).
"""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import typer

from sweepctl.errors import RemoteError, SweepctlError

if TYPE_CHECKING:  # annotations only: the CLI imports the transport when a command needs it
    from sweepctl.transport import Result, Transport

T = TypeVar("T")

HOST = typer.Option(None, "--host", metavar="HOST", show_default=False,
                    help="Run this on the pod behind the ssh alias HOST (repeat for several pods) "
                         "\\[default: SWEEPCTL_HOST, or the project file's host/hosts; none: this machine].")
LAUNCH_HOST = typer.Option(None, "--host", metavar="HOST[=SHARDS]", show_default=False,
                           help="Launch on the pod behind the ssh alias HOST; repeat for several pods "
                                "(row i -> global shard i % total, shards numbered host by host). "
                                "HOST=N gives that host N shards \\[default: --shards, else its GPU count].")
REMOTE_BIN = typer.Option(None, "--remote-bin", metavar="PATH", show_default=False,
                          help="sweepctl on the pod \\[default: SWEEPCTL_REMOTE_BIN, the project file, "
                               "or where bootstrap installs it].")
ACCEPT_NEW_HOST_KEY = typer.Option(False, "--accept-new-host-key",
                                   help="Trust a pod's host key seen for the first time and record it in "
                                        "~/.ssh/known_hosts (a changed key is always refused).")
# The options above never go to the pod: it is the target, not a hop.
REMOTE_PARAMS = ("host", "remote_bin", "accept_new_host_key")


@dataclass
class Answer(Generic[T]):
    """One host's result of a parallel call: its value, or the error it raised."""

    host: str
    value: T | None = None
    error: SweepctlError | None = None
    connected: bool = True  # False: no live SSH connection after the error (down, refused, dropped)

    def describe(self) -> str:
        """The error as a status footer shows it: `unreachable — connection refused by ... — hint`."""
        assert self.error is not None
        e = self.error
        text = e.message + (f" — {e.hint}" if e.hint else "")
        return f"{'unreachable' if not self.connected else 'failed'} — {text}"


@dataclass
class Pods:
    """The pods a command acts on, and how to reach their sweepctl."""

    hosts: list[str]
    remote_bin: str
    accept_new_host_key: bool = False
    shards: dict[str, int] = field(default_factory=dict)  # HOST=N given to launch

    @property
    def single(self) -> bool:
        return len(self.hosts) == 1

    def one(self, what: str) -> str:
        """The host, for commands that act on one run or one terminal."""
        if not self.single:
            raise SweepctlError(f"{what} acts on one pod; got {len(self.hosts)}: {', '.join(self.hosts)}",
                                hint="pass the one --host that has it (status shows a host column)")
        return self.hosts[0]

    def transport(self, host: str) -> Transport:
        from sweepctl.remote import open_transport

        return open_transport(host, accept_new_host_key=self.accept_new_host_key)

    @contextlib.contextmanager
    def open_all(self) -> Iterator[dict[str, Transport]]:
        """A transport per host (connecting lazily), all closed at the end: one SSH connection per
        pod for all the calls of a command (a --watch refresh reuses it)."""
        transports = {h: self.transport(h) for h in self.hosts}
        try:
            yield transports
        finally:
            for t in transports.values():
                t.close()

    def sweepctl(self, transport: Transport, args: list[str], *, check: bool = True,
                 timeout: float | None = None) -> Result:
        """`sweepctl ARGS` on the pod, refusing a missing or different-version sweepctl (same round trip)."""
        from sweepctl import __version__
        from sweepctl.remote import remote_sweepctl
        from sweepctl.transport import DEFAULT_COMMAND_TIMEOUT

        return remote_sweepctl(transport, args, self.remote_bin, expect_version=__version__, check=check,
                               timeout=timeout or DEFAULT_COMMAND_TIMEOUT)

    def sweepctl_json(self, transport: Transport, args: list[str]) -> Any:
        return parse_json(transport, args, self.sweepctl(transport, args).stdout)

    def each(self, call: Callable[[str, Transport], T], transports: dict[str, Transport] | None = None
             ) -> list[Answer[T]]:
        """`call(host, transport)` on every host at once (threads: the time is spent waiting on the
        network), answers in host order. A host's SweepctlError is its answer, not everyone's."""
        def one(host: str) -> Answer[T]:
            t = transports[host] if transports else self.transport(host)
            try:
                return Answer(host, value=call(host, t))
            except SweepctlError as e:
                return Answer(host, error=e, connected=getattr(t, "connected", True))
            finally:
                if not transports:
                    t.close()

        if self.single:  # no thread for the common case: tracebacks and Ctrl-C stay simple
            return [one(self.hosts[0])]
        with ThreadPoolExecutor(max_workers=len(self.hosts), thread_name_prefix="sweepctl-host") as pool:
            return list(pool.map(one, self.hosts))


def parse_json(transport: Transport, args: list[str], text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise RemoteError(f"`sweepctl {' '.join(args[:2])}` printed no JSON", where=transport.host,
                          hint=f"run `sweepctl bootstrap --host {transport.host}` to install this version") from None


def raise_if_failed(answers: list[Answer[Any]]) -> None:
    """After the answers were shown: one host's error as it is (it names the host and keeps its
    exit code), or one line listing every host that failed."""
    failed = [a for a in answers if a.error is not None]
    if not failed:
        return
    if len(failed) == 1:
        assert failed[0].error is not None
        raise failed[0].error
    raise RemoteError(f"{len(failed)} of {len(answers)} hosts did not answer: "
                      + "; ".join(f"{a.host}: {a.describe()}" for a in failed),
                      hint="the others' results are above; retry when the host is back")


def resolve(host: list[str] | None, remote_bin: str | None, accept_new_host_key: bool) -> Pods | None:
    """The pods named by --host, else SWEEPCTL_HOST / the project file's host, else its hosts;
    None means this machine. `HOST=N` (launch) sets that host's shard count."""
    from sweepctl.settings import load_settings
    from sweepctl.sweep.hosts import parse_host

    settings = load_settings(remote_bin=remote_bin)
    given = list(host or []) or ([settings.host] if settings.host else list(settings.hosts))
    if not given:
        return None
    parsed = [parse_host(arg) for arg in given]
    names = [h for h, _ in parsed]
    dupes = sorted({h for h in names if names.count(h) > 1})
    if dupes:
        raise SweepctlError(f"--host {dupes[0]} is given twice", hint="name each pod once")
    return Pods(hosts=names, remote_bin=settings.remote_bin, accept_new_host_key=accept_new_host_key,
                shards={h: n for h, n in parsed if n is not None})


def forwarded(*, exclude: tuple[str, ...] = ()) -> list[str]:
    """The running command's options as typed, rebuilt as argv for the pod's sweepctl.

    Options left at their defaults are not sent (the pod is the same version, so its defaults
    are ours); positional arguments and `exclude` are the caller's to place."""
    ctx = _current_context()
    argv: list[str] = []
    for param in ctx.command.params:
        if param.param_type_name != "option" or param.name in (*REMOTE_PARAMS, *exclude):
            continue
        value = ctx.params.get(param.name or "")
        if value is None or value == param.default or (param.multiple and not value):
            continue
        long = max(param.opts, key=len)  # --follow rather than -f: readable in the pod's logs
        if param.is_flag:
            if value:
                argv.append(long)
            elif param.secondary_opts:
                argv.append(max(param.secondary_opts, key=len))
            continue
        for item in value if param.multiple else [value]:
            argv += [long, str(item)]
    return argv


def hint(*words: str) -> str:
    """`sweepctl WORDS`, plus the --host and --out-root the running command was given: a next
    step that reaches the same runs when pasted (a hint without them looks somewhere else)."""
    params = _current_context().params
    out = ["sweepctl", *words]
    for h in params.get("host") or ():
        name, _, shards = h.rpartition("=")
        out += ["--host", name if name and shards.isdigit() else h]  # launch's pod=N: N is launch's alone
    if params.get("out_root"):
        out += ["--out-root", str(params["out_root"])]
    return shlex.join(out)


def command_line(*extra: str, drop: tuple[str, ...] = ()) -> str:
    """The running command as typed (`sweepctl status --host pod --out-root /x`), without the
    options in `drop`, plus `extra`: a hint the user can paste, keeping the --host and --out-root
    they gave. The first word of `extra` may repeat the subcommand's name; it is not repeated."""
    ctx = _current_context()
    names = []
    c = ctx
    while c.parent is not None:  # the root's own name is however Python was started; say `sweepctl`
        names.insert(0, c.info_name)
        c = c.parent
    words = ["sweepctl", *names]
    if extra and extra[0] == words[-1]:
        extra = extra[1:]
    tail: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.param_type_name == "argument":
            if value is not None:
                words += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
            continue
        long = max(param.opts, key=len)
        if long in drop or long in extra or value is None or value == param.default or (param.multiple and not value):
            continue
        if param.is_flag:
            tail += [long] if value else [max(param.secondary_opts, key=len)] if param.secondary_opts else []
            continue
        for item in value if param.multiple else [value]:
            tail += [long, str(item)]
    return shlex.join([*words, *tail, *extra])


def _current_context() -> Any:
    """The running command's click context: Typer >= 0.2x vendors click (typer._click), older
    Typer uses the click package; the Context and Option attributes read above are the same."""
    try:
        from typer._click.globals import get_current_context  # type: ignore[import-not-found]
    except ImportError:
        from click import get_current_context
    return get_current_context()
