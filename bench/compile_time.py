"""How long does torch.compile take for a tiny model of a preset, and how does it grow with depth?

    python bench/compile_time.py mhc --layers 2 6
    python bench/compile_time.py mhc --layers 2 6 --set hc_static_only=True

For each depth: a tiny model (n_embd 32, 2 heads, block 16, vocab 64) of the preset, one eager
step first (imports and first-use costs are not compile time), then torch.compile + one forward
and backward, timed in wall seconds and in CPU seconds of this process and its children. Each
depth runs in its own process with a fresh inductor cache (a cold compile) and, unless set
otherwise, TORCHINDUCTOR_COMPILE_THREADS=1: the C++/Triton builds then run in-process and count
in the CPU time, which on a shared machine is steadier than wall time. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

TINY = ["n_embd=32", "n_head=2", "block_size=16", "vocab_size=64"]


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(preset: str, layers: int, overrides: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of compile + first forward/backward, in this process."""
    import torch

    from sweepctl.train.config import resolve_config
    from sweepctl.train.model import GPT

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT(resolve_config(preset, [f"n_layer={layers}", *TINY, *overrides]))
    idx = torch.randint(0, 64, (2, 16))
    model(idx, idx)[1].backward()
    model.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter(), cpu_seconds()
    compiled = torch.compile(model)
    compiled(idx, idx)[1].backward()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("preset")
    p.add_argument("--layers", type=int, nargs="+", default=[2, 6])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child measuring one depth
    a = p.parse_args()
    if a.one is not None:
        wall, cpu = measure(a.preset, a.one, a.overrides)
        print(f"{wall:.1f} {cpu:.1f}")
        return 0
    rows = []
    for layers in a.layers:
        cmd = [sys.executable, __file__, a.preset, "--one", str(layers)] + [f"--set={o}" for o in a.overrides]
        with tempfile.TemporaryDirectory() as cache:
            env = {"TORCHINDUCTOR_COMPILE_THREADS": "1", **os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        last = out.stdout.strip().splitlines()[-1:] if out.returncode == 0 else []
        rows.append((layers, *(last[0].split() if last else ("error", out.stderr.strip().splitlines()[-1:]))))
    label = " ".join([a.preset, *a.overrides])
    print(f"# compile + first step, tiny {label}, cold cache")
    print(f"{'layers':>6}  {'wall s':>8}  {'CPU s':>8}")
    for layers, wall, cpu in rows:
        print(f"{layers:>6}  {wall:>8}  {cpu!s:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
