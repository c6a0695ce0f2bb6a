"""The backend seam: engines are chosen by name in one registry, and a new one is one module plus a
`register` call. The toy backend below is written as a file, registered, and then `rerun` of a run
its sweep launched goes through it, in a real tmux session."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sweep_helpers import Workspace, wait_until
from sweepctl import backends, control
from sweepctl.errors import SweepctlError
from sweepctl.launch import LaunchOptions, prepare
from sweepctl.pod.tmux import Tmux
from sweepctl.settings import load_settings
from sweepctl.state import manifest

pytest_plugins = ["sweep_fixtures"]

TOY = '''
"""A toy engine: a rerun writes what it was asked to run into a file, and nothing else."""

import json
import sys

from sweepctl.backends.base import RerunCommand


class ToyBackend:
    name = "toy"
    places_rows = True

    def preflight(self, csv_path, options, settings):
        raise NotImplementedError("the toy only reruns")

    def start(self, preview):
        raise NotImplementedError("the toy only reruns")

    def rerun(self, plan, run_id, *, sweep_dir, launched, session, settings, force, gpu):
        record = {"run_id": run_id, "sweep": plan.sweep, "session": session, "force": force,
                  "queue": launched.get("queue")}
        code = "import json, sys; open(sys.argv[1], 'w').write(sys.argv[2])"
        argv = [sys.executable, "-c", code, str(sweep_dir / "toy-rerun.json"), json.dumps(record)]
        return RerunCommand(argv, devices="toy-0", env={"TOY": "1"})


BACKEND = ToyBackend()
'''


def test_the_built_in_backends_and_an_unknown_name() -> None:
    assert {"tmux", "ray", "slurm"} <= set(backends.names())
    assert [backends.get(n).places_rows for n in ("tmux", "ray", "slurm")] == [False, True, True]
    assert backends.of_launch({}).name == "tmux"  # a launch.json from before backends were named
    assert backends.of_launch({"options": {"backend": "ray"}}).name == "ray"
    with pytest.raises(SweepctlError) as e:
        backends.get("kubernetes")
    assert e.value.message == f"--backend must be one of {', '.join(backends.names())}, got 'kubernetes'"


def test_a_name_is_registered_once() -> None:
    with pytest.raises(SweepctlError) as e:
        backends.register("tmux", "somewhere.else")
    assert e.value.message == "backend 'tmux' is already sweepctl.backends.tmux"


def test_a_toy_backend_is_one_module_and_one_register_call(
        workspace: Workspace, tmux_socket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "toy_backend.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    backends.register("toy", "toy_backend")
    try:
        # A sweep the toy launched: its manifest names the backend, as launch.json always does.
        csv = workspace.csv([("a", ""), ("b", "")])
        settings = load_settings()
        preview = prepare(csv, LaunchOptions(shards=1), settings)
        manifest.write_plan(preview.sweep_dir, preview.plan)
        manifest.record_launch(preview.sweep_dir, {"sweep": "sweep", "ts": time.time(),
                                                   "options": {"backend": "toy", "queue": "q1"}})

        result = control.rerun(workspace.out_root, "b", settings=settings, tmux=Tmux(tmux_socket))
        assert (result.run_id, result.sweep, result.session, result.devices) == ("b", "sweep", "rerun-b", "toy-0")
        out = preview.sweep_dir / "toy-rerun.json"
        wait_until(out.exists, what="the toy's rerun command to run in its tmux session")
        assert json.loads(out.read_text()) == {"run_id": "b", "sweep": "sweep", "session": "rerun-b", "force": False,
                                               "queue": "q1"}
    finally:
        backends.base._MODULES.pop("toy", None)
        sys.modules.pop("toy_backend", None)
