"""The demo sweep: plain vs HC vs mHC, two seeds each, on tiny models — offline, on any machine.

    layout = DemoLayout(Path("sweepctl-demo").absolute())
    moved = prepare_out_root(layout, keep=False)        # a previous demo is moved aside, never deleted
    report = build_dataset(layout.data_dir, DEFAULT_SIZE)   # GPT-2 tokens of the stdlib's own sources
    write_csv(layout.csv, DEFAULT_SIZE, device="cpu")

Everything after that is the real path (`sweepctl.launch`, tmux sessions, the shard runner, the
trainer, `status`, `report`); this module only makes the inputs. The text is the Python standard
library's own source files, because every Python install has them and no download is needed: the
tokens come from `sweepctl.pod.data.prepare_text` with the shipped GPT-2 encoding.

Layout of the demo's out-root (its run directories sit next to its inputs, so one folder holds
the whole demo and moving it aside keeps a rerun from mixing with the old results):

    <out_root>/.sweepctl-demo     marker: only a folder with it is ever moved aside or reused
    <out_root>/demo.csv           the sweep
    <out_root>/data/              fineweb_val_000000.bin, fineweb_train_000001.bin
    <out_root>/<run_id>/          one run directory per row
    <out_root>/.sweeps/demo/      the launch manifest
"""

from __future__ import annotations

import csv
import io
import os
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from sweepctl import __version__
from sweepctl.errors import RefusedError, SweepctlError
from sweepctl.pod.tmux import Tmux
from sweepctl.state import runs
from sweepctl.train.contract import write_text_atomic

DEMO_NAME = "demo"  # the sweep name: `.sweeps/demo/`, `sweepctl status --sweep demo`
DEFAULT_OUT_ROOT = "sweepctl-demo"  # `sweepctl demo`'s folder; an empty `status` looks there too
MARKER = ".sweepctl-demo"
CSV_NAME = "demo.csv"
DATA_SUBDIR = "data"
SEEDS = (1337, 1338)
# (preset, run_id part, notes): the three residual variants the project exists to compare.
VARIANTS = (("base", "base", "plain residual"),
            ("hc", "hc", "hyper-connections, 4 streams"),
            ("mhc", "mhc", "mHC: doubly stochastic H_res (Sinkhorn)"))
BASELINE_GROUP = "demo-base"  # the report's seed-stripped group of the plain runs


@dataclass(frozen=True)
class DemoSize:
    """How much text and how much training. The default is sized so one run takes ~30 s of one CPU
    core (the 50k-token GPT-2 output layer dominates at this width), and the six runs finish in
    ~2-3 minutes on 2 cores; `QUICK_SIZE` is for the test suite."""

    corpus_bytes: int
    max_iters: int
    eval_interval: int
    eval_iters: int
    log_interval: int

    def overrides(self, device: str) -> str:
        """The override words every demo row shares (the variant comes from the row's preset)."""
        warmup = max(1, self.max_iters // 10)
        # float32: autocast to bf16 is slower than plain float32 for models this small, on CPU and GPU.
        return (f"device='{device}' dtype='float32' n_layer=2 n_head=2 n_embd=32 block_size=32 batch_size=4 "
                f"gradient_accumulation_steps=1 max_iters={self.max_iters} lr_decay_iters={self.max_iters} "
                f"warmup_iters={warmup} eval_interval={self.eval_interval} eval_iters={self.eval_iters} "
                f"log_interval={self.log_interval} learning_rate=3e-3 min_lr=3e-4 wandb_log=False")


DEFAULT_SIZE = DemoSize(corpus_bytes=3_000_000, max_iters=300, eval_interval=100, eval_iters=10, log_interval=25)
QUICK_SIZE = DemoSize(corpus_bytes=300_000, max_iters=30, eval_interval=15, eval_iters=2, log_interval=5)
SIZES = {"default": DEFAULT_SIZE, "quick": QUICK_SIZE}


@dataclass(frozen=True)
class DemoLayout:
    out_root: Path  # absolute

    @property
    def marker(self) -> Path:
        return self.out_root / MARKER

    @property
    def csv(self) -> Path:
        return self.out_root / CSV_NAME

    @property
    def data_dir(self) -> Path:
        return self.out_root / DATA_SUBDIR

    def run_ids(self) -> list[str]:
        return [run_id(part, seed) for _, part, _ in VARIANTS for seed in SEEDS]


def run_id(part: str, seed: int) -> str:
    return f"{DEMO_NAME}-{part}-s{seed}"


# --------------------------------------------------------------------------- the out-root


def prepare_out_root(layout: DemoLayout, *, keep: bool, stale_after_s: float = 120.0,
                     now: float | None = None) -> Path | None:
    """Make `layout.out_root` ready for a demo; return where a previous demo was moved, if it was.

    Never deletes anything. A folder that is not a demo's (no marker) and not empty is refused:
    the demo must not mix its runs into someone's results. A previous demo with a run still
    running is refused too (moving it would pull the directory from under its trainer)."""
    root = layout.out_root
    if root.exists() and not root.is_dir():
        raise SweepctlError("exists and is not a directory", where=str(root), hint="pass another --out-root")
    if not root.exists() or not any(root.iterdir()):
        _write_marker(layout)
        return None
    if not layout.marker.exists():
        raise SweepctlError("not empty and not a demo folder (no .sweepctl-demo in it); the demo only writes "
                            "into a new or empty folder, or one an earlier demo made", where=str(root),
                            hint="pass --out-root NEWDIR")
    running = running_runs(root, stale_after_s=stale_after_s, now=now)
    if running:
        raise RefusedError(f"the previous demo still has {len(running)} running run(s): {', '.join(running)}",
                           where=str(root),
                           hint=f"wait for it (sweepctl status --watch --out-root {root}), or stop it "
                                f"(sweepctl stop --all --out-root {root})")
    if keep:
        return None
    moved = _free_name(root, runs.backup_stamp(now))
    os.replace(root, moved)
    _write_marker(layout)
    return moved


def running_runs(out_root: Path, *, stale_after_s: float, now: float | None = None) -> list[str]:
    return [d.name for d in runs.list_run_dirs(out_root)
            if runs.read_run(d, stale_after_s=stale_after_s, now=now).state == "running"]


def _free_name(root: Path, stamp: str) -> Path:
    candidate = root.with_name(f"{root.name}.bak-{stamp}")
    n = 1
    while candidate.exists():  # two demos within one second
        candidate = root.with_name(f"{root.name}.bak-{stamp}-{n}")
        n += 1
    return candidate


def _write_marker(layout: DemoLayout) -> None:
    layout.out_root.mkdir(parents=True, exist_ok=True)
    if not layout.marker.exists():
        runs.write_json_atomic(layout.marker, {"created": time.time(), "sweepctl_version": __version__,
                                               "what": "output of `sweepctl demo`; safe to delete"})


# --------------------------------------------------------------------------- the data


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(max_bytes: int, root: Path | None = None) -> list[Path]:
    """The standard library's top-level .py files, in name order, until `max_bytes` of text.

    Top level only: subpackages hold test data in legacy encodings. A file that is not UTF-8 is
    left out rather than failing the demo (prepare_text would refuse it)."""
    root = root or stdlib_dir()
    chosen, total = [], 0
    for path in sorted(root.glob("*.py")):
        try:
            size = len(path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        chosen.append(path)
        total += size
        if total >= max_bytes:
            break
    if not chosen:
        raise SweepctlError("no readable .py files in the standard library", where=str(root),
                            hint="is this a complete Python install? `python -c 'import sysconfig; "
                                 "print(sysconfig.get_paths()[\"stdlib\"])'` shows where it looks")
    return chosen


@dataclass
class DatasetInfo:
    data_dir: Path
    files: int  # source files tokenized (0: an earlier demo's shards were reused)
    text_bytes: int
    tokens: int
    shards: list[tuple[str, int]]


def build_dataset(data_dir: Path, size: DemoSize) -> DatasetInfo:
    """GPT-2 token shards of the stdlib sources in `data_dir`; valid shards already there are reused."""
    from sweepctl.pod.data import prepare_text, shard_problem, verify_shard

    existing = sorted(data_dir.glob("fineweb_*.bin"))
    has_both = any(p.name.startswith("fineweb_val_") for p in existing) and \
        any(p.name.startswith("fineweb_train_") for p in existing)
    if has_both and not any(shard_problem(p) for p in existing):
        shards = [(p.name, verify_shard(p)) for p in existing]
        return DatasetInfo(data_dir, 0, 0, sum(n for _, n in shards), shards)
    files = corpus_files(size.corpus_bytes)
    report = prepare_text(files, data_dir, force=bool(existing))
    return DatasetInfo(data_dir, len(files), sum(p.stat().st_size for p in files), report.tokens, report.shards)


# --------------------------------------------------------------------------- the sweep


def csv_text(size: DemoSize, device: str) -> str:
    """The demo sweep. Rows alternate seeds so that, with 2 shards, each shard runs one of each variant."""
    overrides = size.overrides(device)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run_id", "config", "seed", "overrides", "notes"])
    for preset, part, notes in VARIANTS:
        for seed in SEEDS:
            w.writerow([run_id(part, seed), preset, seed, overrides, notes])
    return buf.getvalue()


def write_csv(path: Path, size: DemoSize, device: str) -> Path:
    text = csv_text(size, device)
    if not path.exists() or path.read_text() != text:
        write_text_atomic(path, text)
    return path


def threads_per_run(shards: int, cpus: int | None = None) -> int:
    """CPU threads for each trainer: the cores shared out between the shards that run at once.
    Two trainers each using every core of a 2-core machine spin-wait on each other and run
    several times slower than with one thread each."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // max(1, shards))


class ThreadCappedTmux(Tmux):
    """The tmux layer, with OMP_NUM_THREADS added to every session it starts.

    `launch.execute` accepts the Tmux to start sessions with; passing this one is how the demo
    caps each trainer's threads without a trainer setting for it. The variable reaches the
    trainer through the shard runner, which passes its environment on."""

    def __init__(self, socket: str | None, threads: int):
        super().__init__(socket)
        self.threads = threads

    def start(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path) -> str:
        return super().start(name, argv, env={**env, "OMP_NUM_THREADS": str(self.threads)}, cwd=cwd)

