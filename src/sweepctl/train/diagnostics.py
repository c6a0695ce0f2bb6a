"""Residual-mixing diagnostics for HC/mHC, logged at each eval into metrics.jsonl.

The mHC paper's stability evidence is the Amax gain of the *composite* residual map: the residual
stream after L sub-layers is x_L = H_L ... H_2 H_1 x_0 (plus the sub-layer outputs), so the product
P = H_L ... H_1 says how much the identity path amplifies the signal forward (max absolute row sum
of P, the infinity norm) and the gradient backward (max absolute column sum, the 1-norm). For
doubly stochastic H (mHC) both stay 1; for unconstrained HC they can grow or shrink with depth.

    python -c "import torch; from sweepctl.train.diagnostics import residual_diagnostics; \
print(residual_diagnostics(torch.eye(4).expand(12, 4, 4)))"

Pure torch, no I/O: the trainer decides where the dict goes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

# Keys of the dict `residual_diagnostics` returns; the reporter reads these names.
GAIN_FWD = "composite_gain_fwd"
GAIN_BWD = "composite_gain_bwd"
PER_LAYER_KEYS = ("h_res_row_sum_min", "h_res_row_sum_max", "h_res_col_sum_min", "h_res_col_sum_max",
                  "h_res_min_entry")


def residual_diagnostics(h_res: torch.Tensor) -> dict[str, float | int | list[float]]:
    """Stats of the residual mixing matrices of all sub-layers, in forward order.

    h_res: (L, n, n), or (L, *batch, n, n) for input-dependent (dynamic) maps, e.g. one matrix per
    token (L, B, T, n, n). With batch dims every statistic is the worst case over the batch: the
    per-layer ranges span all tokens, and the composite gains are the maximum over tokens of each
    token's own product (a token's residual path is multiplied through its own maps).

    Returns a flat JSON-able dict: the two composite gains (floats), the number of layers, and per
    layer (lists of L floats, forward order) the row-sum and column-sum ranges and the minimum
    entry (negative entries mean the map is not a mixture of streams).
    """
    if h_res.dim() < 3 or h_res.shape[-1] != h_res.shape[-2]:
        raise ValueError(f"h_res must be (L, [batch...,] n, n), got shape {tuple(h_res.shape)}")
    # float64: a product over ~100 sub-layers accumulates float32 rounding that would read as drift
    with torch.no_grad():
        h = h_res.detach().to(torch.float64)
        layers = h.shape[0]
        flat = h.reshape(layers, -1, *h.shape[-2:])  # (L, tokens, n, n)
        rows = flat.sum(-1)  # (L, tokens, n)
        cols = flat.sum(-2)  # (L, tokens, n)
        composite = h[0]
        for layer in h[1:]:
            composite = layer @ composite  # later layers act on the left: x_L = H_L ... H_1 x_0
        gain_fwd = composite.abs().sum(-1).amax()  # max absolute row sum (infinity norm)
        gain_bwd = composite.abs().sum(-2).amax()  # max absolute column sum (1-norm)
        return {
            GAIN_FWD: float(gain_fwd),
            GAIN_BWD: float(gain_bwd),
            "h_res_layers": layers,
            "h_res_row_sum_min": _per_layer(rows.flatten(1).amin(1)),
            "h_res_row_sum_max": _per_layer(rows.flatten(1).amax(1)),
            "h_res_col_sum_min": _per_layer(cols.flatten(1).amin(1)),
            "h_res_col_sum_max": _per_layer(cols.flatten(1).amax(1)),
            "h_res_min_entry": _per_layer(flat.flatten(1).amin(1)),
        }


def _per_layer(values: torch.Tensor) -> list[float]:
    # 6 significant digits: enough to see drift from 1, small enough for a line per eval
    return [float(f"{v:.6g}") for v in values.tolist()]


def static_residual_matrices(connections: Sequence[nn.Module], cfg) -> torch.Tensor | None:
    """The static residual mixing matrices (L, n, n) of `sweepctl.train.hyper` connections, in
    forward order, or None for a plain residual (nothing to diagnose).

    HC mixes with its raw static matrix; mHC with the projection of its static logits (the
    `static_h_res` the model itself uses). Dynamic (per-token) parts are not included: pass the
    per-token maps to `residual_diagnostics` directly when they are wanted.
    """
    from sweepctl.train.hyper import HyperConnection, ManifoldHyperConnection, static_h_res

    mixing = [c for c in connections if isinstance(c, (HyperConnection, ManifoldHyperConnection))]
    if not mixing:
        return None
    with torch.no_grad():
        if isinstance(mixing[0], ManifoldHyperConnection):
            return static_h_res(mixing, cfg)
        return torch.stack([c.static_res.detach().float() for c in mixing])


__all__ = ["GAIN_BWD", "GAIN_FWD", "PER_LAYER_KEYS", "residual_diagnostics", "static_residual_matrices"]
