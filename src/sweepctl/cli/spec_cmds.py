"""validate, plan, presets, config: look at a sweep before anything runs."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from sweepctl.console import console, err_console
from sweepctl.tmux import shard_session

CSV_ARG = typer.Argument(..., metavar="CSV", help="Sweep CSV: run_id,config,seed,overrides,notes[,gpus].", show_default=False)


def validate(csv_path: Path = CSV_ARG) -> None:
    """Check every row of a sweep CSV; report every problem as CSVFILE:LINE: message."""
    from sweepctl.spec import read_sweep

    sweep = read_sweep(csv_path)
    for w in sweep.warnings:
        err_console.print(w, style="yellow", markup=False, highlight=False, soft_wrap=True)
    table = Table(title=f"{csv_path}: {len(sweep.runs)} runs, valid", title_justify="left")
    for col in ("config", "overrides", "runs", "seeds", "layers", "variant", "max_iters"):
        table.add_column(col, justify="right" if col in ("runs", "layers", "max_iters") else "left",
                         overflow="fold")
    groups: dict[tuple[str, tuple[str, ...]], list] = {}
    for r in sweep.runs:
        groups.setdefault((r.config_ref, r.override_words), []).append(r)
    for (ref, overrides), runs in groups.items():
        seeds = sorted({r.seed for r in runs})
        shown = ", ".join(map(str, seeds[:6])) + (" ..." if len(seeds) > 6 else "")
        c = runs[0].config
        table.add_row(ref, " ".join(overrides), str(len(runs)), shown, str(c.n_layer), c.variant, str(c.max_iters))
    console.print(table)


def plan(
    csv_path: Path = CSV_ARG,
    shards: int = typer.Option(..., "--shards", help="Number of shards (usually one per GPU)."),
    schedule: str = typer.Option("static", "--schedule", help="static (row i -> shard i % N) or dynamic."),
    gpus_per_shard: int = typer.Option(1, "--gpus-per-shard", help="GPUs per shard (K): shard i gets i*K..i*K+K-1."),
    out_root: str | None = typer.Option(None, "--out-root", help="Where run directories go."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="FineWeb token shards."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Show which shard runs which row, on which GPUs, with which trainer command."""
    from sweepctl.errors import SweepctlError
    from sweepctl.plan import cuda_visible_devices, make_plan
    from sweepctl.settings import load_settings
    from sweepctl.spec import read_sweep

    if schedule not in ("static", "dynamic"):
        raise SweepctlError(f"--schedule must be static or dynamic, got {schedule!r}")
    settings = load_settings(out_root=out_root, data_dir=data_dir)
    sweep = read_sweep(csv_path)
    p = make_plan(sweep, shards=shards, schedule=schedule, gpus_per_shard=gpus_per_shard,  # type: ignore[arg-type]
                  out_root=settings.out_root, data_dir=settings.data_dir)
    if as_json:
        typer.echo(json.dumps(p.model_dump(mode="json", exclude={"gpus_per_shard"}), indent=2))
        return
    for w in sweep.warnings:
        err_console.print(w, style="yellow", markup=False, highlight=False, soft_wrap=True)
    by_id = {r.run_id: r for r in p.runs}
    for shard in p.shards:
        cvd = cuda_visible_devices(p, shard.index)
        ids = shard.run_ids if p.schedule == "static" else [r.run_id for r in p.runs]
        title = f"shard {shard.index} ({shard_session(shard.index)}) CUDA_VISIBLE_DEVICES={cvd}: "
        title += f"{len(ids)} runs" if p.schedule == "static" else "claims rows from the shared queue"
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("row", justify="right")
        table.add_column("run_id")
        table.add_column("command", overflow="fold")
        if p.schedule == "static":
            for rid in ids:
                r = by_id[rid]
                table.add_row(str(r.row_index), r.run_id, f"CUDA_VISIBLE_DEVICES={cvd} {shlex.join(r.argv)}")
            console.print(table)
    if p.schedule == "dynamic":
        table = Table(title="queue (any shard claims the next row)", title_justify="left")
        table.add_column("row", justify="right")
        table.add_column("run_id")
        table.add_column("command", overflow="fold")
        for r in p.runs:
            table.add_row(str(r.row_index), r.run_id, shlex.join(r.argv))
        console.print(table)
    counts = Counter(r.shard for r in p.runs)
    console.print(f"{len(p.runs)} runs over {p.shard_count} shards ({p.schedule})"
                  + (": " + ", ".join(f"shard {s}: {n}" for s, n in sorted(counts.items())) if p.schedule == "static" else ""))


def presets() -> None:
    """List the built-in presets usable in the CSV `config` column."""
    from sweepctl.train.config import PRESET_NOTES, PRESETS

    table = Table(title="built-in presets", title_justify="left")
    for col in ("name", "layers", "n_embd", "heads", "batch", "accum", "iters", "streams", "what"):
        table.add_column(col, no_wrap=col == "name")
    for name, values in PRESETS.items():
        base = name.removesuffix("_48l")
        streams = str(values.get("hc_num_streams", 1)) if not values.get("hc_disable", True) else "-"
        table.add_row(name, str(values["n_layer"]), str(values["n_embd"]), str(values["n_head"]),
                      str(values["batch_size"]), str(values["gradient_accumulation_steps"]),
                      str(values["max_iters"]), streams, PRESET_NOTES[base])
    console.print(table)
    console.print("All: block 1024, lr 6e-4 cosine to 6e-5 after 200 warmup steps, bf16. "
                  "See every value with `sweepctl plan CSV --shards 1 --json`.")


def config(
    out_root: str | None = typer.Option(None, "--out-root", help="Override out_root for this view."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Override data_dir for this view."),
    host: str | None = typer.Option(None, "--host", help="Override host for this view."),
    as_json: bool = typer.Option(False, "--json", help="Print settings, their sources and the absolute "
                                 "out_root/data_dir as JSON (what `launch --host` asks the pod)."),
) -> None:
    """Print each effective setting and where it came from (flag > env > project file > default)."""
    from sweepctl.settings import Settings, explain_settings

    if as_json:
        rows = explain_settings(out_root=out_root, data_dir=data_dir, host=host)
        values = {name: value for name, value, _ in rows}
        # Resolved here, where the paths are: a relative out_root means relative to this machine's
        # working directory, which a laptop uploading files into it cannot know.
        paths = {k: str(Path(values[k]).expanduser().absolute()) for k in ("out_root", "data_dir")}
        typer.echo(json.dumps({"settings": values, "sources": {name: src for name, _, src in rows},
                               "paths": paths}, indent=2))
        return
    table = Table(title="settings (flags > environment > project file > defaults)", title_justify="left")
    for col in ("setting", "value", "from", "meaning"):
        table.add_column(col, overflow="fold")
    for name, value, source in explain_settings(out_root=out_root, data_dir=data_dir, host=host):
        table.add_row(name, "" if value is None else str(value), source,
                      Settings.model_fields[name].description or "")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(plan)
    app.command()(presets)
    app.command()(config)
