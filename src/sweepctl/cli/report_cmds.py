"""report: one row per group of seeds, a ranked comparison against a baseline, plots, report.md.

The command is `report.collect` (pure, over run directories) followed by `render.report.emit`
(drawing only from the collected JSON), so a report of a remote pod is the same `emit` over the
JSON that `sweepctl report --format json` printed there.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sweepctl.cli import remote_opts
from sweepctl.cli.remote_opts import Pods
from sweepctl.cli.render.report import FORMATS, emit
from sweepctl.errors import SweepctlError


def report_command(
    out_root: str | None = typer.Option(None, "--out-root", help="Where the run directories are."),
    sweep: str | None = typer.Option(None, "--sweep", help="Only this sweep's runs (its plan's pending rows included)."),
    group_by: str = typer.Option("seed-stripped", "--group-by",
                                 help="seed-stripped (run_id minus -sNNNN), config (effective config minus "
                                      "seed), or a regex whose first group names the group."),
    fmt: str = typer.Option("table", "--format", help="table, md, csv or json."),
    plots: Path | None = typer.Option(None, "--plots", help="Write PNG plots (and report.md with --format md) here."),
    baseline: str | None = typer.Option(None, "--baseline", help="Group to compare every other group against."),
    host: list[str] | None = remote_opts.HOST,
    remote_bin: str | None = remote_opts.REMOTE_BIN,
    accept_new_host_key: bool = remote_opts.ACCEPT_NEW_HOST_KEY,
) -> None:
    """Aggregate a sweep's results: mean ± std over seeds per group, compare to a baseline, plot."""
    from sweepctl.settings import load_settings
    from sweepctl.views import report

    if fmt not in FORMATS:
        raise SweepctlError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if pods := remote_opts.resolve(host, remote_bin, accept_new_host_key):
        # The pods collect (JSON); tables, plots and the baseline comparison are made here.
        return report_on_pods(pods, remote_opts.forwarded(exclude=("fmt", "plots", "baseline")), fmt=fmt,
                                  plots=plots, baseline=baseline, group_by=group_by, sweep=sweep)
    settings = load_settings(out_root=out_root)
    data = report.collect(settings.out_root, sweep=sweep, group_by=group_by,
                          stale_after_s=settings.stale_after_s)
    if not data["runs"]:
        raise SweepctlError("no run directories found", where=settings.out_root,
                            hint="point --out-root at the folder that holds <run_id>/summary.json")
    emit(data, fmt=fmt, plots_dir=plots, baseline=baseline)


def report_on_pods(pods: Pods, args: list[str], *, fmt: str, plots: Path | None, baseline: str | None,
           group_by: str, sweep: str | None) -> None:
    """`report --format json` on each pod; several pods' runs are grouped again here, so seeds that
    ran on different pods land in one group; tables, CSV, markdown and plots are made here."""
    from sweepctl.views import report

    pod_args = ["report", *args, "--format", "json"]
    answers = pods.each(lambda h, t: pods.sweepctl_json(t, pod_args))
    if pods.single:
        remote_opts.raise_if_failed(answers)
        emit(answers[0].value, fmt=fmt, plots_dir=plots, baseline=baseline)
        return
    got = [a for a in answers if a.value is not None]
    if not got:
        remote_opts.raise_if_failed(answers)
    records = [dict(r, host=a.host) for a in got for r in a.value["runs"]]
    data = report.assemble(records, out_root=", ".join(f"{a.host}:{a.value['out_root']}" for a in got),
                        sweep=sweep, group_by=group_by, now=max(a.value["generated"] for a in got))
    data["warnings"] = ([f"{a.host}: {w}" for a in got for w in a.value["warnings"]] + data["warnings"]
                        + [f"host {a.host}: {a.describe()} (its runs are missing)" for a in answers if a.error])
    emit(data, fmt=fmt, plots_dir=plots, baseline=baseline)
    remote_opts.raise_if_failed(answers)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
