"""The sweeps in `sweeps/` are real: each validates with no warning and plans on 8 GPUs, both
schedules, and the full FineWeb10B sweep holds the comparison a researcher runs first."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cli import run_cli

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
FULL = SWEEPS / "fineweb10B_full_sweep.csv"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("SWEEPCTL_OUT_ROOT", "SWEEPCTL_DATA_DIR", "FINEWEB10B_LOCAL_DIR", "SWEEPCTL_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SWEEPCTL_VOLUME", str(tmp_path / "no-volume"))


def test_the_sweeps_folder_holds_the_sweeps() -> None:
    assert sorted(p.name for p in SWEEPS.glob("*.csv")) == ["fineweb10B_full_sweep.csv", "fineweb_sweep.csv"]


@pytest.mark.parametrize("sweep", sorted(SWEEPS.glob("*.csv")), ids=lambda p: p.name)
def test_each_sweep_validates_without_warnings_and_plans(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(capsys, "validate", str(sweep))
    assert r.code == 0, r.err
    assert r.err == ""  # no identical-config warning: every row differs from the others
    rows = list(csv.DictReader(sweep.open()))
    assert r.out.splitlines()[0] == f"{sweep}: {len(rows)} runs, valid"
    for schedule in ("static", "dynamic"):
        plan = run_cli(capsys, "plan", str(sweep), "--shards", "8", "--schedule", schedule, "--json",
                       "--out-root", "/mnt/pod_artifacts/outputs", "--data-dir", "/mnt/data/fineweb10B")
        assert plan.code == 0, plan.err
        runs = json.loads(plan.out)["runs"]
        assert [p["run_id"] for p in runs] == [row["run_id"] for row in rows]
        assert all(p["config"]["data_dir"] == "/mnt/data/fineweb10B" for p in runs)


def test_the_full_sweep_is_every_variant_at_both_depths_with_three_seeds_plus_orthostochastic(
        capsys: pytest.CaptureFixture[str]) -> None:
    model = json.loads(run_cli(capsys, "validate", str(FULL), "--json").out)
    seeds = {1337, 1338, 1339}
    groups = {(g["config"], " ".join(g["overrides"])): g for g in model["groups"]}
    ortho = "mhc_h_res_proj=orthostochastic ns_coeffs=NS_COEFFS ns_steps=len(NS_COEFFS)"  # as the shell reads it
    expected = [(f"{v}{d}", "") for d in ("", "_48l") for v in ("base", "hc", "mhc", "vres", "vres_mhc", "cvres_mhc")]
    expected += [("mhc", ortho), ("mhc_48l", ortho)]
    assert sorted(groups) == sorted(expected)
    assert all(set(g["seeds"]) == seeds and g["runs"] == 3 for g in groups.values())
    assert {g["layers"] for g in groups.values()} == {6, 48}
    plan = json.loads(run_cli(capsys, "plan", str(FULL), "--shards", "8", "--json").out)
    assert {r["config"]["mhc_h_res_proj"] for r in plan["runs"] if "-ortho-" in r["run_id"]} == {"orthostochastic"}
    assert sum("-ortho-" in r["run_id"] for r in plan["runs"]) == 6
