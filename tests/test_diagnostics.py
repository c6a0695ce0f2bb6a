"""The mHC paper's residual-map diagnostics: on matrices whose answers are known by hand, and on
tiny HC/mHC models whose maps (static and dynamic parts) are set by hand and recomputed here in
float64, independently of the model code."""

from __future__ import annotations

import json

import pytest
import torch

from numerics import tol
from sweepctl.train.config import TrainConfig, resolve_config
from sweepctl.train.diagnostics import (
    DIAG_KEYS,
    GAIN_BWD,
    GAIN_FWD,
    applied_h_res,
    model_diagnostics,
    residual_diagnostics,
)
from sweepctl.train.model import GPT

torch.set_num_threads(1)  # tiny models on a shared 2-core machine


def test_identity_has_unit_gain_at_every_depth_and_no_error() -> None:
    d = residual_diagnostics(torch.eye(4).expand(6, 4, 4))
    assert d == {"fwd_gain_mean": [1.0] * 6, "fwd_gain_max": [1.0] * 6, "bwd_gain_mean": [1.0] * 6,
                 "bwd_gain_max": [1.0] * 6, "h_res_row_err": 0.0, "h_res_col_err": 0.0, "h_res_min_entry": 0.0,
                 "n_layers": 6,
                 GAIN_FWD: 1.0, GAIN_BWD: 1.0}
    assert tuple(d) == DIAG_KEYS
    json.dumps(d)  # goes into metrics.jsonl as is


def test_product_of_doubly_stochastic_matrices_keeps_unit_gain() -> None:
    g = torch.Generator().manual_seed(0)
    mats = []
    for _ in range(8):  # random convex mixes of permutations are doubly stochastic (Birkhoff)
        w = torch.rand(3, generator=g, dtype=torch.float64)
        w = w / w.sum()
        perms = [torch.eye(4, dtype=torch.float64)[torch.randperm(4, generator=g)] for _ in range(3)]
        mats.append(sum(wi * p for wi, p in zip(w, perms, strict=True)))
    d = residual_diagnostics(torch.stack(mats))
    bound = tol(torch.float64, 4 * 8)  # 8 products of length-4 sums
    for key in ("fwd_gain_mean", "fwd_gain_max", "bwd_gain_mean", "bwd_gain_max"):
        assert max(abs(v - 1) for v in d[key]) < bound
    assert d["h_res_row_err"] < bound and d["h_res_col_err"] < bound


def test_gain_of_the_composite_from_each_sub_layer_to_the_last() -> None:
    d = residual_diagnostics(torch.stack([2.0 * torch.eye(3), 0.5 * torch.eye(3), 3.0 * torch.eye(3)]))
    assert d["fwd_gain_max"] == [3.0, 1.5, 3.0]  # 3 * 0.5 * 2, 3 * 0.5, 3
    assert d["bwd_gain_max"] == [3.0, 1.5, 3.0]
    assert d["h_res_row_err"] == 2.0 and d["h_res_col_err"] == 2.0  # |3 - 1|


def test_gain_is_the_absolute_row_sum_not_the_sum_of_absolute_entries() -> None:
    # rows sum to (0, 1): the map cannot grow a constant signal, although its infinity norm is 2
    m = torch.tensor([[1.0, -1.0], [0.0, 1.0]])
    d = residual_diagnostics(m[None])
    assert d["fwd_gain_max"] == [1.0] and d["bwd_gain_max"] == [1.0]  # column sums (1, 0)
    assert d["h_res_row_err"] == 1.0 and d["h_res_col_err"] == 1.0 and d["h_res_min_entry"] == -1.0


def test_forward_and_backward_gain_differ_for_a_lopsided_map() -> None:
    # every stream written into stream 0: rows sum to (2, 0), columns to (1, 1)
    d = residual_diagnostics(torch.tensor([[1.0, 1.0], [0.0, 0.0]])[None])
    assert d["fwd_gain_max"] == [2.0] and d["bwd_gain_max"] == [1.0]
    assert d["h_res_row_err"] == 1.0 and d["h_res_col_err"] == 0.0


def test_composite_is_taken_in_forward_order() -> None:
    # A (everything into stream 0) then B (keep only stream 1): B @ A = 0, while A @ B (the wrong
    # order) moves stream 1 into stream 0 and has gain 1.
    a = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert residual_diagnostics(torch.stack([a, b]))["fwd_gain_max"] == [0.0, 1.0]
    assert residual_diagnostics(torch.stack([b, a]))["fwd_gain_max"] == [1.0, 2.0]


def test_per_token_maps_give_the_token_mean_and_the_worst_token() -> None:
    per_token = torch.eye(2).expand(3, 2, 5, 2, 2).clone()  # (L, B, T, n, n): 10 tokens
    per_token[:, 1, 4] = 1.5 * torch.eye(2)  # one token's path gains 1.5 per sub-layer
    d = residual_diagnostics(per_token)
    assert d["fwd_gain_max"] == pytest.approx([1.5 ** 3, 1.5 ** 2, 1.5])
    assert d["fwd_gain_mean"] == pytest.approx([(9 + 1.5 ** 3) / 10, (9 + 1.5 ** 2) / 10, (9 + 1.5) / 10])
    assert d[GAIN_FWD] == d["fwd_gain_max"][0] and d[GAIN_BWD] == d["bwd_gain_max"][0]


def test_bad_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="h_res must be"):
        residual_diagnostics(torch.eye(3))


# --------------------------------------------------------------------------- models with known maps

HAND = ["n_layer=2", "n_embd=8", "n_head=2", "block_size=6", "vocab_size=16", "hc_num_streams=3"]


def hand_model(cfg: TrainConfig) -> GPT:
    """A model whose sub-layers output 0 (zero output projections), so the residual streams are
    changed only by H_res, with non-zero static AND dynamic parts set by hand."""
    torch.manual_seed(0)
    model = GPT(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("c_proj.weight"):
                p.zero_()
        model.transformer.wte.weight.normal_(0, 1.0, generator=g)  # well above the norm's eps
        for c in model.connections():
            n = c.n
            if cfg.mhc:
                c.static_res.copy_(0.5 * torch.randn(n, n, generator=g))
                c.dyn_proj.copy_(torch.randn(c.dyn_proj.shape, generator=g))
                c.dyn_gate.fill_(0.3)
            else:
                c.static_res.copy_(torch.eye(n) + 0.4 * torch.rand(n, n, generator=g))
                c.dyn_proj.copy_(torch.randn(c.dyn_proj.shape, generator=g))
                c.dyn_gate_alpha.fill_(0.5)
                if cfg.hc_dynamic_norm == "layer":  # the norm's affine too, away from its identity init
                    c.dyn_norm_weight.copy_(1 + 0.3 * torch.randn(c.dyn_norm_weight.shape, generator=g))
                    c.dyn_norm_bias.copy_(0.2 * torch.randn(c.dyn_norm_bias.shape, generator=g))
    return model


def sinkhorn_then_balance(logits: torch.Tensor, iters: int) -> torch.Tensor:
    """Textbook Sinkhorn-Knopp in float64 (normalise rows, then columns, `iters` times), then
    each row's shortfall from 1 added evenly to its n entries, one entry at a time."""
    m = torch.exp(logits - logits.max())
    for _ in range(iters):
        m = m / m.sum(-1, keepdim=True)
        m = m / m.sum(-2, keepdim=True)
    n = m.shape[0]
    out = m.clone()
    for i in range(n):
        shortfall = 1.0 - float(m[i].sum())
        for j in range(n):
            out[i, j] = m[i, j] + shortfall / n
    return out


def hand_maps(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """(L, B, T, n, n) H_res recomputed from the parameters in float64, one token at a time."""
    cfg = model.cfg
    p64 = {k: v.detach().double() for k, v in model.named_parameters()}
    out = []
    for b in range(idx.shape[0]):
        for t in range(idx.shape[1]):
            e = p64["transformer.wte.weight"][idx[b, t]] + p64["transformer.wpe.weight"][t]  # (C,)
            x = e.expand(cfg.hc_num_streams, -1).clone()  # (n, C): the streams start as copies
            maps = []
            for i in range(len(model.connections())):
                blk, which = divmod(i, 2)
                pre = f"transformer.h.{blk}.{'res_attn' if which == 0 else 'res_mlp'}."
                n = cfg.hc_num_streams
                if cfg.mhc:
                    flat = x.reshape(-1)
                    d = flat @ p64[pre + "dyn_proj"] / torch.sqrt(flat.square().mean() + 1e-6)
                    logits = p64[pre + "static_res"] + p64[pre + "dyn_gate"][2] * d[2 * n:].reshape(n, n)
                    h = sinkhorn_then_balance(logits / cfg.sinkhorn_tau, cfg.sinkhorn_iters)
                else:
                    if cfg.hc_dynamic_norm == "layer":  # LayerNorm with its affine (HC eq. 10), per stream
                        c = x - x.mean(-1, keepdim=True)
                        normed = (c / torch.sqrt(c.square().mean(-1, keepdim=True) + 1e-6) * p64[pre + "dyn_norm_weight"]
                                  + p64[pre + "dyn_norm_bias"])
                    else:  # RMSNorm without weight, per stream
                        normed = x / torch.sqrt(x.square().mean(-1, keepdim=True) + 1e-6)
                    d = torch.tanh(normed @ p64[pre + "dyn_proj"])  # (n, n + 2)
                    # stream j's row weights how much of it goes into stream i: res[i, j] = d[j, 1 + i]
                    h = p64[pre + "static_res"] + p64[pre + "dyn_gate_alpha"] * d[:, 1:n + 1].T
                maps.append(h)
                x = h @ x  # sub-layer output is 0
            out.append(torch.stack(maps))
    return torch.stack(out).unflatten(0, tuple(idx.shape)).movedim(2, 0)  # (L, B, T, n, n)


@pytest.mark.parametrize(("preset", "extra"), [("hc", []), ("hc", ["hc_dynamic_norm='rms'"]), ("mhc", [])],
                         ids=["hc", "hc-rms", "mhc"])
def test_logged_gains_are_those_of_the_maps_the_model_applied(preset, extra) -> None:
    cfg = resolve_config(preset, [*HAND, *extra])
    model = hand_model(cfg)
    idx = torch.randint(0, 16, (2, 6), generator=torch.Generator().manual_seed(2))
    want = hand_maps(model, idx)
    got = applied_h_res(model, idx)
    assert got.shape == (4, 2, 6, 3, 3)
    # float32 maps: a projection over n*C = 24 inputs (mHC; HC per stream over C = 8), for mHC
    # then 20 Sinkhorn steps of two length-3 sums each; every state feeds the next sub-layer's map
    reduction = 24 + (2 * 3 * cfg.sinkhorn_iters if cfg.mhc else 0)
    atol = 4 * tol(torch.float32, reduction, want.abs().max().item())
    torch.testing.assert_close(got.double(), want, atol=atol, rtol=0)

    logged = model_diagnostics(model, idx)
    L = 4
    # by hand: each token's composite C_l = H_3 ... H_l, max |row sum| and max |column sum|
    fwd = torch.zeros(L, 12, dtype=torch.float64)
    bwd = torch.zeros(L, 12, dtype=torch.float64)
    tokens = want.reshape(L, 12, 3, 3)
    for tok in range(12):
        for start in range(L):
            comp = torch.eye(3, dtype=torch.float64)
            for k in range(start, L):
                comp = tokens[k, tok] @ comp
            fwd[start, tok] = max(abs(float(r)) for r in comp.sum(1))
            bwd[start, tok] = max(abs(float(c)) for c in comp.sum(0))
    scale = float(fwd.max())
    gain_tol = L * atol * 3 * scale  # the map error carried through up to L products of 3-term sums
    assert logged["n_layers"] == L
    assert logged["fwd_gain_max"] == pytest.approx(fwd.amax(1).tolist(), abs=gain_tol)
    assert logged["fwd_gain_mean"] == pytest.approx(fwd.mean(1).tolist(), abs=gain_tol)
    assert logged["bwd_gain_max"] == pytest.approx(bwd.amax(1).tolist(), abs=gain_tol)
    assert logged["bwd_gain_mean"] == pytest.approx(bwd.mean(1).tolist(), abs=gain_tol)
    assert logged["h_res_min_entry"] == pytest.approx(float(want.min()), abs=atol)
    row_err = float((want.sum(-1) - 1).abs().max())
    col_err = float((want.sum(-2) - 1).abs().max())
    if cfg.mhc:  # on the manifold: both sums within the projection's tolerance
        assert logged["h_res_row_err"] < 1e-3 and logged["h_res_col_err"] < 1e-3
    else:
        assert logged["h_res_row_err"] == pytest.approx(row_err, abs=atol * 3)
        assert logged["h_res_col_err"] == pytest.approx(col_err, abs=atol * 3)
        assert max(logged["fwd_gain_max"]) > 2.0  # the hand-set HC maps do amplify: not a vacuous check


def test_plain_residual_has_no_maps() -> None:
    model = GPT(resolve_config("base", HAND[:-1]))
    assert model_diagnostics(model, torch.zeros(1, 6, dtype=torch.long)) is None
