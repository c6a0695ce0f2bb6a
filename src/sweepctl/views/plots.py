"""PNG plots of a sweep report, drawn from `report.collect`'s JSON (never from run directories).

    paths = write_plots(report.collect(out_root), Path("report/"), baseline="fineweb10B-base-6l")

matplotlib is imported inside `write_plots`, and only its object API is used (Figure + the Agg
canvas): no pyplot global state, no display needed, and `sweepctl --help` does not pay for it.
Every figure has the same pixel size (FIGSIZE at DPI) so a report's images line up; legends sit
outside the axes (constrained layout shrinks the axes, not the figure) so they never cover data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweepctl.errors import SweepctlError
from sweepctl.views import report

FIGSIZE = (10.0, 5.5)  # inches
DPI = 100  # -> 1000 x 550 px
# A loss that spans at least this ratio (max / min) is drawn on a log axis, where a decade of
# improvement late in training is as visible as the first one.
LOG_SCALE_RATIO = 10.0
BAND_ALPHA = 0.2

# file name -> (what it shows) for the markdown report; order is the order shown
PLOTS = {
    "val_loss.png": "Validation loss vs tokens",
    "val_delta.png": "Validation loss minus the baseline's vs tokens",
    "train_loss.png": "Training loss vs tokens",
    "tok_per_s.png": "Throughput per group",
    "gain.png": "Full-depth composite gain of the residual mixing vs tokens (HC/mHC)",
    "gain_layers.png": "Composite gain from each layer to the last (HC/mHC)",
}


class PlottingUnavailable(SweepctlError):
    """matplotlib cannot be imported: `report` prints its tables anyway and says how to install it."""


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlottingUnavailable("--plots needs matplotlib, which is not installed", hint=install_hint()) from None
    matplotlib.use("Agg", force=False)  # harmless when pyplot is never imported; headless if it is
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    return Figure, FigureCanvasAgg, EngFormatter


def install_hint() -> str:
    """How to add matplotlib to the Python running sweepctl, as a command that works pasted: an
    editable install of this source checkout when sweepctl runs from one, else the extra."""
    import shlex
    import sys

    python = shlex.quote(sys.executable)
    import sweepctl

    package = Path(sweepctl.__file__).resolve().parent  # <checkout>/src/sweepctl in a source checkout
    checkout = package.parent.parent
    if package.parent.name == "src" and (checkout / "pyproject.toml").is_file():
        return f"{python} -m pip install -e {shlex.quote(str(checkout) + '[plots]')}"
    return f"{python} -m pip install 'sweepctl[plots]'"


# Marker shapes cycle with the groups, so two curves that coincide are still told apart.
MARKERS = "osD^vPX<>"


def _marker(labels: list[str], label: str) -> str:
    return MARKERS[labels.index(label) % len(MARKERS)] if label in labels else "o"


def _colors(labels: list[str]) -> dict[str, Any]:
    """One color per group, the same in every plot (tab10, then tab20 for bigger sweeps)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def write_plots(data: dict[str, Any], out_dir: Path, baseline: str | None = None) -> dict[str, Path]:
    """Write every plot the data supports into out_dir; returns {file name: path} of those written
    (val_delta.png only with a baseline, the gain plots only when some group logged diagnostics;
    nothing for a report without results)."""
    Figure, Canvas, EngFormatter = _matplotlib()
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = [g["label"] for g in data["groups"]]
    colors = _colors(labels)
    env = (Figure, Canvas, EngFormatter, colors)
    written: dict[str, Path] = {}
    sweep = f" — sweep {data['sweep']}" if data.get("sweep") else ""  # in every title
    plans = [
        ("val_loss.png", lambda p: _loss_plot(env, data, labels, "eval", 3, p,
                                              (f"Validation loss{sweep}",
                                               "mean over ok seeds, band = ± std; from the first eval after step 0"),
                                              "validation loss (nats/token)")),
        ("val_delta.png", lambda p: baseline is not None and _delta_plot(env, data, labels, baseline, p, sweep)),
        ("train_loss.png", lambda p: _loss_plot(env, data, labels, "train", 2, p,
                                                (f"Training loss{sweep}",
                                                 "mean over ok seeds, band = ± std; each point averages its log rows"),
                                                "training loss (nats/token)")),
        ("tok_per_s.png", lambda p: _throughput_plot(env, data, p, sweep)),
        ("gain.png", lambda p: _gain_plot(env, data, p, sweep)),
        ("gain_layers.png", lambda p: _gain_layers_plot(env, data, p, sweep)),
    ]
    for name, draw in plans:
        path = out_dir / name
        if draw(path):
            written[name] = path
    return written


def _figure(env: tuple, nrows: int = 1) -> tuple[Any, Any, Any]:
    Figure, Canvas, _, _ = env
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    Canvas(fig)
    axes = fig.subplots(nrows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, axes, env[2]


def _title(ax: Any, title: tuple[str, str]) -> None:
    # on the axes, not the figure: a figure title would run into the legend column on the right
    ax.set_title(f"{title[0]}\n{title[1]}", fontsize="medium")


def _save(fig: Any, path: Path) -> None:
    # no bbox_inches="tight": it would change the pixel size per figure
    fig.savefig(path, dpi=DPI)


def _x_axis(ax: Any, eng: Any, tokens: bool) -> None:
    ax.set_xlabel("tokens seen" if tokens else "iteration (optimizer steps)")
    if tokens:
        ax.xaxis.set_major_formatter(eng(sep=""))  # 250M, 1.5G: readable token counts
    ax.grid(True, alpha=0.3)


def _legend(fig: Any, ax: Any) -> None:
    # a figure legend "outside": constrained layout gives it its own column right of the axes
    handles, names = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside right upper", fontsize="small", title="group")


def _curves(data: dict[str, Any], labels: list[str], series: str, column: int,
            skip_first: bool = False) -> list[dict[str, Any]]:
    curves = [report.curve(data, label, series, column, skip_first=skip_first) for label in labels]
    if not all(c["x_is_tokens"] for c in curves if c["x"]):
        # one x unit per figure: fall back to iterations when any group's tokens per iter is unknown
        curves = [report.curve(data, label, series, column, tokens=False, skip_first=skip_first) for label in labels]
    return [c for c in curves if c["x"]]


def _band(ax: Any, c: dict[str, Any], color: Any) -> None:
    if any(c["std"]):
        ax.fill_between(c["x"], [m - s for m, s in zip(c["mean"], c["std"], strict=True)],
                        [m + s for m, s in zip(c["mean"], c["std"], strict=True)],
                        color=color, alpha=BAND_ALPHA, linewidth=0)


def _loss_plot(env: tuple, data: dict[str, Any], labels: list[str], series: str, column: int, path: Path,
               title: tuple[str, str], ylabel: str) -> bool:
    # step 0's loss (about ln vocab) would stretch the axis far beyond the differences between groups
    curves = _curves(data, labels, series, column, skip_first=True)
    if not curves:
        return False
    fig, (ax,), eng = _figure(env)
    colors = env[3]
    for c in curves:
        name = f"{c['label']} (n={c['runs']}{', unfinished' if c['partial'] else ''})"
        style = "--" if c["partial"] else "-"
        marker = _marker(labels, c["label"]) if len(c["x"]) <= 30 else None  # sparse evals: show where they were
        ax.plot(c["x"], c["mean"], style, color=colors[c["label"]], marker=marker, markersize=4, label=name)
        _band(ax, c, colors[c["label"]])
    lows = [m - s for c in curves for m, s in zip(c["mean"], c["std"], strict=True) if m - s > 0]
    highs = [m + s for c in curves for m, s in zip(c["mean"], c["std"], strict=True)]
    if lows and max(highs) / min(lows) >= LOG_SCALE_RATIO:
        ax.set_yscale("log")
    _x_axis(ax, eng, curves[0]["x_is_tokens"])
    ax.set_ylabel(ylabel + (", log scale" if ax.get_yscale() == "log" else ""))
    _title(ax, title)
    _legend(fig, ax)
    _save(fig, path)
    return True


def _throughput_plot(env: tuple, data: dict[str, Any], path: Path, sweep: str) -> bool:
    groups = [g for g in data["groups"] if g["tok_per_s"]["n"]]
    if not groups:
        return False
    colors = env[3]
    fig, (ax,), eng = _figure(env)
    ys = list(range(len(groups)))[::-1]  # first group on top
    for y, g in zip(ys, groups, strict=True):
        s = g["tok_per_s"]
        ax.barh(y, s["mean"], color=colors[g["label"]], xerr=s["std"] or 0, capsize=3)
        seeds = [r["tok_per_s"] for r in data["runs"]
                 if r["group"] == g["label"] and r["state"] == "ok" and r["tok_per_s"] is not None]
        ax.plot(seeds, [y] * len(seeds), "o", color="black", markersize=3)
    ax.set_yticks(ys, [f"{g['label']} (n={g['tok_per_s']['n']})" for g in groups], fontsize="small")
    ax.set_xlabel("throughput (tokens/s)")
    ax.xaxis.set_major_formatter(eng(sep=""))
    ax.grid(True, axis="x", alpha=0.3)
    _title(ax, (f"Training throughput{sweep}", "bar = mean over ok seeds ± std, dots = individual seeds"))
    _save(fig, path)
    return True


def _gain_plot(env: tuple, data: dict[str, Any], path: Path, sweep: str) -> bool:
    every = [g["label"] for g in data["groups"]]  # markers follow the group's place in every plot
    labels = [g["label"] for g in data["groups"] if g["has_gain"]]
    fwd, bwd = _curves(data, labels, "gain", 2), _curves(data, labels, "gain", 3)
    if not fwd:
        return False
    colors = env[3]
    fig, axes, eng = _figure(env, nrows=2)
    for ax, curves, which in ((axes[0], fwd, "forward gain\n(max |row sum|)"),
                              (axes[1], bwd, "backward gain\n(max |column sum|)")):
        values = [v for c in curves for v in c["min"] + c["max"]]
        for c in curves:
            ax.plot(c["x"], c["mean"], color=colors[c["label"]], marker=_marker(every, c["label"]), markersize=4,
                    label=f"{c['label']} (n={c['runs']})")
            _band(ax, c, colors[c["label"]])
        ax.axhline(1.0, color="gray", linestyle=":", linewidth=1)  # doubly stochastic maps keep exactly 1
        if values and min(values) > 0 and max(values) / min(values) >= LOG_SCALE_RATIO:
            ax.set_yscale("log")  # an HC gain that grows geometrically with depth; 1 stays readable
        ax.set_ylabel(which, fontsize="small")
        ax.grid(True, alpha=0.3)
    _x_axis(axes[1], eng, fwd[0]["x_is_tokens"])
    _title(axes[0], (f"Composite gain of the residual mixing ∏ H_res over all sub-layers{sweep}",
                     "worst token at each eval, mean over ok seeds, band = ± std; 1 = no amplification"))
    _legend(fig, axes[0])
    _save(fig, path)
    return True


def _delta_plot(env: tuple, data: dict[str, Any], labels: list[str], baseline: str, path: Path, sweep: str) -> bool:
    others = [label for label in labels if label != baseline]
    curves = [report.difference_curve(data, label, baseline) for label in others]
    if not all(c["x_is_tokens"] for c in curves if c["x"]):
        curves = [report.difference_curve(data, label, baseline, tokens=False) for label in others]
    curves = [c for c in curves if c["x"]]
    if not curves:
        return False
    colors = env[3]
    fig, (ax,), eng = _figure(env)
    for c in curves:
        # short legend entries keep the legend column as narrow as the other plots'
        how = f"n={c['seeds']}" if c["paired"] else "unpaired"
        ax.plot(c["x"], c["mean"], color=colors[c["label"]], marker=_marker(labels, c["label"]) if len(c["x"]) <= 30
                else None, markersize=4, label=f"{c['label']} ({how})")
        _band(ax, c, colors[c["label"]])
    ax.axhline(0.0, color=colors[baseline], linestyle="--", linewidth=1, label=f"{baseline} = 0")
    _x_axis(ax, eng, curves[0]["x_is_tokens"])
    ax.set_ylabel("val loss − baseline (nats/token)")
    _title(ax, (f"Validation loss minus {baseline}'s{sweep}",
                "below 0 = better; each seed's difference at the same tokens (paired by seed; 'unpaired': "
                "of the means), mean over seeds, band = ± std"))
    _legend(fig, ax)
    _save(fig, path)
    return True


def _gain_layers_plot(env: tuple, data: dict[str, Any], path: Path, sweep: str) -> bool:
    """Like the mHC paper's figure: x = sub-layer l, y = gain of the composite map from l to the
    last sub-layer (worst token), one line per group, log y; at each run's last eval at or before
    the report's common token count, averaged over ok seeds."""
    from matplotlib.ticker import MaxNLocator

    every = [g["label"] for g in data["groups"]]
    profiles: dict[str, list[dict[str, Any]]] = {}
    for r in data["runs"]:
        profile = r["at"]["profile"] if r["state"] == "ok" else None
        if profile is not None:
            profiles.setdefault(r["group"], []).append(profile)
    if not profiles:
        return False
    colors = env[3]
    fig, axes, _ = _figure(env, nrows=2)
    for ax, key, which in ((axes[0], "fwd_gain", "forward gain\n(max |row sum|)"),
                           (axes[1], "bwd_gain", "backward gain\n(max |column sum|)")):
        for label in (lab for lab in every if lab in profiles):
            for stat, style, name in (("max", "-", f"{label} (n={len(profiles[label])})"), ("mean", "--", None)):
                rows = [p[f"{key}_{stat}"] for p in profiles[label] if p[f"{key}_{stat}"]]
                if not rows:
                    continue
                depth = min(len(row) for row in rows)
                mean = [sum(row[i] for row in rows) / len(rows) for i in range(depth)]
                ax.plot(range(depth), mean, style, color=colors[label], marker=_marker(every, label) if stat == "max"
                        else None, markersize=4, linewidth=1.5 if stat == "max" else 1, label=name)
        ax.axhline(1.0, color="gray", linestyle=":", linewidth=1)
        ax.set_yscale("log")  # HC's gain grows geometrically with depth; mHC's stays near 1
        ax.set_ylabel(which, fontsize="small")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    axes[1].set_xlabel("sub-layer l (the composite map runs from l through the last sub-layer; 0 = full depth)")
    _title(axes[0], (f"Composite gain ∏ H_res from each sub-layer to the last{sweep}",
                     "solid: worst token, dashed: token mean; last eval at the compared token count, mean over ok "
                     "seeds"))
    _legend(fig, axes[0])
    _save(fig, path)
    return True


__all__ = ["DPI", "FIGSIZE", "PLOTS", "PlottingUnavailable", "install_hint", "write_plots"]
