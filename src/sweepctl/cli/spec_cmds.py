"""validate, plan, presets, config: look at a sweep before anything runs."""

from __future__ import annotations

import contextlib
import gc
import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import typer

from sweepctl.console import err_console

CSV_ARG = typer.Argument(..., metavar="CSV", help="Sweep CSV: run_id,config,seed,overrides,notes[,gpus].", show_default=False)


ALL_OPT = typer.Option(False, "--all", help="Show every row, however many (a big sweep is summarised).")


@contextlib.contextmanager
def _objects_kept_to_the_end() -> Iterator[None]:
    """No cyclic garbage collection while validate or plan holds a sweep: every spec, config and
    plan row made is kept until the command ends, so the collector's passes over them (each full
    one over everything made so far) find nothing and cost a fifth of the command. At the end
    they are frozen (never scanned again: the process is about to exit) and collection resumes."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was:
            gc.enable()


def _again(*words: str) -> str:
    """The command line that was typed, with --all: the hint a summary ends with."""
    return shlex.join(["sweepctl", *words, "--all"])


def validate(
    csv_path: Path = CSV_ARG,
    show_all: bool = ALL_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the summary, the groups and every row as JSON."),
) -> None:
    """Check every row of a sweep CSV; report every problem as CSVFILE:LINE: message."""
    from sweepctl.cli.render.sweep import render_validate, validate_model
    from sweepctl.sweep.spec import read_sweep

    with _objects_kept_to_the_end():
        sweep = read_sweep(csv_path)
        model = validate_model(sweep, with_rows=as_json or show_all)
        if as_json:
            typer.echo(json.dumps(model, indent=2))
            return
        for w in sweep.warnings:
            err_console.print(w, style="yellow", markup=False, highlight=False, soft_wrap=True)
        render_validate(model, show_all=show_all, again=_again("validate", str(csv_path)))


def plan(
    csv_path: Path = CSV_ARG,
    shards: int = typer.Option(..., "--shards", help="Number of shards (usually one per GPU)."),
    schedule: str = typer.Option("static", "--schedule", help="static (row i -> shard i % N) or dynamic."),
    gpus_per_shard: int = typer.Option(1, "--gpus-per-shard", help="GPUs per shard (K): shard i gets i*K..i*K+K-1."),
    out_root: str | None = typer.Option(None, "--out-root", help="Where run directories go."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="FineWeb token shards."),
    show_all: bool = ALL_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Show which shard runs which row, on which GPUs, with which trainer command, and each shard's share."""
    from sweepctl.cli.render.sweep import plan_model, render_plan
    from sweepctl.errors import SweepctlError
    from sweepctl.launch import all_rows_on_cpu
    from sweepctl.settings import load_settings
    from sweepctl.sweep.plan import make_plan
    from sweepctl.sweep.spec import read_sweep

    if schedule not in ("static", "dynamic"):
        raise SweepctlError(f"--schedule must be static or dynamic, got {schedule!r}")
    settings = load_settings(out_root=out_root, data_dir=data_dir)
    with _objects_kept_to_the_end():
        sweep = read_sweep(csv_path)
        p = make_plan(sweep, shards=shards, schedule=schedule, gpus_per_shard=gpus_per_shard,  # type: ignore[arg-type]
                      out_root=settings.out_root, data_dir=settings.data_dir)
        warnings = sweep.warnings
        del sweep  # the plan holds what is shown; a 20,000-row sweep's specs are ~100 MB
        if as_json:
            _print_plan_json(p)
            return
        for w in warnings:
            err_console.print(w, style="yellow", markup=False, highlight=False, soft_wrap=True)
        words = ["plan", str(csv_path), "--shards", str(shards)]
        words += ["--schedule", schedule] if schedule != "static" else []
        words += ["--gpus-per-shard", str(gpus_per_shard)] if gpus_per_shard != 1 else []
        words += ["--out-root", out_root] if out_root else []
        words += ["--data-dir", data_dir] if data_dir else []
        render_plan(plan_model(p, cpu=all_rows_on_cpu(p)), show_all=show_all, again=_again(*words))


def _print_plan_json(p: object) -> None:
    """The plan as one JSON object, written run by run (one run per line) rather than built as one
    string: a 20,000-row plan's JSON is 60 MB, and building it whole doubled the peak memory."""
    import sys

    from sweepctl.sweep.plan import Plan

    assert isinstance(p, Plan)
    # the launch-time fields (slots, compile cache) are launch's to set: not part of `plan --json`
    head = p.model_dump_json(exclude={"gpus_per_shard", "runs_per_gpu", "compile_cache", "runs"})
    out = sys.stdout
    out.write(head[:-1] + ', "runs": [')
    for i, run in enumerate(p.runs):
        out.write(("\n" if i == 0 else ",\n") + run.model_dump_json())
    out.write("\n]}\n")
    out.flush()


def presets(
    as_json: bool = typer.Option(False, "--json", help="Print every preset's settings and description as JSON."),
) -> None:
    """List the built-in presets usable in the CSV `config` column."""
    from sweepctl.cli.render.sweep import render_presets
    from sweepctl.train.config import PRESET_NOTES, PRESETS

    if as_json:
        typer.echo(json.dumps({name: {"what": PRESET_NOTES[name.removesuffix("_48l")], "settings": values}
                               for name, values in PRESETS.items()}, indent=2))
        return
    render_presets(PRESETS, PRESET_NOTES)


def config(
    out_root: str | None = typer.Option(None, "--out-root", help="Override out_root for this view."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Override data_dir for this view."),
    host: str | None = typer.Option(None, "--host", help="Override host for this view."),
    as_json: bool = typer.Option(False, "--json", help="Print settings, their sources and the absolute "
                                 "out_root/data_dir as JSON (what `launch --host` asks the pod)."),
) -> None:
    """Print each effective setting and where it came from (flag > env > project file > default)."""
    from sweepctl.cli.render.settings import render_settings
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
    render_settings([(name, value, source, Settings.model_fields[name].description or "")
                     for name, value, source in explain_settings(out_root=out_root, data_dir=data_dir, host=host)])


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(plan)
    app.command()(presets)
    app.command()(config)
