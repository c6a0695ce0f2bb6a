"""Results of a sweep: read run directories, group seeds, mean ± std, compare to a baseline. Pure.

    data = collect(Path("/mnt/pod_artifacts/outputs"), sweep="fineweb", group_by="seed-stripped")
    cmp = compare(data, "fineweb10B-base-6l")

`collect` returns plain JSON (schema `REPORT_SCHEMA`): the pod can run it and a laptop render the
same tables and plots from the JSON, so everything downstream (`compare`, `curve`, the plots and
the markdown) reads only that dict, never the run directories.

Statistics: a group's numbers are over its *ok* runs only (one per seed); failed and unfinished
runs are counted, never averaged in — a crashed seed's last loss is not a result. std is the
sample std (ddof=1), absent for a single run.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sweepctl import manifest, runs
from sweepctl.errors import SweepctlError
from sweepctl.train import contract
from sweepctl.train.config import FIELD_NAMES

REPORT_SCHEMA = "sweepctl.report/1"
# The composite-gain keys `sweepctl.train.diagnostics` writes (a test checks they match). Not
# imported from there: that module needs torch, and a report must run on a laptop without it.
GAIN_FWD = "composite_gain_fwd"
GAIN_BWD = "composite_gain_bwd"
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
NOISE_RULE = ("beyond seed noise when |Δ| > 2·SE, SE = sqrt(s_a²/n_a + s_b²/n_b) (Welch standard error of the "
              "difference of means, sample stds over ok seeds); needs ≥2 ok seeds in both groups")


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
        if GAIN_FWD in row:
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


def _bucket_means(rows: list[dict[str, Any]], keys: tuple[str, ...], limit: int) -> list[list[float | None]]:
    """[[iter, mean key_0, mean key_1, ...]] with at most `limit` points; each point is the mean of a
    run of consecutive rows, at the bucket's last iter. Runs with equal row counts get equal iters,
    so seeds line up."""
    if not rows:
        return []
    size = math.ceil(len(rows) / limit)
    out = []
    for start in range(0, len(rows), size):
        bucket = rows[start:start + size]
        point: list[float | None] = [bucket[-1]["iter"]]
        for key in keys:
            vals = [x for x in (_finite(r.get(key)) for r in bucket) if x is not None]
            point.append(sum(vals) / len(vals) if vals else None)
        out.append(point)
    return out


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
        "iter_num": summary.get("iter_num"),
        "max_iters": summary.get("max_iters") or (config or {}).get("max_iters"),
        "bad_metric_lines": bad_lines,
        "series": {
            "eval": [[r["iter"], _eval_train(r), _eval_val(r)] for r in evals],
            "train": _bucket_means(metrics["train"], ("loss", "tok_per_s"), MAX_TRAIN_POINTS),
            "gain": [[r["iter"], _finite(r.get(GAIN_FWD)), _finite(r.get(GAIN_BWD))] for r in metrics["diag"]],
        },
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
                planned.setdefault(r.run_id, r.config)
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
        "final_val": stats([m["final_val"] for m in ok]),
        "best_val": stats([m["best_val"] for m in ok]),
        "tokens_seen": stats([m["tokens_seen"] for m in ok]),
        "tok_per_s": stats([m["tok_per_s"] for m in ok]),
        "elapsed_s": stats([m["elapsed_s"] for m in ok]),
        "error_classes": dict(Counter(m["error_class"] or "unknown" for m in failed)),
        "has_gain": any(m["series"]["gain"] for m in members),
        "config": next((m["config"] for m in members if m["config"] is not None), None),
    }


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
    """Group run records (from `run_record`, possibly from several pods' JSON) into the report dict."""
    labels, warnings = _group_labels(records, group_by)
    members: dict[str, list[dict[str, Any]]] = {}
    for label, rec in zip(labels, records, strict=True):
        rec["group"] = label
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
            "generated": now, "groups": groups, "runs": records, "warnings": warnings}


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


def _delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """a - b for two `stats` dicts: the difference of means, its Welch standard error, the verdict."""
    if not a["n"] or not b["n"]:
        return {"delta": None, "se": None, "beyond_noise": None, "ranges_overlap": None}
    delta = a["mean"] - b["mean"]
    se = None
    if a["n"] >= 2 and b["n"] >= 2:
        se = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
    return {
        "delta": delta,
        "se": se,
        "beyond_noise": None if se is None else abs(delta) > 2 * se,
        "ranges_overlap": a["min"] <= b["max"] and b["min"] <= a["max"],
    }


def compare(data: dict[str, Any], baseline: str) -> dict[str, Any]:
    """Every other group against `baseline` on final and best val loss (lower is better), ranked by
    final val-loss delta, best first; groups without an ok run come last."""
    base = group_by_label(data, baseline)
    if not base["final_val"]["n"]:
        raise SweepctlError(f"baseline group {baseline!r} has no ok run to compare against",
                            hint="wait for it to finish, or pick another --baseline")
    rows = []
    for g in data["groups"]:
        if g["label"] == baseline:
            continue
        rows.append({"label": g["label"], "n": g["final_val"]["n"], "final": _delta(g["final_val"], base["final_val"]),
                     "best": _delta(g["best_val"], base["best_val"])})
    rows.sort(key=lambda r: (r["final"]["delta"] is None, r["final"]["delta"] or 0.0, r["label"]))
    return {"baseline": baseline, "baseline_n": base["final_val"]["n"], "metric": "val loss", "rule": NOISE_RULE,
            "rows": rows}


# --------------------------------------------------------------------------- curves for plots


def curve(data: dict[str, Any], label: str, series: str, column: int, *, tokens: bool = True) -> dict[str, Any]:
    """One group's curve: at each iter, mean / min / max over its runs of `series` column `column`
    (series rows are [iter, ...]). Uses the ok runs; a group with none (still running) uses every
    run with data, flagged `partial`. x is tokens seen when asked and every run knows its tokens
    per iter, else the iteration (`x_is_tokens` says which)."""
    members = [r for r in data["runs"] if r["group"] == label]
    ok = [r for r in members if r["state"] == "ok" and r["series"][series]]
    used = ok or [r for r in members if r["series"][series]]
    by_iter: dict[float, list[float]] = {}
    for r in used:
        for row in r["series"][series]:
            if row[column] is not None:
                by_iter.setdefault(row[0], []).append(row[column])
    tpis = {r["tokens_per_iter"] for r in used}
    tpi = tpis.pop() if tokens and len(tpis) == 1 and None not in tpis else None
    iters = sorted(by_iter)
    return {
        "label": label,
        "x": [i * tpi for i in iters] if tpi else iters,
        "x_is_tokens": tpi is not None,
        "mean": [sum(by_iter[i]) / len(by_iter[i]) for i in iters],
        "min": [min(by_iter[i]) for i in iters],
        "max": [max(by_iter[i]) for i in iters],
        "runs": len(used),
        "partial": not ok and bool(used),
    }


__all__ = ["NOISE_RULE", "REPORT_SCHEMA", "collect", "compare", "curve", "read_metrics", "run_record", "stats",
           "strip_seed"]
