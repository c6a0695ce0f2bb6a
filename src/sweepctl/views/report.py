"""Results of a sweep: read run directories, group seeds, mean ± std, compare to a baseline. Pure.

    data = collect(Path("/mnt/pod_artifacts/outputs"), sweep="fineweb", group_by="seed-stripped")
    cmp = compare(data, "fineweb10B-base-6l")

`collect` returns plain JSON (schema `REPORT_SCHEMA`): the pod can run it and a laptop render the
same tables and plots from the JSON, so everything downstream (`compare`, `curve`, the plots and
the markdown) reads only that dict, never the run directories.

Statistics: a group's numbers are over its *ok* runs only (one per seed); failed and unfinished
runs are counted, never averaged in — a crashed seed's last loss is not a result. std is the
sample std (ddof=1), absent for a single run.

Equal tokens: runs are compared at one token count for the whole report, `data["at"]`: the last
eval every ok run reached. A run with no eval at exactly that count is interpolated linearly
between its two evals around it (and named in `at["interpolated"]`), so runs with different
tokens per iteration are never compared at the same iteration number instead.

The verdict (`compare`): seeds fix the shared weights' init and the data order, so a variant and
the baseline are compared paired by seed (a paired t-test over the seeds both have), and with
Welch's unpaired t-test where fewer than two seeds match. `better` / `worse` when the 95%
confidence interval of the difference excludes 0 (equivalently p < 0.05).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sweepctl.errors import SweepctlError
from sweepctl.state import manifest, runs
from sweepctl.train import contract
from sweepctl.train.config import FIELD_NAMES
from sweepctl.views import ttest
from sweepctl.views.eta import attempt_gpu_hours

REPORT_SCHEMA = "sweepctl.views.report/2"
# The composite-gain keys of diag rows written before the per-layer diagnostics of the mHC paper
# (the full-depth gain of the static maps only); still read, as the full-depth gain. Not imported
# from `sweepctl.train.diagnostics`: that module needs torch, and a report must run without it.
GAIN_FWD = "composite_gain_fwd"
GAIN_BWD = "composite_gain_bwd"
# Per-layer gain profiles kept per run (evenly spaced over its evals, the last always among them):
# 48 layers x 4 lists at every eval of a 100-run sweep would make the pod's JSON too big to pull.
MAX_PROFILES = 20
# Below this many seeds a t-test's interval is too wide to separate variants (t_{0.975,1} = 12.7).
MIN_SEEDS = 3
# A seed replicate's run_id ends like `-s1337`, `_seed3` or `-seed-1338`.
SEED_SUFFIX = re.compile(r"[-_.](?:s|seed)[-_]?\d+$")
# Settings that say where or how a run is recorded, not what is trained: seed replicates differ in
# these (out_dir holds the run_id; pods mount data at different paths) and still belong together.
NOT_SCIENCE = frozenset({
    "seed", "out_dir", "data_dir", "resume", "device", "heartbeat_interval_s", "backend",
    "wandb_log", "wandb_project", "wandb_run_name", "wandb_group", "wandb_log_layer_stats",
    "wandb_log_layer_cosine", "wandb_log_amax",
})
# Points kept per training-loss series: a 5000-step run logs ~500 rows per run, and the JSON of a
# 100-run sweep must stay small enough to pull over SSH. Each kept point averages its bucket.
MAX_TRAIN_POINTS = 200
# The rule `compare` applies, stated once so the table, markdown and JSON all quote it.
VERDICT_RULE = ("Δ = group − baseline val loss at the common token count (negative = better); 95% CI and "
                "p from a paired t-test over the seeds both groups ran (same seed: same init and data "
                "order), Welch's t-test where fewer than 2 seeds match; better/worse when the CI excludes 0")


# --------------------------------------------------------------------------- reading one run


def read_metrics(path: Path) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """metrics.jsonl -> rows by kind (train, eval, diag), and how many lines were unreadable.

    The trainer's `event` field decides when present; older files are classified by their keys.
    Any row carrying the composite gain is also a diag row, whether the trainer writes the
    diagnostics on their own line or inside its eval row. A last line cut short (a running
    trainer, a partial copy) is skipped, not fatal."""
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "eval": [], "diag": []}
    bad = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return rows, 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not isinstance(row, dict) or _finite(row.get("iter")) is None:
            continue
        kind = _row_kind(row)
        if kind in ("train", "eval"):
            rows[kind].append(row)
        if kind == "diag" or GAIN_FWD in row:
            rows["diag"].append(row)
    return {kind: _latest_attempt(rs) for kind, rs in rows.items()}, bad


def _latest_attempt(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A resumed run appends again from its checkpoint's iter: where the iter goes back, the rows
    of the earlier attempt from that iter on are superseded (they were never checkpointed)."""
    kept: list[dict[str, Any]] = []
    for row in rows:
        while kept and kept[-1]["iter"] >= row["iter"]:
            kept.pop()
        kept.append(row)
    return kept


def _row_kind(row: dict[str, Any]) -> str | None:
    kind = row.get("event", row.get("kind"))
    if kind is not None:
        return kind if isinstance(kind, str) else None
    if runs.is_eval_row(row):
        return "eval"
    if "loss" in row:
        return "train"
    return None


def _finite(v: Any) -> float | None:
    """A finite float, or None (a NaN loss is a failure signal, not a number to average)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _eval_val(row: dict[str, Any]) -> float | None:
    return _finite(row.get("val", row.get("val_loss")))


def _eval_train(row: dict[str, Any]) -> float | None:
    return _finite(row.get("train", row.get("train_loss")))


def _tokens(row: dict[str, Any], tpi: int | None) -> float | None:
    """Training tokens seen at a metrics row: its own `tokens`, else iter x tokens per iter (runs
    logged before the trainer wrote tokens), else unknown."""
    tokens = _finite(row.get("tokens"))
    if tokens is None and tpi:
        tokens = float(row["iter"] * tpi)
    return tokens


def _bucket_means(rows: list[dict[str, Any]], keys: tuple[str, ...], limit: int,
                  tpi: int | None) -> list[list[float | None]]:
    """[[iter, tokens, mean key_0, mean key_1, ...]] with at most `limit` points; each point is the
    mean of a run of consecutive rows, at the bucket's last row. Runs with equal row counts get
    equal iters, so seeds line up."""
    if not rows:
        return []
    size = math.ceil(len(rows) / limit)
    out = []
    for start in range(0, len(rows), size):
        bucket = rows[start:start + size]
        point: list[float | None] = [bucket[-1]["iter"], _tokens(bucket[-1], tpi)]
        for key in keys:
            vals = [x for x in (_finite(r.get(key)) for r in bucket) if x is not None]
            point.append(sum(vals) / len(vals) if vals else None)
        out.append(point)
    return out


def _floats(v: Any) -> list[float] | None:
    """A non-empty list of finite numbers, else None (a NaN gain is a diverged run, not a profile)."""
    if not isinstance(v, list) or not v:
        return None
    xs = [x for x in map(_finite, v) if x is not None]
    return xs if len(xs) == len(v) else None


def _diag_point(row: dict[str, Any], tpi: int | None) -> list[float | None]:
    """[iter, tokens, full-depth worst-token forward gain, backward gain, max |row sum - 1|,
    max |column sum - 1|]; a diag row from before the per-layer diagnostics gives its one
    composite gain and no errors."""
    fwd, bwd = _floats(row.get("fwd_gain_max")), _floats(row.get("bwd_gain_max"))
    full_fwd = fwd[0] if fwd else _finite(row.get(GAIN_FWD))
    full_bwd = bwd[0] if bwd else _finite(row.get(GAIN_BWD))
    return [row["iter"], _tokens(row, tpi), full_fwd, full_bwd, _finite(row.get("h_res_row_err")),
            _finite(row.get("h_res_col_err"))]


def _profiles(rows: list[dict[str, Any]], tpi: int | None) -> list[dict[str, Any]]:
    """The per-layer gain profiles (index l: the composite map from sub-layer l through the last) of
    at most MAX_PROFILES diag rows, evenly spaced, the last one always kept."""
    full = [r for r in rows if _floats(r.get("fwd_gain_max")) and _floats(r.get("bwd_gain_max"))]
    if len(full) > MAX_PROFILES:
        step = (len(full) - 1) / (MAX_PROFILES - 1)
        full = [full[round(i * step)] for i in range(MAX_PROFILES)]
    return [{"iter": r["iter"], "tokens": _tokens(r, tpi),
             **{k: _floats(r.get(k)) for k in ("fwd_gain_mean", "fwd_gain_max", "bwd_gain_mean", "bwd_gain_max")}}
            for r in full]


def science_config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The trainer settings that define what is trained (derived values and bookkeeping dropped)."""
    if not config:
        return None
    if isinstance(config.get("config"), dict):  # tolerate {"config": {...}, "derived": {...}}
        config = config["config"]
    return {k: config[k] for k in FIELD_NAMES if k in config and k not in NOT_SCIENCE}


def variant_of(config: dict[str, Any] | None) -> str | None:
    """plain / hc / mhc (+ value residual), as TrainConfig.variant names it, from a config dict."""
    if not config:
        return None
    parts = []
    if config.get("v_residual"):
        parts.append("cvres" if config.get("v_residual_constrained") else "vres")
    if config.get("mhc"):
        parts.append("mhc")
    elif config.get("hc_disable") is False:
        parts.append("hc")
    return "_".join(parts) or "base"


def _tokens_per_iter(summary: dict[str, Any], config: dict[str, Any] | None) -> int | None:
    tpi = summary.get("tokens_per_iter") or (config or {}).get("tokens_per_iter")
    if tpi:
        return int(tpi)
    c = config or {}
    if all(isinstance(c.get(k), int) for k in ("gradient_accumulation_steps", "batch_size", "block_size")):
        return c["gradient_accumulation_steps"] * c["batch_size"] * c["block_size"]
    return None


def run_record(directory: Path, *, planned_config: dict[str, Any] | None = None, stale_after_s: float = 120.0,
             now: float | None = None) -> dict[str, Any]:
    """One run directory (possibly absent: a planned run not started) as a JSON-able record."""
    view = runs.read_run(directory, stale_after_s=stale_after_s, now=now)
    summary = view.summary or {}
    config = runs.read_json(directory / contract.CONFIG_EFFECTIVE) or planned_config
    metrics, bad_lines = read_metrics(directory / runs.METRICS)
    evals = metrics["eval"]
    final_val = _finite((summary.get("last_eval") or {}).get("val"))
    if final_val is None and evals:
        final_val = _eval_val(evals[-1])
    best_val = _finite(summary.get("best_val_loss"))
    if best_val is None:
        vals = [v for v in map(_eval_val, evals) if v is not None]
        best_val = min(vals) if vals else None
    tpi = _tokens_per_iter(summary, config)
    tokens_seen = _finite(summary.get("tokens_seen"))
    if tokens_seen is None and tpi and _finite(summary.get("iter_num")) is not None:
        tokens_seen = float(summary["iter_num"]) * tpi
    error = summary.get("error")
    return {
        "run_id": view.run_id,
        "state": view.state,
        "seed": (config or {}).get("seed"),
        "variant": variant_of(science_config(config)),
        "config": science_config(config),
        "sweep": ((runs.read_json(directory / runs.METADATA) or {}).get("sweep") or {}).get("name"),
        "error_class": view.error_class,
        "error": str(error).strip().splitlines()[-1][:300] if error else None,
        "final_val": final_val,
        "best_val": best_val,
        "tokens_seen": tokens_seen,
        "tokens_per_iter": tpi,
        "tok_per_s": _finite(summary.get("tok_per_s")),
        "elapsed_s": _finite(summary.get("elapsed_s", summary.get("elapsed"))),
        # its last attempt's wall time x GPUs, shared by the runs packed beside it (sweepctl.views.eta)
        "gpu_hours": attempt_gpu_hours(view.summary, view.owner, gpus=int(summary.get("world_size") or 1)),
        "iter_num": summary.get("iter_num"),
        "max_iters": summary.get("max_iters") or (config or {}).get("max_iters"),
        "bad_metric_lines": bad_lines,
        # every series row starts [iter, tokens, ...]; tokens is None when it cannot be known
        "series": {
            "eval": [[r["iter"], _tokens(r, tpi), _eval_train(r), _eval_val(r)] for r in evals],
            "train": _bucket_means(metrics["train"], ("loss", "tok_per_s"), MAX_TRAIN_POINTS, tpi),
            "gain": [_diag_point(r, tpi) for r in metrics["diag"]],
        },
        "gain_profiles": _profiles(metrics["diag"], tpi),
    }


# --------------------------------------------------------------------------- which runs


def _select_runs(out_root: Path, sweep: str | None) -> list[tuple[Path, dict[str, Any] | None]]:
    """(run directory, planned config) for every run in scope: directories on disk plus planned
    rows that have not started (pending). `sweep` narrows to a sweep's plan, or, for pulled run
    directories without the manifest, to runs whose run_metadata names that sweep."""
    plans = manifest.plans(out_root)
    planned: dict[str, dict[str, Any] | None] = {}
    for name, plan in plans.items():
        if sweep is None or name == sweep:
            for r in plan.runs:
                planned.setdefault(r.run_id, r.config.model_dump(mode="json"))  # as config_effective.json spells it
    dirs = {d.name: d for d in runs.list_run_dirs(out_root)}
    if sweep is not None:
        in_sweep = set(planned)
        for rid, d in dirs.items():
            meta = runs.read_json(d / runs.METADATA) or {}
            if (meta.get("sweep") or {}).get("name") == sweep:
                in_sweep.add(rid)
        if not in_sweep:
            known = sorted(set(plans) | _sweep_names(dirs.values()))
            raise SweepctlError(f"no sweep named {sweep!r}", where=str(out_root),
                                hint=f"known sweeps: {', '.join(known)}" if known else
                                "no sweep manifests or run metadata found; drop --sweep to report every run")
        dirs = {rid: d for rid, d in dirs.items() if rid in in_sweep}
    chosen = [(dirs.get(rid, runs.run_dir(out_root, rid)), cfg) for rid, cfg in planned.items()]
    chosen += [(d, None) for rid, d in dirs.items() if rid not in planned]
    return sorted(chosen, key=lambda item: item[0].name)


def _sweep_names(dirs: Any) -> set[str]:
    names = set()
    for d in dirs:
        name = ((runs.read_json(d / runs.METADATA) or {}).get("sweep") or {}).get("name")
        if name:
            names.add(name)
    return names


# --------------------------------------------------------------------------- grouping


def strip_seed(run_id: str) -> str:
    return SEED_SUFFIX.sub("", run_id)


def _group_labels(records: list[dict[str, Any]], group_by: str) -> tuple[list[str], list[str]]:
    """A group label per record, and warnings. group_by: seed-stripped, config, or a regex whose
    first capture group (or whole match) names the group."""
    warnings: list[str] = []
    if group_by == "seed-stripped":
        return [strip_seed(r["run_id"]) for r in records], warnings
    if group_by == "config":
        # the first run_id (sorted) of each distinct config names the group
        by_config: dict[str, str] = {}
        label_of: dict[str, str] = {}
        for r in sorted(records, key=lambda r: r["run_id"]):
            if r["config"] is None:
                warnings.append(f"{r['run_id']}: no config_effective.json; grouped by its run_id")
                label_of[r["run_id"]] = strip_seed(r["run_id"])
                continue
            key = json.dumps(r["config"], sort_keys=True, default=str)
            label_of[r["run_id"]] = by_config.setdefault(key, strip_seed(r["run_id"]))
        return [label_of[r["run_id"]] for r in records], warnings
    try:
        pattern = re.compile(group_by)
    except re.error as e:
        raise SweepctlError(f"--group-by {group_by!r} is not seed-stripped, config or a valid regex: {e}",
                            hint="e.g. --group-by '^(.*)-s\\d+$'") from None
    labels = []
    for r in records:
        m = pattern.search(r["run_id"])
        if m is None:
            warnings.append(f"{r['run_id']}: does not match --group-by {group_by!r}; a group of its own")
            labels.append(r["run_id"])
        else:
            labels.append(m.group(1) if pattern.groups else m.group(0))
    return labels, warnings


def stats(values: list[float | None]) -> dict[str, Any]:
    """n, mean, sample std (None below 2), min, max of the values that are numbers."""
    xs = [v for v in values if v is not None]
    if not xs:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return {"n": len(xs), "mean": mean, "std": std, "min": min(xs), "max": max(xs)}


def _config_differences(members: list[dict[str, Any]]) -> list[str]:
    configs = [m["config"] for m in members if m["config"] is not None]
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]


def _group(label: str, members: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [m for m in members if m["state"] == "ok"]
    failed = [m for m in members if m["state"] == "failed"]
    variants = {m["variant"] for m in members if m["variant"]}
    return {
        "label": label,
        "run_ids": [m["run_id"] for m in members],
        "seeds": sorted({m["seed"] for m in members if m["seed"] is not None}),
        "variant": variants.pop() if len(variants) == 1 else ("mixed" if variants else None),
        "ok": len(ok),
        "failed": len(failed),
        "pending": len(members) - len(ok) - len(failed),  # not finished: pending, running or stale
        "states": dict(Counter(m["state"] for m in members)),
        # at the report's common token count (data["at"]), not at each run's own end
        "final_val": stats([m["at"]["val"] for m in ok]),
        "best_val": stats([m["at"]["best"] for m in ok]),
        "tokens_seen": stats([m["tokens_seen"] for m in ok]),
        "tok_per_s": stats([m["tok_per_s"] for m in ok]),
        "elapsed_s": stats([m["elapsed_s"] for m in ok]),
        "gpu_hours": sum(m.get("gpu_hours") or 0.0 for m in members),  # every run's, failed ones too
        "error_classes": dict(Counter(m["error_class"] or "unknown" for m in failed)),
        "has_gain": any(m["series"]["gain"] for m in members),
        "diag": _group_diag(ok),
        "config": next((m["config"] for m in members if m["config"] is not None), None),
    }


def _group_diag(ok: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The mHC paper's diagnostics over a group's ok runs: the full-depth worst-token gains at the
    last eval at or before the common token count (mean ± std over seeds), and the worst
    |row sum - 1| and |column sum - 1| of any applied H_res over each run until then."""
    with_diag = [m for m in ok if m["at"]["gain"] is not None]
    if not with_diag:
        return None
    errs = [[m["at"][key] for m in with_diag if m["at"][key] is not None] for key in ("row_err", "col_err")]
    return {
        "fwd_gain": stats([m["at"]["gain"][2] for m in with_diag]),
        "bwd_gain": stats([m["at"]["gain"][3] for m in with_diag]),
        "row_err": max(errs[0]) if errs[0] else None,
        "col_err": max(errs[1]) if errs[1] else None,
        "iters": sorted({m["at"]["gain"][0] for m in with_diag}),
    }


# --------------------------------------------------------------------------- equal tokens


def _use_tokens(rows: list[list[Any]]) -> bool:
    return bool(rows) and all(row[1] is not None for row in rows)


def common_point(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Where runs are compared: the last eval every ok run reached, in tokens (in iterations only
    when some ok run's tokens per iteration cannot be known). None without an ok run's eval."""
    ok = [r for r in records if r["state"] == "ok" and any(row[3] is not None for row in r["series"]["eval"])]
    if not ok:
        return None
    col = 1 if all(_use_tokens(r["series"]["eval"]) for r in ok) else 0
    ends = sorted((max(row[col] for row in r["series"]["eval"] if row[3] is not None), r["run_id"]) for r in ok)
    return {"x": ends[0][0], "unit": "tokens" if col else "iter", "limited_by": ends[0][1], "interpolated": []}


def value_at(points: list[tuple[float, float]], x: float) -> tuple[float | None, bool]:
    """(the value at x, whether it was interpolated) from (x, value) points sorted by x: the point
    at exactly x, else a straight line between the points around it; None outside their range."""
    for px, v in reversed(points):
        if px == x:
            return v, False
    before = [(px, v) for px, v in points if px < x]
    after = [(px, v) for px, v in points if px > x]
    if not before or not after:
        return None, False
    (x0, v0), (x1, v1) = before[-1], after[0]
    return v0 + (v1 - v0) * (x - x0) / (x1 - x0), True


def _at(rec: dict[str, Any], at: dict[str, Any] | None) -> dict[str, Any]:
    """One run's numbers at the common point: val and best val loss, and its last diagnostics."""
    empty = {"val": None, "best": None, "interpolated": False, "gain": None, "row_err": None, "col_err": None,
             "profile": None}
    if at is None:
        return empty
    col = 1 if at["unit"] == "tokens" else 0
    evals = [(row[col], row[3]) for row in rec["series"]["eval"] if row[col] is not None and row[3] is not None]
    val, interpolated = value_at(evals, at["x"])
    before = [v for x, v in evals if x <= at["x"]]
    best = min([*before, val]) if val is not None else None
    gains = [g for g in rec["series"]["gain"] if g[col] is not None and g[col] <= at["x"]]
    errs = [[g[k] for g in gains if g[k] is not None] for k in (4, 5)]
    key = "tokens" if col else "iter"
    profiles = [p for p in rec.get("gain_profiles", []) if p[key] is not None and p[key] <= at["x"]]
    return {"val": val, "best": best, "interpolated": interpolated, "gain": gains[-1] if gains else None,
            "row_err": max(errs[0]) if errs[0] else None, "col_err": max(errs[1]) if errs[1] else None,
            "profile": profiles[-1] if profiles else None}


def collect(out_root: str | Path, sweep: str | None = None, group_by: str = "seed-stripped", *,
            stale_after_s: float = 120.0, now: float | None = None) -> dict[str, Any]:
    """Every run in scope, grouped, as one JSON-able dict (see the module docstring)."""
    root = Path(out_root)
    if not root.is_dir():
        raise SweepctlError("no such out_root directory", where=str(root),
                            hint="pass --out-root DIR (where the run directories are), or pull them first")
    now = time.time() if now is None else now
    records = [run_record(d, planned_config=cfg, stale_after_s=stale_after_s, now=now)
               for d, cfg in _select_runs(root, sweep)]
    return assemble(records, out_root=str(root), sweep=sweep, group_by=group_by, now=now)


def assemble(records: list[dict[str, Any]], *, out_root: str, sweep: str | None, group_by: str,
             now: float) -> dict[str, Any]:
    """Group run records (from `run_record`, possibly from several pods' JSON) into the report dict.

    Cancelled runs are left out: the researcher withdrew them, so they are no seed of any group."""
    cancelled = [r["run_id"] for r in records if r["state"] == "cancelled"]
    records = [r for r in records if r["state"] != "cancelled"]
    labels, warnings = _group_labels(records, group_by)
    at = common_point(records)
    if cancelled:
        warnings.append(f"{len(cancelled)} cancelled run(s) left out: {', '.join(cancelled)}")
    members: dict[str, list[dict[str, Any]]] = {}
    for label, rec in zip(labels, records, strict=True):
        rec["group"] = label
        rec["at"] = _at(rec, at)
        if at is not None and rec["state"] == "ok" and rec["at"]["interpolated"]:
            at["interpolated"].append(rec["run_id"])
        members.setdefault(label, []).append(rec)
    groups = [_group(label, ms) for label, ms in sorted(members.items())]
    for g in groups:
        diff = _config_differences(members[g["label"]])
        if diff:
            warnings.append(f"group {g['label']!r} mixes configs that differ in: {', '.join(diff)}")
    _mark_distinguishing(groups)
    for rec in records:
        if rec["bad_metric_lines"]:
            warnings.append(f"{rec['run_id']}: {rec['bad_metric_lines']} unreadable line(s) in metrics.jsonl")
    return {"schema": REPORT_SCHEMA, "out_root": out_root, "sweep": sweep, "group_by": group_by,
            "generated": now, "at": at, "groups": groups, "runs": records, "warnings": warnings}


def _mark_distinguishing(groups: list[dict[str, Any]]) -> None:
    """Give each group `differs`: its values of the settings that vary between groups, so a label
    like `fineweb-mhc-6l` is backed by what actually changed (mhc=True, hc_num_streams=4)."""
    configs = [g["config"] for g in groups if g["config"] is not None]
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
    for g in groups:
        g["differs"] = {k: g["config"].get(k) for k in varying} if g["config"] else {}


# --------------------------------------------------------------------------- comparison


def group_by_label(data: dict[str, Any], label: str) -> dict[str, Any]:
    for g in data["groups"]:
        if g["label"] == label:
            return g
    known = ", ".join(g["label"] for g in data["groups"])
    raise SweepctlError(f"no group named {label!r}", hint=f"--baseline takes one of: {known}")


def _seed_values(data: dict[str, Any], label: str) -> dict[Any, float]:
    """{seed: val loss at the common point} over a group's ok runs (a run without a seed keys by run_id)."""
    return {(r["seed"] if r["seed"] is not None else r["run_id"]): r["at"]["val"] for r in data["runs"]
            if r["group"] == label and r["state"] == "ok" and r["at"]["val"] is not None}


def verdict(group: dict[Any, float], base: dict[Any, float]) -> dict[str, Any]:
    """Group vs baseline from {seed: val loss}: paired by seed over the seeds both have (2 or more),
    else Welch's unpaired test (2 or more on each side), else only the difference of means."""
    shared = sorted(set(group) & set(base), key=str)
    result: dict[str, Any]
    if len(shared) >= 2:
        result = ttest.paired([group[s] - base[s] for s in shared])
        result["seeds"] = shared
    elif len(group) >= 2 and len(base) >= 2:
        result = ttest.welch(list(group.values()), list(base.values()))
        result["seeds"] = []
    else:
        diff = (sum(group.values()) / len(group) - sum(base.values()) / len(base)) if group and base else None
        result = {"test": None, "n": min(len(group), len(base)), "diff": diff, "ci_low": None, "ci_high": None,
                  "p": None, "df": None, "se": None, "seeds": []}
    result["n_group"], result["n_baseline"] = len(group), len(base)
    if result["ci_high"] is not None and result["ci_high"] < 0:
        result["verdict"] = "better"
    elif result["ci_low"] is not None and result["ci_low"] > 0:
        result["verdict"] = "worse"
    elif result["diff"] is None:
        result["verdict"] = "no result"
    else:
        result["verdict"] = f"no clear difference (n={result['n']} seed{'s' if result['n'] != 1 else ''})"
    return result


def compare(data: dict[str, Any], baseline: str) -> dict[str, Any]:
    """Every other group against `baseline` on val loss at the common token count (lower is
    better), ranked by the difference, best first; groups too small for a t-test after those,
    groups without an ok run last."""
    base = group_by_label(data, baseline)
    base_values = _seed_values(data, baseline)
    if not base_values:
        raise SweepctlError(f"baseline group {baseline!r} has no ok run to compare against",
                            hint="wait for it to finish, or pick another --baseline")
    rows, warnings = [], []
    for g in data["groups"]:
        if g["label"] == baseline:
            continue
        row = {"label": g["label"], **verdict(_seed_values(data, g["label"]), base_values)}
        rows.append(row)
        if row["diff"] is not None and row["n"] < MIN_SEEDS:
            what = (f"only {row['n']} seeds: the 95% CI spans ±{ttest.quantile(0.975, row['df']):.1f} standard errors"
                    if row["test"] else f"{row['n']} seed on one side: no t-test is possible")
            warnings.append(f"{g['label']} vs {baseline}: {what}; give both groups {MIN_SEEDS} or more seeds "
                            "(rows with other seeds in the sweep CSV) for a verdict")
    # tested groups first: a one-seed difference at the top would read as the winner
    rows.sort(key=lambda r: (r["diff"] is None, r["test"] is None, r["diff"] or 0.0, r["label"]))
    return {"baseline": baseline, "baseline_n": base["final_val"]["n"], "metric": "val loss", "at": data["at"],
            "rule": VERDICT_RULE, "rows": rows, "warnings": warnings}


# --------------------------------------------------------------------------- curves for plots


def _x_column(runs_: list[dict[str, Any]], series: str, tokens: bool) -> int:
    return 1 if tokens and all(_use_tokens(r["series"][series]) for r in runs_ if r["series"][series]) else 0


def curve(data: dict[str, Any], label: str, series: str, column: int, *, tokens: bool = True,
          skip_first: bool = False) -> dict[str, Any]:
    """One group's curve: at each x, mean / sample std / min / max over its runs of `series`
    column `column` (series rows are [iter, tokens, ...]). Uses the ok runs; a group with none
    (still running) uses every run with data, flagged `partial`. x is tokens seen when asked and
    every run knows them, else the iteration (`x_is_tokens` says which). skip_first drops
    iteration 0, whose loss (ln vocab) would stretch a loss axis far beyond the differences."""
    members = [r for r in data["runs"] if r["group"] == label]
    ok = [r for r in members if r["state"] == "ok" and r["series"][series]]
    used = ok or [r for r in members if r["series"][series]]
    col = _x_column(used, series, tokens)
    by_x: dict[float, list[float]] = {}
    for r in used:
        for row in r["series"][series]:
            if row[column] is not None and not (skip_first and row[0] == 0):
                by_x.setdefault(row[col], []).append(row[column])
    xs = sorted(by_x)
    return {
        "label": label,
        "x": xs,
        "x_is_tokens": col == 1,
        "mean": [stats(by_x[x])["mean"] for x in xs],
        "std": [stats(by_x[x])["std"] or 0.0 for x in xs],
        "min": [min(by_x[x]) for x in xs],
        "max": [max(by_x[x]) for x in xs],
        "runs": len(used),
        "partial": not ok and bool(used),
    }


def difference_curve(data: dict[str, Any], label: str, baseline: str, *, tokens: bool = True,
                     skip_first: bool = True) -> dict[str, Any]:
    """Val loss of `label` minus `baseline` against x (tokens), mean and sample std over seeds:
    paired by seed where both groups' ok runs share seeds (each run's difference at its own evals,
    the baseline interpolated between its evals), else the difference of the two mean curves."""
    ok = {lab: {(r["seed"] if r["seed"] is not None else r["run_id"]): r for r in data["runs"]
                if r["group"] == lab and r["state"] == "ok" and r["series"]["eval"]} for lab in (label, baseline)}
    col = _x_column([*ok[label].values(), *ok[baseline].values()], "eval", tokens)

    def points(r: dict[str, Any]) -> list[tuple[float, float]]:
        return [(row[col], row[3]) for row in r["series"]["eval"]
                if row[col] is not None and row[3] is not None and not (skip_first and row[0] == 0)]

    shared = sorted(set(ok[label]) & set(ok[baseline]), key=str)
    by_x: dict[float, list[float]] = {}
    if shared:
        for seed in shared:
            base_points = points(ok[baseline][seed])
            for x, v in points(ok[label][seed]):
                b, _ = value_at(base_points, x)
                if b is not None:
                    by_x.setdefault(x, []).append(v - b)
    else:
        mine = curve(data, label, "eval", 3, tokens=col == 1, skip_first=skip_first)
        theirs = curve(data, baseline, "eval", 3, tokens=col == 1, skip_first=skip_first)
        base_points = list(zip(theirs["x"], theirs["mean"], strict=True))
        for x, v in zip(mine["x"], mine["mean"], strict=True):
            b, _ = value_at(base_points, x)
            if b is not None:
                by_x[x] = [v - b]
    xs = sorted(by_x)
    return {"label": label, "x": xs, "x_is_tokens": col == 1, "paired": bool(shared), "seeds": len(shared),
            "mean": [stats(by_x[x])["mean"] for x in xs], "std": [stats(by_x[x])["std"] or 0.0 for x in xs]}


__all__ = ["REPORT_SCHEMA", "VERDICT_RULE", "collect", "common_point", "compare", "curve", "difference_curve",
           "read_metrics", "run_record", "stats", "strip_seed", "value_at", "verdict"]
