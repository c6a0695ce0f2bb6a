"""How much does validating a sweep cost next to merely reading it?

    python bench/validate_speed.py [--rows 10000]

Writes a CSV of N rows in the reference sweep's style (config files, quoted overrides) and times
(a) a bare pass: csv.reader + ast.parse of every override value, and (b) `read_sweep`, which also
shell-splits, evaluates literals, checks every key and type and builds a TrainConfig per row.
Prints a table; the issue's bar is "a small multiple" of the bare pass.
"""

from __future__ import annotations

import argparse
import ast
import csv
import shlex
import tempfile
import time
from pathlib import Path

from sweepctl.sweep.spec import read_sweep

VARIANTS = [
    ("config/mhc.py", "mhc_h_res_proj='orthostochastic' ns_coeffs=NS_COEFFS ns_steps=len(NS_COEFFS)"),
    ("config/mhc.py", "mhc_residual_identity_mix=True mhc_residual_alpha=0.01"),
    ("config/base.py", ""),
    ("hc", "learning_rate=3e-4 wandb_log=false"),
]


def write_sweep(root: Path, rows: int) -> Path:
    (root / "config").mkdir()
    (root / "config" / "base.py").write_text("n_layer = 6\nn_embd = 288\nmax_iters = 5000\n")
    (root / "config" / "mhc.py").write_text(
        "n_layer = 6\nhc_num_streams = 4\nhc_disable = False\nmhc = True\nsinkhorn_iters = 20\n")
    path = root / "sweep.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run_id", "config", "seed", "overrides", "notes"])
        for i in range(rows):
            config, overrides = VARIANTS[i % len(VARIANTS)]
            w.writerow([f"run-{i:05d}", config, 1337 + i, overrides, ""])
    return path


def bare_pass(path: Path) -> int:
    n = 0
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for word in shlex.split(row["overrides"]):
                ast.parse(word.split("=", 1)[1], mode="eval")
            n += 1
    return n


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_sweep(Path(tmp), args.rows)
        bare = best_of(lambda: bare_pass(path))
        full = best_of(lambda: read_sweep(path))
    print(f"{'pass':<34}{'rows':>8}{'seconds':>10}{'us/row':>10}{'ratio':>8}")
    print(f"{'csv + shlex + ast.parse (bare)':<34}{args.rows:>8}{bare:>10.3f}{bare / args.rows * 1e6:>10.1f}{1:>8.1f}")
    print(f"{'read_sweep (full validation)':<34}{args.rows:>8}{full:>10.3f}{full / args.rows * 1e6:>10.1f}"
          f"{full / bare:>8.1f}")


if __name__ == "__main__":
    main()
