"""Output without a terminal, at any size: pipes get whole rows, big sweeps get a summary.

The pipe checks run the installed `sweepctl` in a subprocess with stdout a pipe and no COLUMNS,
which is what `sweepctl status | grep failed` or `> file` sees."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SWEEPCTL = shutil.which("sweepctl") or str(Path(sys.executable).with_name("sweepctl"))
REPO = Path(__file__).resolve().parents[1]


def piped(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("COLUMNS", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "SWEEPCTL_DEBUG")}
    full_env.update(env or {})
    return subprocess.run([SWEEPCTL, *args], capture_output=True, text=True, env=full_env, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=120)


def test_piped_tables_keep_every_column_on_one_line() -> None:
    r = piped("presets")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert ("│ cvres_mhc_48l │ 48     │ 150    │ 6     │ 16    │ 4     │ 10000 │ 4       │ "
            "mHC + constrained (convex) value residual │") in lines
    assert len(lines) == 18  # title, 3 header lines, 12 presets, bottom rule, the closing sentence
    assert lines[-1] == ("All: block 1024, lr 6e-4 cosine to 6e-5 after 200 warmup steps, bf16. "
                         "See every value with `sweepctl plan CSV --shards 1 --json`.")


def test_columns_still_sets_the_width_of_piped_output() -> None:
    r = piped("presets", env={"COLUMNS": "60"})
    assert max(len(line) for line in r.stdout.splitlines()) <= 60


def test_dash_h_is_help_for_the_app_and_every_command() -> None:
    for args in ((), ("status",), ("validate",), ("train",)):
        short, long = piped(*args, "-h"), piped(*args, "--help")
        assert short.returncode == long.returncode == 0, short.stderr
        assert short.stdout == long.stdout and "Usage: sweepctl" in short.stdout


# --------------------------------------------------------------------------- validate, plan, presets

import json  # noqa: E402

import pytest  # noqa: E402

from cli import run_cli  # noqa: E402

pytest_plugins = ["sweep_fixtures"]  # tmux_socket: a private tmux server, killed at teardown

HEADER = "run_id,config,seed,overrides,notes\n"
CPU_ROWS = ('small-s1,base,1,"device=cpu max_iters=100",\nbig-s1,base_48l,1,"device=cpu max_iters=100",\n'
            'small-s2,base,2,"device=cpu max_iters=100",\nmid-s1,hc,1,"device=cpu max_iters=150",\n')


@pytest.fixture()
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("SWEEPCTL_OUT_ROOT", "SWEEPCTL_DATA_DIR", "FINEWEB10B_LOCAL_DIR", "SWEEPCTL_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SWEEPCTL_VOLUME", str(tmp_path / "no-volume"))
    return tmp_path


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]  # Rich pads a table's title to the table's width


def test_validate_prints_a_summary_then_the_groups(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / "p.csv").write_text(HEADER + CPU_ROWS)
    r = run_cli(capsys, "validate", "p.csv")
    assert r.code == 0, r.err
    assert lines_of(r.out) == [
        "p.csv: 4 runs, valid",
        "3 groups (rows that differ only in seed), 2 seeds (1, 2), 3 configs (base x2, base_48l x1, hc x1)",
        "┏━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━┳━━━━━━━┳━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━┓",
        "┃ config   ┃ overrides                ┃ runs ┃ seeds ┃ layers ┃ variant ┃ max_iters ┃",
        "┡━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━╇━━━━━━━╇━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━┩",
        "│ base     │ device=cpu max_iters=100 │    2 │ 1, 2  │      6 │ base    │       100 │",
        "│ base_48l │ device=cpu max_iters=100 │    1 │ 1     │     48 │ base    │       100 │",
        "│ hc       │ device=cpu max_iters=150 │    1 │ 1     │      6 │ hc      │       150 │",
        "└──────────┴──────────────────────────┴──────┴───────┴────────┴─────────┴───────────┘",
    ]


def test_a_big_sweep_is_summarised_and_all_shows_every_row(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = "".join(f"r{i}-s{1 + i % 3},{'hc' if i % 2 else 'base'},{1 + i % 3},learning_rate={1e-4 + i * 1e-7:.7g},\n"
                   for i in range(300))
    (here / "big.csv").write_text(HEADER + rows)
    r = run_cli(capsys, "validate", "big.csv")
    assert r.code == 0, r.err
    out = lines_of(r.out)
    assert out[:2] == ["big.csv: 300 runs, valid",
                       "300 groups (rows that differ only in seed), 3 seeds (1, 2, 3), 2 configs (base x150, hc x150)"]
    assert len(out) == 2 + 3 + 20 + 1 + 1  # summary, table head, the first 20 groups, table foot, the hint
    assert out[-1] == "... 280 more groups; every row: sweepctl validate big.csv --all"
    every = run_cli(capsys, "validate", "big.csv", "--all")
    assert sum(line.startswith("│") for line in lines_of(every.out)) == 300
    model = json.loads(run_cli(capsys, "validate", "big.csv", "--json").out)
    assert (model["runs"], len(model["rows"]), len(model["groups"]), model["seeds"]) == (300, 300, 300, [1, 2, 3])
    assert model["rows"][299] == {"run_id": "r299-s3", "line": 301, "config": "hc", "seed": 3,
                                  "overrides": ["learning_rate=0.0001299"], "notes": "", "gpus": 1}

    plan = run_cli(capsys, "plan", "big.csv", "--shards", "4", "--out-root", "/o")
    assert lines_of(plan.out)[-1] == "every row's command: sweepctl plan big.csv --shards 4 --out-root /o --all"
    assert "python -m sweepctl.train" not in plan.out
    assert "python -m sweepctl.train" in run_cli(capsys, "plan", "big.csv", "--shards", "4", "--all").out


def test_dynamic_plan_lists_rows_in_claim_order_with_each_shards_share_on_cpu_slots(
        here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Claim order is longest first by estimated FLOPs: hc 150 iters, then the two base rows, then
    base_48l (narrower: fewer FLOPs). Shares: each row goes to the shard that frees first, so shard
    0 gets mid + big (35.4 + 17.3) and shard 1 the two small ones (23.6 + 23.6)."""
    (here / "p.csv").write_text(HEADER + CPU_ROWS)
    r = run_cli(capsys, "plan", "p.csv", "--shards", "2", "--schedule", "dynamic", "--out-root", "/o", "--data-dir", "/d")
    assert r.code == 0, r.err
    cmd = "python -m sweepctl.train {} seed={} device=cpu max_iters={} out_dir=/o/{} data_dir=/d wandb_run_name={}"
    assert lines_of(r.out) == [
        "4 runs over 2 shards (dynamic: each shard claims the next row, longest first)",
        "┏━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┓",
        "┃ shard ┃ session ┃ runs on    ┃   rows ┃ est. share of work ┃ first rows ┃",
        "┡━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━┩",
        "│     0 │ sweep-0 │ CPU slot 0 │ claims │              52.8% │            │",
        "│     1 │ sweep-1 │ CPU slot 1 │ claims │              47.2% │            │",
        "└───────┴─────────┴────────────┴────────┴────────────────────┴────────────┘",
        "claim order: each shard, when free, takes the next row (longest first)",
        "┏━━━━━━━┳━━━━━┳━━━━━━━━━━┳━━━━━━━┳" + "━" * 119 + "┓",
        "┃ claim ┃ row ┃ run_id   ┃ share ┃ command" + " " * 111 + "┃",
        "┡━━━━━━━╇━━━━━╇━━━━━━━━━━╇━━━━━━━╇" + "━" * 119 + "┩",
        "│     1 │   3 │ mid-s1   │ 35.4% │ " + cmd.format("hc", 1, 150, "mid-s1", "mid-s1") + "       │",
        "│     2 │   0 │ small-s1 │ 23.6% │ " + cmd.format("base", 1, 100, "small-s1", "small-s1") + " │",
        "│     3 │   2 │ small-s2 │ 23.6% │ " + cmd.format("base", 2, 100, "small-s2", "small-s2") + " │",
        "│     4 │   1 │ big-s1   │ 17.3% │ " + cmd.format("base_48l", 1, 100, "big-s1", "big-s1") + " │",
        "└───────┴─────┴──────────┴───────┴" + "─" * 119 + "┘",
    ]
    static = run_cli(capsys, "plan", "p.csv", "--shards", "2")
    assert "│     1 │ sweep-1 │ CPU slot 1 │    2 │              52.8% │ big-s1, mid-s1     │" in lines_of(static.out)
    assert "shard 1 (sweep-1) CPU slot 1: 2 runs" in lines_of(static.out)
    assert "CUDA_VISIBLE_DEVICES" not in static.out


def test_presets_json_has_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    from sweepctl.train.config import PRESETS

    model = json.loads(run_cli(capsys, "presets", "--json").out)
    assert list(model) == list(PRESETS)
    assert model["mhc_48l"] == {"what": "mHC, 4 streams, Sinkhorn 20 iterations", "settings": PRESETS["mhc_48l"]}


# --------------------------------------------------------------------------- status: summary, watch


def make_runs(out_root: Path, n: int, *, failed: range, stale: range) -> None:
    now = time.time()
    for i in range(n):
        d = out_root / f"grp{i % 3}-s{i}"
        d.mkdir(parents=True)
        if i in stale:
            (d / "heartbeat.json").write_text(json.dumps({"ts": now - 3600, "iter": 10, "max_iters": 100, "pid": 1}))
        else:
            ok = i not in failed
            (d / "summary.json").write_text(json.dumps({"ok": ok, "status": "completed" if ok else "failed",
                                                        "error_class": None if ok else "nan",
                                                        "iter_num": 100 if ok else 50, "max_iters": 100}))


def test_status_of_many_runs_summarises_by_state_and_group_then_lists_what_needs_attention(
        here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = here / "o"
    make_runs(out, 250, failed=range(240, 242), stale=range(249, 250))
    r = run_cli(capsys, "status", "--out-root", str(out))
    assert r.code == 0, r.err
    assert lines_of(r.out)[:20] == [
        f"run directories in {out}: 250 runs, by group (the run_id without -s<seed>)",
        "┏━━━━━━━┳━━━━━━┳━━━━┳━━━━━━━━┳━━━━━━━┓",
        "┃ group ┃ runs ┃ ok ┃ failed ┃ stale ┃",
        "┡━━━━━━━╇━━━━━━╇━━━━╇━━━━━━━━╇━━━━━━━┩",
        "│ grp0  │   84 │ 82 │      1 │     1 │",
        "│ grp1  │   83 │ 82 │      1 │       │",
        "│ grp2  │   83 │ 83 │        │       │",
        "└───────┴──────┴────┴────────┴───────┘",
        "247 ok, 2 failed, 1 stale",
        "runs that need attention (failed, stale, running)",
        "┏━━━━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━┳━━━━┳━━━━━━━┳━━━━━┳━━━━━━━┳━━━━━┳━━━━━━┳━━━━━━━┓",
        "┃ run_id           ┃ state   ┃ shard/GPU ┃   iter ┃  % ┃ train ┃ val ┃ tok/s ┃ ETA ┃ beat ┃ error ┃",
        "┡━━━━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━╇━━━━╇━━━━━━━╇━━━━━╇━━━━━━━╇━━━━━╇━━━━━━╇━━━━━━━┩",
        "│ grp0-s240        │ failed  │ -         │ 50/100 │ 50 │       │     │       │     │      │ nan   │",
        "│ grp1-s241        │ failed  │ -         │ 50/100 │ 50 │       │     │       │     │      │ nan   │",
        "│ grp0-s249        │ stale   │ -         │ 10/100 │ 10 │       │     │       │     │  60m │       │",
        "└──────────────────┴─────────┴───────────┴────────┴────┴───────┴─────┴───────┴─────┴──────┴───────┘",
        f"every run: sweepctl status --out-root {out} --all",
        "GPUs: none visible",
        lines_of(r.out)[19],  # the disk line: this machine's free space
    ]
    every = run_cli(capsys, "status", "--out-root", str(out), "--all")
    assert sum(line.startswith("│ grp") for line in lines_of(every.out)) == 250


def watch_model(states: list[tuple[str, int]], eta: dict | None) -> dict:
    """A status dict as `status.collect` gives it: rows, counts, and the sweep's estimate (or none)."""
    runs = [{"run_id": f"r{i}", "state": s, "iter": it, "max_iters": 100, "eta_s": 1.0}
            for i, (s, it) in enumerate(states)]
    model = {"runs": runs, "counts": {s: sum(r["state"] == s for r in runs)
                                      for s in ("pending", "running", "ok", "failed", "stale", "cancelled")}}
    return model if eta is None else {**model, "eta": eta}


def test_watch_without_a_terminal_prints_a_line_per_change(capsys: pytest.CaptureFixture[str]) -> None:
    from sweepctl.cli.render.watch import watch

    # The ETA is the sweep's (eta.estimate), not one from the rows' own eta_s (1 s each here).
    start = watch_model([("running", 50), ("pending", 0)], {"eta_s": 300.0, "slots": 2, "not_estimated": 0})
    later = watch_model([("ok", 100), ("running", 20)], {"eta_s": 160.0, "slots": 2, "not_estimated": 0})
    end = watch_model([("ok", 100)] * 2, {"eta_s": 0.0, "slots": 2, "not_estimated": 0})
    clock = iter([0.0, 60.0, 120.0]).__next__
    watch(iter([start, start, later, end]), interval=2, render=lambda m: "", clock=clock)
    stamp = [time.strftime("%H:%M:%S", time.localtime(t)) for t in (0.0, 60.0, 120.0)]
    assert capsys.readouterr().out.splitlines() == [
        f"{stamp[0]}  1 pending, 1 running — 0/2 runs finished, 25% of iterations, ETA 5m",
        f"{stamp[1]}  1 running, 1 ok — 1/2 runs finished, 60% of iterations, ETA 2m",
        f"{stamp[2]}  2 ok — 2/2 runs finished, 100% of iterations, ETA 0s",
    ]


def test_watch_counts_cancelled_rows_as_over_and_says_why_an_eta_is_unknown() -> None:
    from sweepctl.cli.render.watch import change_line

    known = {"eta_s": None, "slots": 2, "not_estimated": 0}
    # a cancelled row is over: the bar reaches 100% without it, and its iterations are not owed
    assert change_line(watch_model([("ok", 100), ("cancelled", 0)], known)) == \
        "1 ok, 1 cancelled — 2/2 runs finished, 100% of iterations, ETA 0s"
    assert change_line(watch_model([("cancelled", 0)], known)) == \
        "1 cancelled — 1/1 runs finished, 100% of iterations, ETA 0s"
    assert change_line(watch_model([("running", 30), ("cancelled", 10)], {**known, "eta_s": 7200.0})) == \
        "1 running, 1 cancelled — 1/2 runs finished, 30% of iterations, ETA 2h00m"
    assert change_line(watch_model([("pending", 0)], {**known, "slots": 0})) == \
        "1 pending — 0/1 runs finished, 0% of iterations, ETA unknown (no slot alive)"
    assert change_line(watch_model([("pending", 0)], {**known, "not_estimated": 1})) == \
        "1 pending — 0/1 runs finished, 0% of iterations, ETA unknown (1 run(s) of shapes not observed yet)"
    assert change_line(watch_model([("running", 10)], None)) == \
        "1 running — 0/1 runs finished, 10% of iterations, ETA unknown (no launched sweep lists these runs)"


def test_watch_on_a_terminal_shows_progress_the_refresh_time_and_how_to_quit() -> None:
    from io import StringIO

    from rich.console import Console

    from sweepctl.cli.render.watch import _view

    m = watch_model([("running", 25)], {"eta_s": 150.0, "slots": 1, "not_estimated": 0})
    buf = StringIO()
    Console(file=buf, width=160, color_system=None).print(_view(m, lambda _: "TABLE", 5.0, 0.0))
    stamp = time.strftime("%H:%M:%S", time.localtime(0.0))
    lines = lines_of(buf.getvalue())
    assert lines[0] == "TABLE"
    assert lines[1].endswith("0/1 runs finished, 25% of iterations, ETA 2m") and "━" in lines[1]
    assert lines[2] == f"refreshed {stamp}, every 5 s — Ctrl-C quits watching (the runs go on)"


def test_status_watch_in_a_pipe_prints_when_a_run_finishes(here: Path) -> None:
    """The real command, piped, with --interval: a line at start, a line when a run's summary
    appears, nothing in between."""
    out = here / "o"
    make_runs(out, 2, failed=range(0), stale=range(1, 2))
    proc = subprocess.Popen([SWEEPCTL, "status", "--out-root", str(out), "--watch", "--interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if k != "COLUMNS"})
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert first.endswith("1 ok, 1 stale — 1/2 runs finished, 55% of iterations, "
                              "ETA unknown (no launched sweep lists these runs)\n")
        (out / "grp1-s1" / "summary.json").write_text(json.dumps({"ok": True, "iter_num": 100, "max_iters": 100}))
        second = proc.stdout.readline()  # type: ignore[union-attr]  # blocks until the change (the test's timeout bounds it)
        assert second.endswith("2 ok — 2/2 runs finished, 100% of iterations, ETA 0s\n")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --------------------------------------------------------------------------- exit codes


def test_the_readme_exit_code_table_is_the_codes_the_errors_carry() -> None:
    from sweepctl.errors import RefusedError, RemoteError, SpecError, SweepctlError

    section = (REPO / "README.md").read_text().split("### Exit codes", 1)[1].split("\n#", 1)[0]
    codes = [int(line.split("|")[1]) for line in section.splitlines() if line.startswith("| ") and
             line.split("|")[1].strip().isdigit()]
    assert codes == [0, 1, 2, 3, 130]
    assert (SweepctlError.exit_code, SpecError.exit_code, RefusedError.exit_code, RemoteError.exit_code) == (1, 1, 2, 3)


def test_train_with_a_misspelled_setting_is_an_input_error_and_writes_nothing(tmp_path: Path) -> None:
    r = piped("train", "mhc", "learnig_rate=1", "out_dir=out/x", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr == ("error: bad config: unknown setting 'learnig_rate'; did you mean 'learning_rate'? — "
                        "`sweepctl presets` lists the presets; `sweepctl train --help` shows the form\n")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_exits_130(here: Path) -> None:
    import signal

    out = here / "o"
    make_runs(out, 1, failed=range(0), stale=range(0))
    # Started as a terminal's foreground job starts it, with Ctrl-C at its default: a suite run as
    # a background job (`cmd &` in a shell without job control) ignores SIGINT, every child inherits
    # that, and a Python started with SIGINT ignored keeps ignoring it (this test then hung for 60 s).
    proc = subprocess.Popen([SWEEPCTL, "status", "--out-root", str(out), "--watch", "--interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().endswith("1 ok — 1/1 runs finished, 100% of iterations, ETA 0s\n")  # type: ignore[union-attr]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- waits and hints


def test_an_empty_status_says_where_runs_are_and_how_to_point_at_them(
        here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_runs(here / "sweepctl-demo", 2, failed=range(0), stale=range(0))
    r = run_cli(capsys, "status")
    assert r.code == 0, r.err
    assert lines_of(r.out)[-3:] == [
        "no runs in ./outputs (out_root from default)",
        "runs exist in ./sweepctl-demo (the demo's folder, 2 runs): sweepctl status --out-root ./sweepctl-demo",
        "runs in another folder: --out-root DIR (or export SWEEPCTL_OUT_ROOT=DIR); runs on a pod: --host POD, "
        "an alias from ~/.ssh/config (or export SWEEPCTL_HOST=POD)",
    ]
    pasted = run_cli(capsys, "status", "--out-root", "./sweepctl-demo")  # the hint, pasted, finds them
    assert "2 ok" in pasted.out


def test_logs_follow_says_what_it_waits_for_then_prints_the_log(here: Path) -> None:
    from sweepctl.state import manifest
    from sweepctl.sweep.plan import make_plan
    from sweepctl.sweep.spec import read_sweep

    out = here / "o"
    csv = here / "r.csv"  # a launched sweep plans r1-s1: -f waits for it (a run no sweep knows is refused)
    csv.write_text("run_id,config,seed,overrides,notes\nr1-s1,base,1,device='cpu',\n")
    sweep_dir = manifest.sweep_dir(out, "r")
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "plan.json").write_text(make_plan(read_sweep(csv), shards=1, out_root=out).model_dump_json())
    proc = subprocess.Popen([SWEEPCTL, "logs", "r1-s1", "-f", "--out-root", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if k != "COLUMNS"})
    try:
        said = proc.stderr.readline()  # type: ignore[union-attr]
        assert said == (f"waiting for {out}/r1-s1/stdout.log: r1-s1 has not started yet; its log appears when a "
                        f"runner picks it up. Ctrl-C stops waiting; `sweepctl status --out-root {out}` shows the "
                        "sweep.\n")
        (out / "r1-s1").mkdir(parents=True)
        (out / "r1-s1" / "stdout.log").write_text("step 1\n")
        (out / "r1-s1" / "summary.json").write_text("{}")
        assert proc.stdout.readline() == "step 1\n"  # type: ignore[union-attr]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_attach_to_a_session_that_does_not_exist_lists_those_that_do(
        tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    subprocess.run(["tmux", "-S", tmux_socket, "new-session", "-d", "-s", "sweep-0", "sleep 600"], check=True)
    subprocess.run(["tmux", "-S", tmux_socket, "new-session", "-d", "-s", "sweep-1", "sleep 600"], check=True)
    r = run_cli(capsys, "attach", "5")
    assert r.code == 1
    assert r.err == (f"error: no tmux session sweep-5 on tmux server {tmux_socket} — sessions there: sweep-0, "
                     "sweep-1; e.g. `sweepctl attach sweep-0`\n")
