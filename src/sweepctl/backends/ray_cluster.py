"""`sweepctl ray up` / `ray down`: a Ray cluster on pods over SSH, with the `ray` next to each pod's sweepctl.

    up = ray_up(head="pod-a", workers=["pod-b"], remote_bin=settings.remote_bin)
    up.address    # "10.0.0.5:6379": `sweepctl launch CSV --backend ray --ray-address 10.0.0.5:6379`

Every node runs the same Ray (`RAY_VERSION`, the `ray` extra's pin): each pod's `ray --version` is
checked before anything starts. The cluster uses Ray's token authentication: the head's token
(`ray get-auth-token --generate`, kept in ~/.ray/auth_token) is copied to each worker over SSH
on stdin — never on a command line — so nobody else who can reach port 6379 can run code on it.

Ports. Between the pods, open them all (Ray also uses random ports); from outside, none:
  6379         GCS on the head (`--port`): workers and drivers connect here (token-checked)
  8265         dashboard, bound to 127.0.0.1 on the head: `ssh -L 8265:127.0.0.1:8265 HEAD`
  8076, 8077   node manager and object manager on every node (`--node-manager-port`,
               `--object-manager-port`), pinned so a firewall rule can name them
  10002-19999  worker processes (Ray's default --min-worker-port/--max-worker-port)
  10001        Ray client server on the head, only with ray[client] (sweepctl's drivers run on a node)
  random       runtime-env agent, dashboard agent, metrics export (pin with `--start-arg`)

Nothing here imports ray: the pods' `ray` executable does the work.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sweepctl.backends.ray_backend import RAY_VERSION
from sweepctl.errors import RemoteError
from sweepctl.remote import MISSING_EXIT, open_transport
from sweepctl.transport import Transport

GCS_PORT = 6379
NODE_MANAGER_PORT = 8076
OBJECT_MANAGER_PORT = 8077
START_TIMEOUT_S = 180.0  # `ray start` takes ~7 s on an idle pod; a loaded one, much longer
# `ray start --head` prints how to add a node: "ray start --address='10.0.0.5:6379'".
_ADDRESS = re.compile(r"ray start --address='([^']+)'")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Runs on the worker; the token arrives on stdin, so it never shows in a process list or a log.
_WRITE_TOKEN = 'umask 077 && mkdir -p "$HOME/.ray" && cat > "$HOME/.ray/auth_token"'
TOKEN_ENV = {"RAY_AUTH_MODE": "token"}  # refuse to start an open cluster if the token went missing


@dataclass(frozen=True)
class Ports:
    gcs: int = GCS_PORT
    node_manager: int = NODE_MANAGER_PORT
    object_manager: int = OBJECT_MANAGER_PORT


def ray_executable(remote_bin: str) -> str:
    """The pod's `ray`: the venv that has sweepctl has the `ray` extra's executable next to it."""
    return posixpath.join(posixpath.dirname(remote_bin), "ray")


def version_argv(ray: str) -> list[str]:
    return [ray, "--version"]


def token_argv(ray: str) -> list[str]:
    # Prints the token, creating ~/.ray/auth_token first if the head has none.
    return [ray, "get-auth-token", "--generate"]


def _node_ports(ports: Ports) -> list[str]:
    return ["--node-manager-port", str(ports.node_manager), "--object-manager-port", str(ports.object_manager)]


def head_argv(ray: str, ports: Ports = Ports(), extra: Sequence[str] = ()) -> list[str]:
    return [ray, "start", "--head", "--port", str(ports.gcs),
            "--dashboard-host", "127.0.0.1",  # the dashboard can run code; reach it over an SSH tunnel only
            *_node_ports(ports),
            "--disable-usage-stats",  # pods should not phone home on our behalf
            *extra]


def worker_argv(ray: str, address: str, ports: Ports = Ports(), extra: Sequence[str] = ()) -> list[str]:
    return [ray, "start", "--address", address, *_node_ports(ports), "--disable-usage-stats", *extra]


def stop_argv(ray: str) -> list[str]:
    # Stops every Ray process of the pod's user: `ray down` is for pods that run this cluster only.
    return [ray, "stop"]


def parse_version(stdout: str) -> str | None:
    """`ray, version 2.60.0` -> 2.60.0."""
    m = re.search(r"version\s+(\S+)", stdout)
    return m.group(1) if m else None


def parse_head_address(stdout: str) -> str | None:
    m = _ADDRESS.search(_ANSI.sub("", stdout))
    return m.group(1) if m else None


@dataclass
class RayUp:
    head: str
    address: str  # the GCS address workers and drivers use (the head's node IP, as Ray sees it)
    workers: list[str] = field(default_factory=list)


Opener = Callable[[str], Transport]


def check_ray(t: Transport, ray: str, *, remote_bin: str) -> str:
    """The pod's Ray version; RemoteError unless it is the pinned one (mixed versions cannot form a cluster)."""
    result = t.run(version_argv(ray), timeout=60)
    if result.exit_code in (MISSING_EXIT, 126):
        venv_pip = posixpath.join(posixpath.dirname(remote_bin), "pip")
        raise RemoteError(f"no Ray at {ray}", where=t.host,
                          hint=f"install it next to sweepctl: {venv_pip} install 'ray=={RAY_VERSION}'")
    version = parse_version(result.stdout)
    if not result.ok or version != RAY_VERSION:
        raise RemoteError(f"{ray} is Ray {version or '(unknown: ' + result.stderr_tail() + ')'}, "
                          f"sweepctl needs {RAY_VERSION}", where=t.host,
                          hint=f"install the pinned version: pip install 'ray=={RAY_VERSION}'")
    return version


def ray_up(head: str, workers: Sequence[str], *, remote_bin: str, ports: Ports = Ports(),
           extra: Sequence[str] = (), opener: Opener | None = None,
           progress: Callable[[str], None] = lambda _line: None) -> RayUp:
    """Check Ray on every pod, start the head, then join each worker to it."""
    open_ = opener or (lambda host: open_transport(host))
    ray = ray_executable(remote_bin)
    transports = {h: open_(h) for h in [head, *workers]}
    try:
        for host, t in transports.items():
            progress(f"{host}: Ray {check_ray(t, ray, remote_bin=remote_bin)} at {ray}")
        h = transports[head]
        token = h.run(token_argv(ray), timeout=60, check=True).stdout.strip()
        started = h.run(head_argv(ray, ports, extra), timeout=START_TIMEOUT_S, check=True, env=TOKEN_ENV)
        address = parse_head_address(started.stdout + started.stderr)
        if address is None:
            raise RemoteError("`ray start --head` did not say its address", where=head,
                              hint=f"look at the head: {ray} status")
        progress(f"{head}: head started at {address}")
        up = RayUp(head, address)
        for host in workers:
            t = transports[host]
            t.run(["sh", "-c", _WRITE_TOKEN], stdin=token, timeout=60, check=True)
            t.run(worker_argv(ray, address, ports, extra), timeout=START_TIMEOUT_S, check=True, env=TOKEN_ENV)
            up.workers.append(host)
            progress(f"{host}: joined {address}")
        return up
    finally:
        for t in transports.values():
            t.close()


def ray_down(hosts: Sequence[str], *, remote_bin: str, opener: Opener | None = None,
             progress: Callable[[str], None] = lambda _line: None) -> list[str]:
    """`ray stop` on each pod (workers first, then the head, as given). Returns the hosts stopped;
    a pod that fails is reported after the others were tried."""
    open_ = opener or (lambda host: open_transport(host))
    ray = ray_executable(remote_bin)
    stopped, failed = [], []
    for host in hosts:
        with open_(host) as t:
            result = t.run(stop_argv(ray), timeout=START_TIMEOUT_S)
        if result.ok:
            stopped.append(host)
            progress(f"{host}: ray stopped")
        else:
            failed.append(f"{host} (exit {result.exit_code}: {result.stderr_tail()})")
    if failed:
        raise RemoteError(f"`ray stop` failed on {'; '.join(failed)}", hint="look on the pod: ray status")
    return stopped
