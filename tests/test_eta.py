"""A sweep's GPU-hours, ETA and cost in `status`, from real run directories of the tiny CPU trainer.

Two runs of one shape train for real; the plan adds a longer run of that shape (costed from the
observed throughput) and a run of a shape not seen yet (costed from the FLOPs estimate).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweep_helpers import TINY, tiny, write_tiny_data
from sweepctl.cli.render import status as status_view
from sweepctl.state import manifest, runs
from sweepctl.sweep.plan import make_plan, run_cost
from sweepctl.sweep.spec import read_sweep
from sweepctl.views import status
from sweepctl.views.eta import tokens_of

SHAPE_A = "base L1 C32 H2 B4x32 V256 float32"
SHAPE_B = "base L2 C32 H2 B4x32 V256 float32"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("eta")
    data = write_tiny_data(root / "data")
    out = root / "out"
    csv = root / "eta.csv"
    csv.write_text("run_id,config,seed,overrides,notes\n"
                   f'a-s1,base,1,"{TINY}",\n'
                   f'a-s2,base,2,"{TINY}",\n'
                   f'a-s3,base,3,"{tiny("max_iters=40 lr_decay_iters=40")}",\n'
                   f'b-s1,base,1,"{tiny("n_layer=2")}",\n')
    plan = make_plan(read_sweep(csv), shards=2, schedule="dynamic", out_root=out, data_dir=data, no_wandb=True)
    d = manifest.sweep_dir(out, "eta")
    d.mkdir(parents=True)
    (d / "plan.json").write_text(plan.model_dump_json())
    runs.write_json_atomic(d / "launch.json", {"sweep": "eta", "ts": 1.0})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for run in plan.runs[:2]:  # the two finished runs, trained for real
        subprocess.run([sys.executable, *run.argv[1:]], env=env, check=True, capture_output=True, timeout=300)
    return out, plan


def test_status_gives_gpu_hours_eta_and_cost_from_observed_throughput(sweep: tuple[Path, object]) -> None:
    out, plan = sweep
    model = status.collect(out, sweep="eta", with_gpus=False, with_sessions=False, gpu_hour_price=2.5)
    e = model["eta"]
    s1, s2 = (runs.read_json(out / r / runs.SUMMARY) for r in ("a-s1", "a-s2"))
    assert s1["ok"] and s2["ok"]
    seconds = s1["elapsed_s"] + s2["elapsed_s"]
    tokens = (s1["iter_num"] + s2["iter_num"]) * 4 * 32  # batch 4 x block 32, no accumulation
    rate = tokens / seconds  # tokens per wall second of one run, start-up included
    a3, b1 = plan.run("a-s3"), plan.run("b-s1")
    left_a3 = tokens_of(a3.config) / rate
    flops_rate = run_cost(plan.run("a-s1").config) / tokens_of(plan.run("a-s1").config) * tokens / seconds
    left_b1 = run_cost(b1.config) / flops_rate  # a shape not run yet: FLOPs at the observed FLOP rate
    used, left = seconds / 3600, (left_a3 + left_b1) / 3600

    assert {k: e[k] for k in ("runs_done", "runs_running", "runs_left", "slots", "not_estimated",
                              "gpu_hour_price")} == {"runs_done": 2, "runs_running": 0, "runs_left": 2, "slots": 2,
                                                     "not_estimated": 0, "gpu_hour_price": 2.5}
    assert e["basis"] == {SHAPE_A: f"observed {rate:,.0f} tok/s per run",
                          SHAPE_B: "FLOPs estimate (not observed yet)"}
    assert e["gpu_hours_used"] == pytest.approx(used, abs=1e-4)
    assert e["gpu_hours_left"] == pytest.approx(left, abs=1e-4)
    assert e["eta_s"] == pytest.approx(max(left_a3, left_b1), abs=0.1)  # two slots: one run each
    assert e["cost_used"] == pytest.approx(used * 2.5, abs=0.01)
    assert e["cost_left"] == pytest.approx(left * 2.5, abs=0.01)

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=300).print(status_view.render(model))
    text = buf.getvalue()
    line = next(x for x in text.splitlines() if x.startswith("sweep: "))
    assert line == (f"sweep: 2 done, 0 running, 2 left; GPU-hours {e['gpu_hours_used']:,.2f} used, "
                    f"{e['gpu_hours_left']:,.2f} left; ETA {status_view.duration(e['eta_s'])} on 2 slot(s); "
                    f"cost {e['cost_used']:,.2f} so far + {e['cost_left']:,.2f} left = "
                    f"{e['cost_used'] + e['cost_left']:,.2f} at 2.5/GPU-hour")
    assert f"  {SHAPE_A}: observed {rate:,.0f} tok/s per run" in text
    assert json.loads(json.dumps(model)) == model  # the same dict renders on a laptop (status --host)


def test_a_packed_attempt_counts_its_share_of_the_gpu() -> None:
    from sweepctl.views.eta import attempt_gpu_hours

    summary = {"elapsed_s": 3600.0}
    packed = {"slot": {"slot": 1, "runs_per_gpu": 4, "alone": False}}
    alone = {"slot": {"slot": 1, "runs_per_gpu": 4, "alone": True}}
    assert attempt_gpu_hours(summary, packed, gpus=1) == 0.25
    assert attempt_gpu_hours(summary, alone, gpus=1) == 1.0
    assert attempt_gpu_hours(summary, None, gpus=2) == 2.0
    running = {"started": 100.0, "slot": None}
    assert attempt_gpu_hours(None, running, gpus=1, now=100.0 + 1800) == 0.5
    assert attempt_gpu_hours(None, None, gpus=1, now=5.0) is None


def test_nothing_observed_means_no_estimate_and_says_so(tmp_path: Path) -> None:
    csv = tmp_path / "new.csv"
    csv.write_text(f'run_id,config,seed,overrides,notes\nx,base,1,"{TINY}",\n')
    out = tmp_path / "out"
    plan = make_plan(read_sweep(csv), shards=1, schedule="dynamic", out_root=out)
    d = manifest.sweep_dir(out, "new")
    d.mkdir(parents=True)
    (d / "plan.json").write_text(plan.model_dump_json())
    model = status.collect(out, sweep="new", with_gpus=False, with_sessions=False)
    e = model["eta"]
    assert (e["gpu_hours_used"], e["gpu_hours_left"], e["eta_s"], e["not_estimated"], e["cost_used"]) == \
        (0.0, None, None, 1, None)
    buf = io.StringIO()
    from rich.console import Console

    Console(file=buf, width=300).print(status_view.render(model))
    assert ("sweep: 0 done, 0 running, 1 left; GPU-hours 0.00 used, left unknown (1 run(s) of shapes not "
            "observed yet); ETA unknown") in buf.getvalue()


def test_report_gives_gpu_hours_per_run_and_per_group(sweep: tuple[Path, object],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from sweepctl.views import report

    out, _ = sweep
    data = report.collect(out, sweep="eta")
    hours = {r["run_id"]: r["gpu_hours"] for r in data["runs"]}
    s1, s2 = (runs.read_json(out / r / runs.SUMMARY) for r in ("a-s1", "a-s2"))
    assert hours == {"a-s1": s1["elapsed_s"] / 3600, "a-s2": s2["elapsed_s"] / 3600, "a-s3": None, "b-s1": None}
    groups = {g["label"]: g["gpu_hours"] for g in data["groups"]}
    assert groups == {"a": hours["a-s1"] + hours["a-s2"], "b": 0.0}

    from cli import run_cli

    r = run_cli(capsys, "report", "--out-root", str(out), "--sweep", "eta", "--format", "csv")
    assert r.code == 0, r.err
    rows = [line.split(",") for line in r.out.splitlines()]
    col = rows[0].index("gpu_hours")
    assert {row[0]: row[col] for row in rows[1:]} == {"a": repr(groups["a"]), "b": "0.0"}


def test_a_running_packed_run_counts_its_progress_its_share_and_its_slot(tmp_path: Path) -> None:
    from sweepctl.state.runs import RunView
    from sweepctl.views.eta import estimate

    csv = tmp_path / "p.csv"
    csv.write_text("run_id,config,seed,overrides,notes\n" + "".join(f'r{i},base,{i},"{TINY}",\n' for i in range(3)))
    plan = make_plan(read_sweep(csv), shards=1, schedule="dynamic", out_root=tmp_path / "out", runs_per_gpu=2)
    now = 1000.0
    slot = {"slot": 1, "runs_per_gpu": 2, "alone": False}
    views = {  # 128 tokens per step (batch 4 x block 32); both attempts trained 256 tok/s of wall time
        "r0": RunView("r0", tmp_path, "ok", summary={"ok": True, "iter_num": 20, "elapsed_s": 10.0},
                      owner={"started": now - 20, "ended": now - 10, "slot": slot}),
        "r1": RunView("r1", tmp_path, "running", heartbeat={"iter": 10},
                      owner={"started": now - 5.0, "slot": slot, "resume": False}),
        "r2": RunView("r2", tmp_path, "pending"),
    }
    e = estimate(plan, views, now=now, slots=2, price=None)
    assert e == {"runs_done": 1, "runs_running": 1, "runs_left": 1, "runs_cancelled": 0, "slots": 2,
                 "gpu_hours_used": round((10.0 + 5.0) / 2 / 3600, 4),  # each held half its GPU
                 "gpu_hours_left": round((5.0 + 10.0) / 2 / 3600, 4),  # r1: 10 steps left, r2: all 20
                 "eta_s": 10.0,  # r2 starts now on the free slot while r1 ends at 5 s
                 "basis": {SHAPE_A: "observed 256 tok/s per run"}, "not_estimated": 0, "gpu_hour_price": None,
                 "cost_used": None, "cost_left": None}
    assert estimate(plan, views, now=now, slots=0)["eta_s"] is None  # no live slot, no ETA


def test_a_cancelled_row_is_not_work_left(tmp_path: Path) -> None:
    """A cancelled row is never claimed again: it adds nothing to the hours left or the ETA."""
    from sweepctl.views.eta import estimate

    csv = tmp_path / "c.csv"
    csv.write_text("run_id,config,seed,overrides,notes\n" + "".join(f'a-s{i},base,{i},"{TINY}",\n' for i in (1, 2, 3)))
    plan = make_plan(read_sweep(csv), shards=1, schedule="dynamic", out_root=tmp_path / "out")
    finished = {"ok": True, "iter_num": 20, "elapsed_s": 100.0}  # 20 x 4 x 32 tokens in 100 s: 25.6 tok/s
    views = {"a-s1": runs.RunView("a-s1", tmp_path / "a-s1", "ok", summary=finished),
             "a-s2": runs.RunView("a-s2", tmp_path / "a-s2", "pending"),
             "a-s3": runs.RunView("a-s3", tmp_path / "a-s3", "cancelled")}
    e = estimate(plan, views, now=0.0, slots=1)
    assert (e["runs_done"], e["runs_left"], e["runs_cancelled"]) == (1, 1, 1)
    assert e["eta_s"] == 100.0 and e["gpu_hours_left"] == round(100.0 / 3600, 4)  # a-s2 alone
    views["a-s3"] = runs.RunView("a-s3", tmp_path / "a-s3", "pending")
    assert estimate(plan, views, now=0.0, slots=1)["eta_s"] == 200.0  # the same row, not cancelled: owed

    from rich.console import Console

    buf = io.StringIO()
    for part in status_view.render_slots_and_eta({"eta": e}):
        Console(file=buf, width=300).print(part)
    assert buf.getvalue().splitlines() == [
        "sweep: 1 done, 0 running, 1 left, 1 cancelled; GPU-hours 0.03 used, 0.03 left; ETA 100s on 1 slot(s)",
        f"  {SHAPE_A}: observed 26 tok/s per run"]
