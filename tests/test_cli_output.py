"""Output without a terminal, at any size: pipes get whole rows, big sweeps get a summary.

The pipe checks run the installed `sweepctl` in a subprocess with stdout a pipe and no COLUMNS,
which is what `sweepctl status | grep failed` or `> file` sees."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
    assert ("│ cvres_mhc_48l │ 48     │ 150    │ 6     │ 24    │ 4     │ 6666  │ 4       │ "
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
