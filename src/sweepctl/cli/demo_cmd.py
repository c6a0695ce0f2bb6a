"""`sweepctl demo`: a whole sweep on this machine, offline — data, CSV, launch, live status, results.

The demo makes its inputs (sweepctl.demo) and then takes the path every sweep takes: the launch
library (pre-flight, run table, manifest, one tmux session per shard), the shard runners and
the trainer, `status` while it runs, `report` at the end. What it prints last are the commands
that look further into what it made.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import typer

from sweepctl.cli.render.demo import print_wide, render_checks, render_next_steps, watch_until
from sweepctl.console import console, err_console
from sweepctl.demo import DEFAULT_OUT_ROOT

POLL_S = 1.0
SETTLE_S = 15.0  # how long to wait for the runners to exit once every run has its summary


def demo(
    out_root: Path = typer.Option(Path(DEFAULT_OUT_ROOT), "--out-root", show_default=True,
                                  help="Folder for the demo's data, CSV and run directories (never the "
                                       "SWEEPCTL_OUT_ROOT setting: the demo stays out of real results)."),
    keep: bool = typer.Option(False, "--keep", help="Reuse the previous demo in --out-root: ok runs are "
                                                    "skipped, failed ones run again. Default: move it aside "
                                                    "to <out-root>.bak-<time> and start fresh."),
    shards: int | None = typer.Option(None, "--shards", min=1, show_default=False,
                                      help="tmux sessions running at once \\[default: one per GPU; 2 without GPUs]."),
    size: str = typer.Option("default", "--size", hidden=True, help="default, or quick (for tests)."),
    timeout: float = typer.Option(3600.0, "--timeout", hidden=True, help="Give up watching after S seconds."),
) -> None:
    """Run a small plain vs HC vs mHC sweep here, offline, in tmux shards; watch it; compare val losses.

    Two seeds per variant, tiny models, tokens of Python's own standard library; then what to look at next.
    """
    from sweepctl import launch
    from sweepctl.demo import (
        DEMO_NAME,
        SEEDS,
        SIZES,
        DemoLayout,
        ThreadCappedTmux,
        build_dataset,
        prepare_out_root,
        threads_per_run,
        write_csv,
    )
    from sweepctl.errors import RefusedError, SweepctlError
    from sweepctl.pod.tmux import shard_session
    from sweepctl.settings import load_settings

    if size not in SIZES:
        raise SweepctlError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    demo_size = SIZES[size]
    layout = DemoLayout(out_root.expanduser().absolute())
    settings = load_settings(out_root=str(layout.out_root), data_dir=str(layout.data_dir))

    device, gpu_count = _device()
    n_shards = shards or (min(gpu_count, len(layout.run_ids())) if device == "cuda" else 2)
    threads = threads_per_run(n_shards)
    where = f"{gpu_count} GPU(s)" if device == "cuda" else "the CPU"
    console.print(f"sweepctl demo: plain vs HC vs mHC, {len(SEEDS)} seeds each, tiny models on {where}; "
                  f"{n_shards} shard(s) at once, {threads} CPU thread(s) per run", highlight=False, soft_wrap=True)

    moved = prepare_out_root(layout, keep=keep, stale_after_s=settings.stale_after_s)
    if moved is not None:
        console.print(f"previous demo moved to {moved} (nothing deleted)", highlight=False, soft_wrap=True)
    console.print(f"out-root: {layout.out_root}", highlight=False, soft_wrap=True)

    t0 = time.monotonic()
    data = build_dataset(layout.data_dir, demo_size)
    if data.files:
        console.print(f"data: {data.files} standard-library files ({data.text_bytes / 1e6:.1f} MB) -> "
                      f"{data.tokens:,} GPT-2 tokens in {data.data_dir} ({time.monotonic() - t0:.1f} s)",
                      highlight=False, soft_wrap=True)
    else:
        console.print(f"data: {data.tokens:,} tokens already in {data.data_dir}", highlight=False, soft_wrap=True)
    csv_path = write_csv(layout.csv, demo_size, device)
    console.print(f"sweep: {csv_path} ({len(layout.run_ids())} runs)", highlight=False, soft_wrap=True)

    options = launch.LaunchOptions(shards=n_shards, name=DEMO_NAME, no_wandb=True, retry_failed=keep)
    preview = launch.prepare(csv_path, options, settings)
    render_checks(preview.checks)
    launch.refuse_if_needed(preview)  # before asking tmux anything: the pre-flight says whether it is there
    tmux = ThreadCappedTmux(settings.tmux_socket, threads)
    busy = [shard_session(s) for s in preview.shards_to_start
            if (info := tmux.session(shard_session(s))) and info.alive]
    if busy:
        raise RefusedError(f"tmux session(s) {', '.join(busy)} are running another sweep; the demo uses the same "
                           "session names", hint="wait for them, or give the demo its own tmux server: "
                           "SWEEPCTL_TMUX_SOCKET=/tmp/sweepctl-demo.sock sweepctl demo")
    result = launch.execute(preview, tmux=tmux)
    if result.started:
        console.print("started " + ", ".join(f"{s.session} ({s.rows} runs)" for s in result.started)
                      + f"; watch them: {result.attach}", highlight=False, soft_wrap=True)
    else:
        console.print("nothing to start: every demo run is already ok (--keep)", highlight=False, soft_wrap=True)

    sessions = {s.session for s in result.started}
    t_watch = time.monotonic()
    try:
        model = _watch(layout.out_root, settings, sessions, timeout)
    except KeyboardInterrupt:
        err_console.print(f"stopped watching; the demo goes on in tmux. "
                          f"{_prog()} status --watch --out-root {shlex.quote(str(layout.out_root))}",
                          markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    from sweepctl.cli.render import status as status_view

    print_wide(status_view.render(model))
    console.print(f"sweep took {time.monotonic() - t_watch:.0f} s", style="dim", highlight=False, soft_wrap=True)
    _compare(layout.out_root, settings.stale_after_s)
    _next_steps(layout, result.attach, n_shards)
    not_ok = [r for r in model["runs"] if r["state"] != "ok"]
    if not_ok:
        first = not_ok[0]["run_id"]
        raise SweepctlError(f"{len(not_ok)} demo run(s) did not finish ok: "
                            + ", ".join(f"{r['run_id']} ({r['state']})" for r in not_ok),
                            hint=f"see why: {_prog()} logs {first} --out-root {shlex.quote(str(layout.out_root))}")


def _device() -> tuple[str, int]:
    """("cuda", GPUs) when nvidia-smi sees GPUs and this torch can use them, else ("cpu", 0)."""
    from sweepctl.pod.gpus import query_gpus

    gpus = query_gpus().gpus
    if not gpus:
        return "cpu", 0
    import torch  # only here: a CPU-only torch on a GPU machine must not be sent to the GPUs

    return ("cuda", len(gpus)) if torch.cuda.is_available() else ("cpu", 0)


def _watch(out_root: Path, settings: Any, sessions: set[str], timeout_s: float) -> dict[str, Any]:
    """`status --watch` until every demo run has finished (or its runners are gone); the last model."""
    from sweepctl.demo import DEMO_NAME
    from sweepctl.views import status

    def model() -> dict[str, Any]:
        return status.collect(out_root, sweep=DEMO_NAME, stale_after_s=settings.stale_after_s,
                              tmux_socket=settings.tmux_socket)

    settle_until: list[float] = []

    def finished(m: dict[str, Any]) -> bool:
        alive = any(s.get("alive") for s in m["sessions"] if s["name"] in sessions)
        if all(r["state"] in ("ok", "failed") for r in m["runs"]):
            # Every run has its summary; give the runners a moment to write their shard logs and
            # exit, so the final table does not show sessions that end a second later.
            settle_until[:] = settle_until or [time.monotonic() + SETTLE_S]
            return not alive or time.monotonic() > settle_until[0]
        running = any(r["state"] == "running" for r in m["runs"])
        return not alive and not running  # the runners are gone: nothing will change any more

    deadline = time.monotonic() + timeout_s
    return watch_until(model, finished, poll_s=POLL_S,
                       check=lambda: _check_deadline(deadline, timeout_s, out_root))


def _check_deadline(deadline: float, timeout_s: float, out_root: Path) -> None:
    from sweepctl.errors import SweepctlError

    if time.monotonic() > deadline:
        raise SweepctlError(f"the demo did not finish within {timeout_s:.0f} s", where=str(out_root),
                            hint=f"it goes on in tmux: {_prog()} status --out-root {shlex.quote(str(out_root))}")


def _compare(out_root: Path, stale_after_s: float) -> None:
    """The report's seed-group table and its comparison against the plain runs."""
    from sweepctl.cli.render.report import render_table
    from sweepctl.demo import BASELINE_GROUP, DEMO_NAME
    from sweepctl.errors import SweepctlError
    from sweepctl.views import report

    data = report.collect(out_root, sweep=DEMO_NAME, stale_after_s=stale_after_s)
    try:
        comparison = report.compare(data, BASELINE_GROUP)
    except SweepctlError:  # no ok plain run: the group table alone still says what happened
        comparison = None
    render_table(data, comparison)


def _next_steps(layout: Any, attach: str, shards: int) -> None:
    from sweepctl.demo import BASELINE_GROUP

    prog, root = _prog(), shlex.quote(str(layout.out_root))
    example = layout.run_ids()[-1]
    steps = [
        (f"{prog} status --out-root {root}", "every run, every GPU, every session"),
        (f"{prog} logs {example} --out-root {root}", "the end of a run's stdout.log (-f follows)"),
        (f"{prog} report --out-root {root} --baseline {BASELINE_GROUP}", "mean ± std over seeds, against plain"),
        (attach, "a shard's tmux pane (detach: Ctrl-b d)"),
        (f"ls {shlex.quote(str(layout.out_root / example))}", "a run directory: logs, metrics, summary"),
        (f"{prog} launch {shlex.quote(str(layout.csv))} --shards {shards} --out-root {root} --data-dir "
         f"{shlex.quote(str(layout.data_dir))}", "after editing the CSV: runs its new rows, skips the ok ones"),
    ]
    render_next_steps(steps)


def _prog() -> str:
    """How to call sweepctl again: `sweepctl` when that is on PATH, else the path this was run as
    (after `scripts/demo`, `.venv/bin/sweepctl` until the venv is activated)."""
    argv0 = sys.argv[0]
    found = shutil.which("sweepctl")
    if os.path.basename(argv0) != "sweepctl" or not os.path.exists(argv0):
        return "sweepctl"
    if found and os.path.realpath(found) == os.path.realpath(argv0):
        return "sweepctl"
    try:
        rel = os.path.relpath(argv0)
    except ValueError:
        rel = argv0
    shown = rel if not rel.startswith("..") else os.path.abspath(argv0)
    return shlex.quote(shown if os.sep in shown else f".{os.sep}{shown}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
