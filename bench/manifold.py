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

    python bench/manifold.py --projections          # which Sinkhorn finish reaches the manifold

trains the two Sinkhorn mHC variants the same way and, at every probe, projects the very H_res
logits the model produced (static + dynamic, per token) with each candidate: 20, 50 and 100
plain Sinkhorn steps, Sinkhorn iterated until max |row sum - 1| <= 1e-4 (capped at --cap steps;
"steps" is the most any probe needed), 20 steps with each row's error spread evenly
(p + (1 - r) 1^T / n), and 20 steps with this code's balance (`hyper.balance_rows`). One row per
candidate: the worst row err, col err and min entry over the run.
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


def tiny_model(preset: str, extra: list[str], args):
    """(cfg, model, optimizer, training batches, a fixed probe batch) of a tiny `preset` on CPU."""
    cfg = resolve_config(preset, [f"n_layer={args.layers}", "n_embd=32", "n_head=2", f"block_size={args.block}",
                                  "vocab_size=64", f"batch_size={args.batch}", f"learning_rate={args.lr}",
                                  "warmup_iters=10", f"lr_decay_iters={args.steps}", f"min_lr={args.lr / 10}",
                                  "dtype='float32'", *extra])
    torch.manual_seed(0)
    model = GPT(cfg)
    probe, _ = next(markov_batches(64, 4, args.block, seed=2))
    return cfg, model, model.configure_optimizer("cpu"), markov_batches(64, args.batch, args.block, seed=1), probe


def train_step(model, opt, batches) -> torch.Tensor:
    """One optimiser step on the next batch (grad norm clipped at 1); its loss."""
    x, y = next(batches)
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def manifold_errors(maps: torch.Tensor) -> tuple[float, float, float]:
    """(max |row sum - 1|, max |column sum - 1|, smallest entry) of (..., n, n) maps."""
    return (float((maps.sum(-1) - 1).abs().max()), float((maps.sum(-2) - 1).abs().max()), float(maps.min()))


def run(preset: str, extra: list[str], args) -> dict[str, float]:
    _, model, opt, batches, probe = tiny_model(preset, extra, args)
    row_err = col_err = 0.0
    min_entry = float("inf")
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.every == 0 or step == args.steps:
            maps = applied_maps(model, probe)
            row, col, low = manifold_errors(maps)
            row_err, col_err, min_entry = max(row_err, row), max(col_err, col), min(min_entry, low)
        if step == args.steps:
            break
        loss = train_step(model, opt, batches)
    return {"row_err": row_err, "col_err": col_err, "min": min_entry, "logged": logged_gain(model, probe),
            "applied": full_depth_gain(applied_maps(model, probe)), "loss": loss.item(), "s": time.perf_counter() - t0}


def sinkhorn_to_tolerance(logits: torch.Tensor, tau: float, tol: float, cap: int) -> tuple[torch.Tensor, int]:
    """Sinkhorn steps (as hyper.sinkhorn_eager) until every row sum is within tol of 1, or cap."""
    z = logits.float() / tau
    u, v = torch.zeros_like(z[..., :, 0]), torch.zeros_like(z[..., 0, :])
    steps = 0
    while steps < cap:
        u = -torch.logsumexp(z + v.unsqueeze(-2), dim=-1)
        v = -torch.logsumexp(z + u.unsqueeze(-1), dim=-2)
        p = torch.exp(z + u.unsqueeze(-1) + v.unsqueeze(-2))
        steps += 1
        if float((p.sum(-1) - 1).abs().max()) <= tol:
            break
    return p, steps


def projection_candidates(logits: torch.Tensor, tau: float, cap: int) -> dict[str, tuple[torch.Tensor, int]]:
    from sweepctl.train import hyper

    def spread(m: torch.Tensor) -> torch.Tensor:
        return m + (1 - m.sum(-1, keepdim=True)) / m.shape[-1]

    twenty = hyper.sinkhorn_eager(logits, 20, tau)
    return {
        "20 steps": (twenty, 20),
        "50 steps": (hyper.sinkhorn_eager(logits, 50, tau), 50),
        "100 steps": (hyper.sinkhorn_eager(logits, 100, tau), 100),
        "to 1e-4": sinkhorn_to_tolerance(logits, tau, 1e-4, cap),
        "20 + spread evenly": (spread(twenty), 20),
        "20 + balance (this code)": (hyper.balance_rows(twenty), 20),
    }


def compare_projections(args) -> None:
    """The --projections table (see the module docstring)."""
    from sweepctl.train import hyper

    for name, extra in [("mhc (preset, tau 1)", []), ("mhc tau=0.05 (reference)", ["sinkhorn_tau=0.05"])]:
        cfg, model, opt, batches, probe = tiny_model("mhc", extra, args)
        seen: list[torch.Tensor] = []
        original = hyper.project_h_res

        def recording(logits, c, seen=seen, original=original):
            seen.append(logits.detach().reshape(-1, *logits.shape[-2:]))
            return original(logits, c)

        worst: dict[str, list[float]] = {}
        for step in range(args.steps + 1):
            if step % args.every == 0 or step == args.steps:
                seen.clear()
                hyper.project_h_res = recording
                try:
                    model.eval()
                    with torch.no_grad():
                        model(probe)
                finally:
                    hyper.project_h_res = original
                    model.train()
                for cand, (p, steps) in projection_candidates(torch.cat(seen), cfg.sinkhorn_tau, args.cap).items():
                    row, col, low = manifold_errors(p)
                    w = worst.setdefault(cand, [0.0, 0.0, float("inf"), 0])
                    worst[cand] = [max(w[0], row), max(w[1], col), min(w[2], low), max(w[3], steps)]
            if step == args.steps:
                break
            train_step(model, opt, batches)
        print(f"\n{name}")
        print(f"{'projection':<26} {'row err':>9} {'col err':>9} {'min entry':>10} {'steps':>6}")
        for cand, (row, col, low, steps) in worst.items():
            print(f"{cand:<26} {row:9.2e} {col:9.2e} {low:10.2e} {steps:6d}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=25)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--variants", default="", help="comma-separated substrings of the variant names to run")
    p.add_argument("--projections", action="store_true", help="compare Sinkhorn finishes on the trained logits")
    p.add_argument("--cap", type=int, default=5000, help="most Sinkhorn steps of the iterate-to-tolerance candidate")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.projections:
        print(f"{args.layers} layers, {args.steps} steps at lr {args.lr}, probe every {args.every} steps; "
              f"worst over the run")
        compare_projections(args)
        return
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
