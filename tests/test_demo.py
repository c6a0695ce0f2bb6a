"""`sweepctl demo`: the whole path on this machine — stdlib text to tokens, CSV, launch in tmux,
live status, the final table, the report — and the rules that keep it away from real results.

The end-to-end test runs the real demo at its hidden `--size quick` (30 iterations instead of 300)
on a private tmux server; `scripts/demo` runs the default size."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import pytest

from cli import run_cli
from sweep_helpers import FakeGpus, Workspace
from sweepctl import demo
from sweepctl.errors import RefusedError, SweepctlError
from sweepctl.pod.data import verify_shard
from sweepctl.pod.tmux import Tmux
from sweepctl.state import runs
from sweepctl.sweep.spec import read_sweep

pytest_plugins = ["sweep_fixtures"]


@pytest.fixture()
def demo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_gpus: FakeGpus, tmux_socket: str):
    """Where the demo writes; no GPUs, a private tmux server; leftovers reaped by pid at the end."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEPCTL_VOLUME", str(tmp_path / "no-volume"))
    root = tmp_path / "demo"
    yield root
    from sweep_helpers import kill_tmux_server

    kill_tmux_server(tmux_socket)
    Workspace(tmp_path, root, root / "data", fake_gpus).reap()


def test_the_demo_runs_every_variant_through_tmux_to_ok_and_prints_commands_that_work(
        demo_root: Path, tmux_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(capsys, "demo", "--out-root", str(demo_root), "--size", "quick")
    assert r.code == 0, r.out + r.err
    ids = demo.DemoLayout(demo_root).run_ids()
    assert ids == ["demo-base-s1337", "demo-base-s1338", "demo-hc-s1337", "demo-hc-s1338",
                   "demo-mhc-s1337", "demo-mhc-s1338"]

    # the final status table: every run ok, and each ran in a shard session of our tmux server
    final = r.out[r.out.index(f"sweep demo in {demo_root}"):]
    for run_id in ids:
        row = next(line for line in final.splitlines() if line.startswith(f"│ {run_id} "))
        assert "│ ok " in row and "30/30" in row, row
    assert "6 ok" in final
    assert {s.name for s in Tmux(tmux_socket).sessions()} == {"sweep-0", "sweep-1"}
    for run_id in ids:
        summary = runs.read_json(demo_root / run_id / runs.SUMMARY)
        assert summary is not None and summary["ok"] is True and summary["iter_num"] == 30

    # the inputs: GPT-2 tokens of the stdlib sources, a CSV that validates, W&B off
    shards = sorted(p.name for p in (demo_root / "data").glob("fineweb_*.bin"))
    assert shards == ["fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    assert verify_shard(demo_root / "data" / "fineweb_train_000001.bin") > 100_000
    sweep = read_sweep(demo_root / "demo.csv")
    assert [s.run_id for s in sweep.runs] == ids
    assert {s.config.variant for s in sweep.runs} == {"base", "hc", "mhc"}
    assert all(s.config.device == "cpu" and not s.config.wandb_log for s in sweep.runs)

    # the comparison against plain, from the report
    assert "against baseline demo-base (n=2)" in r.out
    assert "│ demo-hc " in r.out and "│ demo-mhc " in r.out

    # each printed "look further" command runs as printed
    steps = r.out[r.out.index("look further:"):].splitlines()[1:]
    commands = [shlex.split(line.split("  # ")[0]) for line in steps if line.strip()]
    assert [c[1] if c[0] == "sweepctl" else c[0] for c in commands] == \
        ["status", "logs", "report", "tmux", "ls", "launch"]
    for argv in commands:
        if argv[0] == "sweepctl":
            result = run_cli(capsys, *argv[1:])
            assert result.code == 0, (argv, result.err)
            if argv[1] == "launch":  # every run is ok: the run table skips them all
                assert "nothing to start" in result.out
        elif argv[0] == "tmux":
            assert argv == ["tmux", "-S", tmux_socket, "attach", "-t", "sweep-0"]
        else:
            assert Path(argv[1], runs.SUMMARY).is_file()

    # --keep: the same folder, every run already ok, so nothing trains and it ends at once
    t0 = time.monotonic()
    again = run_cli(capsys, "demo", "--out-root", str(demo_root), "--size", "quick", "--keep")
    assert again.code == 0, again.err
    assert "nothing to start: every demo run is already ok" in again.out and "6 ok" in again.out
    assert time.monotonic() - t0 < 30


# --------------------------------------------------------------------------- the out-root rules


def test_a_rerun_moves_the_previous_demo_aside_and_deletes_nothing(tmp_path: Path) -> None:
    layout = demo.DemoLayout(tmp_path / "demo")
    assert demo.prepare_out_root(layout, keep=False) is None and layout.marker.is_file()
    (layout.out_root / "demo-base-s1337").mkdir()
    (layout.out_root / "demo-base-s1337" / runs.SUMMARY).write_text('{"ok": true}')

    moved = demo.prepare_out_root(layout, keep=False, now=time.mktime((2030, 1, 2, 3, 4, 5, 0, 0, -1)))
    assert moved == tmp_path / "demo.bak-20300102-030405"
    assert (moved / "demo-base-s1337" / runs.SUMMARY).read_text() == '{"ok": true}'
    assert sorted(p.name for p in layout.out_root.iterdir()) == [demo.MARKER]

    (layout.out_root / "x").write_text("y")  # the same second again: a second name, nothing overwritten
    again = demo.prepare_out_root(layout, keep=False, now=time.mktime((2030, 1, 2, 3, 4, 5, 0, 0, -1)))
    assert again == tmp_path / "demo.bak-20300102-030405-1" and (again / "x").exists() and moved.exists()


def test_keep_reuses_the_previous_demo(tmp_path: Path) -> None:
    layout = demo.DemoLayout(tmp_path / "demo")
    demo.prepare_out_root(layout, keep=False)
    (layout.out_root / "kept").write_text("")
    assert demo.prepare_out_root(layout, keep=True) is None
    assert (layout.out_root / "kept").exists() and not list(tmp_path.glob("demo.bak-*"))


@pytest.mark.parametrize("keep", [False, True])
def test_a_folder_that_is_not_a_demo_is_refused_untouched(tmp_path: Path, keep: bool) -> None:
    results = tmp_path / "results"
    (results / "my-precious-run").mkdir(parents=True)
    with pytest.raises(SweepctlError, match="not a demo folder") as e:
        demo.prepare_out_root(demo.DemoLayout(results), keep=keep)
    assert e.value.exit_code == 1 and "--out-root" in str(e.value)
    assert [p.name for p in results.iterdir()] == ["my-precious-run"]


def test_an_empty_folder_is_used_and_marked(tmp_path: Path) -> None:
    layout = demo.DemoLayout(tmp_path)
    assert demo.prepare_out_root(layout, keep=False) is None and layout.marker.is_file()


def test_a_demo_still_running_is_not_moved(tmp_path: Path) -> None:
    layout = demo.DemoLayout(tmp_path / "demo")
    demo.prepare_out_root(layout, keep=False)
    run = layout.out_root / "demo-hc-s1337"
    run.mkdir()
    # a fresh heartbeat from a live process on this host: the run table's "running"
    runs.write_json_atomic(run / runs.HEARTBEAT, {"ts": time.time(), "pid": os.getpid(), "host": runs.HOST})
    for keep in (False, True):
        with pytest.raises(RefusedError, match="still has 1 running run") as e:
            demo.prepare_out_root(layout, keep=keep)
        assert e.value.exit_code == 2 and "sweepctl stop --all" in str(e.value)
    assert run.is_dir() and not list(tmp_path.glob("demo.bak-*"))


def test_the_demo_refuses_a_non_demo_out_root_from_the_command_line(
        demo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo_root.mkdir()
    (demo_root / "notes.txt").write_text("mine")
    r = run_cli(capsys, "demo", "--out-root", str(demo_root), "--size", "quick")
    assert r.code == 1 and "not a demo folder" in r.err
    assert [p.name for p in demo_root.iterdir()] == ["notes.txt"]


# --------------------------------------------------------------------------- inputs


def test_the_corpus_is_utf8_python_source_up_to_the_budget(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n" * 100)
    (tmp_path / "b.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))  # not UTF-8: left out
    (tmp_path / "c.py").write_text("y = 2\n" * 100)
    (tmp_path / "d.py").write_text("z = 3\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.py").write_text("deep = True\n")  # top level only
    assert [p.name for p in demo.corpus_files(10**6, tmp_path)] == ["a.py", "c.py", "d.py"]
    assert [p.name for p in demo.corpus_files(700, tmp_path)] == ["a.py", "c.py"]
    with pytest.raises(SweepctlError, match=r"no readable \.py files"):
        demo.corpus_files(100, tmp_path / "sub" / "nothing-here")


def test_the_default_corpus_comes_from_this_python_and_fits_the_budget() -> None:
    files = demo.corpus_files(demo.DEFAULT_SIZE.corpus_bytes)
    assert all(f.parent == demo.stdlib_dir() and f.suffix == ".py" for f in files)
    sizes = [len(f.read_text("utf-8")) for f in files]
    assert sum(sizes) >= demo.DEFAULT_SIZE.corpus_bytes > sum(sizes[:-1])


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_csv_is_three_variants_by_two_seeds_on_the_requested_device(tmp_path: Path, device: str) -> None:
    path = demo.write_csv(tmp_path / "demo.csv", demo.DEFAULT_SIZE, device)
    sweep = read_sweep(path)
    assert [(s.run_id, s.config.variant, s.seed) for s in sweep.runs] == [
        ("demo-base-s1337", "base", 1337), ("demo-base-s1338", "base", 1338),
        ("demo-hc-s1337", "hc", 1337), ("demo-hc-s1338", "hc", 1338),
        ("demo-mhc-s1337", "mhc", 1337), ("demo-mhc-s1338", "mhc", 1338)]
    assert {(s.config.device, s.config.max_iters, s.config.n_layer, s.config.wandb_log) for s in sweep.runs} == \
        {(device, 300, 2, False)}
    assert sweep.warnings == ()  # no two rows with the same effective config


def test_each_trainer_gets_its_share_of_the_cores() -> None:
    assert demo.threads_per_run(2, cpus=2) == 1
    assert demo.threads_per_run(8, cpus=64) == 8
    assert demo.threads_per_run(4, cpus=2) == 1
