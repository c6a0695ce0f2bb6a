"""What validate and plan print, drawn from plain dicts (the same dicts `--json` prints).

A sweep of 24 rows is read row by row; one of 10,000 is not: beyond `SHOW_ALL_UP_TO` rows these
views print a summary (runs, groups, seeds, configs, each shard's share) and the first groups, and
`--all` prints every row.
"""

from __future__ import annotations

import shlex
from collections import Counter
from typing import Any

from rich.table import Table

from sweepctl.console import console
from sweepctl.pod.tmux import shard_session

SHOW_ALL_UP_TO = 200  # rows; above this a view summarises unless --all
FIRST_GROUPS = 20  # groups shown in a summary
FIRST_ITEMS = 8  # seeds, configs, run_ids named inline before "... N more"


def first_of(items: list[str], n: int = FIRST_ITEMS) -> str:
    """'a, b, c' or 'a, b, ... 7 more'."""
    shown = ", ".join(items[:n])
    return shown + (f", ... {len(items) - n} more" if len(items) > n else "")


def count_of(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# --- validate ---------------------------------------------------------------------------------------


def validate_model(sweep: Any, *, with_rows: bool = True) -> dict[str, Any]:
    """`validate --json`: the summary, the groups (rows differing only in seed) and every row
    (`with_rows`; a summary does not need them)."""
    groups: dict[tuple[str, tuple[str, ...]], list[Any]] = {}
    for r in sweep.runs:
        groups.setdefault((r.config_ref, r.override_words), []).append(r)
    return {
        "csv": str(sweep.csv_path),
        "sweep": sweep.name,
        "valid": True,
        "runs": len(sweep.runs),
        "warnings": list(sweep.warnings),
        "seeds": sorted({r.seed for r in sweep.runs}),
        "configs": dict(Counter(r.config_ref for r in sweep.runs)),
        "groups": [{"config": ref, "overrides": list(words), "runs": len(rs), "seeds": sorted({r.seed for r in rs}),
                    "layers": rs[0].config.n_layer, "variant": rs[0].config.variant,
                    "max_iters": rs[0].config.max_iters, "run_ids": [r.run_id for r in rs]}
                   for (ref, words), rs in groups.items()],
        "rows": [{"run_id": r.run_id, "line": r.line, "config": r.config_ref, "seed": r.seed,
                  "overrides": list(r.override_words), "notes": r.notes, "gpus": r.gpus}
                 for r in (sweep.runs if with_rows else ())],
    }


def validate_summary(model: dict[str, Any]) -> list[str]:
    configs = [f"{name} x{n}" for name, n in model["configs"].items()]
    return [
        f"{model['csv']}: {count_of(model['runs'], 'run')}, valid",
        f"{count_of(len(model['groups']), 'group')} (rows that differ only in seed), "
        f"{count_of(len(model['seeds']), 'seed')} ({first_of([str(s) for s in model['seeds']])}), "
        f"{count_of(len(configs), 'config')} ({first_of(configs)})",
    ]


def render_validate(model: dict[str, Any], *, show_all: bool, again: str) -> None:
    """The summary, then the groups (the first FIRST_GROUPS of a big sweep) or, with --all, every row.
    `again` is the command that shows every row."""
    for line in validate_summary(model):
        console.print(line, markup=False, highlight=False)
    if show_all:
        table = Table(title="every row", title_justify="left")
        for col in ("line", "run_id", "config", "seed", "overrides", "notes"):
            table.add_column(col, justify="right" if col in ("line", "seed") else "left", overflow="fold")
        for r in model["rows"]:
            table.add_row(str(r["line"]), r["run_id"], r["config"], str(r["seed"]), " ".join(r["overrides"]),
                          r["notes"])
        console.print(table)
        return
    groups = model["groups"]
    shown = groups if model["runs"] <= SHOW_ALL_UP_TO else groups[:FIRST_GROUPS]
    table = Table(title_justify="left")
    for col in ("config", "overrides", "runs", "seeds", "layers", "variant", "max_iters"):
        table.add_column(col, justify="right" if col in ("runs", "layers", "max_iters") else "left", overflow="fold")
    for g in shown:
        table.add_row(g["config"], " ".join(g["overrides"]), str(g["runs"]), first_of([str(s) for s in g["seeds"]], 6),
                      str(g["layers"]), g["variant"], str(g["max_iters"]))
    console.print(table)
    if len(shown) < len(groups):
        console.print(f"... {len(groups) - len(shown)} more groups; every row: {again}", markup=False,
                      highlight=False)


# --- plan -------------------------------------------------------------------------------------------


def shard_label(devices: list[int], *, cpu: bool, index: int) -> str:
    """'GPU 3', 'GPUs 0,1', or 'CPU slot 3' when every row runs on the CPU (no GPU is pinned then)."""
    if cpu:
        return f"CPU slot {index}"
    return ("GPU " if len(devices) == 1 else "GPUs ") + ",".join(map(str, devices))


def expected_shares(costs: list[float], order: list[int], shards: int, assigned: list[int | None]) -> list[float]:
    """Each shard's estimated share of the sweep's work. Static: the cost of the rows it owns.
    Dynamic: the rows, taken in claim order, each go to the shard that frees up first (ties: the
    lower index), which is what runners claiming a shared queue do when the estimates hold."""
    total = sum(costs) or 1.0
    load = [0.0] * shards
    if all(a is not None for a in assigned):
        for cost, shard in zip(costs, assigned, strict=True):
            load[shard] += cost  # type: ignore[index]
    else:
        for i in order:
            free = min(range(shards), key=lambda s: (load[s], s))
            load[free] += costs[i]
    return [x / total for x in load]


def plan_model(plan: Any, *, cpu: bool) -> dict[str, Any]:
    """The plan as the views need it: rows in the order they run, each shard's label and share."""
    from sweepctl.sweep.plan import claim_order, run_cost

    costs = [run_cost(r.config) for r in plan.runs]
    order = list(range(len(plan.runs)))
    if plan.schedule == "dynamic":  # the runners' own order, so the view cannot drift from what runs
        index = {r.run_id: i for i, r in enumerate(plan.runs)}
        order = [index[run_id] for run_id in claim_order(plan)]
    shares = expected_shares(costs, order, plan.shard_count, [r.shard for r in plan.runs])
    total = sum(costs) or 1.0
    return {
        "sweep": plan.sweep,
        "schedule": plan.schedule,
        "cpu": cpu,
        "shards": [{"index": s.index, "session": shard_session(s.index), "devices": s.devices,
                    "label": shard_label(s.devices, cpu=cpu, index=s.index),
                    "runs": len(s.run_ids) if plan.schedule == "static" else None, "share": shares[s.index],
                    "run_ids": s.run_ids} for s in plan.shards],
        "rows": [{"row": plan.runs[i].row_index, "run_id": plan.runs[i].run_id, "shard": plan.runs[i].shard,
                  "share": costs[i] / total, "argv": plan.runs[i].argv} for i in order],
    }


def _pinned(shard: dict[str, Any], cpu: bool) -> str:
    return "" if cpu else "CUDA_VISIBLE_DEVICES=" + ",".join(map(str, shard["devices"])) + " "


def render_plan(model: dict[str, Any], *, show_all: bool, again: str) -> None:
    """Shards (label, runs, share of the work), then every row's command: per shard for the static
    schedule, in claim order for the dynamic one. A big plan shows the shards only, unless --all."""
    static = model["schedule"] == "static"
    rows = model["rows"]
    cpu = model["cpu"]
    head = (f"{count_of(len(rows), 'run')} over {count_of(len(model['shards']), 'shard')} ({model['schedule']}: "
            + ("row i runs on shard i % N" if static else "each shard claims the next row, longest first") + ")")
    console.print(head, markup=False, highlight=False)
    table = Table(title_justify="left")
    for col in ("shard", "session", "runs on", "rows", "est. share of work", "first rows"):
        table.add_column(col, justify="right" if col in ("shard", "rows", "est. share of work") else "left")
    for s in model["shards"]:
        table.add_row(str(s["index"]), s["session"], s["label"], "claims" if s["runs"] is None else str(s["runs"]),
                      f"{s['share']:.1%}", first_of(s["run_ids"], 3) if static else "")
    console.print(table)
    if len(rows) > SHOW_ALL_UP_TO and not show_all:
        console.print(f"every row's command: {again}", markup=False, highlight=False)
        return
    if static:
        by_shard: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            by_shard.setdefault(r["shard"], []).append(r)
        for s in model["shards"]:
            where = s["label"] if cpu else _pinned(s, cpu).strip()
            title = f"shard {s['index']} ({s['session']}) {where}"
            _print_rows(f"{title}: {count_of(s['runs'], 'run')}", by_shard.get(s["index"], []), _pinned(s, cpu),
                        claim=False)
    else:
        _print_rows("claim order: each shard, when free, takes the next row (longest first)", rows, "", claim=True)


def _print_rows(title: str, rows: list[dict[str, Any]], prefix: str, *, claim: bool) -> None:
    table = Table(title=title, title_justify="left")
    if claim:
        table.add_column("claim", justify="right")
    table.add_column("row", justify="right")
    table.add_column("run_id")
    table.add_column("share", justify="right")
    table.add_column("command", overflow="fold")
    for n, r in enumerate(rows, 1):
        cells = [str(r["row"]), r["run_id"], f"{r['share']:.1%}", prefix + shlex.join(r["argv"])]
        table.add_row(*([str(n)] if claim else []), *cells)
    console.print(table)


# --- presets ----------------------------------------------------------------------------------------


def render_presets(presets: dict[str, dict[str, Any]], notes: dict[str, str]) -> None:
    """The built-in presets a CSV's config column may name, one row each."""
    table = Table(title="built-in presets", title_justify="left")
    for col in ("name", "layers", "n_embd", "heads", "batch", "accum", "iters", "streams", "what"):
        table.add_column(col, no_wrap=col == "name")
    for name, values in presets.items():
        base = name.removesuffix("_48l")
        streams = str(values.get("hc_num_streams", 1)) if not values.get("hc_disable", True) else "-"
        table.add_row(name, str(values["n_layer"]), str(values["n_embd"]), str(values["n_head"]),
                      str(values["batch_size"]), str(values["gradient_accumulation_steps"]),
                      str(values["max_iters"]), streams, notes[base])
    console.print(table)
    console.print("All: block 1024, lr 6e-4 cosine to 6e-5 after 200 warmup steps, bf16. "
                  "See every value with `sweepctl plan CSV --shards 1 --json`.")
