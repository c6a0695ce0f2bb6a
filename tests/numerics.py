"""Tolerances for comparing floating-point results, derived from the dtype and the reduction.

Why not a fixed atol tuned on one machine: the order in which a sum is accumulated depends on
the CPU's vector width (AVX2 adds 8 float32 lanes at a time, AVX-512 16), on the thread count
and on the kernel torch picks, so two correct results differ in the last bits by an amount that
grows with the length of the reduction. The classical worst-case bound for a sum of k terms in
any order is (k - 1) * eps * sum |x_i| (Higham, "Accuracy and Stability of Numerical
Algorithms", 4.2), so a tolerance of k * eps * scale holds on every x86 CPU and thread count,
where scale bounds the magnitude of the terms. A chain of d such steps (a product of d maps, an
iteration of d steps) multiplies k by d.
"""

from __future__ import annotations

import torch


def tol(dtype: torch.dtype, n: int, scale: float = 1.0) -> float:
    """Worst-case absolute rounding error of a length-n reduction of terms bounded by `scale` in
    `dtype` (unit roundoff eps/2 per operation, rounded up to eps): n * eps * scale."""
    return max(n, 1) * torch.finfo(dtype).eps * scale
