"""How close the H_res a trained HC/mHC model applies is to the doubly stochastic manifold, and
what the logged composite gain says next to the gain of the maps actually applied.

    python bench/manifold.py                         # this checkout (after)
    PYTHONPATH=/path/to/other/checkout/src python bench/manifold.py  # another version (before)
    python bench/manifold.py --steps 100 --layers 2  # quicker

Trains tiny models on CPU (float32, one thread) on a synthetic token stream with structure to
learn (a random first-order Markov chain), at a high learning rate so the maps move. Every
`--every` steps it runs one fixed batch and records every sub-layer's applied H_res per token
(by wrapping the connections' `write`, which receives exactly the matrix the forward uses, so it
works on any version of the code), and prints one row per variant:

  row err / col err  max |row sum - 1| / max |column sum - 1| of the applied maps, worst over the
                     run (sub-layers, tokens and checkpoints)
  min entry          the smallest entry of any applied map over the run (a doubly stochastic map
                     has none below 0)
  logged             the full-depth forward gain the trainer logs (composite_gain_fwd) at the end
  applied            the same quantity recomputed here from the applied maps: each token's
                     composite H_L ... H_1, max |row sum|, worst token, at the end
"""

from __future__ import annotations

import argparse
import time

import torch

from sweepctl.train import diagnostics
from sweepctl.train.config import resolve_config
from sweepctl.train.model import GPT

VARIANTS = [
    ("hc", "hc", []),
    ("mhc (preset)", "mhc", []),
    ("mhc tau=0.05 (reference)", "mhc", ["sinkhorn_tau=0.05"]),
    ("mhc orthostochastic", "mhc", ["mhc_h_res_proj='orthostochastic'"]),
]


def markov_batches(vocab: int, batch: int, block: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(vocab, vocab, generator=g)
    trans = torch.softmax(logits, -1)
    while True:
        x = torch.empty(batch, block + 1, dtype=torch.long)
        x[:, 0] = torch.randint(0, vocab, (batch,), generator=g)
        for t in range(block):
            x[:, t + 1] = torch.multinomial(trans[x[:, t]], 1, generator=g).squeeze(1)
        yield x[:, :-1], x[:, 1:]


def applied_maps(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """(L, tokens, n, n) H_res each sub-layer applied to each token of idx."""
    got: list[torch.Tensor] = []
    originals = []
    for c in model.connections():
        orig = c.write

        def write(x, y, ctx, orig=orig):
            got.append(ctx[0].detach().double().expand(*x.shape[:2], *ctx[0].shape[-2:]).reshape(-1, *ctx[0].shape[-2:]))
            return orig(x, y, ctx)

        originals.append((c, orig))
        c.write = write
    try:
        model.eval()
        with torch.no_grad():
            model(idx)
    finally:
        model.train()
        for c, orig in originals:
            c.write = orig
    return torch.stack(got)


def full_depth_gain(maps: torch.Tensor) -> float:
    comp = maps[0]
    for h in maps[1:]:
        comp = h @ comp
    return float(comp.sum(-1).abs().amax())


def logged_gain(model: GPT, idx: torch.Tensor) -> float:
    if hasattr(diagnostics, "model_diagnostics"):  # this code: the applied maps on a fixed batch
        return float(diagnostics.model_diagnostics(model, idx)[diagnostics.GAIN_FWD])
    h = diagnostics.static_residual_matrices(model.connections(), model.cfg)  # older code: static part only
    return float(diagnostics.residual_diagnostics(h)[diagnostics.GAIN_FWD])


def run(preset: str, extra: list[str], args) -> dict[str, float]:
    cfg = resolve_config(preset, [f"n_layer={args.layers}", "n_embd=32", "n_head=2", f"block_size={args.block}",
                                  "vocab_size=64", f"batch_size={args.batch}", f"learning_rate={args.lr}",
                                  "warmup_iters=10", f"lr_decay_iters={args.steps}", f"min_lr={args.lr / 10}",
                                  "dtype='float32'", *extra])
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = model.configure_optimizer("cpu")
    batches = markov_batches(64, args.batch, args.block, seed=1)
    probe, _ = next(markov_batches(64, 4, args.block, seed=2))
    row_err = col_err = min_entry = 0.0
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.every == 0 or step == args.steps:
            maps = applied_maps(model, probe)
            row_err = max(row_err, float((maps.sum(-1) - 1).abs().max()))
            col_err = max(col_err, float((maps.sum(-2) - 1).abs().max()))
            min_entry = min(min_entry, float(maps.min()))
        if step == args.steps:
            break
        x, y = next(batches)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {"row_err": row_err, "col_err": col_err, "min": min_entry, "logged": logged_gain(model, probe),
            "applied": full_depth_gain(applied_maps(model, probe)), "loss": loss.item(), "s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=25)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--variants", default="", help="comma-separated substrings of the variant names to run")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"{args.layers} layers ({2 * args.layers} sub-layers), {args.steps} steps at lr {args.lr}, "
          f"probe every {args.every} steps; code: {diagnostics.__file__}")
    print(f"{'variant':<26} {'row err':>9} {'col err':>9} {'min entry':>10} {'logged':>9} {'applied':>9} "
          f"{'loss':>6} {'s':>5}")
    wanted = [w for w in args.variants.split(",") if w]
    for name, preset, extra in VARIANTS:
        if wanted and not any(w in name for w in wanted):
            continue
        r = run(preset, extra, args)
        print(f"{name:<26} {r['row_err']:9.2e} {r['col_err']:9.2e} {r['min']:10.2e} {r['logged']:9.4f} "
              f"{r['applied']:9.4f} {r['loss']:6.3f} {r['s']:5.0f}", flush=True)


if __name__ == "__main__":
    main()
