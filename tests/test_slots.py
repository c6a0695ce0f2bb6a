"""Several runs per GPU: slots as real tmux sessions and runners, the GPU gate, the oom retry alone,
the compile cache reaching every trainer, and the pre-flight memory check.

GPUs are the stand-in nvidia-smi; the trainers are real tiny CPU runs.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from cli import run_cli
from sweep_helpers import Workspace, gpu_row, panes, wait_until
from sweepctl.cli.render import status as status_view
from sweepctl.pod.tmux import Tmux
from sweepctl.state import runs, slots
from sweepctl.state.slots import GpuGate
from sweepctl.views import status

pytest_plugins = ["sweep_fixtures"]

RUN_TIMEOUT = 300  # four tiny trainers at once on a busy 2-core machine


def wait_for(predicate, what: str, timeout: float = RUN_TIMEOUT):
    return wait_until(predicate, timeout=timeout, what=what, explain=lambda: panes(os.environ["SWEEPCTL_TMUX_SOCKET"]))


def summaries(ws: Workspace, ids: list[str]) -> dict[str, dict] | None:
    found = {i: runs.read_json(ws.run_dir(i) / runs.SUMMARY) for i in ids}
    return found if all(v is not None for v in found.values()) else None


def test_two_runs_per_gpu_on_two_gpus_start_four_slots_sharing_each_gpu(
        workspace: Workspace, tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    ws.gpus.set(2)
    ids = [f"p{i}" for i in range(4)]
    csv = ws.csv([(i, "") for i in ids], name="packed")
    r = run_cli(capsys, "launch", str(csv), "--runs-per-gpu", "2", "--no-wandb")
    assert r.code == 0, r.err
    # --shards defaults to one per GPU; --runs-per-gpu 2 implies the dynamic schedule
    started = [line for line in r.out.splitlines() if line.startswith("started ")]
    assert started == ["started sweep-0: CUDA_VISIBLE_DEVICES=0 (slot 1 of 2), claims rows",
                       "started sweep-2: CUDA_VISIBLE_DEVICES=1 (slot 1 of 2), claims rows",
                       "started sweep-1: CUDA_VISIBLE_DEVICES=0 (slot 2 of 2), claims rows",
                       "started sweep-3: CUDA_VISIBLE_DEVICES=1 (slot 2 of 2), claims rows"]
    assert sorted(s.name for s in Tmux(tmux_socket).sessions()) == ["sweep-0", "sweep-1", "sweep-2", "sweep-3"]

    done = wait_for(lambda: summaries(ws, ids), "all four summaries")
    cache = ws.out_root / ".cache" / "torch-compile"
    sessions = set()
    for run_id in ids:
        assert done[run_id]["ok"] is True, done[run_id]
        owner = runs.read_json(ws.run_dir(run_id) / runs.OWNER)
        shard = owner["shard"]
        sessions.add(owner["session"])
        assert owner["cuda_visible_devices"] == str(shard // 2)  # slots 0,1 on GPU 0; 2,3 on GPU 1
        meta = json.loads((ws.run_dir(run_id) / runs.METADATA).read_text())
        assert meta["cuda_visible_devices"] == str(shard // 2)
        assert meta["slot"] == {"slot": shard % 2, "runs_per_gpu": 2, "alone": False}
        assert meta["compile_cache"] == {"TORCHINDUCTOR_CACHE_DIR": str(cache),
                                         "TRITON_CACHE_DIR": str(cache / "triton")}
    assert (cache / "triton").is_dir()
    plan = json.loads((ws.out_root / ".sweeps" / "packed" / "plan.json").read_text())
    assert (plan["runs_per_gpu"], plan["shard_count"], plan["schedule"]) == (2, 4, "dynamic")
    assert [s["devices"] for s in plan["shards"]] == [[0], [0], [1], [1]]

    def ended() -> bool:
        return all(not s.alive for s in Tmux(tmux_socket).sessions())

    wait_for(ended, "every slot's runner to end")
    model = status.collect(ws.out_root, with_gpus=False)
    assert model["slots"] == [{"devices": "0", "sessions": ["sweep-0", "sweep-1"], "alive": []},
                              {"devices": "1", "sessions": ["sweep-2", "sweep-3"], "alive": []}]
    buf = io.StringIO()
    Console(file=buf, width=300).print(status_view.render(model))
    text = buf.getvalue()
    assert "slots: GPU 0: sweep-0, sweep-1 (0 of 2 alive); GPU 1: sweep-2, sweep-3 (0 of 2 alive)" in text
    used = model["eta"]["gpu_hours_used"]
    assert f"sweep: 4 done, 0 running, 0 left; GPU-hours {used:,.2f} used, 0.00 left\n" in text
    # each packed run counts half its wall time: two runs shared each GPU
    elapsed = sum(d["elapsed_s"] for d in done.values())
    assert used == pytest.approx(elapsed / 2 / 3600, abs=1e-4)


def test_a_two_gpu_row_never_shares_its_gpus_with_a_packed_run(
        workspace: Workspace, tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    from sweep_helpers import TINY, tiny

    ws = workspace
    ws.gpus.set(2)
    csv = ws.root / "mixed.csv"
    ddp = tiny("gradient_accumulation_steps=2 n_layer=2")
    csv.write_text("run_id,config,seed,overrides,notes,gpus\n"
                   f'one-a,base,1,"{TINY}",,1\n'
                   f'pair,base,1,"{ddp}",,2\n'  # the costliest row: claimed first
                   f'one-b,base,2,"{TINY}",,1\n'
                   f'one-c,base,3,"{TINY}",,1\n')
    r = run_cli(capsys, "launch", str(csv), "--shards", "1", "--gpus-per-shard", "2", "--runs-per-gpu", "2")
    assert r.code == 0, r.err
    ids = ["one-a", "pair", "one-b", "one-c"]
    done = wait_for(lambda: summaries(ws, ids), "all four rows")
    assert all(s["ok"] for s in done.values()), done

    def ended() -> dict[str, dict] | None:  # the runner notes the end just after the trainer's summary
        owners = {i: runs.read_json(ws.run_dir(i) / runs.OWNER) or {} for i in ids}
        return owners if all("ended" in o for o in owners.values()) else None

    spans = {i: (o["started"], o["ended"]) for i, o in wait_for(ended, "every attempt's end").items()}
    p0, p1 = spans["pair"]
    for other in ("one-a", "one-b", "one-c"):
        o0, o1 = spans[other]
        assert o1 <= p0 or o0 >= p1, f"{other} ran beside the two-GPU row: {spans}"
    meta = json.loads((ws.run_dir("pair") / runs.METADATA).read_text())
    assert meta["slot"]["alone"] is True and meta["cuda_visible_devices"] == "0,1"


def test_static_schedule_with_slots_is_refused_with_the_fix(
        workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace
    ws.gpus.set(1)
    csv = ws.csv([("a", "")])
    r = run_cli(capsys, "launch", str(csv), "--runs-per-gpu", "2", "--schedule", "static", "--dry-run")
    assert r.code == 1
    assert f"{csv}:1: --runs-per-gpu 2 needs the dynamic schedule (slots claim rows); drop --schedule static " \
           "or pass --schedule dynamic" in " ".join(r.err.split())


def test_a_packed_run_that_runs_out_of_memory_is_retried_alone(
        workspace: Workspace, tmux_socket: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace
    ws.gpus.set(1)
    # The trainer raises CUDA's OutOfMemoryError whenever its context says it shares the GPU.
    monkeypatch.setenv("SWEEPCTL_FAULT_OOM_WHEN_PACKED", "1")
    ids = ["oom-a", "oom-b"]
    csv = ws.csv([(i, "") for i in ids], name="ooms")
    r = run_cli(capsys, "launch", str(csv), "--runs-per-gpu", "2", "--no-wandb")
    assert r.code == 0, r.err

    def retried() -> dict[str, dict] | None:
        found = summaries(ws, ids)
        return found if found and all(s.get("retried_alone") for s in found.values()) else None

    done = wait_for(retried, "both runs retried alone")
    spans = []
    for run_id in ids:
        s = done[run_id]
        assert s["ok"] is True, s
        assert s["first_attempt_error"].startswith("oom: ")
        assert "injected by SWEEPCTL_FAULT_OOM_WHEN_PACKED=1" in s["first_attempt_error"]
        owner = runs.read_json(ws.run_dir(run_id) / runs.OWNER)
        assert owner["attempt"] == 2
        meta = json.loads((ws.run_dir(run_id) / runs.METADATA).read_text())
        assert meta["slot"]["alone"] is True and meta["attempt"] == 2
        # the packed attempt's summary was kept, not overwritten
        [first] = runs.backups_of(ws.run_dir(run_id), runs.SUMMARY)
        assert json.loads(first.read_text())["error_class"] == "oom"
        spans.append((owner["started"], owner["ended"]))
    (_, first_end), (second_start, _) = sorted(spans)
    assert first_end <= second_start, f"the two runs retried alone overlapped on the GPU: {spans}"


def test_the_gate_lets_slots_share_and_a_lone_row_wait_for_them(tmp_path: Path) -> None:
    gate_dir = tmp_path / "slots"
    events: list[str] = []
    lock = threading.Lock()

    def note(what: str) -> None:
        with lock:
            events.append(what)

    first_in, release_first, lone_waiting = threading.Event(), threading.Event(), threading.Event()

    def shared(name: str, hold: threading.Event | None) -> None:
        with GpuGate(gate_dir, "0").hold(alone=False) as got:
            assert got
            note(f"{name} in")
            first_in.set()
            if hold is not None:
                assert hold.wait(30)
            note(f"{name} out")

    def alone() -> None:
        lone_waiting.set()
        with GpuGate(gate_dir, "0").hold(alone=True) as got:
            assert got
            note("alone in")
            note("alone out")

    a = threading.Thread(target=shared, args=("a", release_first))
    a.start()
    assert first_in.wait(30)
    b = threading.Thread(target=shared, args=("b", None))  # a second slot shares the GPU at once
    b.start()
    wait_until(lambda: "b out" in events, what="the second shared holder")
    lone = threading.Thread(target=alone)
    lone.start()
    assert lone_waiting.wait(30)
    # once the lone row waits, a new shared row waits behind it (it holds the turnstile)
    late_in = threading.Event()

    def late() -> None:
        with GpuGate(gate_dir, "0").hold(alone=False):
            note("late in")
            late_in.set()

    wait_until(lambda: _turnstile_taken(gate_dir), what="the lone row to take the turnstile")
    c = threading.Thread(target=late)
    c.start()
    assert not late_in.wait(0.5) and "alone in" not in events
    release_first.set()
    for t in (a, b, lone, c):
        t.join(30)
    assert events == ["a in", "b in", "b out", "a out", "alone in", "alone out", "late in"]


def _turnstile_taken(gate_dir: Path) -> bool:
    import fcntl

    fd = os.open(gate_dir / "gpus-0.turnstile", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_the_gate_hears_a_stop_while_waiting(tmp_path: Path) -> None:
    with GpuGate(tmp_path, "0").hold(alone=True) as first:
        assert first
        t0 = time.monotonic()
        with GpuGate(tmp_path, "0").hold(alone=False, stopped=lambda: time.monotonic() - t0 > 0.3) as second:
            assert second is False


def test_preflight_refuses_runs_per_gpu_that_cannot_fit_the_measured_peak_memory(
        workspace: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace
    ws.gpus.set([gpu_row(0, total=10240)])  # a 10 GiB GPU
    csv = ws.csv([(f"big{i}", "device='cuda'") for i in range(3)], name="fit")
    from sweepctl.sweep.plan import make_plan
    from sweepctl.sweep.spec import read_sweep

    key = slots.memory_key(make_plan(read_sweep(csv), shards=1, out_root=ws.out_root).runs[0].config)
    monkeypatch.setattr(slots, "load_estimates", lambda: {key: {"peak_mib": 3000.0, "gpu": "H200", "source": "t"}})
    r = run_cli(capsys, "launch", str(csv), "--runs-per-gpu", "3", "--dry-run", "--json")
    assert r.code == 1, r.out
    check = next(c for c in json.loads(r.out)["checks"] if c["what"] == "3 runs per GPU")
    assert check == {"what": "3 runs per GPU", "ok": False,
                     "detail": f"would not fit: 3 x up to 3000 MiB ({key}) + headroom = 12072 of 10240 MiB "
                               "(peak memory measured by bench/packing.py)",
                     "hint": "relaunch with --runs-per-gpu 2"}

    r = run_cli(capsys, "launch", str(csv), "--runs-per-gpu", "2", "--dry-run", "--json")
    assert r.code == 0, r.err
    check = next(c for c in json.loads(r.out)["checks"] if c["what"] == "2 runs per GPU")
    assert check["ok"] and check["detail"] == f"2 x up to 3000 MiB ({key}) + headroom = 8048 of 10240 MiB"

    monkeypatch.setattr(slots, "load_estimates", lambda: {})
    r = run_cli(capsys, "launch", str(csv), "--runs-per-gpu", "2", "--dry-run", "--json")
    check = next(c for c in json.loads(r.out)["checks"] if c["what"] == "2 runs per GPU")
    assert check["ok"] and check["detail"] == (f"no measured peak memory for {key}; not checked "
                                               "(a run that runs out of memory is retried alone)")
