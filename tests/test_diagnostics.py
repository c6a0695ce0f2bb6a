"""Residual diagnostics on matrices whose answers are known by hand."""

from __future__ import annotations

import json

import pytest
import torch

from sweepctl.train.config import TrainConfig
from sweepctl.train.diagnostics import GAIN_BWD, GAIN_FWD, residual_diagnostics, static_residual_matrices


def test_identity_has_unit_gain_and_unit_sums() -> None:
    d = residual_diagnostics(torch.eye(4).expand(6, 4, 4))
    assert d[GAIN_FWD] == 1.0 and d[GAIN_BWD] == 1.0
    assert d["h_res_layers"] == 6
    for key in ("h_res_row_sum_min", "h_res_row_sum_max", "h_res_col_sum_min", "h_res_col_sum_max"):
        assert d[key] == [1.0] * 6
    assert d["h_res_min_entry"] == [0.0] * 6
    json.dumps(d)  # goes into metrics.jsonl as is


def test_product_of_doubly_stochastic_matrices_keeps_unit_gain() -> None:
    g = torch.Generator().manual_seed(0)
    mats = []
    for _ in range(8):  # random convex mixes of permutations are doubly stochastic (Birkhoff)
        w = torch.rand(3, generator=g)
        w = w / w.sum()
        perms = [torch.eye(4)[torch.randperm(4, generator=g)] for _ in range(3)]
        mats.append(sum(wi * p for wi, p in zip(w, perms, strict=True)))
    d = residual_diagnostics(torch.stack(mats))
    assert d[GAIN_FWD] == pytest.approx(1.0, abs=1e-6)
    assert d[GAIN_BWD] == pytest.approx(1.0, abs=1e-6)
    assert min(d["h_res_min_entry"]) >= 0.0


def test_scaled_matrix_gain_is_its_scale_and_composes() -> None:
    assert residual_diagnostics(2.5 * torch.eye(3)[None])[GAIN_FWD] == pytest.approx(2.5)
    d = residual_diagnostics(torch.stack([2.0 * torch.eye(3), 0.5 * torch.eye(3), 3.0 * torch.eye(3)]))
    assert d[GAIN_FWD] == pytest.approx(3.0) and d[GAIN_BWD] == pytest.approx(3.0)
    assert d["h_res_row_sum_max"] == [2.0, 0.5, 3.0]


def test_forward_and_backward_gain_differ_for_a_lopsided_map() -> None:
    # every stream written into stream 0: rows sum to (2, 0), columns to (1, 1)
    m = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    d = residual_diagnostics(m[None])
    assert d[GAIN_FWD] == 2.0 and d[GAIN_BWD] == 1.0
    assert d["h_res_row_sum_min"] == [0.0] and d["h_res_col_sum_min"] == [1.0]


def test_composite_is_taken_in_forward_order() -> None:
    # A (everything into stream 0) then B (keep only stream 1): B @ A = 0, while A @ B (the wrong
    # order) moves stream 1 into stream 0 and has gain 1.
    a = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert residual_diagnostics(torch.stack([a, b]))[GAIN_FWD] == 0.0
    assert residual_diagnostics(torch.stack([b, a]))[GAIN_FWD] == 1.0
    assert residual_diagnostics(torch.stack([b, a]))["h_res_row_sum_min"] == [0.0, 0.0]


def test_per_token_maps_report_the_worst_token() -> None:
    per_token = torch.eye(2).expand(3, 2, 5, 2, 2).clone()  # (L, B, T, n, n)
    per_token[:, 1, 4] = 1.5 * torch.eye(2)  # one token's path gains 1.5 per layer
    per_token[1, 0, 0, 0, 1] = -0.25  # and one entry elsewhere goes negative
    d = residual_diagnostics(per_token)
    assert d[GAIN_FWD] == pytest.approx(1.5 ** 3)
    assert d["h_res_row_sum_max"] == [1.5, 1.5, 1.5]
    assert d["h_res_min_entry"] == [0.0, -0.25, 0.0]


def test_bad_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="h_res must be"):
        residual_diagnostics(torch.eye(3))


def test_static_matrices_of_real_connections() -> None:
    from sweepctl.train.hyper import make_connection

    for preset, fwd_bound in (("hc", None), ("mhc", 1e-4)):
        cfg = TrainConfig(n_layer=2, n_embd=32, n_head=2, hc_disable=False, hc_num_streams=4,
                          mhc=preset == "mhc")
        connections = [make_connection(cfg, i) for i in range(2 * cfg.n_layer)]
        h = static_residual_matrices(connections, cfg)
        assert h is not None and h.shape == (4, 4, 4)
        d = residual_diagnostics(h)
        if fwd_bound is None:
            assert d[GAIN_FWD] == 1.0  # HC starts with identity mixing
        else:  # mHC: doubly stochastic by Sinkhorn, so the composite keeps gain ~1
            assert abs(d[GAIN_FWD] - 1.0) < fwd_bound and abs(d[GAIN_BWD] - 1.0) < fwd_bound
    plain = TrainConfig(n_layer=2, n_embd=32, n_head=2)
    assert static_residual_matrices([make_connection(plain, i) for i in range(4)], plain) is None
