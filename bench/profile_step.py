"""Where one training step's time goes: a torch.profiler summary of one (compiled) preset step.

    python bench/profile_step.py --preset mhc --compile               # on the GPU: top kernels by CUDA time
    python bench/profile_step.py --preset mhc --device cpu --tiny --no-compile --steps 1   # a check here

Builds the preset as `sweepctl.train.bench` does (same config, bf16 autocast on CUDA, fused AdamW),
runs the compile and warm-up steps outside the profile, then profiles `--steps` whole optimizer
steps. It prints the top operators/kernels by self time on the device (CUDA) or the CPU, and the
number of device events (kernels, copies, memsets) per step on CUDA, or of CPU operator calls per
step on the CPU — the two figures that explain a throughput below target (a step of thousands of
small kernels is bound by launches, not by the GPU). `--json FILE` writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sweepctl.train.bench import bench_config
from sweepctl.train.model import GPT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mhc")
    p.add_argument("--device", default="cuda")
    p.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--tiny", action="store_true", help="the bench's tiny sizes (for a CPU check)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after the first, before profiling")
    p.add_argument("--steps", type=int, default=2, help="profiled optimizer steps")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", default=None, metavar="FILE")
    return p.parse_args(argv)


def device_events(prof: profile) -> list[Any]:
    """The profile's device-side events (kernels, memcpy, memset): what the GPU actually ran."""
    return [e for e in prof.events() if e.device_type == DeviceType.CUDA]


def summarize(prof: profile, *, on_cuda: bool, steps: int, top: int) -> dict[str, Any]:
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    if on_cuda:
        events = device_events(prof)
        for e in events:
            totals[e.name] += e.time_range.elapsed_us()
            counts[e.name] += 1
        unit = "device events"
    else:
        # On the CPU there are no kernels: count the operator calls (aten::*) that ran, by self CPU time.
        events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
        for e in events:
            totals[e.key] += e.self_cpu_time_total
            counts[e.key] += e.count
        unit = "CPU operator calls"
    total_us = sum(totals.values())
    ranked = sorted(totals, key=totals.__getitem__, reverse=True)[:top]
    return {
        "unit": unit,
        "per_step": sum(counts.values()) / steps,
        "distinct": len(totals),
        "time_per_step_ms": total_us / steps / 1e3,
        "top": [{"name": n, "ms_per_step": totals[n] / steps / 1e3, "calls_per_step": counts[n] / steps,
                 "share": totals[n] / total_us if total_us else 0.0} for n in ranked],
    }


def format_summary(s: dict[str, Any], head: str) -> str:
    lines = [head, f"{s['unit']} per step: {s['per_step']:.0f} ({s['distinct']} distinct); "
                   f"their time per step: {s['time_per_step_ms']:.2f} ms",
             f"{'ms/step':>9} {'share':>6} {'calls':>6}  name"]
    for r in s["top"]:
        name = r["name"] if len(r["name"]) <= 100 else r["name"][:97] + "..."
        lines.append(f"{r['ms_per_step']:9.3f} {r['share']:6.1%} {r['calls_per_step']:6.0f}  {name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    device = torch.device(a.device)
    on_cuda = device.type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        print(f"error: --device {a.device} but torch {torch.__version__} sees no CUDA device; "
              "run it on the GPU machine, or pass --device cpu --tiny --no-compile", file=sys.stderr)
        return 2
    cfg = bench_config(a.preset, tiny=a.tiny, batch=a.batch, overrides=a.overrides)
    dtype = cfg.dtype if on_cuda else "float32"  # as the trainer: autocast only on CUDA
    autocast = torch.autocast(device.type, dtype=getattr(torch, dtype)) if dtype != "float32" else nullcontext()
    if on_cuda:
        torch.set_float32_matmul_precision("high")
    torch.manual_seed(cfg.seed)
    raw = GPT(cfg).to(device)
    opt = raw.configure_optimizer(device.type)
    model = torch.compile(raw) if a.compile else raw
    tokens = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.block_size + 1), device=device)

    def step() -> None:
        with autocast:
            _, loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    step()
    sync()
    first_s = time.perf_counter() - t0
    for _ in range(a.warmup):
        step()
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(a.steps):
            step()
        sync()
    s = summarize(prof, on_cuda=on_cuda, steps=a.steps, top=a.top)
    s.update(preset=a.preset, device=str(device), compiled=bool(a.compile), dtype=dtype, steps=a.steps,
             first_step_s=first_s, n_layer=cfg.n_layer, n_embd=cfg.n_embd, batch_size=cfg.batch_size,
             block_size=cfg.block_size, torch=torch.__version__)
    head = (f"profile: {a.preset} ({cfg.n_layer} x {cfg.n_embd}, batch {cfg.batch_size} x {cfg.block_size}), "
            f"{'compiled' if a.compile else 'eager'}, {dtype}, {device}, {a.steps} step(s) after "
            f"{a.warmup} warm-up; {'compile + ' if a.compile else ''}first step {first_s:.1f} s")
    print(format_summary(s, head))
    if a.json:
        Path(a.json).write_text(json.dumps(s, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
