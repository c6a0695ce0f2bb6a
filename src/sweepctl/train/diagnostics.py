"""The mHC paper's stability diagnostics of the residual maps a model actually applied.

Between sub-layers the residual streams are mixed by H_res (one n x n matrix per token and
sub-layer: its static part plus the dynamic part computed from that token's state, after the
Sinkhorn / orthostochastic projection for mHC). The identity path from sub-layer l to the output
is the composite C_l = H_{L-1} ... H_{l+1} H_l (later sub-layers act on the left). Following the
mHC paper (arXiv 2512.24880, the "Amax Gain Magnitude" figure), for every l:

    forward gain  = max_i |sum_j C_l[i, j]|   (max absolute row sum: how much the state can grow)
    backward gain = max_j |sum_i C_l[i, j]|   (max absolute column sum: the same for the gradient)

each as the mean over tokens and the worst token, plus how far the applied maps are from the
doubly stochastic manifold: max |row sum - 1| and max |column sum - 1| over sub-layers and tokens,
and the smallest entry (a doubly stochastic map has none below 0).
For mHC every gain stays ~1 and both errors stay below the projection's tolerance; for HC the
gains can grow (or shrink) with depth.

    python -c "import torch; from sweepctl.train.diagnostics import residual_diagnostics; \
print(residual_diagnostics(torch.eye(4).expand(12, 4, 4)))"

Pure torch, no I/O: the trainer decides which batch is used and where the dict goes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

# Keys of the "diag" record in metrics.jsonl (the reporter reads exactly these names). Index l of
# each list is the composite from sub-layer l through the last: index 0 is the full depth.
FWD_MEAN, FWD_MAX = "fwd_gain_mean", "fwd_gain_max"
BWD_MEAN, BWD_MAX = "bwd_gain_mean", "bwd_gain_max"
ROW_ERR, COL_ERR = "h_res_row_err", "h_res_col_err"
MIN_ENTRY = "h_res_min_entry"  # smallest applied entry: < 0 means not a mixture of streams
N_LAYERS = "n_layers"
# The full-depth worst-token gains under their older names (= fwd_gain_max[0], bwd_gain_max[0]).
GAIN_FWD = "composite_gain_fwd"
GAIN_BWD = "composite_gain_bwd"
DIAG_KEYS = (FWD_MEAN, FWD_MAX, BWD_MEAN, BWD_MAX, ROW_ERR, COL_ERR, MIN_ENTRY, N_LAYERS, GAIN_FWD, GAIN_BWD)


def residual_diagnostics(h_res: torch.Tensor) -> dict[str, float | int | list[float]]:
    """The paper's gains of the composites of `h_res`, and its distance from doubly stochastic.

    h_res: (L, n, n) for token-independent maps, or (L, *batch, n, n) with one map per token,
    e.g. (L, B, T, n, n), in forward order. Each token is followed through its own maps.
    Returns the JSON-able dict of `DIAG_KEYS` (lists of L floats, index 0 = full depth).
    """
    if h_res.dim() < 3 or h_res.shape[-1] != h_res.shape[-2]:
        raise ValueError(f"h_res must be (L, [batch...,] n, n), got shape {tuple(h_res.shape)}")
    # float64: a product over ~100 sub-layers accumulates float32 rounding that would read as drift
    with torch.no_grad():
        h = h_res.detach().to(torch.float64)
        layers, n = h.shape[0], h.shape[-1]
        flat = h.reshape(layers, -1, n, n)  # (L, tokens, n, n)
        fwd, bwd = [], []
        composite = None
        for layer in reversed(flat):  # C_l = C_{l+1} @ H_l, from the last sub-layer down
            composite = layer if composite is None else composite @ layer
            fwd.append(composite.sum(-1).abs().amax(-1))  # (tokens,) per token's max |row sum|
            bwd.append(composite.sum(-2).abs().amax(-1))  # (tokens,) max |column sum|
        fwd_t, bwd_t = torch.stack(fwd[::-1]), torch.stack(bwd[::-1])  # (L, tokens), index 0 = full depth
        gains = {FWD_MEAN: fwd_t.mean(1), FWD_MAX: fwd_t.amax(1), BWD_MEAN: bwd_t.mean(1), BWD_MAX: bwd_t.amax(1)}
        out: dict[str, float | int | list[float]] = {k: _floats(v) for k, v in gains.items()}
        out[ROW_ERR] = float((flat.sum(-1) - 1).abs().max())
        out[COL_ERR] = float((flat.sum(-2) - 1).abs().max())
        out[MIN_ENTRY] = float(flat.min())
        out[N_LAYERS] = layers
        out[GAIN_FWD] = out[FWD_MAX][0]  # type: ignore[index]
        out[GAIN_BWD] = out[BWD_MAX][0]  # type: ignore[index]
        return out


def _floats(values: torch.Tensor) -> list[float]:
    # 7 significant digits: float32's precision, so a 1e-6 drift from 1 stays visible
    return [float(f"{v:.7g}") for v in values.tolist()]


@contextmanager
def capturing_h_res(connections: list[nn.Module]) -> Iterator[list[list[torch.Tensor]]]:
    """While open, every HC/mHC connection records the H_res its `write` applies (exactly the
    tensor of the forward, detached): yields one list per connection, in forward order.
    Connections without residual mixing (plain) record nothing."""
    lists: list[list[torch.Tensor]] = []
    mixing = [c for c in connections if hasattr(c, "captured")]
    for c in mixing:
        c.captured = []
        lists.append(c.captured)
    try:
        yield lists
    finally:
        for c in mixing:
            c.captured = None


@torch.no_grad()
def applied_h_res(model: nn.Module, idx: torch.Tensor) -> torch.Tensor | None:
    """(L, B, T, n, n): the H_res each sub-layer of `model` (a `GPT`) applied to each token of
    idx (B, T) in one eager eval-mode forward, or None for a plain residual. Static maps (one
    (n, n) per sub-layer) are broadcast to every token."""
    was_training = model.training
    model.eval()
    try:
        with capturing_h_res(model.connections()) as lists:
            if not lists:
                return None
            model(idx)
    finally:
        model.train(was_training)
    b, t = idx.shape
    return torch.stack([got[-1].float().expand(b, t, *got[-1].shape[-2:]) for got in lists])


def model_diagnostics(model: nn.Module, idx: torch.Tensor) -> dict[str, float | int | list[float]] | None:
    """`residual_diagnostics` of the maps `model` applies to the tokens idx (B, T); None when plain."""
    h = applied_h_res(model, idx)
    return None if h is None else residual_diagnostics(h)


__all__ = ["DIAG_KEYS", "GAIN_BWD", "GAIN_FWD", "applied_h_res", "capturing_h_res", "model_diagnostics",
           "residual_diagnostics"]
