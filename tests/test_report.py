"""`sweepctl report` on run directories left by real tiny training runs.

One sweep, planned by the real spec/plan code and trained once per session by the real trainer
(`python -m sweepctl.train`, one CPU thread each): plain, HC and mHC with two seeds each, a third
plain seed pointed at corrupt shards (fails), and a planned mHC row never started (pending).
Expected numbers are computed here straight from summary.json / metrics.jsonl, not from report.py.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli import run_cli
from sweepctl.errors import SweepctlError
from sweepctl.views import report

SWEEP = "tiny"
TINY = ("device=cpu dtype=float32 n_layer=1 n_embd=32 n_head=2 block_size=32 batch_size=4 "
        "gradient_accumulation_steps=1 vocab_size=256 max_iters=30 eval_interval=10 eval_iters=2 "
        "log_interval=5 warmup_iters=2 lr_decay_iters=30 min_lr=1e-5")
TRAINED = [f"tiny-{v}-s{s}" for v in ("base", "hc", "mhc") for s in (1, 2)]
FAILED = "tiny-base-s3"
PENDING = "tiny-mhc-s3"
EVAL_ITERS = [0, 10, 20, 30]
PNG_SIZE = (550, 1000)  # plots.FIGSIZE at plots.DPI, rows x columns


def _write_shards(folder: Path) -> None:
    from sweepctl.train.data import write_shard

    folder.mkdir()
    rng = np.random.default_rng(0)
    pattern = np.tile(np.arange(64), 200)  # learnable: the loss visibly falls within 30 steps
    write_shard(folder / "fineweb_train_000001.bin", (pattern + rng.integers(0, 3, pattern.size)) % 256)
    write_shard(folder / "fineweb_val_000000.bin", (pattern[:4000] + rng.integers(0, 3, 4000)) % 256)


@pytest.fixture(scope="session")
def sweep_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """out_root of the trained sweep (read-only for tests: copy before changing anything)."""
    from sweepctl.sweep.plan import make_plan
    from sweepctl.sweep.spec import read_sweep

    base = tmp_path_factory.mktemp("report")
    data, bad, out = base / "data", base / "bad", base / "out"
    _write_shards(data)
    bad.mkdir()  # right names, wrong bytes: the trainer refuses the magic number and fails
    for name in ("fineweb_train_000001.bin", "fineweb_val_000000.bin"):
        (bad / name).write_bytes(bytes(range(256)) * 8)
    rows = ["run_id,config,seed,overrides,notes"]
    rows += [f"tiny-{v}-s{s},{v},{s},{TINY}," for v in ("base", "hc", "mhc") for s in (1, 2)]
    rows += [f"{FAILED},base,3,{TINY} data_dir={bad},corrupt data", f"{PENDING},mhc,3,{TINY},never started"]
    csv_path = base / f"{SWEEP}.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    plan = make_plan(read_sweep(csv_path), shards=1, out_root=out, data_dir=data)
    sweep_dir = out / ".sweeps" / SWEEP
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "plan.json").write_text(json.dumps(plan.model_dump(mode="json"), indent=2))
    # one thread per run: the machine is shared, and these models are too small to gain from more
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for r in plan.runs:
        if r.run_id == PENDING:
            continue
        env["SWEEPCTL_RUN_CONTEXT"] = json.dumps({"sweep": {"name": SWEEP, "row_index": r.row_index}, "attempt": 1})
        proc = subprocess.run([sys.executable, *r.argv[1:]], env=env, capture_output=True, text=True, timeout=300)
        expected = 1 if r.run_id == FAILED else 0
        assert proc.returncode == expected, f"{r.run_id}: exit {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    # a run outside the sweep (copied, as if pulled from another pod), to check --sweep filters it
    adhoc = out / "adhoc-hc-s1"
    shutil.copytree(out / "tiny-hc-s1", adhoc)
    meta = json.loads((adhoc / "run_metadata.json").read_text())
    meta["sweep"] = None
    (adhoc / "run_metadata.json").write_text(json.dumps(meta))
    return out


def _summary(root: Path, run_id: str) -> dict[str, Any]:
    return json.loads((root / run_id / "summary.json").read_text())


def _metric_rows(root: Path, run_id: str, event: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (root / run_id / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("event") == event]


@pytest.fixture(scope="session")
def data(sweep_root: Path) -> dict[str, Any]:
    return report.collect(sweep_root, sweep=SWEEP)


def _groups(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["label"]: g for g in d["groups"]}


# --------------------------------------------------------------------------- aggregation


def test_groups_are_the_seed_stripped_run_ids_with_every_run_counted(data: dict[str, Any]) -> None:
    groups = _groups(data)
    assert list(groups) == ["tiny-base", "tiny-hc", "tiny-mhc"]
    counts = {label: (g["ok"], g["failed"], g["pending"], g["variant"]) for label, g in groups.items()}
    assert counts == {"tiny-base": (2, 1, 0, "base"), "tiny-hc": (2, 0, 0, "hc"), "tiny-mhc": (2, 0, 1, "mhc")}
    assert groups["tiny-base"]["run_ids"] == ["tiny-base-s1", "tiny-base-s2", FAILED]
    assert groups["tiny-mhc"]["states"] == {"ok": 2, "pending": 1}
    assert groups["tiny-mhc"]["differs"] == {"hc_disable": False, "hc_num_streams": 4, "mhc": True}
    assert data["warnings"] == []


def test_means_and_stds_match_a_direct_computation(sweep_root: Path, data: dict[str, Any]) -> None:
    for label, g in _groups(data).items():
        ok = [f"{label}-s1", f"{label}-s2"]  # the failed seed (base s3) is not among them
        sums = [_summary(sweep_root, rid) for rid in ok]
        finals = [s["last_eval"]["val"] for s in sums]
        bests = [s["best_val_loss"] for s in sums]
        assert g["final_val"]["n"] == 2 and g["best_val"]["n"] == 2
        assert g["final_val"]["mean"] == pytest.approx(statistics.mean(finals), rel=1e-12)
        assert g["final_val"]["std"] == pytest.approx(statistics.stdev(finals), rel=1e-9)
        assert g["best_val"]["mean"] == pytest.approx(statistics.mean(bests), rel=1e-12)
        assert g["best_val"]["std"] == pytest.approx(statistics.stdev(bests), rel=1e-9)
        assert g["tokens_seen"]["mean"] == 30 * 4 * 32  # max_iters * batch * block, every ok run
        assert g["tok_per_s"]["mean"] == pytest.approx(statistics.mean(s["tok_per_s"] for s in sums))
        assert g["elapsed_s"]["mean"] == pytest.approx(statistics.mean(s["elapsed_s"] for s in sums))
        assert finals[0] != finals[1]  # the seeds really differ, so the std is not trivially 0


def test_failed_run_is_counted_with_its_error_class_and_not_averaged(sweep_root: Path, data: dict[str, Any]) -> None:
    base = _groups(data)["tiny-base"]
    assert base["error_classes"] == {"exception": 1}
    failed = next(r for r in data["runs"] if r["run_id"] == FAILED)
    assert failed["state"] == "failed" and failed["error_class"] == "exception"
    assert "magic number" in failed["error"]
    assert _summary(sweep_root, FAILED)["ok"] is False
    assert base["final_val"]["n"] == 2 and base["tok_per_s"]["n"] == 2


def test_sweep_filter_and_unknown_sweep(sweep_root: Path) -> None:
    everything = _groups(report.collect(sweep_root))
    assert "adhoc-hc" in everything  # outside the sweep, reported without --sweep
    assert everything["tiny-mhc"]["pending"] == 1  # a plan's unstarted rows count either way
    with pytest.raises(SweepctlError, match="no sweep named 'nope'") as e:
        report.collect(sweep_root, sweep="nope")
    assert "known sweeps: tiny" in str(e.value)


def test_group_by_config_and_by_regex(sweep_root: Path) -> None:
    # the failed run's data_dir differs (not science: it still joins its seeds); the pending run has
    # no directory at all, so its config comes from the sweep's plan.json
    by_config = _groups(report.collect(sweep_root, sweep=SWEEP, group_by="config"))
    assert {k: sorted(g["run_ids"]) for k, g in by_config.items()} == {
        "tiny-base": ["tiny-base-s1", "tiny-base-s2", FAILED],
        "tiny-hc": ["tiny-hc-s1", "tiny-hc-s2"],
        "tiny-mhc": ["tiny-mhc-s1", "tiny-mhc-s2", PENDING],
    }
    # outside a sweep the copied HC run has the same config as tiny-hc and joins its group
    assert sorted(_groups(report.collect(sweep_root, group_by="config"))["adhoc-hc"]["run_ids"]) == [
        "adhoc-hc-s1", "tiny-hc-s1", "tiny-hc-s2"]
    by_regex = _groups(report.collect(sweep_root, sweep=SWEEP, group_by=r"^tiny-(\w+)-s\d+$"))
    assert {k: g["ok"] for k, g in by_regex.items()} == {"base": 2, "hc": 2, "mhc": 2}
    with pytest.raises(SweepctlError, match="not seed-stripped, config or a valid regex"):
        report.collect(sweep_root, group_by="(unclosed")


def test_comparison_against_the_baseline_is_paired_by_seed(sweep_root: Path, data: dict[str, Any]) -> None:
    # every run trained 30 iters of 4 x 32 tokens: the common point is their last eval, 3840 tokens
    assert data["at"] == {"x": 3840, "unit": "tokens", "limited_by": "tiny-base-s1", "interpolated": []}
    cmp = report.compare(data, "tiny-base")
    base = {s: _summary(sweep_root, f"tiny-base-s{s}")["last_eval"]["val"] for s in (1, 2)}
    for row in cmp["rows"]:
        diffs = [_summary(sweep_root, f"{row['label']}-s{s}")["last_eval"]["val"] - base[s] for s in (1, 2)]
        mean, se = statistics.mean(diffs), statistics.stdev(diffs) / math.sqrt(2)
        assert (row["test"], row["seeds"], row["n"]) == ("paired", [1, 2], 2)
        assert row["diff"] == pytest.approx(mean, rel=1e-9) and row["se"] == pytest.approx(se, rel=1e-9)
        # 1 degree of freedom: the t distribution is Cauchy, t_{0.975,1} = 12.706
        assert row["p"] == pytest.approx(1 - 2 / math.pi * math.atan(abs(mean) / se), rel=1e-9)
        assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * 12.7062047 * se, rel=1e-6)
    assert [r["label"] for r in cmp["rows"]] == sorted(["tiny-hc", "tiny-mhc"],
                                                       key=lambda label: next(r["diff"] for r in cmp["rows"]
                                                                              if r["label"] == label))
    with pytest.raises(SweepctlError, match="no group named 'nope'"):
        report.compare(data, "nope")


# --------------------------------------------------------------------------- mHC diagnostics


def test_mhc_composite_gain_stays_near_one_and_hc_logs_it(data: dict[str, Any], sweep_root: Path) -> None:
    """What the report reads of the trainer's diag rows (either schema: the per-layer gains of the
    mHC paper, or the older full-depth composite gain): one row per eval, finite gains."""
    by_id = {r["run_id"]: r for r in data["runs"]}
    for rid in ("tiny-mhc-s1", "tiny-mhc-s2", "tiny-hc-s1", "tiny-hc-s2"):
        gain = by_id[rid]["series"]["gain"]
        assert [row[0] for row in gain] == EVAL_ITERS, rid  # one diagnostics row per eval
        assert [row[1] for row in gain] == [i * 4 * 32 for i in EVAL_ITERS], rid  # tokens seen
        assert all(math.isfinite(row[2]) and math.isfinite(row[3]) for row in gain), rid
        if "mhc" in rid:  # doubly stochastic mixing barely amplifies
            assert all(0.5 <= row[2] <= 2.0 and 0.5 <= row[3] <= 2.0 for row in gain), rid
    assert by_id["tiny-base-s1"]["series"]["gain"] == []  # nothing to mix in a plain residual
    groups = _groups(data)
    assert groups["tiny-base"]["diag"] is None
    assert groups["tiny-mhc"]["diag"]["fwd_gain"]["n"] == 2 and groups["tiny-mhc"]["diag"]["iters"] == [30]
    for rid in ("tiny-mhc-s1", "tiny-mhc-s2"):  # the applied maps stay on the manifold
        for r in _metric_rows(sweep_root, rid, "diag"):
            assert r["n_layers"] == 2 and r["h_res_row_err"] < 1e-3 and r["h_res_col_err"] < 1e-3


# --------------------------------------------------------------------------- CLI, plots, report.md


@pytest.fixture(scope="session")
def md_report(sweep_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from sweepctl.cli.app import main

    folder = tmp_path_factory.mktemp("plots") / "report"
    old = sys.argv
    sys.argv = ["sweepctl", "report", "--out-root", str(sweep_root), "--sweep", SWEEP, "--baseline", "tiny-base",
                "--plots", str(folder), "--format", "md"]
    try:
        main()  # returns on success; exits non-zero on an error, failing every test that uses this
    finally:
        sys.argv = old
    return folder, (folder / "report.md").read_text()


LEGEND_X = 860  # the legend column starts right of this pixel column at FIGSIZE/DPI


def _color_pixels(img: np.ndarray, color: tuple[float, ...]) -> int:
    return int((np.abs(img[..., :3] - np.asarray(color[:3])).max(-1) < 0.02).sum())


def _per_layer_diag(root: Path) -> bool:
    """Whether the trainer logs the mHC paper's per-layer gains (else only the full-depth gain)."""
    return "fwd_gain_max" in _metric_rows(root, "tiny-mhc-s1", "diag")[0]


def test_plots_are_images_of_the_expected_size_with_each_groups_data(sweep_root: Path,
                                                                     md_report: tuple[Path, str]) -> None:
    import matplotlib
    import matplotlib.image

    folder, _ = md_report
    tab10 = matplotlib.colormaps["tab10"]
    colors = {"tiny-base": tab10(0), "tiny-hc": tab10(1), "tiny-mhc": tab10(2)}  # group order
    mixing = {k: v for k, v in colors.items() if k != "tiny-base"}
    expected = {"val_loss.png": colors, "val_delta.png": mixing, "train_loss.png": colors, "tok_per_s.png": colors,
                "gain.png": mixing}
    if _per_layer_diag(sweep_root):
        expected["gain_layers.png"] = mixing
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(expected)
    for name, groups in expected.items():
        path = folder / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        img = matplotlib.image.imread(path)
        assert img.shape[:2] == PNG_SIZE, name
        assert img[..., :3].std() > 0.05, f"{name} is blank"
        plot_area = img[:, :LEGEND_X]
        drawn = {label: _color_pixels(plot_area, color) for label, color in groups.items()}
        if name == "tok_per_s.png":  # bars never overlap: each group's own bar is there
            assert min(drawn.values()) > 1000, drawn
        else:  # curves of similar runs may cover each other; together they are far more than markers
            assert sum(drawn.values()) > 1500, f"{name}: {drawn}"
            assert min(drawn.values()) > 0, f"{name}: a group is missing from the plot area: {drawn}"
            legend = {label: _color_pixels(img[:, LEGEND_X:], color) for label, color in groups.items()}
            assert min(legend.values()) > 30, f"{name}: a group is missing from the legend: {legend}"
        if name == "gain.png":
            assert _color_pixels(img, colors["tiny-base"]) < 20, "a plain run has no gain to plot"


def test_report_md_embeds_the_plots_with_links_that_resolve(sweep_root: Path, md_report: tuple[Path, str]) -> None:
    folder, text = md_report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(["gain.png", "tok_per_s.png", "train_loss.png", "val_delta.png", "val_loss.png"]
                                   + (["gain_layers.png"] if _per_layer_diag(sweep_root) else []))
    for link in links:
        assert (folder / link).is_file()
    assert re.search(r"^\| tiny-base \| base \| 2 \| 1 \| 0 \| \d\.\d{4} ± \d\.\d{4} \|", text, re.M)
    assert re.search(r"^\| tiny-mhc \| mhc \| 2 \| 0 \| 1 \|", text, re.M)
    assert "## Against baseline `tiny-base` (n=2)" in text
    assert f"- `{FAILED}`: exception — " in text


def test_table_csv_and_json_formats(sweep_root: Path, data: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    args = ("report", "--out-root", str(sweep_root), "--sweep", SWEEP, "--baseline", "tiny-base")
    table = run_cli(capsys, *args)
    assert table.code == 0, table.err
    base = _groups(data)["tiny-base"]["final_val"]
    assert re.search(rf"│ tiny-base\s+│ base\s+│\s+2 │\s+1 │\s+0 │ {base['mean']:.4f} ± {base['std']:.4f}", table.out)
    assert f"failed {FAILED}: exception" in table.out
    assert "Val losses are at 3.84k tokens: the last eval every ok run reached (limited by tiny-base-s1)." in table.out
    assert "rule: Δ = group − baseline val loss at the common token count" in table.out

    out = run_cli(capsys, *args, "--format", "csv")
    assert out.code == 0, out.err
    rows = {r["group"]: r for r in csv.DictReader(io.StringIO(out.out))}
    assert set(rows) == {"tiny-base", "tiny-hc", "tiny-mhc"}
    assert float(rows["tiny-base"]["final_val_mean"]) == base["mean"]
    assert (rows["tiny-base"]["ok"], rows["tiny-base"]["failed"], rows["tiny-base"]["error_classes"]) == (
        "2", "1", "exception=1")
    assert rows["tiny-base"]["vs_baseline_diff"] == ""  # the baseline itself
    assert rows["tiny-hc"]["vs_baseline_test"] == "paired"

    out = run_cli(capsys, *args, "--format", "json")
    assert out.code == 0, out.err
    parsed = json.loads(out.out)
    assert parsed["schema"] == report.REPORT_SCHEMA
    assert [g["label"] for g in parsed["groups"]] == ["tiny-base", "tiny-hc", "tiny-mhc"]
    assert parsed["comparison"]["baseline"] == "tiny-base"


def test_json_from_a_pod_renders_the_same_report_on_a_laptop(sweep_root: Path, data: dict[str, Any],
                                                             tmp_path: Path) -> None:
    """The --host path: collect on the pod, JSON over SSH, render here without the run directories."""
    from sweepctl.cli.render.report import render_markdown
    from sweepctl.views.plots import write_plots

    shipped = json.loads(json.dumps(data))
    assert render_markdown(shipped, report.compare(shipped, "tiny-base"), {}) == render_markdown(
        data, report.compare(data, "tiny-base"), {})
    assert sorted(write_plots(shipped, tmp_path)) == sorted(
        ["gain.png", "tok_per_s.png", "train_loss.png", "val_loss.png"]
        + (["gain_layers.png"] if _per_layer_diag(sweep_root) else []))


def test_cli_errors_are_one_line_with_a_hint(sweep_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    r = run_cli(capsys, "report", "--out-root", str(tmp_path / "missing"))
    assert r.code == 1 and "no such out_root directory" in r.err and "--out-root" in r.err
    r = run_cli(capsys, "report", "--out-root", str(tmp_path))
    assert r.code == 1 and "no run directories found" in r.err
    r = run_cli(capsys, "report", "--out-root", str(sweep_root), "--baseline", "tiny")
    assert r.code == 1 and "no group named 'tiny'" in r.err and "tiny-base" in r.err
    r = run_cli(capsys, "report", "--out-root", str(sweep_root), "--format", "xml")
    assert r.code == 1 and "--format must be one of table, md, csv, json" in r.err
