"""Trainer throughput per preset: steady-state optimizer steps on synthetic tokens.

    python -m sweepctl.train.bench --presets base,hc,mhc,mhc_48l --compile --device cuda
    python -m sweepctl.train.bench --presets base,hc,mhc --no-compile --iters 5      # CPU: tiny sizes
    python -m sweepctl.train.bench --presets mhc --set hc_static_only=True --json > mhc.json
    python -m sweepctl.train.bench --show base.json mhc.json     # tables of saved runs, merged

Each preset runs the trainer's own model, optimizer (fused AdamW on CUDA), autocast dtype and
gradient clipping on random token ids already on the device, so the figure is the model's speed,
not the data pipeline's. One step = `--accum` micro-batches of `--batch` x block_size tokens, the
backward passes, the clip and the optimizer update.

What is timed, and why that way:
  * compile+1st: from torch.compile (or model construction without --compile) to the end of the
    first optimizer step — what a run waits before it trains;
  * then `--warmup` more steps (excluded: autotuning, allocator growth, lazy recompiles), then
    `--iters` steps between two torch.cuda.synchronize() calls. Without the synchronisation the
    host would time kernel *launches*, which overstates throughput (the issue saw up to 2x);
  * peak mem: torch.cuda.max_memory_allocated over the timed steps (CUDA only);
  * cpu_ms_per_step (JSON only): host CPU time per step. On a CPU shared with other work it is
    the steadier figure (wall time includes waiting for a core); on CUDA it is launch overhead;
  * grad err (compiled runs): the compiled model's gradients on one batch against an eager
    copy's, same autocast (`check_against_eager`) — the GPU run checks numbers as well as speed;
  * MFU: (6 N + 12 L H Q T) FLOPs per token (nanoGPT's estimate: N non-embedding parameters, L
    layers, H heads of size Q, T = block_size) x tok/s over the GPU's dense bf16 peak from
    `PEAK_BF16_FLOPS` (or --peak-tflops). n/a on CPU. HC/mHC stream mixing is not in the count: it
    is memory traffic, which is exactly the overhead the "vs base" column shows.

On CPU (or with --tiny) every preset shrinks to a tiny model (TINY_OVERRIDES; depth n_layer / 6,
at least 2) so the whole table takes seconds and CI can run it; the numbers then say how the
variants compare on this machine, not what a GPU does. The last line is the table, or with
--json a JSON document on stdout (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch

from sweepctl.train.config import PRESETS, ConfigError, TrainConfig, resolve_config
from sweepctl.train.model import GPT

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' spec sheets, matched in order
# against torch.cuda.get_device_name. The issue measured ~790e12 achievable on an H200 with a
# large matmul, so MFU against the spec tops out near 0.8.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("GH200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)
# A tiny model of each preset for CPU runs: same residual variant and knobs, small width and
# context, depth scaled down by 6 (base: 2 layers, *_48l: 8).
TINY_OVERRIDES = ["n_embd=48", "n_head=2", "block_size=64", "vocab_size=512"]
TINY_BATCH = 4
DEFAULT_PRESETS = "base,hc,mhc,mhc_48l"
# Issue 8's targets (one H200, bf16, preset sizes, steady state): tok/s per preset, and compile +
# first step for every preset. The table's `target` column holds each row against them, so a GPU
# run judges itself; rows at other sizes or with --set overrides are not what the targets name.
TARGET_TOK_S = {"base": 3.0e6, "hc": 2.4e6, "mhc": 2.4e6, "mhc_48l": 0.36e6}
TARGET_COMPILE_S = 60.0


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak FLOP/s of a GPU by its name, None when not in the table."""
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def flops_per_token(model: GPT) -> float:
    """6 N + 12 L H Q T: the matmul FLOPs of one token's forward and backward (nanoGPT/PaLM)."""
    cfg = model.cfg
    return 6 * model.num_params() + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * cfg.block_size


def bench_config(preset: str, *, tiny: bool, batch: int | None, overrides: list[str]) -> TrainConfig:
    """The preset as the trainer would resolve it, shrunk when tiny, with the user's overrides last."""
    words: list[str] = []
    if tiny:
        depth = max(2, PRESETS[preset]["n_layer"] // 6)
        words += [*TINY_OVERRIDES, f"n_layer={depth}", f"batch_size={TINY_BATCH}"]
    if batch is not None:
        words.append(f"batch_size={batch}")
    return resolve_config(preset, [*words, *overrides])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_preset(preset: str, cfg: TrainConfig, device: torch.device, *, compile_model: bool, compile_mode: str | None,
               iters: int, warmup: int, accum: int, peak: float | None) -> dict[str, Any]:
    """Build, compile, warm up and time one preset; a dict of the figures (see the module doc)."""
    dtype = cfg.dtype if device.type == "cuda" else "float32"  # as the trainer: autocast only on CUDA
    autocast = torch.autocast(device.type, dtype=getattr(torch, dtype)) if dtype != "float32" else nullcontext()
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    raw = GPT(cfg).to(device)
    opt = raw.configure_optimizer(device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "float16")
    model = torch.compile(raw, mode=compile_mode) if compile_model else raw
    gen = torch.Generator(device="cpu").manual_seed(0)
    batches = [torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.block_size + 1), generator=gen).to(device)
               for _ in range(4)]  # a few distinct batches, cycled: no host work inside the timed loop

    def step(k: int) -> None:
        for micro in range(accum):
            tokens = batches[(k * accum + micro) % len(batches)]
            with autocast:
                _, loss = model(tokens[:, :-1], tokens[:, 1:])
            scaler.scale(loss / accum).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    step(0)
    synchronize(device)
    first = time.perf_counter() - t0
    check = check_against_eager(raw, model, batches[0], autocast) if compile_model else {}
    for k in range(warmup):
        step(1 + k)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t1, c1 = time.perf_counter(), time.process_time()
    for k in range(iters):
        step(1 + warmup + k)
    synchronize(device)
    dt, cpu_dt = time.perf_counter() - t1, time.process_time() - c1
    tokens_per_step = accum * cfg.batch_size * cfg.block_size
    tok_s = tokens_per_step * iters / dt
    fpt = flops_per_token(raw)
    return {
        "preset": preset, "variant": cfg.variant, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd,
        "n_head": cfg.n_head, "streams": 0 if cfg.hc_disable else cfg.hc_num_streams,
        "static_only": cfg.hc_static_only, "batch_size": cfg.batch_size, "block_size": cfg.block_size,
        "accum": accum, "dtype": dtype, "params": raw.num_params(), "flops_per_token": fpt,
        "tok_per_s": tok_s, "ms_per_step": 1000 * dt / iters, "cpu_ms_per_step": 1000 * cpu_dt / iters,
        "compile_first_step_s": first,
        "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "mfu": fpt * tok_s / peak if peak else None,
        "grad_err": check.get("grad_err"), "grad_err_max": check.get("grad_err_max"),
        "loss_diff": check.get("loss_diff"),
        "error": None,
    }


def check_against_eager(raw: GPT, compiled: torch.nn.Module, tokens: torch.Tensor, autocast) -> dict[str, float]:
    """The compiled model's loss and gradients on one batch against an eager copy's, under the
    same autocast: a GPU run checks the compiled path's numbers, not only its speed.

    grad_err: |g - g_eager| / |g_eager| over all parameters at once (bf16 rounding: ~1e-2);
    grad_err_max: the worst single tensor, each relative to its norm floored at 1e-3 of the
    largest (tiny gate gradients hold mostly rounding: up to ~0.2 in bf16; a wrong formula is
    O(1) or more); loss_diff: absolute.
    """
    eager = copy.deepcopy(raw)  # the weights after step 0; tied weights stay tied
    out = []
    for model, owner in ((compiled, raw), (eager, eager)):
        owner.zero_grad(set_to_none=True)
        with autocast:
            _, loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        out.append((float(loss.detach()), [p.grad.detach().double() if p.grad is not None else torch.zeros_like(p, dtype=torch.float64)
                                  for p in owner.parameters()]))
    raw.zero_grad(set_to_none=True)
    (loss_c, gc), (loss_e, ge) = out
    diff = torch.stack([(a - b).norm() for a, b in zip(gc, ge, strict=True)])
    norms = torch.stack([b.norm() for b in ge])
    floor = 1e-3 * float(norms.max())
    return {"grad_err": float(diff.norm() / norms.norm()),
            "grad_err_max": float((diff / norms.clamp(min=floor)).max()),
            "loss_diff": abs(loss_c - loss_e)}


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """vs_base: each preset's tok/s over base's (None without a base row that ran)."""
    base = next((r["tok_per_s"] for r in rows if r["preset"] == "base" and r["error"] is None), None)
    for r in rows:
        r["vs_base"] = r["tok_per_s"] / base if base and r["error"] is None else None


def target_verdict(row: dict[str, Any], meta: dict[str, Any]) -> str:
    """`ok`, what was missed (`< 2.4M`, `compile 74 s`), or `-` where no target applies."""
    meta = row.get("meta", meta)  # merged by --show: the row's own run
    want = TARGET_TOK_S.get(row["preset"].split()[0])
    if want is None or meta["tiny"] or meta["overrides"] or meta.get("batch") or meta.get("accum", 1) != 1:
        return "-"
    if row["error"] is not None:
        return "error"
    missed = [] if row["tok_per_s"] >= want else [f"< {want / 1e6:g}M"]
    compile_s = row["compile_first_step_s"]
    if meta["compile"] and compile_s is not None and compile_s > TARGET_COMPILE_S:
        missed.append(f"compile {compile_s:.0f} s")
    return ", ".join(missed) or "ok"


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def format_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The human table; errors on their own lines under it."""
    head = ["preset", "L", "C", "B", "tok/s", "ms/step", "compile+1st s", "peak MB", "MFU", "vs base", "grad err",
            "target"]
    body = []
    for r in rows:
        if r["error"] is not None:
            body.append([r["preset"], "-", "-", "-", "error", "", "", "", "", "", "", target_verdict(r, meta)])
            continue
        body.append([r["preset"], str(r["n_layer"]), str(r["n_embd"]), str(r["batch_size"]),
                     f"{r['tok_per_s']:,.0f}", _fmt(r["ms_per_step"], ".1f"), _fmt(r["compile_first_step_s"], ".1f"),
                     _fmt(r["peak_mem_mb"], ",.0f"), _fmt(r["mfu"], ".1%"), _fmt(r["vs_base"], ".2f"),
                     _fmt(r.get("grad_err"), ".1e"), target_verdict(r, meta)])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = [f"# {meta['device_name']} | torch {meta['torch']} | {'compiled' if meta['compile'] else 'eager'}"
             f"{' (' + meta['compile_mode'] + ')' if meta['compile_mode'] else ''} | {meta['iters']} timed steps "
             f"after {meta['warmup']} warm-up | peak {_fmt(meta['peak_flops'], '.3g')} FLOP/s"
             f"{' | tiny sizes' if meta['tiny'] else ''}"]
    lines.append("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True))))
    for b in body:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths, strict=True))))
    for r in rows:
        if r["error"] is not None:
            lines.append(f"{r['preset']}: {r['error']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sweepctl.train.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default=DEFAULT_PRESETS, help=f"comma-separated presets (default {DEFAULT_PRESETS})")
    p.add_argument("--iters", type=int, default=None, help="timed optimizer steps (default 20 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps after the first (default 3 CUDA, 1 CPU)")
    p.add_argument("--batch", type=int, default=None, help="sequences per micro-batch (default: the preset's)")
    p.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: on with CUDA, off on CPU)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available)")
    p.add_argument("--tiny", action=argparse.BooleanOptionalAction, default=None,
                   help="tiny models (default: on when not on CUDA)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a TrainConfig override for every preset, e.g. --set hc_static_only=True")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's peak for MFU, if not in the table")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--show", nargs="+", metavar="FILE", default=None,
                   help="run nothing: print the tables of earlier --json outputs (merged by compile setting)")
    return p.parse_args(argv)


def show(paths: list[str]) -> int:
    """One table per device and compile setting from saved --json documents: rows of several runs
    (one preset per run, as bench/gpu.sh does) are merged and their ratios to base recomputed;
    rows of a run with --set overrides carry them in their preset column."""
    groups: dict[tuple, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"{path}: not a bench JSON document ({e})", file=sys.stderr)
            continue
        meta = doc["meta"]
        key = (meta["device_name"], meta["compile"], meta["compile_mode"], meta["tiny"])
        # a run with --set or another Sinkhorn path (SWEEPCTL_SINKHORN_*): its rows say so
        label = " ".join([*meta["overrides"], *([f"sinkhorn={meta['sinkhorn']}"] if meta.get("sinkhorn", "op") != "op"
                                                and meta["compile"] else [])])
        rows = [{**r, "preset": f"{r['preset']} {label}" if label else r["preset"], "meta": meta} for r in doc["results"]]
        groups.setdefault(key, (meta, []))[1].extend(rows)
    for meta, rows in groups.values():
        add_ratios(rows)
        print(format_table(rows, meta))
    return 0 if groups else 1


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.show:
        return show(a.show)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available here", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    cuda = device.type == "cuda"
    tiny = a.tiny if a.tiny is not None else not cuda
    compile_model = a.compile if a.compile is not None else cuda
    iters = a.iters if a.iters is not None else (20 if cuda else 3)
    warmup = a.warmup if a.warmup is not None else (3 if cuda else 1)
    presets = [p.strip() for p in a.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown or iters < 1 or warmup < 0 or a.accum < 1:
        why = f"unknown preset(s) {', '.join(unknown)} (known: {', '.join(PRESETS)})" if unknown else \
            "--iters and --accum must be >= 1, --warmup >= 0"
        print(f"error: {why}", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    peak = a.peak_tflops * 1e12 if a.peak_tflops else (peak_flops(name) if cuda else None)
    from sweepctl.train.hyper import SinkhornOp, SinkhornTriton

    sinkhorn = "triton" if SinkhornTriton.enabled else "op" if SinkhornOp.available else "inline"  # under compile
    meta = {"device": str(device), "device_name": name, "torch": torch.__version__, "compile": compile_model,
            "sinkhorn": sinkhorn,
            "compile_mode": a.compile_mode, "iters": iters, "warmup": warmup, "accum": a.accum, "batch": a.batch,
            "tiny": tiny,
            "threads": torch.get_num_threads(), "peak_flops": peak, "overrides": a.overrides}
    rows = []
    for preset in presets:
        try:
            cfg = bench_config(preset, tiny=tiny, batch=a.batch, overrides=a.overrides)
        except ConfigError as e:
            print(f"error: {preset}: {e}", file=sys.stderr)
            return 2
        print(f"{preset}: {cfg.n_layer} layers x {cfg.n_embd}, batch {cfg.batch_size} x {cfg.block_size}, "
              f"{'compiling' if compile_model else 'eager'}...", file=sys.stderr, flush=True)
        try:
            row = run_preset(preset, cfg, device, compile_model=compile_model, compile_mode=a.compile_mode,
                             iters=iters, warmup=warmup, accum=a.accum, peak=peak)
        except Exception as e:  # one preset failing (OOM, a compiler error) still leaves the others' figures
            row = {"preset": preset, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        rows.append(row)
        if compile_model:
            torch._dynamo.reset()  # each preset compiles from a clean slate (and under the recompile limit)
        if cuda:
            torch.cuda.empty_cache()
        print(f"{preset}: " + (row["error"] or f"{row['tok_per_s']:,.0f} tok/s"), file=sys.stderr, flush=True)
    add_ratios(rows)
    if a.json:
        print(json.dumps({"meta": meta, "results": rows}, indent=1))
    else:
        print(format_table(rows, meta))
    return 0 if all(r["error"] is None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
