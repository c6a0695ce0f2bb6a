"""Does the eval of identical weights give the same loss however a step's tokens are split?

Scores one tiny model at iteration 0 (same seed, so the same weights) at batch 8, at batch 4 x
gradient accumulation 2, and on 2 DDP ranks (gloo, CPU) at batch 4 x accumulation 2, and prints
the val and train losses and their difference to batch 8; then the 48-layer presets' tokens per
iteration and iterations. `--src` picks the code: this checkout's, or another one's `src` folder
(e.g. the main branch's), to measure before and after.

    python bench/val_consistency.py                       # this checkout
    python bench/val_consistency.py --src /work/main/src  # another checkout's trainer
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1] / "src"
TINY = ["device=cpu", "dtype='float32'", "n_layer=2", "n_embd=32", "n_head=2", "block_size=32", "vocab_size=256",
        "eval_iters=4", "max_iters=1", "eval_interval=1", "log_interval=1", "warmup_iters=0", "lr_decay_iters=10",
        "seed=3"]
SPLITS = {"batch 8": (1, ["batch_size=8", "gradient_accumulation_steps=1"]),
          "batch 4 x accum 2": (1, ["batch_size=4", "gradient_accumulation_steps=2"]),
          "2 ranks, batch 4 x accum 2": (2, ["batch_size=4", "gradient_accumulation_steps=2"])}
PRESETS_48L = ("base_48l", "hc_48l", "mhc_48l", "vres_48l", "vres_mhc_48l", "cvres_mhc_48l")


def write_data(folder: Path, src: Path) -> None:
    """A learnable stream (period 64, 10% noise), written by the checked code's own write_shard."""
    rng = np.random.default_rng(0)
    code = ("import sys, numpy as np; from sweepctl.train.data import write_shard; "
            "t = np.load(sys.argv[1]); write_shard(sys.argv[2], t)")
    for name, n in (("fineweb_train_000001.bin", 40000), ("fineweb_val_000000.bin", 20000)):
        tokens = np.where(rng.random(n) < 0.1, rng.integers(0, 256, n), (np.arange(n) % 64) * 7 % 256)
        np.save(folder / "t.npy", tokens)
        subprocess.run([sys.executable, "-c", code, str(folder / "t.npy"), str(folder / name)], check=True,
                       env=env_for(src))


def env_for(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}


def eval_at_zero(src: Path, data: Path, out: Path, nproc: int, split: list[str]) -> dict:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [sys.executable])
    argv = [*launcher, "-m", "sweepctl.train", "base", f"out_dir={out}", f"data_dir={data}", *TINY, *split]
    done = subprocess.run(argv, env=env_for(src), capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in rows if r["event"] == "eval" and r["iter"] == 0)


def presets(src: Path) -> list[tuple[str, int, int, int]]:
    code = ("import json; from sweepctl.train.config import resolve_config as r; "
            f"print(json.dumps([(n, r(n).batch_size, r(n).tokens_per_iter, r(n).max_iters) for n in {PRESETS_48L!r}]))")
    done = subprocess.run([sys.executable, "-c", code], env=env_for(src), capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=HERE, help="the src folder whose sweepctl to measure")
    src = ap.parse_args().src.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "data").mkdir()
        write_data(tmp_path / "data", src)
        got = {name: eval_at_zero(src, tmp_path / "data", tmp_path / f"run{i}", nproc, split)
               for i, (name, (nproc, split)) in enumerate(SPLITS.items())}
    ref = got["batch 8"]
    print(f"code: {src}\n")
    print(f"{'8 sequences per step as':<30} {'val loss':>10} {'val - batch 8':>14} "
          f"{'train loss':>11} {'train - batch 8':>16}")
    for name, row in got.items():
        print(f"{name:<30} {row['val']:>10.6f} {row['val'] - ref['val']:>14.2e} {row['train']:>11.6f} "
              f"{row['train'] - ref['train']:>16.2e}")
    print(f"\n{'48-layer preset':<16} {'batch':>6} {'tokens/iter':>12} {'iters':>7} {'tokens':>14}")
    for name, batch, tpi, iters in presets(src):
        print(f"{name:<16} {batch:>6} {tpi:>12,} {iters:>7} {tpi * iters:>14,}")


if __name__ == "__main__":
    main()
