"""Residual streams around each sub-layer: plain, hyper-connections (HC) and mHC.

A sub-layer (attention or MLP, with its pre-norm) is `y = F(h)`. The three variants differ in
how `h` is read from the residual state and how `y` is written back:

    plain  x (B,T,C):     h = x                      x' = x + y
    HC     x (B,T,n,C):   h = sum_i pre_i x_i        x' = res @ x + post (x) y     (arXiv 2409.19606)
    mHC    same, with pre, post >= 0 and res doubly stochastic                   (arXiv 2512.24880)

`res @ x` means x'_i = sum_j res[i, j] x_j. Each mapping is a static learned part plus, unless
`hc_static_only`, a dynamic part computed from the current residual state.

Speed (docs/performance.md has the figures and the reasoning):
  * the projections (`sinkhorn`, `orthostochastic`, `project_h_res`) take any leading batch
    shape: per token (B, T, n, n) for dynamic mappings, or all sub-layers' static logits stacked
    as (2 * n_layer, n, n) — with hc_static_only the model projects those once per forward
    (`static_mappings`), not inside every layer;
  * under torch.compile the Sinkhorn is one opaque op whose forward and backward are compiled
    once and reused by every sub-layer (`SinkhornOp`), so compile time no longer grows with 20
    unrolled steps per sub-layer; its backward keeps only the per-step scaling vectors;
  * reading (`read_streams`) and the write-back (`mix_and_write`: res @ x + post (x) y) are single
    expressions that inductor fuses into one kernel each; the dynamic mappings' RMSNorm is applied
    after their matmul (`normed_projection`), as in the mHC paper, so no normalised copy of the
    state is written.
Everything is straight-line tensor code (loops only over config constants): torch.compile traces
the whole model as one graph.

    python -c "import torch; from sweepctl.train.hyper import sinkhorn; print(sinkhorn(torch.randn(3, 4, 4), 20, 1.0).sum(-1))"
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import ClassVar

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
# Added to the mean square in the dynamic mappings' RMSNorm.
RMS_EPS = 1e-6


# --------------------------------------------------------------------------- projections


def _no_autocast(device: torch.device):
    """The projections and stream mixing run in float32 even inside a bf16/fp16 autocast region:
    exp(logits / 0.05) and repeated normalisation lose everything in 8 mantissa bits, and the
    residual streams must not be rounded to bf16 at every sub-layer."""
    return torch.autocast(device_type=device.type, enabled=False)


def sinkhorn(logits: torch.Tensor, iters: int, tau: float, balance: bool = False) -> torch.Tensor:
    """(..., n, n) logits -> doubly stochastic matrices by Sinkhorn-Knopp on exp(logits / tau).

    Computed in log space (exp(x / 0.05) overflows float32 once x > 4.4) and in float32. The last
    step normalises columns, so column sums are exact and row sums converge with `iters` — slowly
    where the matrix is near the identity with tiny off-diagonal entries, which is where training
    takes it (rows 4e-2 off within 300 steps of a tiny mHC). With `balance`, `balance_rows` then
    makes the rows exact too, keeping the columns and every entry >= 0 (see there).

    Under torch.compile the iteration is one opaque op (`sweepctl::sinkhorn`, see `SinkhornOp`)
    instead of 20 unrolled steps in the graph of every sub-layer: its forward and its backward
    are each compiled once and reused by every call. Eager, it is the plain autograd of
    `sinkhorn_eager`. The balance step is ordinary tensor code either way.
    """
    if torch.compiler.is_compiling() and SinkhornOp.available:
        n = logits.shape[-1]
        flat = logits.float().reshape(-1, n, n).contiguous()  # (M, n, n): all tokens (or sub-layers)
        p = torch.ops.sweepctl.sinkhorn(flat, iters, float(tau))[0].view(logits.shape)
    else:
        p = sinkhorn_eager(logits, iters, tau)
    return balance_rows(p) if balance else p


def balance_rows(p: torch.Tensor) -> torch.Tensor:
    """(..., n, n) p >= 0 with column sums 1 and row sums r -> a doubly stochastic matrix: row and
    column sums exact, every entry still >= 0.

    Two exact corrections, blended per matrix (sums are linear, so any blend of exact corrections
    is exact):
      * the spread: each row's error spread evenly, p + (1 - r) 1^T / n. Linear in p, so its
        gradient does not depend on rounding — but an entry below (r_i - 1) / n goes below 0;
      * `move_mass`: rows above 1 give their excess to rows below 1. Never below 0, but
        piecewise: which rows give is the sign of r_i - 1, and how much each column gets back is
        the ratio of the errors, so where the errors are float32 rounding (a converged
        projection, the init) its gradient is rounding's choice.
    The spread is used wherever it keeps every entry at least half of what it was (the init, and
    most maps), the moving wherever the spread would take an entry below 0 (trained maps with
    tiny entries), with a smooth step between. Non-negative everywhere: below the top of the
    step the spread itself takes every entry down by at most half the smallest one, and the moved
    matrix is >= 0. Rounding-robust gradients wherever the entries are not themselves at rounding
    level (tests/test_train_speed.py compares float32 with float64 at a converged projection).

    Why not more Sinkhorn steps: during training, 20 steps leave rows 4e-2 (tau 1) to 0.45 (tau
    0.05) off, and 5000 steps did not reach 1e-4 (`python bench/manifold.py --projections`).
    The spread alone went down to -7.5e-3 (tau 1) and -9.7e-2 (tau 0.05) there.
    """
    with _no_autocast(p.device):
        p = p.float()
        n = p.shape[-1]
        off = p.sum(-1, keepdim=True) - 1  # (..., n, 1) row sum - 1
        # how much of the smallest entry the spread would take away: >= 1 takes it to or below 0
        worst = off.amax((-2, -1), keepdim=True).clamp(min=0) / n  # (..., 1, 1)
        # 1e-12: a ratio's gradient squares its denominator, and 1e-24 is still a normal float32
        taken = worst / p.amin((-2, -1), keepdim=True).clamp(min=1e-12)
        w = (2 * taken - 1).clamp(0, 1)
        w = w * w * (3 - 2 * w)  # (..., 1, 1): 0 up to half the smallest entry, 1 from all of it
        return p - off / n + w * (move_mass(p, off) + off / n)


def move_mass(p: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    """The correction that makes p (columns exact, row sums 1 + off) doubly stochastic by moving
    mass (see `balance_rows`): (..., n, n), with rows summing to -off and columns to 0.

    Each row with r_i > 1 is scaled by 1 / r_i, which takes p_ij (1 - 1 / r_i) out of column j;
    each row with r_i < 1 gets its shortfall 1 - r_i, spread over the columns in proportion to
    what they lost. Why that is exact: the columns sum to 1, so the rows sum to n and the total
    excess (what was taken) equals the total shortfall; each column gets back what it lost.
    """
    excess, shortfall = off.clamp(min=0), (-off).clamp(min=0)  # (..., n, 1) each
    taken = p * (excess / (1 + excess))  # (..., n, n): p_ij (1 - 1 / r_i) from the rows above 1
    lost = taken.sum(-2, keepdim=True)  # (..., 1, n) taken out of each column
    # share of the lost mass for each row below 1; the total is 0 only when no row is off (and
    # nothing was taken). 1e-12 is below the smallest |r - 1| float32 holds near 1 (6e-8).
    share = shortfall / shortfall.sum(-2, keepdim=True).clamp(min=1e-12)  # (..., n, 1)
    return share * lost - taken


def sinkhorn_eager(logits: torch.Tensor, iters: int, tau: float) -> torch.Tensor:
    """The log-space Sinkhorn-Knopp iteration itself (see `sinkhorn`)."""
    with _no_autocast(logits.device):
        z = logits.float() / tau  # (..., n, n)
        u = torch.zeros_like(z[..., :, 0])  # (..., n) log row scalings
        v = torch.zeros_like(z[..., 0, :])  # (..., n) log column scalings
        for _ in range(iters):
            u = -torch.logsumexp(z + v.unsqueeze(-2), dim=-1)
            v = -torch.logsumexp(z + u.unsqueeze(-1), dim=-2)
        return torch.exp(z + u.unsqueeze(-1) + v.unsqueeze(-2))


def sinkhorn_scalings(logits: torch.Tensor, iters: int, tau: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`sinkhorn_eager` that also returns every step's log scalings, for `sinkhorn_backward`:
    (P (..., n, n), u (iters, ..., n), v (iters + 1, ..., n)) with v[0] = 0."""
    with _no_autocast(logits.device):
        z = logits.float() / tau
        us, vs = [], [torch.zeros_like(z[..., 0, :])]
        for _ in range(iters):
            us.append(-torch.logsumexp(z + vs[-1].unsqueeze(-2), dim=-1))
            vs.append(-torch.logsumexp(z + us[-1].unsqueeze(-1), dim=-2))
        return torch.exp(z + us[-1].unsqueeze(-1) + vs[-1].unsqueeze(-2)), torch.stack(us), torch.stack(vs)


def sinkhorn_backward(logits: torch.Tensor, grad: torch.Tensor, tau: float, us: torch.Tensor, vs: torch.Tensor
                      ) -> torch.Tensor:
    """d loss / d logits of the Sinkhorn, given d loss / d output and the forward's scalings.

    With u_k = -lse_j(z_ij + v_{k-1,j}) and v_k = -lse_i(z_ij + u_k,i), the derivative of each
    log-sum-exp is minus its softmax: the row-normalised exp(z + u_k + v_{k-1}) for u_k and the
    column-normalised exp(z + u_k + v_k) for v_k; the steps are walked back from the last. Only
    the (iters, ..., n) scaling vectors are kept from the forward, not the iters x n x n
    intermediates autograd would keep.
    """
    with _no_autocast(logits.device):
        z = logits.float() / tau
        iters = us.shape[0]
        a = grad.float() * torch.exp(z + us[-1].unsqueeze(-1) + vs[-1].unsqueeze(-2))  # dL/dP * P
        dz = a  # through the final exp(z + u + v)
        gu, gv = a.sum(-1), a.sum(-2)  # dL/du_K, dL/dv_K
        for k in reversed(range(iters)):
            # v_{k+1} = -lse_i(z + u_{k+1}): its softmax over i is the column-normalised matrix
            t = torch.exp(z + us[k].unsqueeze(-1) + vs[k + 1].unsqueeze(-2)) * gv.unsqueeze(-2)
            dz = dz - t
            gu = gu - t.sum(-1)  # dL/du_{k+1}, complete
            # u_{k+1} = -lse_j(z + v_k): its softmax over j is the row-normalised matrix
            t = torch.exp(z + us[k].unsqueeze(-1) + vs[k].unsqueeze(-2)) * gu.unsqueeze(-1)
            dz = dz - t
            gv = -t.sum(-2)  # dL/dv_k: v_k feeds only u_{k+1}
            gu = torch.zeros_like(gu)  # u_k feeds only v_k, handled next
        return dz / tau


class SinkhornOp:
    """`sweepctl::sinkhorn`: Sinkhorn as one custom op, for torch.compile.

    Why: traced inline, 20 log-space steps (each two log-sum-exps, ~12 graph nodes) and their
    backward are unrolled into the graph of every sub-layer, and compile time grows with depth
    (minutes for 6 layers on a CPU runner, docs/performance.md; mhc_48l has 96 sub-layers). As an
    opaque op the model graph holds one node per sub-layer, and the op's forward and backward
    (`sinkhorn_scalings`, `sinkhorn_backward`) are torch.compile'd once each, on (M, n, n) with M
    (tokens x sub-layers) dynamic, and reused by every call at every depth.

    `torch.compiler.nested_compile_region` would be the built-in way; in torch 2.13 its inductor
    backward returned wrong gradients for the second call of a region (tests/test_train_speed.py
    compares against a reference and caught it), so it is not used.
    """

    # SWEEPCTL_SINKHORN_OP=0: trace the steps inline instead (to compare on a GPU; slow to compile)
    available = hasattr(torch.library, "custom_op") and os.environ.get("SWEEPCTL_SINKHORN_OP", "1") != "0"
    compile_inner = True  # False: the op runs its functions eagerly (tests of the tracing alone)
    _compiled: ClassVar[dict[Callable, Callable]] = {}

    @classmethod
    def call(cls, fn: Callable, args: tuple, token_dims: tuple[int | None, ...]):
        """fn(*args), compiled once (fullgraph) unless disabled; token_dims[i] is the dim of
        args[i] that counts the M matrices (kept dynamic: one compilation for every M)."""
        if not cls.compile_inner:
            return fn(*args)
        compiled = cls._compiled.get(fn)
        if compiled is None:
            compiled = cls._compiled[fn] = torch.compile(fn, fullgraph=True)
        for t, d in zip(args, token_dims, strict=True):
            if d is not None:
                torch._dynamo.maybe_mark_dynamic(t, d)
        return compiled(*args)


class SinkhornTriton:
    """The op's forward and backward as one Triton kernel each (off unless
    SWEEPCTL_SINKHORN_TRITON=1; CUDA tensors, n a power of two <= 8).

    Why: compiled by inductor, each of the 2 x iters log-sum-exp half-steps is its own small
    kernel, launch-bound on a GPU (docs/performance.md). Here one program takes BLOCK matrices,
    keeps each n x n matrix in registers for all steps, and writes P and the per-step scalings;
    the backward walks the steps back in one kernel, exactly as `sinkhorn_backward`. Off by default:
    the tests check it against the torch functions only under Triton's CPU interpreter, so its
    numbers and speed on a GPU are bench/gpu.sh's to confirm (an extra row, with the gradient
    check against eager).
    """

    enabled = os.environ.get("SWEEPCTL_SINKHORN_TRITON", "0") == "1"
    BLOCK = 64  # matrices per program: 64 x 4 x 4 floats in registers

    @classmethod
    def usable(cls, logits: torch.Tensor) -> bool:
        n = logits.shape[-1]
        interpret = os.environ.get("TRITON_INTERPRET") == "1"
        return cls.enabled and (logits.is_cuda or interpret) and n in (2, 4, 8) and _triton_kernels() is not None

    @classmethod
    def forward(cls, logits: torch.Tensor, iters: int, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fwd, _ = _triton_kernels()
        m, n = logits.shape[0], logits.shape[-1]
        z = logits.float().contiguous()
        p = torch.empty_like(z)
        us, vs = z.new_empty(iters, m, n), z.new_empty(iters + 1, m, n)
        fwd[(triton_cdiv(m, cls.BLOCK),)](z, p, us, vs, m, 1.0 / tau, ITERS=iters, N=n, BLOCK=cls.BLOCK)
        return p, us, vs

    @classmethod
    def backward(cls, logits: torch.Tensor, grad: torch.Tensor, tau: float, us: torch.Tensor, vs: torch.Tensor
                 ) -> torch.Tensor:
        _, bwd = _triton_kernels()
        m, n = logits.shape[0], logits.shape[-1]
        dz = torch.empty_like(logits, dtype=torch.float32)
        bwd[(triton_cdiv(m, cls.BLOCK),)](logits.float().contiguous(), grad.float().contiguous(), us.contiguous(),
                                          vs.contiguous(), dz, m, 1.0 / tau, ITERS=us.shape[0], N=n, BLOCK=cls.BLOCK)
        return dz


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.cache
def _triton_kernels():
    """(forward, backward) Triton kernels, defined on first use (importing triton is slow, and
    TRITON_INTERPRET is read when they are defined); None without triton."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def fwd(Z, P, U, V, M, inv_tau, ITERS: tl.constexpr, N: tl.constexpr, BLOCK: tl.constexpr):
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) matrix index
        i = tl.arange(0, N)
        live = rows < M
        mat = rows[:, None, None] * (N * N) + i[None, :, None] * N + i[None, None, :]  # (BLOCK, N, N)
        vec = rows[:, None] * N + i[None, :]  # (BLOCK, N) within one step's (M, N) slab
        z = tl.load(Z + mat, mask=live[:, None, None], other=0.0) * inv_tau
        v = tl.zeros((BLOCK, N), dtype=tl.float32)
        u = tl.zeros((BLOCK, N), dtype=tl.float32)
        tl.store(V + vec, v, mask=live[:, None])
        for k in range(ITERS):
            a = z + v[:, None, :]
            mx = tl.max(a, axis=2)
            u = -(mx + tl.log(tl.sum(tl.exp(a - mx[:, :, None]), axis=2)))
            b = z + u[:, :, None]
            mx = tl.max(b, axis=1)
            v = -(mx + tl.log(tl.sum(tl.exp(b - mx[:, None, :]), axis=1)))
            tl.store(U + k * M * N + vec, u, mask=live[:, None])
            tl.store(V + (k + 1) * M * N + vec, v, mask=live[:, None])
        tl.store(P + mat, tl.exp(z + u[:, :, None] + v[:, None, :]), mask=live[:, None, None])

    @triton.jit
    def bwd(Z, G, U, V, DZ, M, inv_tau, ITERS: tl.constexpr, N: tl.constexpr, BLOCK: tl.constexpr):
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        i = tl.arange(0, N)
        live = rows < M
        mat = rows[:, None, None] * (N * N) + i[None, :, None] * N + i[None, None, :]
        vec = rows[:, None] * N + i[None, :]
        z = tl.load(Z + mat, mask=live[:, None, None], other=0.0) * inv_tau
        g = tl.load(G + mat, mask=live[:, None, None], other=0.0)
        u_last = tl.load(U + (ITERS - 1) * M * N + vec, mask=live[:, None], other=0.0)
        v_last = tl.load(V + ITERS * M * N + vec, mask=live[:, None], other=0.0)
        a = g * tl.exp(z + u_last[:, :, None] + v_last[:, None, :])
        dz = a
        gu = tl.sum(a, axis=2)
        gv = tl.sum(a, axis=1)
        for kk in range(ITERS):
            k = ITERS - 1 - kk
            u_k = tl.load(U + k * M * N + vec, mask=live[:, None], other=0.0)
            v_k = tl.load(V + k * M * N + vec, mask=live[:, None], other=0.0)
            v_next = tl.load(V + (k + 1) * M * N + vec, mask=live[:, None], other=0.0)
            t = tl.exp(z + u_k[:, :, None] + v_next[:, None, :]) * gv[:, None, :]
            dz = dz - t
            gu = gu - tl.sum(t, axis=2)
            t = tl.exp(z + u_k[:, :, None] + v_k[:, None, :]) * gu[:, :, None]
            dz = dz - t
            gv = -tl.sum(t, axis=1)
            gu = tl.zeros((BLOCK, N), dtype=tl.float32)
        tl.store(DZ + mat, dz * inv_tau, mask=live[:, None, None])

    return fwd, bwd


if SinkhornOp.available:
    @torch.library.custom_op("sweepctl::sinkhorn", mutates_args=())
    def _sinkhorn_op(logits: torch.Tensor, iters: int, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(M, n, n) logits -> (P, u, v) of `sinkhorn_scalings`; u, v are kept for the backward."""
        if SinkhornTriton.usable(logits):
            return SinkhornTriton.forward(logits, iters, tau)
        return SinkhornOp.call(sinkhorn_scalings, (logits, iters, tau), (0, None, None))

    @_sinkhorn_op.register_fake
    def _(logits: torch.Tensor, iters: int, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, n = logits.shape[0], logits.shape[-1]
        return torch.empty_like(logits), logits.new_empty(iters, m, n), logits.new_empty(iters + 1, m, n)

    @torch.library.custom_op("sweepctl::sinkhorn_backward", mutates_args=())
    def _sinkhorn_backward_op(logits: torch.Tensor, grad: torch.Tensor, tau: float, us: torch.Tensor,
                              vs: torch.Tensor) -> torch.Tensor:
        if SinkhornTriton.usable(logits):
            return SinkhornTriton.backward(logits, grad, tau, us, vs)
        return SinkhornOp.call(sinkhorn_backward, (logits, grad.contiguous(), tau, us, vs), (0, 0, None, 1, 1))

    @_sinkhorn_backward_op.register_fake
    def _(logits: torch.Tensor, grad: torch.Tensor, tau: float, us: torch.Tensor, vs: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(logits)

    def _sinkhorn_setup_context(ctx, inputs, output) -> None:
        logits, _, ctx.tau = inputs
        _, us, vs = output
        ctx.save_for_backward(logits, us, vs)

    def _sinkhorn_grad(ctx, grad: torch.Tensor, _grad_us: torch.Tensor, _grad_vs: torch.Tensor):
        logits, us, vs = ctx.saved_tensors
        return torch.ops.sweepctl.sinkhorn_backward(logits, grad, ctx.tau, us, vs), None, None

    _sinkhorn_op.register_autograd(_sinkhorn_grad, setup_context=_sinkhorn_setup_context)


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


# Newton-Schulz's classic cubic step X <- 1.5 X - 0.5 X X^T X: slope 0 at the fixed point, so
# singular values near 1 converge quadratically (an error e becomes ~1.5 e^2).
NS_POLISH = (1.5, -0.5, 0.0)


def orthostochastic(logits: torch.Tensor, schedule: Sequence[tuple[float, float, float]], eps: float,
                    polish_steps: int = 0) -> torch.Tensor:
    """(..., n, n) -> orthostochastic matrices: the elementwise square of an orthogonal matrix.

    Rows and columns of an orthogonal matrix have unit norm, so its square is doubly stochastic
    exactly as far as Newton-Schulz has converged, and non-negative by construction. The quintic
    schedules (the reference's (3, -3.2, 1.2), or NS_COEFFS) push small singular values up fast
    but leave them oscillating around 1 (slope -0.6 at 1: row sums of 1.005 at init); the
    `polish_steps` cubic steps after them (NS_POLISH) bring 5e-3 to ~4e-5 in one step and to
    float32 rounding in two, so the square is on the manifold.
    """
    return newton_schulz(logits, (*schedule, *(NS_POLISH,) * polish_steps), eps).square()


def project_h_res(logits: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The configured H_res projection of (..., n, n) logits."""
    if cfg.mhc_h_res_proj == "orthostochastic":
        p = orthostochastic(logits, cfg.ns_schedule, cfg.ns_eps, cfg.ns_polish_steps)
        # Newton-Schulz from ill-conditioned logits may stop far from orthogonal (row sums 0.5 off
        # after training): normalising the columns, then `balance_rows`, puts it on the manifold
        if not cfg.mhc_h_res_balance:
            return p
        return balance_rows(p / p.sum(-2, keepdim=True).clamp(min=1e-12))  # columns exact, then rows
    return sinkhorn(logits, cfg.sinkhorn_iters, cfg.sinkhorn_tau, cfg.mhc_h_res_balance)


def identity_mix(s: torch.Tensor, alpha_logit: torch.Tensor) -> torch.Tensor:
    """H_res = (1 - a) I + a S for (..., n, n) S, with a = sigmoid(alpha_logit) of shape (...).

    A convex mix of doubly stochastic matrices stays doubly stochastic, so a must stay in [0, 1].
    A sigmoid keeps it there with a gradient everywhere; clamping a free a (as before) made the
    gradient exactly 0 once a step took it outside, and it could never come back."""
    a = torch.sigmoid(alpha_logit.float())[..., None, None]  # (..., 1, 1)
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


def rms_norm(x: torch.Tensor, eps: float = RMS_EPS) -> torch.Tensor:
    """Normalise the last dim to unit RMS (no weight: the projection after it has its own scale)."""
    return x * inv_rms(x, eps).to(x.dtype)


def inv_rms(x: torch.Tensor, eps: float = RMS_EPS) -> torch.Tensor:
    """1 / RMS of the last dim, in float32, keeping the dim: (..., 1)."""
    return torch.rsqrt(x.float().square().mean(-1, keepdim=True) + eps)


def normed_projection(x: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """rms_norm(x) @ proj computed as (x @ proj) / rms(x), in float32: (..., K) @ (K, M) -> (..., M).

    The same numbers up to rounding (the norm is one scalar per row), but no normalised copy of
    the (B, T, n*C) residual state is written and read back — the mHC paper reorders its RMSNorm
    after the matmul for the same reason.

    Float32 (TF32 on CUDA) even under autocast: the product has only 2n + n^2 (mHC) or n + 2
    (HC) columns, so it is bound by reading the float32 state, not by FLOPs; a bf16 matmul would
    first write and re-read a bf16 copy of the state (1.5x the traffic) and round the inputs.
    """
    with _no_autocast(x.device):
        return (x.float() @ proj.float()) * inv_rms(x)


def read_streams(pre: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """pre (n,) or (B, T, n) weights over streams x (B, T, n, C) -> sub-layer input (B, T, C).

    Compiled, it is a sum over the n streams that inductor unrolls (n <= 8 is below its
    unroll_reductions_threshold) and fuses with the LayerNorm that reads it; eager, one batched
    (1 x n) @ (n x C) matmul, without materialising pre * x.
    """
    with _no_autocast(x.device):
        pre, x = pre.float(), x.float()
        if torch.compiler.is_compiling():
            return (pre.unsqueeze(-1) * x).sum(-2)  # (B, T, C)
        return (pre.unsqueeze(-2) @ x).squeeze(-2)  # (B, T, 1, C) -> (B, T, C)


def mix_and_write(res: torch.Tensor, x: torch.Tensor, post: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The whole write-back in one expression: x' = res @ x + post (x) y.

    res (n, n) or (B, T, n, n), streams x (B, T, n, C), post (n,) or (B, T, n), sub-layer output
    y (B, T, C) -> (B, T, n, C) in float32; x'_i = sum_j res_ij x_j + post_i y.

    Compiled, the stream sum is written as a broadcast product summed over j, which inductor turns
    into ONE pointwise kernel: read x, y and the small maps once, write x' once (a bmm would be an
    opaque batched GEMM of 4 x 4 matrices plus a second kernel for the outer product). Eager, the
    (B, T, n, n, C) product would be materialised, so it is a batched matmul with the outer product
    added by addcmul (two kernels).
    """
    with _no_autocast(x.device):
        res, x, post, y = res.float(), x.float(), post.float(), y.float()
        if torch.compiler.is_compiling():
            return (res.unsqueeze(-1) * x.unsqueeze(-3)).sum(-2) + post.unsqueeze(-1) * y.unsqueeze(-2)
        return torch.addcmul(res @ x, post.unsqueeze(-1), y.unsqueeze(-2))


# --------------------------------------------------------------------------- modules
#
# A connection has `read(x, maps) -> (h, ctx)` and `write(x, y, ctx) -> x'`. `maps` is what the
# model precomputed for this sub-layer once per forward (`static_mappings`), or None. Only
# mHC with hc_static_only has something to precompute: its (H_pre, H_post, H_res) do not depend
# on the tokens, so all sub-layers' are projected together — one batched Sinkhorn over a
# (2 n_layer, n, n) tensor per forward instead of one per sub-layer inside every layer's graph.
# With dynamic mappings (the default, as in the mHC paper) H_res = P(b_res + a * f(x)) needs the
# sub-layer's own input, so its projection is per token and per sub-layer; it is batched over
# all B x T tokens at once.


class PlainResidual(nn.Module):
    """x' = x + F(x): nanoGPT's residual (hc_disable=True). The state is (B, T, C)."""

    def read(self, x: torch.Tensor, maps: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        return x, ()

    def write(self, x: torch.Tensor, y: torch.Tensor, ctx: tuple) -> torch.Tensor:
        return x + y


class HyperConnection(nn.Module):
    """HC around one sub-layer (arXiv 2409.19606, Alg. 2), state (B, T, n, C).

    Static init reproduces a pre-norm residual: sub-layer k reads stream k mod n (A_m = e_k),
    streams are kept (A_r = I) and every stream receives the output (B = 1). The dynamic part,
    s * tanh(norm(x_i) W) per stream i, starts at zero (W = 0) with gate s = 0.01. norm is the
    paper's LayerNorm with its affine weight and bias (eq. 10; `LayerNorm(dim)` in Algorithm 2),
    one per connection, shared by the streams; hc_dynamic_norm='rms' is an RMSNorm without
    weight (the public reference uses an RMSNorm).
    """

    def __init__(self, cfg: TrainConfig, index: int):
        super().__init__()
        n, c = cfg.hc_num_streams, cfg.n_embd
        self.n = n
        self.dynamic = not cfg.hc_static_only
        self.captured: list[torch.Tensor] | None = None  # H_res applied, while diagnostics capture
        pre = torch.zeros(n)
        pre[index % n] = 1.0
        self.static_pre = nn.Parameter(pre)  # A_m (n,): how much of each stream the sub-layer reads
        self.static_res = nn.Parameter(torch.eye(n))  # A_r^T (n, n): stream mixing, res @ x
        self.static_post = nn.Parameter(torch.ones(n))  # B (n,): how much output each stream gets
        self.layer_norm = cfg.hc_dynamic_norm == "layer"
        if self.dynamic:
            # per stream: [W_m | W_r | W_beta] -> (1 + n + 1) numbers from that stream's own state
            self.dyn_proj = nn.Parameter(torch.zeros(c, n + 2))
            self.dyn_gate_alpha = nn.Parameter(torch.tensor(DYNAMIC_GATE_INIT))  # s_alpha
            self.dyn_gate_beta = nn.Parameter(torch.tensor(DYNAMIC_GATE_INIT))  # s_beta
            if self.layer_norm:  # LayerNorm(dim)'s affine, as nn.LayerNorm starts it
                self.dyn_norm_weight = nn.Parameter(torch.ones(c))  # (C,)
                self.dyn_norm_bias = nn.Parameter(torch.zeros(c))  # (C,)

    def read(self, x: torch.Tensor, maps: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        pre, res, post = self.static_pre, self.static_res, self.static_post  # (n,), (n, n), (n,)
        if self.dynamic:
            if self.layer_norm:
                # LayerNorm(x) W = ((x - mean) / rms(x - mean) * g + b) W
                #                = (x - mean) (g * W) / rms(x - mean) + b W:
                # the affine folded into the (C, n + 2) projection, so no normalised copy of the
                # state is written (normed_projection); the sub-layer still reads x itself
                centred = x - x.float().mean(-1, keepdim=True)  # (B, T, n, C)
                scaled = self.dyn_norm_weight.float().unsqueeze(-1) * self.dyn_proj.float()  # (C, n + 2)
                shift = self.dyn_norm_bias.float() @ self.dyn_proj.float()  # (n + 2,)
                d = torch.tanh(normed_projection(centred, scaled) + shift)  # (B, T, n, n + 2)
            else:
                d = torch.tanh(normed_projection(x, self.dyn_proj))  # (B, T, n, n + 2), row i from stream i
            pre = pre + self.dyn_gate_alpha * d[..., 0]  # (B, T, n)
            # d[..., i, 1 + j] is stream i's weight into stream j; as res[j, i] so that x' = res @ x
            res = res + self.dyn_gate_alpha * d[..., 1:self.n + 1].mT  # (B, T, n, n)
            post = post + self.dyn_gate_beta * d[..., self.n + 1]  # (B, T, n)
        return read_streams(pre, x), (res, post)

    def write(self, x: torch.Tensor, y: torch.Tensor, ctx: tuple) -> torch.Tensor:
        res, post = ctx
        if self.captured is not None:
            self.captured.append(res.detach())
        return mix_and_write(res, x, post, y)


class ManifoldHyperConnection(nn.Module):
    """mHC around one sub-layer (arXiv 2512.24880, eqs. 7-8), state (B, T, n, C).

    logits = static b + (unless hc_static_only) gate * (rms_norm(flatten(x)) @ phi), with phi = 0 at
    init; H_pre = sigmoid, H_post = 2 sigmoid (non-negative), H_res = projection (doubly
    stochastic), optionally H_res = (1 - a) I + a H_res with a learned a. As in the paper, the
    dynamic logits are per token, so H_res is one n x n matrix per token.

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
        self.captured: list[torch.Tensor] | None = None  # H_res applied, while diagnostics capture
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
        if self.identity_mix:  # a = sigmoid(logit), starting at mhc_residual_alpha
            self.res_alpha_logit = nn.Parameter(torch.logit(torch.tensor(cfg.mhc_residual_alpha)))

    def mappings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(H_pre, H_post, H_res) for streams x (B, T, n, C): (n,), (n,), (n, n) when static, else
        with leading (B, T)."""
        n = self.n
        pre, post, res = self.static_pre, self.static_post, self.static_res
        if self.dynamic:
            d = normed_projection(x.flatten(-2), self.dyn_proj)  # (B, T, 2n + n*n)
            pre = pre + self.dyn_gate[0] * d[..., :n]  # (B, T, n)
            post = post + self.dyn_gate[1] * d[..., n:2 * n]  # (B, T, n)
            res = res + self.dyn_gate[2] * d[..., 2 * n:].unflatten(-1, (n, n))  # (B, T, n, n)
        return constrain(pre, post, res, self.res_alpha_logit if self.identity_mix else None, self.cfg)

    def read(self, x: torch.Tensor, maps: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        h_pre, h_post, h_res = maps if maps is not None else self.mappings(x)
        return read_streams(h_pre, x), (h_res, h_post)

    def write(self, x: torch.Tensor, y: torch.Tensor, ctx: tuple) -> torch.Tensor:
        h_res, h_post = ctx
        if self.captured is not None:
            self.captured.append(h_res.detach())
        return mix_and_write(h_res, x, h_post, y)


def constrain(pre: torch.Tensor, post: torch.Tensor, res: torch.Tensor, alpha: torch.Tensor | None,
              cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mHC logits -> (H_pre, H_post, H_res) = (sigmoid, 2 sigmoid, projection [identity mix]).
    Any leading batch shape: per token (B, T, ...), or all sub-layers stacked (L, ...)."""
    h_res = project_h_res(res, cfg)
    if alpha is not None:
        h_res = identity_mix(h_res, alpha)
    return torch.sigmoid(pre.float()), 2.0 * torch.sigmoid(post.float()), h_res


def make_connection(cfg: TrainConfig, index: int) -> nn.Module:
    """The residual connection of sub-layer `index` (0 .. 2 n_layer - 1) for this config."""
    if cfg.hc_disable:
        return PlainResidual()
    if cfg.mhc:
        return ManifoldHyperConnection(cfg, index)
    return HyperConnection(cfg, index)


def static_mappings(connections: Sequence[nn.Module], cfg: TrainConfig
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All mHC sub-layers' static (H_pre (L, n), H_post (L, n), H_res (L, n, n)), L = 2 n_layer,
    from their static logits in one batched projection (one Sinkhorn over (L, n, n))."""
    pre = torch.stack([c.static_pre for c in connections])  # (L, n)
    post = torch.stack([c.static_post for c in connections])  # (L, n)
    res = torch.stack([c.static_res for c in connections])  # (L, n, n)
    alpha = torch.stack([c.res_alpha_logit for c in connections]) if cfg.mhc_residual_identity_mix else None  # (L,)
    return constrain(pre, post, res, alpha, cfg)


def static_h_res(connections: Sequence[nn.Module], cfg: TrainConfig) -> torch.Tensor:
    """All mHC sub-layers' static H_res (the b_res part), projected in one batched call: (L, n, n)."""
    return static_mappings(connections, cfg)[2]


__all__ = [
    "HyperConnection",
    "ManifoldHyperConnection",
    "PlainResidual",
    "constrain",
    "identity_mix",
    "inv_rms",
    "make_connection",
    "mix_and_write",
    "newton_schulz",
    "normed_projection",
    "orthostochastic",
    "project_h_res",
    "read_streams",
    "sinkhorn",
    "static_h_res",
    "static_mappings",
]
