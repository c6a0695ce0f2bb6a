"""Residual streams around each sub-layer: plain, hyper-connections (HC) and mHC.

A sub-layer (attention or MLP, with its pre-norm) is `y = F(h)`. The three variants differ in
how `h` is read from the residual state and how `y` is written back:

    plain  x (B,T,C):     h = x                      x' = x + y
    HC     x (B,T,n,C):   h = sum_i pre_i x_i        x' = res @ x + post (x) y     (arXiv 2409.19606)
    mHC    same, with pre, post >= 0 and res doubly stochastic                   (arXiv 2512.24880)

`res @ x` means x'_i = sum_j res[i, j] x_j. Each mapping is a static learned part plus, unless
`hc_static_only`, a dynamic part computed from the current residual state.

The projections (`sinkhorn`, `orthostochastic`, `project_h_res`) take any leading batch shape,
so all sub-layers' static H_res, stacked as (2 * n_layer, n, n), are projected in one call.
Everything here is straight-line tensor code (loops only over config constants), so
torch.compile traces it whole.

    python -c "import torch; from sweepctl.train.hyper import sinkhorn; print(sinkhorn(torch.randn(3, 4, 4), 20, 1.0).sum(-1))"
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from sweepctl.train.config import TrainConfig

# The dynamic parts start at zero (a zero projection) with these gates, as in HC's s_alpha/s_beta:
# a zero projection makes the model start static, and a non-zero gate lets it still get a gradient.
DYNAMIC_GATE_INIT = 0.01
# Off-diagonal mass of the initial H_res (mHC): each stream keeps 95% of itself at init. See
# `initial_res_logits` for why it is not exactly the identity.
RES_INIT_LEAK = 0.05
# Logit of the stream a sub-layer mainly reads (H_pre) and extra logit of the stream it mainly
# writes (H_post) at init. See `ManifoldHyperConnection` for why they are not uniform.
PRE_INIT_LOGIT = 2.0
POST_INIT_LOGIT = 1.0


# --------------------------------------------------------------------------- projections


def _no_autocast(device: torch.device):
    """The projections and stream mixing run in float32 even inside a bf16/fp16 autocast region:
    exp(logits / 0.05) and repeated normalisation lose everything in 8 mantissa bits, and the
    residual streams must not be rounded to bf16 at every sub-layer."""
    return torch.autocast(device_type=device.type, enabled=False)


def sinkhorn(logits: torch.Tensor, iters: int, tau: float) -> torch.Tensor:
    """(..., n, n) logits -> doubly stochastic matrices by Sinkhorn-Knopp on exp(logits / tau).

    Computed in log space (exp(x / 0.05) overflows float32 once x > 4.4) and in float32. The last
    step normalises columns, so column sums are exact and row sums converge with `iters`.
    """
    with _no_autocast(logits.device):
        z = logits.float() / tau  # (..., n, n)
        u = torch.zeros_like(z[..., :, 0])  # (..., n) log row scalings
        v = torch.zeros_like(z[..., 0, :])  # (..., n) log column scalings
        for _ in range(iters):
            u = -torch.logsumexp(z + v.unsqueeze(-2), dim=-1)
            v = -torch.logsumexp(z + u.unsqueeze(-1), dim=-2)
        return torch.exp(z + u.unsqueeze(-1) + v.unsqueeze(-2))


def newton_schulz(g: torch.Tensor, schedule: Sequence[tuple[float, float, float]], eps: float) -> torch.Tensor:
    """(..., n, n) -> approximately orthogonal (..., n, n): the polar factor of g by Newton-Schulz.

    One step per (a, b, c) of `schedule`: X <- a X + (b A + c A^2) X with A = X X^T. Dividing by
    the Frobenius norm first puts every singular value in (0, 1], where the iteration converges.
    """
    with _no_autocast(g.device):
        x = g.float()
        x = x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)  # (..., n, n)
        for a, b, c in schedule:
            gram = x @ x.mT  # (..., n, n)
            x = a * x + (b * gram + c * (gram @ gram)) @ x
        return x


def orthostochastic(logits: torch.Tensor, schedule: Sequence[tuple[float, float, float]], eps: float
                    ) -> torch.Tensor:
    """(..., n, n) -> orthostochastic matrices: the elementwise square of an orthogonal matrix.

    Rows and columns of an orthogonal matrix have unit norm, so its square is doubly stochastic
    (exactly so only as far as Newton-Schulz has converged) and non-negative by construction.
    """
    return newton_schulz(logits, schedule, eps).square()


def project_h_res(logits: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The configured H_res projection of (..., n, n) logits."""
    if cfg.mhc_h_res_proj == "orthostochastic":
        return orthostochastic(logits, cfg.ns_schedule, cfg.ns_eps)
    return sinkhorn(logits, cfg.sinkhorn_iters, cfg.sinkhorn_tau)


def identity_mix(s: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """H_res = (1 - a) I + a S for (..., n, n) S and a of shape (...) — a convex mix of doubly
    stochastic matrices stays doubly stochastic. a is clamped to [0, 1] so it stays a mix."""
    a = alpha.float().clamp(0.0, 1.0)[..., None, None]  # (..., 1, 1)
    eye = torch.eye(s.shape[-1], device=s.device, dtype=s.dtype)
    return (1.0 - a) * eye + a * s


def initial_res_logits(cfg: TrainConfig) -> torch.Tensor:
    """Static H_res logits (n, n) at init: H_res = 0.95 I + 0.05 (uniform off-diagonal).

    Why not exactly the identity: the reference used off-diagonal logits -8 with tau 0.05, i.e.
    exp(-160) — the projection is then saturated, H_res is exactly I and its gradient exactly 0,
    so H_res never trained. Here the off-diagonal entries carry RES_INIT_LEAK of each row, so
    d H_res / d logits is of order leak / tau, non-zero and finite.
      * sinkhorn: logits = tau * log(P0). P0 is already doubly stochastic, so Sinkhorn returns P0
        for every tau (tau then only sets how fast the logits move H_res, not where it starts).
      * orthostochastic: logits = I + d K with K antisymmetric (K_ij = sign(j - i)): the polar
        factor of I + dK is a rotation away from I, and its square is P0-like (d set so that the
        diagonal is about 1 - leak). A symmetric start would project to exactly I, and the
        square of I has zero gradient.
    """
    n = cfg.hc_num_streams
    eye = torch.eye(n)
    if n == 1:
        return torch.zeros(1, 1)  # the only 1x1 doubly stochastic matrix is [1]
    if cfg.mhc_h_res_proj == "orthostochastic":
        idx = torch.arange(n)
        k = torch.sign(idx[None, :] - idx[:, None]).float()  # (n, n) antisymmetric
        # for small d the off-diagonal squares sum to about (n - 1) d^2 per row
        d = math.sqrt(RES_INIT_LEAK / (n - 1))
        return eye + d * k
    p0 = (1 - RES_INIT_LEAK) * eye + RES_INIT_LEAK / (n - 1) * (1 - eye)
    return cfg.sinkhorn_tau * torch.log(p0)


def rms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalise the last dim to unit RMS (no weight: the projection after it has its own scale)."""
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps).to(x.dtype)


def mix_streams(res: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """res (n, n) or (B, T, n, n) applied to streams x (B, T, n, C): out_i = sum_j res_ij x_j."""
    with _no_autocast(x.device):
        return res.float() @ x.float()  # (B, T, n, C)


def read_streams(pre: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """pre (n,) or (B, T, n) weights over streams x (B, T, n, C) -> sub-layer input (B, T, C)."""
    with _no_autocast(x.device):
        return (pre.float().unsqueeze(-2) @ x.float()).squeeze(-2)  # (B, T, 1, C) -> (B, T, C)


def write_streams(mixed: torch.Tensor, post: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mixed streams (B, T, n, C) + post (n,) or (B, T, n) times sub-layer output y (B, T, C)."""
    return mixed + post.float().unsqueeze(-1) * y.float().unsqueeze(-2)  # (B, T, n, C)


# --------------------------------------------------------------------------- modules


class PlainResidual(nn.Module):
    """x' = x + F(x): nanoGPT's residual (hc_disable=True). The state is (B, T, C)."""

    def read(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        return x, ()

    def write(self, x: torch.Tensor, y: torch.Tensor, ctx: tuple) -> torch.Tensor:
        return x + y


class HyperConnection(nn.Module):
    """HC around one sub-layer (arXiv 2409.19606, Alg. 2), state (B, T, n, C).

    Static init reproduces a pre-norm residual: sub-layer k reads stream k mod n (A_m = e_k),
    streams are kept (A_r = I) and every stream receives the output (B = 1). The dynamic part,
    s * tanh(norm(x_i) W) per stream i, starts at zero (W = 0) with gate s = 0.01.
    """

    def __init__(self, cfg: TrainConfig, index: int):
        super().__init__()
        n, c = cfg.hc_num_streams, cfg.n_embd
        self.n = n
        self.dynamic = not cfg.hc_static_only
        pre = torch.zeros(n)
        pre[index % n] = 1.0
        self.static_pre = nn.Parameter(pre)  # A_m (n,): how much of each stream the sub-layer reads
        self.static_res = nn.Parameter(torch.eye(n))  # A_r^T (n, n): stream mixing, res @ x
        self.static_post = nn.Parameter(torch.ones(n))  # B (n,): how much output each stream gets
        if self.dynamic:
            # per stream: [W_m | W_r | W_beta] -> (1 + n + 1) numbers from that stream's own state
            self.dyn_proj = nn.Parameter(torch.zeros(c, n + 2))
            self.dyn_gate_alpha = nn.Parameter(torch.tensor(DYNAMIC_GATE_INIT))  # s_alpha
            self.dyn_gate_beta = nn.Parameter(torch.tensor(DYNAMIC_GATE_INIT))  # s_beta

    def read(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        pre, res, post = self.static_pre, self.static_res, self.static_post  # (n,), (n, n), (n,)
        if self.dynamic:
            d = torch.tanh(rms_norm(x) @ self.dyn_proj).float()  # (B, T, n, n + 2), row i from stream i
            pre = pre + self.dyn_gate_alpha * d[..., 0]  # (B, T, n)
            # d[..., i, 1 + j] is stream i's weight into stream j; as res[j, i] so that x' = res @ x
            res = res + self.dyn_gate_alpha * d[..., 1:self.n + 1].mT  # (B, T, n, n)
            post = post + self.dyn_gate_beta * d[..., self.n + 1]  # (B, T, n)
        return read_streams(pre, x), (res, post)

    def write(self, x: torch.Tensor, y: torch.Tensor, ctx: tuple) -> torch.Tensor:
        res, post = ctx
        return write_streams(mix_streams(res, x), post, y)


class ManifoldHyperConnection(nn.Module):
    """mHC around one sub-layer (arXiv 2512.24880, eqs. 7-8), state (B, T, n, C).

    logits = static b + (unless hc_static_only) gate * (rms_norm(flatten(x)) @ phi), with phi = 0 at
    init; H_pre = sigmoid, H_post = 2 sigmoid (non-negative), H_res = projection (doubly
    stochastic), optionally H_res = (1 - a) I + a H_res with a learned a.

    Init, and why it is not symmetric: the streams start as n identical copies of the embedding.
    A doubly stochastic H_res maps identical streams to themselves, so while they stay identical
    H_res has no effect and no gradient. Each sub-layer therefore mainly reads one stream
    (H_pre = sigmoid(+-2): 0.88 on stream k mod n, 0.12 elsewhere) and writes a little more into it
    (H_post = 2 sigmoid(1) = 1.46 there, 1 elsewhere), so the streams differ after the first
    sub-layer and every later H_res gets a gradient at step 0. Two H_res never have an effect, by
    the architecture rather than the init: the first sub-layer's acts on identical copies of the
    embedding, and the last one's output is summed over streams, which a doubly stochastic map
    preserves (their gradients are zero up to projection rounding).
    """

    def __init__(self, cfg: TrainConfig, index: int):
        super().__init__()
        n, c = cfg.hc_num_streams, cfg.n_embd
        self.n = n
        self.cfg = cfg
        self.dynamic = not cfg.hc_static_only
        k = index % n
        pre = torch.full((n,), -PRE_INIT_LOGIT)
        pre[k] = PRE_INIT_LOGIT
        post = torch.zeros(n)
        if n > 1:  # one stream: nothing to break, H_post = 1 as in the paper
            post[k] = POST_INIT_LOGIT
        self.static_pre = nn.Parameter(pre)  # b_pre (n,)
        self.static_post = nn.Parameter(post)  # b_post (n,)
        self.static_res = nn.Parameter(initial_res_logits(cfg))  # b_res (n, n)
        if self.dynamic:
            self.dyn_proj = nn.Parameter(torch.zeros(n * c, 2 * n + n * n))  # phi: [pre | post | res]
            self.dyn_gate = nn.Parameter(torch.full((3,), DYNAMIC_GATE_INIT))  # alpha_pre, _post, _res
        self.identity_mix = cfg.mhc_residual_identity_mix
        if self.identity_mix:
            self.res_alpha = nn.Parameter(torch.tensor(cfg.mhc_residual_alpha))

    def mappings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(H_pre, H_post, H_res) for streams x (B, T, n, C): (n,), (n,), (n, n) when static, else
        with leading (B, T)."""
        n = self.n
        pre, post, res = self.static_pre, self.static_post, self.static_res
        if self.dynamic:
            d = (rms_norm(x.flatten(-2)) @ self.dyn_proj).float()  # (B, T, 2n + n*n)
            pre = pre + self.dyn_gate[0] * d[..., :n]  # (B, T, n)
            post = post + self.dyn_gate[1] * d[..., n:2 * n]  # (B, T, n)
            res = res + self.dyn_gate[2] * d[..., 2 * n:].unflatten(-1, (n, n))  # (B, T, n, n)
        h_res = project_h_res(res, self.cfg)
        if self.identity_mix:
            h_res = identity_mix(h_res, self.res_alpha)
        return torch.sigmoid(pre.float()), 2.0 * torch.sigmoid(post.float()), h_res

    def read(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        h_pre, h_post, h_res = self.mappings(x)
        return read_streams(h_pre, x), (h_res, h_post)

    def write(self, x: torch.Tensor, y: torch.Tensor, ctx: tuple) -> torch.Tensor:
        h_res, h_post = ctx
        return write_streams(mix_streams(h_res, x), h_post, y)


def make_connection(cfg: TrainConfig, index: int) -> nn.Module:
    """The residual connection of sub-layer `index` (0 .. 2 n_layer - 1) for this config."""
    if cfg.hc_disable:
        return PlainResidual()
    if cfg.mhc:
        return ManifoldHyperConnection(cfg, index)
    return HyperConnection(cfg, index)


def static_h_res(connections: Sequence[nn.Module], cfg: TrainConfig) -> torch.Tensor:
    """All mHC sub-layers' static H_res (the b_res part), projected in one batched call: (L, n, n)."""
    logits = torch.stack([c.static_res for c in connections])  # (L, n, n)
    h = project_h_res(logits, cfg)
    if cfg.mhc_residual_identity_mix:
        h = identity_mix(h, torch.stack([c.res_alpha for c in connections]))
    return h


__all__ = [
    "HyperConnection",
    "ManifoldHyperConnection",
    "PlainResidual",
    "identity_mix",
    "make_connection",
    "newton_schulz",
    "orthostochastic",
    "project_h_res",
    "sinkhorn",
    "static_h_res",
]
