"""report at equal tokens, the verdict across seeds, and the mHC paper's diagnostics, on run
directories written here by hand in the trainer's formats (summary.json, config_effective.json,
metrics.jsonl with `train`, `eval` and `diag` records)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli import run_cli
from sweepctl.views import report

ROOT = Path(__file__).resolve().parent.parent


def write_run(root: Path, run_id: str, seed: int, tpi: int, evals: list[tuple[int, float]], *,
              tokens_in_rows: bool = True, diag: list[dict[str, Any]] | None = None,
              variant: str = "base", ok: bool = True) -> None:
    """A finished run directory: evals are (iter, val loss); train rows sit at the same iters."""
    d = root / run_id
    d.mkdir(parents=True)
    flags = {"base": {"hc_disable": True, "mhc": False}, "hc": {"hc_disable": False, "mhc": False},
             "mhc": {"hc_disable": False, "mhc": True}}[variant]
    # batch_size * block_size = tokens per iter: how presets of one depth would differ if they did
    (d / "config_effective.json").write_text(json.dumps({"seed": seed, "batch_size": tpi // 10, "block_size": 10,
                                                         "gradient_accumulation_steps": 1, **flags}))
    rows: list[dict[str, Any]] = []
    for it, val in evals:
        tokens = {"tokens": it * tpi} if tokens_in_rows else {}
        rows.append({"event": "train", "iter": it, **tokens, "loss": val + 0.05, "tok_per_s": 1000.0})
        rows.append({"event": "eval", "iter": it, **tokens, "train": val + 0.02, "val": val})
    for row in diag or []:
        rows.append({"event": "diag", **row})
    rows.sort(key=lambda r: r["iter"])
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    last = evals[-1][0]
    (d / "summary.json").write_text(json.dumps({
        "ok": ok, "iter_num": last, "tokens_per_iter": tpi, "tokens_seen": last * tpi,
        "last_eval": {"val": evals[-1][1]}, "best_val_loss": min(v for _, v in evals), "tok_per_s": 1000.0,
        "elapsed_s": 10.0}))


# --------------------------------------------------------------------------- equal tokens


@pytest.fixture
def unequal_batches(tmp_path: Path) -> Path:
    """a: 100 tokens/iter to iter 30 (logged before the trainer wrote tokens); b: 200 tokens/iter,
    evals every 5 iters to iter 20 (4000 tokens); c: 120 tokens/iter, no eval at exactly 3000."""
    for seed, shift in ((1, 0.0), (2, 0.1)):
        write_run(tmp_path, f"a-s{seed}", seed, 100, [(0, 10.8), (10, 4.0 + shift), (20, 3.5 + shift),
                                                      (30, 3.2 + shift)], tokens_in_rows=False)
        # at iter 15 (3000 tokens) b is far better than at iter 30 would suggest of a: 3.0 vs 2.0 at iter 20
        write_run(tmp_path, f"b-s{seed}", seed, 200, [(0, 10.8), (5, 4.1 + shift), (10, 3.6 + shift),
                                                      (15, 3.0 + shift), (20, 2.0 + shift)])
        write_run(tmp_path, f"c-s{seed}", seed, 120, [(0, 10.8), (10, 3.9 + shift), (20, 3.3 + shift),
                                                      (30, 2.7 + shift)])
    return tmp_path


def test_groups_are_compared_at_the_last_token_count_every_run_reached(unequal_batches: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = report.collect(unequal_batches)
    assert data["at"] == {"x": 3000.0, "unit": "tokens", "limited_by": "a-s1", "interpolated": ["c-s1", "c-s2"]}
    groups = {g["label"]: g for g in data["groups"]}
    # a at its iter 30; b at its iter 15, not its last eval nor its iter 30; c on the line from 2400 to 3600
    assert groups["a"]["final_val"]["mean"] == pytest.approx(3.25)
    assert groups["b"]["final_val"]["mean"] == pytest.approx(3.05)
    assert groups["c"]["final_val"]["mean"] == pytest.approx(3.35 + (2.75 - 3.35) * 600 / 1200)
    assert groups["b"]["best_val"]["mean"] == pytest.approx(3.05)  # its 2.05 at 4000 tokens is beyond the point
    assert [r["diff"] for r in report.compare(data, "a")["rows"]] == [pytest.approx(-0.2), pytest.approx(-0.2)]
    r = run_cli(capsys, "report", "--out-root", str(unequal_batches))
    assert r.code == 0, r.err
    assert ("Val losses are at 3k tokens: the last eval every ok run reached (limited by a-s1); interpolated "
            "between evals for c-s1, c-s2.\n") in r.out


def test_loss_curves_are_against_tokens_and_start_after_iteration_zero(unequal_batches: Path) -> None:
    data = report.collect(unequal_batches)
    b = report.curve(data, "b", "eval", 3, skip_first=True)
    assert (b["x"], b["x_is_tokens"]) == ([1000, 2000, 3000, 4000], True)
    assert b["mean"] == [pytest.approx(v) for v in (4.15, 3.65, 3.05, 2.05)]
    assert b["std"] == [pytest.approx(math.sqrt(0.005))] * 4  # sample std of two seeds 0.1 apart
    a = report.curve(data, "a", "train", 2)
    assert a["x"] == [0, 1000, 2000, 3000]  # a's rows carry no tokens: iter x its tokens per iter
    diff = report.difference_curve(data, "b", "a")
    assert (diff["x"], diff["paired"], diff["seeds"]) == ([1000, 2000, 3000], True, 2)
    assert diff["mean"] == [pytest.approx(v) for v in (0.1, 0.1, -0.2)]


def test_the_val_plot_is_not_stretched_by_the_first_eval(unequal_batches: Path, tmp_path: Path) -> None:
    """Groups 0.2-0.4 nats apart must be far apart on the image, though step 0 logged 10.8."""
    import matplotlib
    import matplotlib.image

    from sweepctl.views.plots import write_plots

    written = write_plots(report.collect(unequal_batches), tmp_path / "plots", baseline="a")
    assert sorted(written) == ["tok_per_s.png", "train_loss.png", "val_delta.png", "val_loss.png"]
    img = matplotlib.image.imread(written["val_loss.png"])[:, :860, :3]
    tab10 = matplotlib.colormaps["tab10"]
    rows = {}
    for i, label in enumerate("abc"):
        ys, _ = np.nonzero(np.abs(img - np.asarray(tab10(i)[:3])).max(-1) < 0.02)
        rows[label] = ys
    # at 1000 tokens a (4.05) and b (4.15) sit 0.1 apart; at 3000 tokens 0.2. On an axis up to 10.8 the
    # curves' pixels would share rows; from the first eval after step 0 they span most of the height
    assert rows["a"].max() - rows["a"].min() > 150 and rows["b"].max() - rows["b"].min() > 250, rows


# --------------------------------------------------------------------------- the verdict


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    finals = {
        "base": {1: 3.00, 2: 3.10, 3: 3.20},
        "good": {1: 2.90, 2: 3.01, 3: 3.09},  # each seed 0.09-0.11 better: paired, clearly better
        "noisy": {1: 3.05, 2: 3.06, 3: 3.22},  # +0.05, -0.04, +0.02: no clear difference
        "other": {7: 3.50, 8: 3.60},  # seeds the baseline never ran: Welch, unpaired
        "single": {1: 2.50},
    }
    for group, by_seed in finals.items():
        for seed, final in by_seed.items():
            write_run(tmp_path, f"{group}-s{seed}", seed, 100, [(0, 10.8), (10, final + 0.5), (20, final)])
    return tmp_path


def test_verdict_table_pairs_by_seed_and_falls_back_to_welch(seeds: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(capsys, "report", "--out-root", str(seeds), "--baseline", "base")
    assert r.code == 0, r.err
    table = r.out[r.out.index("against baseline"):r.out.index("rule:")]
    # ranked by Δ, groups too small for a t-test last. good: diffs -0.10, -0.09, -0.11 -> mean -0.10, SE 0.01/√3, t = -17.32 on 2 df, p = 1 - t/√(2+t²)
    # = 0.0033, CI -0.10 ± 4.303·SE. other: Welch 3.55 - 3.10 on 2.88 df.
    assert "\n".join(line.rstrip() for line in table.splitlines()) == """\
against baseline base (n=3); lower is better
┏━━━━━━┳━━━━━━━━┳━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━┳━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ rank ┃ group  ┃ seeds  ┃ test   ┃ Δ val loss ┃ 95% CI             ┃ p     ┃ verdict                         ┃
┡━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━╇━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ 1    │ good   │ 3      │ paired │ -0.1000    │ [-0.1248, -0.0752] │ 0.003 │ better                          │
│ 2    │ noisy  │ 3      │ paired │ +0.0100    │ [-0.1038, +0.1238] │ 0.742 │ no clear difference (n=3 seeds) │
│ 3    │ other  │ 2 vs 3 │ Welch  │ +0.4500    │ [+0.2012, +0.6988] │ 0.011 │ worse                           │
│ 4    │ single │ 1 vs 3 │ —      │ -0.6000    │ —                  │ —     │ no clear difference (n=1 seed)  │
└──────┴────────┴────────┴────────┴────────────┴────────────────────┴───────┴─────────────────────────────────┘"""
    assert r.err == (
        "warning: other vs base: only 2 seeds: the 95% CI spans ±3.3 standard errors; give both groups 3 or more "
        "seeds (rows with other seeds in the sweep CSV) for a verdict\n"
        "warning: single vs base: 1 seed on one side: no t-test is possible; give both groups 3 or more seeds "
        "(rows with other seeds in the sweep CSV) for a verdict\n")


def test_the_verdict_in_json_and_csv(seeds: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(capsys, "report", "--out-root", str(seeds), "--baseline", "base", "--format", "json")
    assert r.code == 0, r.err
    rows = {row["label"]: row for row in json.loads(r.out)["comparison"]["rows"]}
    good = rows["good"]
    se = 0.01 / math.sqrt(3)
    assert (good["test"], good["n"], good["seeds"], good["verdict"], good["df"]) == ("paired", 3, [1, 2, 3], "better", 2)
    assert good["diff"] == pytest.approx(-0.1) and good["se"] == pytest.approx(se)
    assert (good["ci_low"], good["ci_high"]) == (pytest.approx(-0.1 - 4.302653 * se), pytest.approx(-0.1 + 4.302653 * se))
    assert good["p"] == pytest.approx(1 - math.sqrt(300) / math.sqrt(302))  # df=2 closed form at t = √300
    assert (rows["other"]["test"], rows["other"]["n_group"], rows["other"]["n_baseline"]) == ("welch", 2, 3)
    assert (rows["single"]["test"], rows["single"]["p"], rows["single"]["verdict"]) == (
        None, None, "no clear difference (n=1 seed)")
    r = run_cli(capsys, "report", "--out-root", str(seeds), "--baseline", "base", "--format", "csv")
    csv_rows = {row["group"]: row for row in csv.DictReader(io.StringIO(r.out))}
    got = {k: csv_rows["good"][k] for k in csv_rows["good"] if k.startswith("vs_baseline_") or k in ("at", "at_unit")}
    assert got == {"at": "2000.0", "at_unit": "tokens", "vs_baseline_test": "paired", "vs_baseline_n": "3",
                   "vs_baseline_diff": repr(good["diff"]), "vs_baseline_ci_low": repr(good["ci_low"]),
                   "vs_baseline_ci_high": repr(good["ci_high"]), "vs_baseline_p": repr(good["p"]),
                   "vs_baseline_verdict": "better"}
    assert csv_rows["base"]["vs_baseline_verdict"] == ""  # the baseline itself


# --------------------------------------------------------------------------- the mHC paper's diagnostics


def _diag(it: int, tokens: int, fwd: list[float], bwd: list[float], row_err: float, col_err: float) -> dict[str, Any]:
    """A diag record in the trainer's schema; token means are 0.9x the worst token."""
    return {"iter": it, "tokens": tokens, "fwd_gain_mean": [0.9 * g for g in fwd], "fwd_gain_max": fwd,
            "bwd_gain_mean": [0.9 * g for g in bwd], "bwd_gain_max": bwd, "h_res_row_err": row_err,
            "h_res_col_err": col_err, "n_layers": len(fwd)}


@pytest.fixture
def diagnosed(tmp_path: Path) -> Path:
    evals = [(0, 10.8), (10, 4.0), (20, 3.5)]
    for seed, s in ((1, 0.0), (2, 0.02)):
        write_run(tmp_path, f"base-s{seed}", seed, 100, evals)
        write_run(tmp_path, f"hc-s{seed}", seed, 100, evals, variant="hc", diag=[
            _diag(0, 0, [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], 0.0, 0.0),
            _diag(10, 1000, [8.0, 4.0, 2.0, 1.5], [6.0, 3.0, 2.0, 1.2], 0.5, 0.4),
            _diag(20, 2000, [40.7 + 10 * s, 12.0, 4.0, 1.5], [30.0 - 10 * s, 9.0, 3.0, 1.2], 0.3 + s, 0.2)])
        write_run(tmp_path, f"mhc-s{seed}", seed, 100, evals, variant="mhc", diag=[
            _diag(0, 0, [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], 1e-7, 1e-7),
            _diag(10, 1000, [1.02, 1.01, 1.0, 1.0], [1.01, 1.0, 1.0, 1.0], 4e-4 + s / 100, 2e-6),
            _diag(20, 2000, [1.097 + s, 1.05, 1.02, 1.01], [1.04 - s, 1.02, 1.01, 1.0], 2e-4, 1e-6)])
    return tmp_path


def test_diagnostics_per_group(diagnosed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = report.collect(diagnosed)
    diag = {g["label"]: g["diag"] for g in data["groups"]}
    assert diag["base"] is None  # a plain residual has no mixing to diagnose
    hc, mhc = diag["hc"], diag["mhc"]
    assert (hc["fwd_gain"]["mean"], hc["fwd_gain"]["n"]) == (pytest.approx(40.8), 2)
    assert hc["bwd_gain"]["mean"] == pytest.approx(29.9)
    assert (hc["row_err"], hc["col_err"], hc["iters"]) == (pytest.approx(0.5), pytest.approx(0.4), [20])
    assert mhc["fwd_gain"]["mean"] == pytest.approx(1.107) and mhc["bwd_gain"]["mean"] == pytest.approx(1.03)
    assert (mhc["row_err"], mhc["col_err"]) == (pytest.approx(6e-4), pytest.approx(2e-6))  # worst over the run
    r = run_cli(capsys, "report", "--out-root", str(diagnosed))
    assert r.code == 0, r.err
    table = r.out[r.out.index("residual mixing diagnostics"):r.out.index("Residual mixing (mHC paper)")]
    assert "\n".join(line.rstrip() for line in table.splitlines()) == """\
residual mixing diagnostics
┏━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┓
┃ group ┃ fwd gain       ┃ bwd gain       ┃ max |row sum−1| ┃ max |col sum−1| ┃
┡━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━┩
│ hc    │ 40.800 ± 0.141 │ 29.900 ± 0.141 │ 5.0e-01         │ 4.0e-01         │
│ mhc   │ 1.107 ± 0.014  │ 1.030 ± 0.014  │ 6.0e-04         │ 2.0e-06         │
└───────┴────────────────┴────────────────┴─────────────────┴─────────────────┘"""


def test_gain_against_layer_plot(diagnosed: Path, tmp_path: Path) -> None:
    import matplotlib
    import matplotlib.image

    from sweepctl.views.plots import write_plots

    written = write_plots(report.collect(diagnosed), tmp_path / "plots")
    assert sorted(written) == ["gain.png", "gain_layers.png", "tok_per_s.png", "train_loss.png", "val_loss.png"]
    img = matplotlib.image.imread(written["gain_layers.png"])[:, :, :3]
    tab10 = matplotlib.colormaps["tab10"]
    pixels = {label: np.nonzero(np.abs(img[:, :860] - np.asarray(tab10(i)[:3])).max(-1) < 0.02)[0]
              for i, label in enumerate(("base", "hc", "mhc"))}
    assert pixels["base"].size == 0  # no line for a plain residual
    assert pixels["hc"].size > 300 and pixels["mhc"].size > 300
    # in the forward panel (top half), HC's 40x gain sits far above mHC's ~1 on the log axis
    top = img.shape[0] // 2
    assert np.median(pixels["hc"][pixels["hc"] < top]) < np.median(pixels["mhc"][pixels["mhc"] < top]) - 50


# --------------------------------------------------------------------------- without matplotlib


def test_plots_without_matplotlib_still_print_the_report(seeds: Path, tmp_path: Path) -> None:
    """matplotlib made unimportable in a subprocess (not uninstalled): the report, then how to add it."""
    shim = ("import sys; sys.modules['matplotlib'] = None; sys.argv = ['sweepctl'] + sys.argv[1:]; "
            "from sweepctl.cli.app import main; main()")
    proc = subprocess.run([sys.executable, "-c", shim, "report", "--out-root", str(seeds), "--baseline", "base",
                           "--plots", str(tmp_path / "plots")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "│ good   │ 3      │ paired │ -0.1000    │ [-0.1248, -0.0752] │ 0.003 │ better" in proc.stdout
    install = f"{shlex.quote(sys.executable)} -m pip install -e {shlex.quote(str(ROOT) + '[plots]')}"
    assert proc.stderr.splitlines()[0] == (
        f"warning: --plots needs matplotlib, which is not installed; the report follows without plots. "
        f"To plot: {install}")
    assert not (tmp_path / "plots").exists()
