"""report.py's edge cases on small hand-written inputs (the real-run tests are in test_report.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sweepctl.train import diagnostics
from sweepctl.views import report


def test_gain_keys_match_what_the_trainer_writes() -> None:
    assert (report.GAIN_FWD, report.GAIN_BWD) == (diagnostics.GAIN_FWD, diagnostics.GAIN_BWD)


@pytest.mark.parametrize(("run_id", "group"), [
    ("fineweb10B-mhc-6l-s1337", "fineweb10B-mhc-6l"),
    ("base_seed3", "base"),
    ("hc-seed-1338", "hc"),
    ("mhc-6l", "mhc-6l"),  # no seed suffix: the run is its own group
    ("run-s1337-long", "run-s1337-long"),  # only a trailing suffix is a seed
])
def test_strip_seed(run_id: str, group: str) -> None:
    assert report.strip_seed(run_id) == group


def test_stats_use_the_sample_std_and_skip_missing_values() -> None:
    s = report.stats([1.0, None, 3.0])
    assert (s["n"], s["mean"], s["std"], s["min"], s["max"]) == (2, 2.0, pytest.approx(2 ** 0.5), 1.0, 3.0)
    assert report.stats([2.5])["std"] is None  # one seed has no spread to report
    assert report.stats([None])["mean"] is None


def _write_metrics(path: Path, rows: list[object]) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_read_metrics_keeps_the_latest_attempt_and_skips_a_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write_metrics(path, [
        {"event": "eval", "iter": 0, "train": 5.0, "val": 5.1},
        {"event": "train", "iter": 5, "loss": 4.9},
        {"event": "eval", "iter": 10, "train": 4.5, "val": 4.6},
        {"event": "train", "iter": 15, "loss": 4.4},  # never checkpointed: the resume restarts at 10
        {"event": "train", "iter": 15, "loss": 4.3},
        {"iter": 20, "train": 4.1, "val": 4.2},  # an older trainer: no event field, known by its keys
        {"event": "diag", "iter": 20, "composite_gain_fwd": 1.0, "composite_gain_bwd": 1.0},
        '{"event": "train", "iter": 25, "lo',
    ])
    rows, bad = report.read_metrics(path)
    assert bad == 1
    assert [(r["iter"], r["val"]) for r in rows["eval"]] == [(0, 5.1), (10, 4.6), (20, 4.2)]
    assert [(r["iter"], r["loss"]) for r in rows["train"]] == [(5, 4.9), (15, 4.3)]
    assert [r["iter"] for r in rows["diag"]] == [20]


def _record(run_id: str, state: str, final: float | None, seed: int = 1, **series: list) -> dict:
    """A run record as `report.run_record` makes it; `eval` rows are [iter, tokens, train, val]."""
    evals = series.pop("eval", None)
    if evals is None:
        evals = [[10, 1000, final, final]] if final is not None else []
    return {"run_id": run_id, "state": state, "seed": seed, "variant": "base", "config": None, "final_val": final,
            "best_val": final, "tokens_seen": None, "tokens_per_iter": 100, "tok_per_s": None, "elapsed_s": None,
            "error_class": None, "bad_metric_lines": 0, "gain_profiles": [],
            "series": {"eval": evals, "train": [], "gain": [], **series}}


def _data(*records: dict) -> dict:
    return report.assemble(list(records), out_root="/nowhere", sweep=None, group_by="seed-stripped", now=0.0)


def test_compare_pairs_by_seed_and_says_when_seeds_are_too_few() -> None:
    d = _data(_record("a-s1", "ok", 3.0), _record("a-s2", "ok", 3.2, seed=2), _record("b-s1", "ok", 2.0),
              _record("c-s1", "failed", None), _record("d-s1", "ok", 2.95), _record("d-s2", "ok", 3.05, seed=2))
    cmp = report.compare(d, "a")
    rows = {r["label"]: r for r in cmp["rows"]}
    assert [r["label"] for r in cmp["rows"]] == ["d", "b", "c"]  # tested first, then too few seeds, then no result
    assert (rows["b"]["diff"], rows["b"]["test"], rows["b"]["verdict"]) == (
        pytest.approx(-1.1), None, "no clear difference (n=1 seed)")
    assert (rows["c"]["diff"], rows["c"]["verdict"]) == (None, "no result")
    # d vs a, paired: differences -0.05 and -0.15 -> mean -0.1, SE 0.05, 1 df: CI -0.1 ± 12.706 x 0.05
    assert (rows["d"]["test"], rows["d"]["n"], rows["d"]["seeds"]) == ("paired", 2, [1, 2])
    assert rows["d"]["se"] == pytest.approx(0.05)
    assert (rows["d"]["ci_low"], rows["d"]["ci_high"]) == (pytest.approx(-0.1 - 12.7062 * 0.05, abs=1e-5),
                                                           pytest.approx(-0.1 + 12.7062 * 0.05, abs=1e-5))
    assert rows["d"]["p"] == pytest.approx(1 - 2 / math.pi * math.atan(2.0))  # Cauchy tail at t = 2
    assert rows["d"]["verdict"] == "no clear difference (n=2 seeds)"
    assert [w.split(":")[0] for w in cmp["warnings"]] == ["b vs a", "d vs a"]


def test_value_at_interpolates_only_inside_the_evals() -> None:
    points = [(0.0, 10.0), (1000.0, 4.0), (3000.0, 3.0)]
    assert report.value_at(points, 1000.0) == (4.0, False)
    assert report.value_at(points, 2000.0) == (3.5, True)
    assert report.value_at(points, 4000.0) == (None, False)


def test_curve_uses_ok_runs_and_falls_back_to_unfinished_ones() -> None:
    d = _data(_record("a-s1", "ok", 3.0, eval=[[0, 0, 5.0, 5.0], [10, 1000, 4.0, 4.0]]),
              _record("a-s2", "ok", 3.0, seed=2, eval=[[0, 0, 5.0, 6.0], [10, 1000, 4.0, 3.0]]),
              _record("a-s3", "failed", None, seed=3, eval=[[0, 0, 9.0, 9.0]]),
              _record("b-s1", "running", None, eval=[[0, 0, 5.0, 5.5]]))
    a = report.curve(d, "a", "eval", 3)
    assert (a["x"], a["mean"], a["min"], a["max"], a["runs"]) == ([0, 1000], [5.5, 3.5], [5.0, 3.0], [6.0, 4.0], 2)
    assert a["std"] == [pytest.approx(0.5 ** 0.5)] * 2
    assert a["x_is_tokens"] and not a["partial"]
    assert report.curve(d, "a", "eval", 3, skip_first=True)["x"] == [1000]
    b = report.curve(d, "b", "eval", 3, tokens=False)
    assert (b["x"], b["mean"], b["partial"], b["x_is_tokens"]) == ([0], [5.5], True, False)


def test_read_run_keeps_the_diag_schema_and_thins_the_layer_profiles(tmp_path: Path) -> None:
    run = tmp_path / "mhc-s1"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"ok": True, "tokens_per_iter": 10, "iter_num": 240}))
    rows: list[object] = [{"event": "diag", "iter": 0, "composite_gain_fwd": 1.5, "composite_gain_bwd": 1.25}]
    for it in range(10, 250, 10):  # 24 evals with the per-layer diagnostics
        rows.append({"event": "diag", "iter": it, "tokens": it * 10, "fwd_gain_mean": [1.0 + it / 1000, 1.0],
                     "fwd_gain_max": [1.1 + it / 1000, 1.05], "bwd_gain_mean": [1.0, 1.0], "bwd_gain_max": [1.2, 1.0],
                     "h_res_row_err": it / 1e6, "h_res_col_err": 1e-7, "n_layers": 2})
    rows.append({"event": "diag", "iter": 250, "tokens": 2500, "fwd_gain_mean": [float("nan"), 1.0],
                 "fwd_gain_max": [1.0, 1.0], "bwd_gain_mean": [1.0, 1.0], "bwd_gain_max": ["x", 1.0]})
    _write_metrics(run / "metrics.jsonl", rows)
    rec = report.run_record(run)
    gain = rec["series"]["gain"]
    assert gain[0] == [0, 0.0, 1.5, 1.25, None, None]  # a row from before the per-layer diagnostics
    assert gain[1] == [10, 100.0, pytest.approx(1.11), 1.2, 1e-5, 1e-7]
    assert gain[-1] == [250, 2500.0, 1.0, None, None, None]  # a non-number is not a gain
    profiles = rec["gain_profiles"]
    assert len(profiles) == report.MAX_PROFILES
    assert (profiles[0]["iter"], profiles[-1]["iter"]) == (10, 240)  # row 250 has no complete bwd profile
    assert profiles[-1] == {"iter": 240, "tokens": 2400.0, "fwd_gain_mean": [1.24, 1.0], "fwd_gain_max": [1.34, 1.05],
                            "bwd_gain_mean": [1.0, 1.0], "bwd_gain_max": [1.2, 1.0]}
