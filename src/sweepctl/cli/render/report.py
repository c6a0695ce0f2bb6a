"""report's views: the group, diagnostics and comparison tables, report.md, the CSV and the JSON,
all drawn from the data `report.collect` (or `report.assemble`, over several pods) returns.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from sweepctl.console import console, err_console
from sweepctl.errors import SweepctlError

FORMATS = ("table", "md", "csv", "json")
REPORT_MD = "report.md"


# --------------------------------------------------------------------------- number formatting


def fmt_loss(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "—"
    return f"{s['mean']:.4f} ± {s['std']:.4f}" if s["std"] is not None else f"{s['mean']:.4f}"


def fmt_si(v: float | None, digits: int = 3) -> str:
    """12.3M, 850k: counts a researcher reads at a glance."""
    if v is None:
        return "—"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.{digits}g}{suffix}"
    return f"{v:.{digits}g}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def fmt_diff(v: float | None) -> str:
    return "—" if v is None else f"{v:+.4f}"


def fmt_ci(row: dict[str, Any]) -> str:
    return "—" if row["ci_low"] is None else f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_test(row: dict[str, Any]) -> str:
    return {"paired": "paired", "welch": "Welch", None: "—"}[row["test"]]


def fmt_seeds(row: dict[str, Any]) -> str:
    """How many seeds the numbers stand on: the pairs, or both sides' counts when unpaired."""
    return str(row["n"]) if row["test"] == "paired" else f"{row['n_group']} vs {row['n_baseline']}"


def fmt_at(at: dict[str, Any] | None) -> str:
    """Where the groups are compared, said once under the tables."""
    if at is None:
        return "no ok run has an eval yet: nothing to compare"
    where = f"{fmt_si(at['x'])} tokens" if at["unit"] == "tokens" else f"iteration {at['x']:g}"
    line = (f"Val losses are at {where}: the last eval every ok run reached (limited by {at['limited_by']})"
            + (", in iterations because some run's tokens per iteration are unknown" if at["unit"] == "iter" else ""))
    if at["interpolated"]:
        line += f"; interpolated between evals for {', '.join(at['interpolated'])}"
    return line + "."


def fmt_errors(g: dict[str, Any]) -> str:
    return ", ".join(f"{k}×{v}" for k, v in sorted(g["error_classes"].items())) or ""


def group_cells(g: dict[str, Any]) -> list[str]:
    """The columns of one group row, shared by the table and the markdown."""
    return [g["label"], g["variant"] or "—", str(g["ok"]), str(g["failed"]), str(g["pending"]),
            fmt_loss(g["final_val"]), fmt_loss(g["best_val"]), fmt_si(g["tokens_seen"]["mean"]),
            fmt_si(g["tok_per_s"]["mean"]), fmt_duration(g["elapsed_s"]["mean"]), f"{g.get('gpu_hours') or 0:.2f}",
            fmt_errors(g)]


GROUP_HEADERS = ["group", "variant", "ok", "failed", "pending", "val loss", "best val loss", "tokens",
                 "tok/s", "wall", "GPU-h", "errors"]
COMPARE_HEADERS = ["rank", "group", "seeds", "test", "Δ val loss", "95% CI", "p", "verdict"]
DIAG_HEADERS = ["group", "fwd gain", "bwd gain", "max |row sum−1|", "max |col sum−1|"]
STATS_NOTE = ("Loss is mean ± sample std over ok seeds (nats/token); failed and unfinished runs are counted, "
              "never averaged. tokens, tok/s and wall time are means over ok runs; GPU-h is the group's total "
              "(every run's last attempt, a packed run's share of its GPU).")
DIAG_NOTE = ("Residual mixing (mHC paper): gain of the composite map over all sub-layers for the worst token "
             "(forward = max |row sum|, backward = max |column sum|; 1 = no amplification), mean ± std over ok "
             "seeds at the last eval at the compared token count; the errors are the worst of any applied H_res "
             "until then.")


def compare_cells(rank: int, row: dict[str, Any]) -> list[str]:
    return [str(rank), row["label"], fmt_seeds(row), fmt_test(row), fmt_diff(row["diff"]), fmt_ci(row),
            fmt_p(row["p"]), row["verdict"]]


def fmt_gain(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "—"
    return f"{s['mean']:.3f} ± {s['std']:.3f}" if s["std"] is not None else f"{s['mean']:.3f}"


def fmt_err(v: float | None) -> str:
    return "—" if v is None else f"{v:.1e}"


def diag_cells(g: dict[str, Any]) -> list[str]:
    d = g["diag"]
    return [g["label"], fmt_gain(d["fwd_gain"]), fmt_gain(d["bwd_gain"]), fmt_err(d["row_err"]), fmt_err(d["col_err"])]


# --------------------------------------------------------------------------- renderers


def render_table(data: dict[str, Any], comparison: dict[str, Any] | None) -> None:
    title = f"{data['sweep'] or data['out_root']}: {len(data['runs'])} runs in {len(data['groups'])} groups"
    table = Table(title=title, title_justify="left")
    label_width = min(40, max((len(g["label"]) for g in data["groups"]), default=5))
    for h in GROUP_HEADERS:
        # numbers never wrap mid-value; on a narrow terminal the label and error columns fold instead
        table.add_column(h, justify="right" if h in ("ok", "failed", "pending", "tokens", "tok/s", "wall", "GPU-h")
                         else "left",
                         no_wrap=h not in ("group", "errors"), overflow="fold",
                         min_width=label_width if h == "group" else None)
    for g in data["groups"]:
        table.add_row(*group_cells(g))
    _print_wide(table)
    console.print(STATS_NOTE, style="dim", markup=False, highlight=False)
    console.print(fmt_at(data["at"]), markup=False, highlight=False, soft_wrap=True)
    diag = [g for g in data["groups"] if g["diag"]]
    if diag:
        dt = Table(title="residual mixing diagnostics", title_justify="left")
        for h in DIAG_HEADERS:
            dt.add_column(h, no_wrap=h != "group", overflow="fold", min_width=label_width if h == "group" else None)
        for g in diag:
            dt.add_row(*diag_cells(g))
        _print_wide(dt)
        console.print(DIAG_NOTE, style="dim", markup=False, highlight=False)
    if comparison is not None:
        ct = Table(title=f"against baseline {comparison['baseline']} (n={comparison['baseline_n']}); lower is better",
                   title_justify="left")
        for h in COMPARE_HEADERS:
            ct.add_column(h, no_wrap=h not in ("group", "verdict"), overflow="fold",
                          min_width=label_width if h == "group" else None)
        for i, row in enumerate(comparison["rows"], 1):
            ct.add_row(*compare_cells(i, row))
        _print_wide(ct)
        console.print(f"rule: {comparison['rule']}.", style="dim", markup=False, highlight=False)
    _print_failures(data)
    for w in (comparison or {}).get("warnings", []) + data["warnings"]:
        err_console.print(f"warning: {w}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def _print_wide(table: Table) -> None:
    """A terminal folds the table to its width; a pipe or file (Rich assumes 80 columns there)
    gets the table at its natural width, so `sweepctl report > results.txt` stays readable."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.console import Console
    from rich.measure import Measurement

    natural = Measurement.get(console, console.options.update_width(1000), table).maximum
    # console.print(width=) cannot exceed the console's width, hence a console of the table's size
    Console(width=max(console.width, natural)).print(table)


def _print_failures(data: dict[str, Any]) -> None:
    for r in data["runs"]:
        if r["state"] == "failed":
            console.print(f"failed {r['run_id']}: {r['error_class']}" + (f" — {r['error']}" if r["error"] else ""),
                          style="red", markup=False, highlight=False, soft_wrap=True)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render_markdown(data: dict[str, Any], comparison: dict[str, Any] | None, images: dict[str, str]) -> str:
    """report.md; `images` maps a plot's file name to its link, relative to where report.md goes."""
    from sweepctl.views.plots import PLOTS

    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(data["generated"]))
    lines = [f"# Sweep report: {data['sweep'] or data['out_root']}", "",
             f"{len(data['runs'])} runs in {len(data['groups'])} groups (grouped by `{data['group_by']}`), "
             f"read from `{data['out_root']}` at {when}. {STATS_NOTE}", "", fmt_at(data["at"]), "",
             _md_row(GROUP_HEADERS), _md_row(["---"] * len(GROUP_HEADERS))]
    lines += [_md_row(group_cells(g)) for g in data["groups"]]
    diag = [g for g in data["groups"] if g["diag"]]
    if diag:
        lines += ["", "## Residual mixing diagnostics", "", DIAG_NOTE, "", _md_row(DIAG_HEADERS),
                  _md_row(["---"] * len(DIAG_HEADERS))]
        lines += [_md_row(diag_cells(g)) for g in diag]
    differs = [g for g in data["groups"] if g["differs"]]
    if differs:
        lines += ["", "What distinguishes the groups:", ""]
        lines += [f"- `{g['label']}`: " + ", ".join(f"{k}={v!r}" for k, v in g["differs"].items()) for g in differs]
    if comparison is not None:
        lines += ["", f"## Against baseline `{comparison['baseline']}` (n={comparison['baseline_n']})", "",
                  f"Ranked by Δ val loss. {comparison['rule']}.",
                  "", _md_row(COMPARE_HEADERS), _md_row(["---"] * len(COMPARE_HEADERS))]
        lines += [_md_row(compare_cells(i, row)) for i, row in enumerate(comparison["rows"], 1)]
        lines += [""] + [f"- warning: {w}" for w in comparison["warnings"]] if comparison["warnings"] else []
    if images:
        lines += ["", "## Plots", ""]
        for name, caption in PLOTS.items():
            if name in images:
                lines += [f"### {caption}", "", f"![{caption}]({images[name]})", ""]
    failed = [r for r in data["runs"] if r["state"] == "failed"]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"- `{r['run_id']}`: {r['error_class']}" + (f" — {r['error']}" if r["error"] else "") for r in failed]
    if data["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in data["warnings"]]
    return "\n".join(lines).rstrip() + "\n"


def render_csv(data: dict[str, Any], comparison: dict[str, Any] | None) -> str:
    """One row per group with raw numbers (not formatted), for a spreadsheet or pandas."""
    by_label = {r["label"]: r for r in (comparison or {}).get("rows", [])}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    stat_cols = ("final_val", "best_val", "tokens_seen", "tok_per_s", "elapsed_s")
    diag_stats = ("fwd_gain", "bwd_gain")
    verdict_cols = ("test", "n", "diff", "ci_low", "ci_high", "p", "verdict")
    at = data["at"] or {}
    header = ["group", "variant", "runs", "ok", "failed", "pending", "seeds", "at", "at_unit"]
    header += [f"{c}_{s}" for c in stat_cols for s in ("mean", "std", "n")] + ["gpu_hours", "error_classes"]
    header += [f"{c}_{s}" for c in diag_stats for s in ("mean", "std")] + ["h_res_row_err", "h_res_col_err"]
    if comparison is not None:
        header += ["baseline"] + [f"vs_baseline_{c}" for c in verdict_cols]
    w.writerow(header)
    for g in data["groups"]:
        row: list[Any] = [g["label"], g["variant"] or "", len(g["run_ids"]), g["ok"], g["failed"], g["pending"],
                          " ".join(map(str, g["seeds"])), _csv(at.get("x")), at.get("unit", "")]
        row += [_csv(g[c][s]) for c in stat_cols for s in ("mean", "std", "n")]
        row.append(_csv(g.get("gpu_hours")))
        row.append(" ".join(f"{k}={v}" for k, v in sorted(g["error_classes"].items())))
        d = g["diag"] or {}
        row += [_csv((d.get(c) or {}).get(s)) for c in diag_stats for s in ("mean", "std")]
        row += [_csv(d.get("row_err")), _csv(d.get("col_err"))]
        if comparison is not None:
            v = by_label.get(g["label"], {})
            row += [comparison["baseline"]] + [_csv(v.get(c)) for c in verdict_cols]
        w.writerow(row)
    return buf.getvalue()


def _csv(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    return repr(v) if isinstance(v, float) else v


# --------------------------------------------------------------------------- the formats


def emit(data: dict[str, Any], *, fmt: str = "table", plots_dir: Path | None = None,
         baseline: str | None = None) -> None:
    """Render collected report data: tables / md / csv / json, plots when asked."""
    from sweepctl.views import report

    if fmt not in FORMATS:
        raise SweepctlError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    comparison = report.compare(data, baseline) if baseline else None
    written: dict[str, Path] = {}
    if plots_dir is not None:
        from sweepctl.views.plots import PlottingUnavailable, write_plots

        try:
            written = write_plots(data, plots_dir, baseline=baseline)
        except PlottingUnavailable as e:  # no matplotlib: the report is still worth printing
            err_console.print(f"warning: {e.message}; the report follows without plots. To plot: {e.hint}",
                              style="yellow", markup=False, highlight=False, soft_wrap=True)
            plots_dir = None
    if fmt == "json":
        out = dict(data, comparison=comparison, plots={k: str(v) for k, v in written.items()})
        typer.echo(json.dumps(out, indent=1))
    elif fmt == "csv":
        typer.echo(render_csv(data, comparison), nl=False)
    elif fmt == "md":
        if plots_dir is None:  # no images to link: the markdown goes to stdout
            typer.echo(render_markdown(data, comparison, {}), nl=False)
        else:  # report.md next to its PNGs, so the relative links resolve wherever the folder goes
            path = plots_dir / REPORT_MD
            path.write_text(render_markdown(data, comparison, {name: name for name in written}))
            err_console.print(f"wrote {path} and {len(written)} plot(s)", markup=False, highlight=False)
    else:
        render_table(data, comparison)
        if written:
            console.print(f"wrote {len(written)} plot(s) to {plots_dir}: {', '.join(written)}",
                          markup=False, highlight=False)
