"""The venv step and the `--host` seam, with real venvs, real pip and a real wheel (offline).

Slow (a venv and a wheel build take seconds), so each venv is made once and reused.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from sweepctl import __version__
from sweepctl.pod.bootstrap import bootstrap_remote
from sweepctl.pod.python_env import WHEEL_MARKER, _installed_version, build_wheel, ensure_venv

pytestmark = pytest.mark.slow

BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
OFFLINE = ("--no-index", "--no-deps")  # the test machine has no package index; deps are not the point here


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """Two wheels of the same version with different bytes, like a developer's rebuild."""
    root = tmp_path_factory.mktemp("wheels")
    first = build_wheel(root / "a")
    source = root / "changed-source"
    repo = Path(__file__).resolve().parents[1]
    shutil.copytree(repo / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        if (repo / name).exists():
            shutil.copy2(repo / name, source / name)
    with (source / "src/sweepctl/__init__.py").open("a") as f:
        f.write("REBUILT = True  # test marker\n")
    second = build_wheel(root / "b", source=source)
    return first, second


def test_venv_installs_the_wheel_once_and_again_only_when_its_bytes_change(tmp_path, wheels):
    first, second = wheels
    venv = tmp_path / "venv"

    created = ensure_venv(venv, wheel=first, base_pythons=[BASE_PYTHON], pip_args=OFFLINE)

    assert created.changes[0] == f"created venv {venv}"
    assert created.changes[1].startswith(f"installed sweepctl {__version__} from {first}")
    assert _installed_version(venv / "bin/python") == __version__
    assert (venv / WHEEL_MARKER).read_text().startswith("wheel sha256 ")

    again = ensure_venv(venv, wheel=first, base_pythons=[BASE_PYTHON], pip_args=OFFLINE)
    assert again.changes == []

    rebuilt = ensure_venv(venv, wheel=second, base_pythons=[BASE_PYTHON], pip_args=OFFLINE)
    assert rebuilt.changes == [f"installed sweepctl {__version__} from {second}"]
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    assert "REBUILT = True" in (site / "sweepctl/__init__.py").read_text()

    # Without a wheel, the version already there is this version: nothing to do.
    assert ensure_venv(venv, base_pythons=[BASE_PYTHON], pip_args=OFFLINE).changes == []


class LocalPod:
    """sweepctl.transport.LocalTransport standing in for an SSH pod: the seam needs only run/put/
    exists. Dependencies come from this test venv via PYTHONPATH, as there is no index to install
    them from; sweepctl itself comes from the uploaded wheel (the editable install here is a .pth
    file, which PYTHONPATH entries do not process)."""

    def __init__(self, deps: str):
        from sweepctl.transport import LocalTransport

        self.inner = LocalTransport()
        self.host = "localpod"
        self.deps = deps
        self.argvs: list[list[str]] = []

    def run(self, argv: Sequence[str], timeout: float | None = 120, stdin=None, *, check: bool = False,
            env: Mapping[str, str] | None = None):
        self.argvs.append(list(argv))
        if argv[1:4] == ["-m", "pip", "install"]:
            argv = [*argv[:4], *OFFLINE, *argv[4:]]
        return self.inner.run(argv, timeout, stdin, check=check, env={**(env or {}), "PYTHONPATH": self.deps})

    def put(self, local, remote: str) -> None:
        self.argvs.append(["put", str(local), remote])
        self.inner.put(local, remote)

    def exists(self, remote: str) -> bool:
        return self.inner.exists(remote)


def test_remote_bootstrap_installs_the_laptop_wheel_then_uploads_nothing(tmp_path, wheels, monkeypatch):
    first, _ = wheels
    home, volume = tmp_path / "home", tmp_path / "mnt"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA provider\n")
    volume.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SWEEPCTL_VOLUME", str(volume))
    monkeypatch.setenv("SWEEPCTL_PROJECT_FILE", str(volume / "sweepctl.toml"))
    pod = LocalPod(sysconfig.get_path("purelib"))
    venv = str(tmp_path / "pod-venv")
    args = ["--no-apt", "--out-root", str(volume / "outputs"), "--data-dir", str(volume / "data")]

    report = bootstrap_remote(pod, first, args, venv=venv, python=BASE_PYTHON)

    assert report["remote_error"] is None, report
    assert report["checks"][0]["name"] == "sweepctl wheel"
    assert report["changed"] is True
    uploads = [a for a in pod.argvs if a[0] == "put"]
    assert uploads == [["put", str(first), f"/tmp/sweepctl-wheels/{first.name}"]]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["sweepctl venv"]["changes"] == []  # the seam installed it; the pod's run found it in place
    assert json.loads(json.dumps(report))  # plain JSON, ready to render like a local run
    assert (home / ".ssh" / "authorized_keys").read_text() == "ssh-ed25519 AAAA provider\n"

    pod.argvs.clear()
    again = bootstrap_remote(pod, first, args, venv=venv, python=BASE_PYTHON)

    assert again["changed"] is False, again
    assert [a for a in pod.argvs if a[0] == "put" or "pip" in a] == []
    assert os.path.exists(f"{venv}/bin/sweepctl")
