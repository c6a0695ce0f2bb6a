"""Several runs on one device: summed throughput, peak memory, and the shared compile cache.

    python bench/packing.py                                   # CPU, tiny sizes: what CI can run
    python bench/packing.py --device cuda --full --compile    # the 6-layer presets on one GPU
    python bench/packing.py --device cuda --full --compile --write-estimates   # feed launch's pre-flight

For each preset (default base and mhc) and each K (default 1 2 4): K real trainer processes
(`python -m sweepctl.train`) start together on one device and train the same shape with
different seeds. Throughput is measured only while all K are in their training loop (from each
run's metrics.jsonl: the window between the last first row and the first last row), so start-up
and compile time do not blur it; "summed" is the K runs' tok/s added up, "vs K=1" is that over
one run alone, and "x" is the time each neighbour adds to a run (the `--extra` of
bench/schedule_makespan.py). Peak memory is the trainer's own figure (CUDA max allocated; on the
CPU the process's peak RSS, which says nothing about a GPU). "max |dloss|" compares the loss curve
of the seed-0 run of each K with the seed-0 run alone, step by step: packing must not change a
run's numbers (0 on the CPU; within bf16 noise on a GPU).

With --compile, a last table: the same preset run twice in a row with torch.compile and one
fresh TORCHINDUCTOR_CACHE_DIR / TRITON_CACHE_DIR (what `launch` gives every run of a sweep): the
first compiles cold, the second should start from the warm cache.

Data is synthetic (random token ids in the preset's vocabulary): throughput does not read it.
--write-estimates (CUDA only) stores each preset's peak memory alone in
src/sweepctl/assets/memory_estimates.json, which launch's pre-flight checks --runs-per-gpu against.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TINY = ["n_layer=2", "n_embd=64", "n_head=2", "block_size=64", "batch_size=8", "gradient_accumulation_steps=1",
        "vocab_size=256", "dtype='float32'"]
ESTIMATES = ROOT / "src" / "sweepctl" / "assets" / "memory_estimates.json"


def write_data(folder: Path, vocab: int, tokens: int) -> Path:
    import numpy as np

    from sweepctl.pod.data import write_shard

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_shard(folder / "fineweb_train_000001.bin", rng.integers(0, min(vocab, 50257), tokens))
    write_shard(folder / "fineweb_val_000000.bin", rng.integers(0, min(vocab, 50257), tokens // 4))
    return folder


def trainer_argv(preset: str, out_dir: Path, data: Path, args: argparse.Namespace, seed: int,
                 compile_model: bool) -> list[str]:
    words = [] if args.full else list(TINY)
    words += [f"max_iters={args.iters}", f"lr_decay_iters={args.iters}", f"eval_interval={args.iters}",
              "eval_iters=1", f"log_interval={args.log_interval}", "warmup_iters=2", f"seed={seed}",
              f"device='{args.device}'", f"compile_model={compile_model}", "wandb_log=False",
              f"out_dir='{out_dir}'", f"data_dir='{data}'"]
    return [sys.executable, "-m", "sweepctl.train", preset, *words]


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def train_rows(run: Path) -> list[dict[str, Any]]:
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("event") == "train" and isinstance(row.get("ts"), (int, float)):
            rows.append(row)
    return rows


def overlap_rates(runs: list[Path], tokens_per_iter: int) -> tuple[list[float], float] | None:
    """Each run's tok/s within the window where every run was training, and the window's length."""
    rows = [train_rows(r) for r in runs]
    if any(len(r) < 2 for r in rows):
        return None
    t0 = max(r[0]["ts"] for r in rows)
    t1 = min(r[-1]["ts"] for r in rows)
    rates = []
    for r in rows:
        inside = [x for x in r if t0 <= x["ts"] <= t1]
        if len(inside) < 2 or inside[-1]["ts"] <= inside[0]["ts"]:
            return None
        rates.append((inside[-1]["iter"] - inside[0]["iter"]) * tokens_per_iter
                     / (inside[-1]["ts"] - inside[0]["ts"]))
    return rates, t1 - t0


def run_k(preset: str, k: int, work: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT / "src")}
    runs = [work / f"{preset}-k{k}-{i}" for i in range(k)]
    procs = [start(trainer_argv(preset, r, data, args, seed=i, compile_model=args.compile), env,
                   work / f"{r.name}.log") for i, r in enumerate(runs)]
    codes = [p.wait() for p in procs]
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    bad = [f"{r.name}: exit {c}, {s.get('error_class')}" for r, c, s in zip(runs, codes, summaries, strict=True)
           if c != 0 or not s.get("ok")]
    if bad:
        raise SystemExit(f"{preset} K={k}: a trainer failed ({'; '.join(bad)}); see {work}/*.log")
    tpi = summaries[0]["tokens_per_iter"]
    measured = overlap_rates(runs, tpi)
    losses = {row["iter"]: row["loss"] for row in train_rows(runs[0])}
    return {"preset": preset, "k": k, "rates": measured[0] if measured else None, "losses": losses,
            "window_s": measured[1] if measured else None,
            "peak_mib": max(s["peak_mem_mb"] or 0.0 for s in summaries),
            "config": json.loads((runs[0] / "config_effective.json").read_text()),
            "gpu": (json.loads((runs[0] / "run_metadata.json").read_text()).get("gpus") or [None])[0]}


def compile_twice(preset: str, work: Path, data: Path, args: argparse.Namespace) -> list[str]:
    """The 'compiled in X s' of two runs in a row sharing one fresh cache ('eager' if compile failed)."""
    cache = work / f"cache-{preset}"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT / "src"),
           "TORCHINDUCTOR_CACHE_DIR": str(cache), "TRITON_CACHE_DIR": str(cache / "triton")}
    found = []
    for i in range(2):
        out = work / f"{preset}-compile-{i}"
        log = work / f"{out.name}.log"
        p = start(trainer_argv(preset, out, data, args, seed=i, compile_model=True), env, log)
        p.wait()
        m = re.search(r"compiled in ([0-9.]+)s", log.read_text())
        found.append(f"{float(m.group(1)):.1f} s" if m else "eager (compile failed)")
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["base", "mhc"])
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 4], help="runs on the device at once")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (one device: every run on it)")
    ap.add_argument("--full", action="store_true", help="the presets' real sizes (default: tiny ones)")
    ap.add_argument("--iters", type=int, default=60, help="training steps per run")
    ap.add_argument("--log-interval", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each trainer")
    ap.add_argument("--compile", action="store_true", help="torch.compile every run, and time a warm second compile")
    ap.add_argument("--write-estimates", action="store_true",
                    help=f"store peak memory alone per preset in {ESTIMATES.relative_to(ROOT)} (CUDA only)")
    ap.add_argument("--keep", action="store_true", help="keep the run directories (printed)")
    args = ap.parse_args()
    if args.write_estimates and not args.device.startswith("cuda"):
        raise SystemExit("--write-estimates needs --device cuda: a CPU's peak RSS is no GPU figure")
    sys.path.insert(0, str(ROOT / "src"))

    work = Path(tempfile.mkdtemp(prefix="packing-"))
    vocab = 50304 if args.full else 256
    data = write_data(work / "data", vocab, 4_000_000 if args.full else 200_000)
    size = "preset sizes" if args.full else "tiny (" + " ".join(TINY) + ")"
    print(f"device {args.device}, {size}, {args.iters} steps, OMP_NUM_THREADS={args.threads} per trainer, "
          f"compile {'on' if args.compile else 'off'}")
    header = (f"{'preset':<8} {'K':>2}  {'tok/s per run':>13}  {'summed tok/s':>12}  {'vs K=1':>6}  {'x':>5}  "
              f"{'window s':>8}  {'peak MiB':>8}  {'max |dloss|':>11}")
    print(header)
    print("-" * len(header))
    results = []
    for preset in args.presets:
        alone = None
        curve = None
        for k in args.k:
            r = run_k(preset, k, work, data, args)
            results.append(r)
            curve = curve or r["losses"]
            shared = set(curve) & set(r["losses"])
            dloss = f"{max(abs(curve[i] - r['losses'][i]) for i in shared):.2e}" if shared else "-"
            if r["rates"] is None:
                print(f"{preset:<8} {k:>2}  {'runs did not overlap; raise --iters':>13}  peak {r['peak_mib']:.0f} MiB")
                continue
            summed = sum(r["rates"])
            if k == 1:
                alone = summed
            gain = summed / alone if alone else float("nan")
            extra = f"{(k / gain - 1) / (k - 1):.2f}" if k > 1 and alone else "-"
            print(f"{preset:<8} {k:>2}  {summed / k:>13,.0f}  {summed:>12,.0f}  {gain:>5.2f}x  {extra:>5}  "
                  f"{r['window_s']:>8.1f}  {r['peak_mib']:>8.0f}  {dloss:>11}")
    if args.compile:
        print()
        print("torch.compile, two runs in a row sharing one fresh cache")
        print(f"{'preset':<8}  {'first (cold)':>14}  {'second (warm)':>14}")
        for preset in args.presets:
            first, second = compile_twice(preset, work, data, args)
            print(f"{preset:<8}  {first:>14}  {second:>14}")
    if args.write_estimates:
        from sweepctl.state.slots import memory_key
        from sweepctl.train.config import TrainConfig

        table = json.loads(ESTIMATES.read_text())
        for r in results:
            if r["k"] == 1:
                # config_effective.json: every setting, and what the trainer derived from them
                config = TrainConfig(**{k: v for k, v in r["config"].items() if k in TrainConfig.model_fields})
                table[memory_key(config)] = {"peak_mib": round(r["peak_mib"], 1), "gpu": r["gpu"],
                                                   "source": f"bench/packing.py {time.strftime('%Y-%m-%d')}"}
        ESTIMATES.write_text(json.dumps(table, indent=2) + "\n")
        print(f"\nwrote {ESTIMATES.relative_to(ROOT)}")
    if args.keep:
        print(f"\nrun directories: {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
