"""The trainer's model: H_res projections against float64 references, the residual variants'
invariants, mHC's gradient at init, and that every model/optimizer knob changes what is computed."""

from __future__ import annotations

import math

import pytest
import torch

from numerics import tol
from sweepctl.train.config import NS_COEFFS_SCHEDULE, TrainConfig, resolve_config
from sweepctl.train.diagnostics import GAIN_FWD, residual_diagnostics
from sweepctl.train.hyper import (
    ManifoldHyperConnection,
    identity_mix,
    newton_schulz,
    orthostochastic,
    project_h_res,
    sinkhorn,
)
from sweepctl.train.model import GPT

# Tiny models on a shared 2-core machine: one intra-op thread avoids OpenMP spin-waiting
# against other processes (ten times slower than single-threaded under load).
torch.set_num_threads(1)

TINY = ["n_layer=2", "n_embd=32", "n_head=2", "block_size=16", "vocab_size=64", "batch_size=2",
        "learning_rate=1e-2", "warmup_iters=1", "lr_decay_iters=3", "min_lr=1e-3"]


def tiny(preset: str = "base", *extra: str) -> TrainConfig:
    return resolve_config(preset, [*TINY, *extra])


# --------------------------------------------------------------------------- float64 references


def sinkhorn_ref(logits: torch.Tensor, iters: int, tau: float) -> torch.Tensor:
    """Textbook Sinkhorn-Knopp in float64, not in log space: normalise rows, then columns."""
    m = torch.exp(logits.double() / tau)
    for _ in range(iters):
        m = m / m.sum(-1, keepdim=True)
        m = m / m.sum(-2, keepdim=True)
    return m


def ortho_ref(logits: torch.Tensor, schedule, eps: float) -> torch.Tensor:
    """Newton-Schulz in float64, one matrix at a time, then the elementwise square."""
    out = []
    for g in logits.double().reshape(-1, *logits.shape[-2:]):
        x = g / (torch.sqrt((g * g).sum()) + eps)
        for a, b, c in schedule:
            A = x @ x.T
            x = a * x + (b * A + c * A @ A) @ x
        out.append(x * x)
    return torch.stack(out).reshape(logits.shape)


def test_sinkhorn_matches_float64_reference_and_is_doubly_stochastic():
    torch.manual_seed(0)
    logits = torch.randn(64, 4, 4)  # unit scale, as logits / tau with tau = 1
    s = sinkhorn(logits, 20, 1.0)
    assert s.dtype == torch.float32
    torch.testing.assert_close(s.double(), sinkhorn_ref(logits, 20, 1.0), atol=tol(torch.float32, 2 * 4 * 20), rtol=0)
    assert (s >= 0).all()
    assert (s.sum(-1) - 1).abs().max() < 1e-3
    assert (s.sum(-2) - 1).abs().max() < 1e-3


def test_sinkhorn_stays_finite_where_plain_exp_overflows():
    # logits / tau = 200: exp overflows float32; log space does not
    s = sinkhorn(torch.tensor([[10.0, 0.0], [0.0, 10.0]]), 20, 0.05)
    assert torch.isfinite(s).all()
    torch.testing.assert_close(s, torch.eye(2))


def test_orthostochastic_matches_float64_reference_nonnegative_rows_and_columns_near_one():
    torch.manual_seed(1)
    logits = torch.randn(32, 4, 4)
    o = orthostochastic(logits, NS_COEFFS_SCHEDULE, 1e-7)  # the reference sweep's 8-step schedule
    torch.testing.assert_close(o.double(), ortho_ref(logits, NS_COEFFS_SCHEDULE, 1e-7), atol=1e-4, rtol=0)
    assert (o >= 0).all()
    assert (o.sum(-1) - 1).abs().max() < 5e-3
    assert (o.sum(-2) - 1).abs().max() < 5e-3
    # the default single triple converges on well-conditioned (near-identity) logits
    near_identity = torch.eye(4) + 0.2 * torch.randn(32, 4, 4)
    cfg = tiny("mhc", "mhc_h_res_proj='orthostochastic'")
    o = orthostochastic(near_identity, cfg.ns_schedule, cfg.ns_eps)
    torch.testing.assert_close(o.double(), ortho_ref(near_identity, cfg.ns_schedule, cfg.ns_eps), atol=1e-4, rtol=0)
    # (3, -3.2, 1.2) has slope -0.6 at the fixed point 1: errors shrink only 0.6x per step
    assert (o >= 0).all() and (o.sum(-1) - 1).abs().max() < 0.1 and (o.sum(-2) - 1).abs().max() < 0.1


def test_orthostochastic_48_layer_init_is_on_the_manifold_with_unit_gain():
    """Without the cubic polish and the final balance, the reference schedule left row sums of
    1.005 at init and a full-depth gain of 1.644 over the 96 sub-layers of mhc_48l."""
    cfg = resolve_config("mhc_48l", ["mhc_h_res_proj='orthostochastic'", "n_embd=12", "n_head=2"])
    d = residual_diagnostics(GPT(cfg).h_res_static())
    assert d["h_res_row_err"] < 1e-3 and d["h_res_col_err"] < 1e-3
    assert max(abs(g - 1) for g in d["fwd_gain_max"] + d["bwd_gain_max"]) < 96 * 1e-3
    unpolished = resolve_config("mhc_48l", ["mhc_h_res_proj='orthostochastic'", "n_embd=12", "n_head=2",
                                            "ns_polish_steps=0", "mhc_h_res_balance=False"])
    assert residual_diagnostics(GPT(unpolished).h_res_static())["h_res_row_err"] > 1e-3  # the test can fail


@pytest.mark.parametrize("extra", [[], ["sinkhorn_tau=0.05"], ["mhc_h_res_proj='orthostochastic'"]],
                         ids=["sinkhorn", "sinkhorn-reference-tau", "orthostochastic"])
def test_applied_h_res_stays_on_the_manifold_while_training(extra):
    """Every H_res the model applies (static + dynamic, per token) is doubly stochastic: row and
    column sums within 1e-3 of 1 and no entry below 0, measured every 25 of 150 steps of training
    at a high learning rate. 20 Sinkhorn steps alone drifted to row sums in [0.987, 1.013] by step
    400 (tau 0.05); spreading each row's error evenly made the sums exact but took entries below 0
    (bench/manifold.py; docs/trainer.md)."""
    from sweepctl.train.diagnostics import model_diagnostics

    cfg = tiny("mhc", "n_layer=2", "learning_rate=2e-2", "lr_decay_iters=150", *extra)
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = model.configure_optimizer("cpu")
    gen = torch.Generator().manual_seed(0)
    probe = torch.randint(0, 64, (2, 16), generator=gen)
    worst = lowest = 0.0
    for step in range(151):
        if step % 25 == 0:
            d = model_diagnostics(model, probe)
            worst = max(worst, d["h_res_row_err"], d["h_res_col_err"])
            lowest = min(lowest, d["h_res_min_entry"])
        start = torch.randint(0, 64, (4, 1), generator=gen)
        seq = (start * 5 + 3 * torch.arange(17)) % 64  # a pattern to learn, so the maps move
        _, loss = model(seq[:, :-1], seq[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert loss.item() < 3.0  # it did train (ln 64 = 4.16 at the start)
    assert worst < 1e-3 and lowest >= 0.0, (worst, lowest)


def test_projections_batch_over_layers():
    """All layers' static H_res in one (L, n, n) call equal the per-layer calls.

    Equal only up to summation order: the vector width (AVX2 or AVX-512) and the batch shape
    decide how each length-n sum is split, so the bound is the worst case of the whole chain
    (tests/numerics.py): Sinkhorn's 20 steps of two length-4 sums plus the balance, or Newton-
    Schulz's steps of three length-4 products each. A fixed 1e-6 failed on AVX-512 (1.01e-6)."""
    torch.manual_seed(2)
    logits = torch.randn(6, 4, 4)
    for cfg in (tiny("mhc"), tiny("mhc", "mhc_h_res_proj='orthostochastic'")):
        batched = project_h_res(logits, cfg)
        steps = 2 * 20 + 1 if cfg.mhc_h_res_proj == "sinkhorn" else 3 * (len(cfg.ns_schedule) + cfg.ns_polish_steps) + 2
        for i in range(6):
            torch.testing.assert_close(batched[i], project_h_res(logits[i], cfg), atol=tol(torch.float32, 4 * steps), rtol=0)
    model = GPT(tiny("mhc", "mhc_residual_identity_mix=True"))
    h = model.h_res_static()
    assert h.shape == (4, 4, 4)
    per_layer = [c.mappings(torch.zeros(1, 1, 4, 32))[2][0, 0] for c in model.connections()]
    torch.testing.assert_close(h, torch.stack(per_layer).detach(), atol=tol(torch.float32, 4 * (2 * 20 + 1)), rtol=0)
    assert residual_diagnostics(h)[GAIN_FWD] == pytest.approx(1.0, abs=1e-3)  # doubly stochastic: no amplification


@pytest.mark.parametrize("variant", [["hc"], ["mhc"], ["mhc", "mhc_h_res_proj='orthostochastic'"]])
def test_one_stream_with_identity_mappings_is_exactly_the_plain_residual(variant):
    plain_cfg = tiny("base")
    torch.manual_seed(0)
    plain = GPT(plain_cfg)
    cfg = tiny(variant[0], *variant[1:], "hc_num_streams=1")
    model = GPT(cfg)
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".res_" in k for k in missing)  # only the connections' own parameters
    with torch.no_grad():
        for c in model.connections():
            if isinstance(c, ManifoldHyperConnection):
                c.static_pre.fill_(40.0)  # sigmoid(40) == 1.0 in float32
                c.static_post.zero_()  # 2 sigmoid(0) == 1
                # 1x1: Sinkhorn of anything is [1]; Newton-Schulz of [x > 0] is [~1]
                c.static_res.fill_(1.0)
    idx = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        expected, _ = plain(idx)
        got, _ = model(idx)
    if "orthostochastic" in variant[-1]:
        # Newton-Schulz of [x] is 1 only up to float32 rounding
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    else:
        assert torch.equal(got, expected)


def _h_res_grads(cfg: TrainConfig) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = GPT(cfg)
    idx = torch.randint(0, 64, (4, 16))
    _, loss = model(idx, torch.roll(idx, -1, 1))
    loss.backward()
    return [c.static_res.grad for c in model.connections()]


@pytest.mark.parametrize("extra", [[], ["mhc_h_res_proj='orthostochastic'"], ["mhc_residual_identity_mix=True"],
                                   ["hc_static_only=True"]])
def test_mhc_h_res_gets_a_gradient_at_init(extra):
    grads = _h_res_grads(tiny("mhc", *extra))
    # The first sub-layer mixes n identical copies of the embedding and the last feeds the sum over
    # streams; a doubly stochastic map changes neither, so those two have no effect (by design).
    for g in grads[1:-1]:
        assert torch.isfinite(g).all()
        assert g.abs().max() > 1e-9


def test_reference_init_has_zero_gradient():
    """The failure the init avoids, so the test above can fail: logits -8 off the diagonal, tau 0.05
    (the public reference's setting: exp(-160) is 0 in float32)."""
    cfg = tiny("mhc", "sinkhorn_tau=0.05")
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        for c in model.connections():
            c.static_res.copy_(torch.full((4, 4), -8.0).fill_diagonal_(0.0))
    idx = torch.randint(0, 64, (4, 16))
    model(idx, torch.roll(idx, -1, 1))[1].backward()
    assert all(c.static_res.grad.abs().max() == 0 for c in model.connections())


@pytest.mark.parametrize("alpha_logit", [-10.0, -3.0, 0.0, 3.0, 10.0])
def test_identity_mix_coefficient_keeps_a_gradient_where_the_old_clamp_killed_it(alpha_logit):
    """a = sigmoid(logit) is in (0, 1) with a non-zero gradient for every logit; the old a.clamp(0, 1)
    of a free a had gradient exactly 0 once a step took a outside [0, 1] (e.g. a = -0.1 or 1.2)."""
    s = torch.tensor([[0.2, 0.8], [0.8, 0.2]])
    g = torch.tensor([[1.0, -1.0], [0.5, 2.0]])  # some loss gradient d L / d H_res
    for dead in (-0.1, 1.2):  # what the old parametrisation did there
        a = torch.tensor(dead, requires_grad=True)
        ((1 - a.clamp(0, 1)) * torch.eye(2) + a.clamp(0, 1) * s).mul(g).sum().backward()
        assert a.grad == 0
    logit = torch.tensor(alpha_logit, requires_grad=True)
    h = identity_mix(s, logit)
    h.mul(g).sum().backward()
    a = torch.sigmoid(torch.tensor(alpha_logit, dtype=torch.float64))
    assert 0 < a < 1
    torch.testing.assert_close(h.double(), (1 - a) * torch.eye(2, dtype=torch.float64) + a * s.double(),
                               atol=tol(torch.float32, 2), rtol=0)
    # d L / d logit = sigmoid'(logit) * <g, S - I>: small far out (4.5e-5 at |logit| = 10), never 0
    want = a * (1 - a) * (g.double() * (s.double() - torch.eye(2, dtype=torch.float64))).sum()
    assert logit.grad != 0
    # 1 - a is rounded to float32's eps, relative to itself eps / (1 - a): that sets the tolerance
    torch.testing.assert_close(logit.grad.double(), want, rtol=tol(torch.float32, 8) / float(min(a, 1 - a)), atol=0)


def test_identity_mix_starts_at_the_configured_alpha_and_trains():
    model = GPT(tiny("mhc", "mhc_residual_identity_mix=True", "mhc_residual_alpha=0.3"))
    for c in model.connections():
        assert torch.sigmoid(c.res_alpha_logit).item() == pytest.approx(0.3)
    idx = torch.randint(0, 64, (4, 16))
    model(idx, torch.roll(idx, -1, 1))[1].backward()
    assert all(c.res_alpha_logit.grad.abs() > 0 for c in model.connections()[1:-1])


@pytest.mark.parametrize("norm", ["rms", "layer"])
def test_hc_dynamic_norm_layer_ignores_a_shift_of_a_stream(norm):
    """LayerNorm (hc_dynamic_norm='layer') centres each stream, so adding a constant to a stream
    leaves HC's dynamic maps unchanged; the RMSNorm does not centre, so they move."""
    from sweepctl.train.hyper import HyperConnection

    cfg = tiny("hc", f"hc_dynamic_norm='{norm}'")
    conn = HyperConnection(cfg, 0)
    with torch.no_grad():
        conn.dyn_proj.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    x = torch.randn(1, 3, 4, 32, generator=torch.Generator().manual_seed(1))
    _, (res, _) = conn.read(x)
    _, (res_shift, _) = conn.read(x + 0.7)
    same = torch.allclose(res, res_shift, atol=tol(torch.float32, 32, 10.0), rtol=0)
    assert same == (norm == "layer")


def test_dynamic_parts_start_at_zero_but_learn():
    for cfg in (tiny("hc"), tiny("mhc")):
        torch.manual_seed(0)
        model = GPT(cfg)
        idx = torch.randint(0, 64, (4, 16))
        model(idx, torch.roll(idx, -1, 1))[1].backward()
        for c in model.connections():
            assert c.dyn_proj.abs().max() == 0 and c.dyn_proj.grad.abs().max() > 0


# --------------------------------------------------------------------------- every knob is consumed


def fingerprint(cfg: TrainConfig) -> torch.Tensor:
    """Logits on a probe batch after three optimizer steps with the trainer's optimizer and schedule
    (the same seed for every config): differs whenever init, forward, backward or update differ."""
    from sweepctl.train.train import lr_at

    torch.manual_seed(cfg.seed)
    model = GPT(cfg)
    opt = model.configure_optimizer("cpu")
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 64, (2, cfg.block_size + 1), generator=gen)
    for it in range(3):
        for g in opt.param_groups:
            g["lr"] = lr_at(it, cfg) * g["lr_scale"]
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        return model(idx[:, :-1])[0]


HC = ["hc_disable=False", "hc_num_streams=2"]
MHC = ["hc_disable=False", "hc_num_streams=3", "mhc=True"]
ORTHO = [*MHC, "mhc_h_res_proj='orthostochastic'"]
MIX = [*MHC, "mhc_residual_identity_mix=True"]
VRES = ["v_residual=True"]
# (base overrides, knob=value A, knob=value B): one row per knob that changes the computation
KNOBS = [
    ([], "n_layer=2", "n_layer=3"),
    ([], "n_head=2", "n_head=4"),
    ([], "n_embd=32", "n_embd=48"),
    ([], "vocab_size=64", "vocab_size=128"),
    ([], "dropout=0.0", "dropout=0.2"),
    ([], "bias=False", "bias=True"),
    ([], "seed=1", "seed=2"),
    ([], "learning_rate=1e-2", "learning_rate=2e-2"),
    (["grad_clip=0.0"], "weight_decay=0.0", "weight_decay=10.0"),
    ([], "beta1=0.9", "beta1=0.5"),
    ([], "beta2=0.95", "beta2=0.5"),
    (["learning_rate=1.0", "min_lr=1.0"], "grad_clip=0.0", "grad_clip=0.01"),
    ([], "warmup_iters=1", "warmup_iters=2"),
    ([], "lr_decay_iters=3", "lr_decay_iters=50"),
    ([], "min_lr=1e-3", "min_lr=1e-4"),
    ([], "hc_disable=True", "hc_disable=False"),
    (["hc_disable=False"], "hc_num_streams=2", "hc_num_streams=3"),
    (HC, "hc_static_only=False", "hc_static_only=True"),
    (HC, "hc_dynamic_norm='rms'", "hc_dynamic_norm='layer'"),
    (HC, "hc_out_proj_init='sqrt_n'", "hc_out_proj_init='gpt2'"),
    (MHC, "hc_static_only=False", "hc_static_only=True"),
    (["hc_disable=False", "hc_num_streams=3"], "mhc=False", "mhc=True"),
    (MHC, "sinkhorn_iters=1", "sinkhorn_iters=20"),
    (MHC, "sinkhorn_tau=0.05", "sinkhorn_tau=0.5"),
    ([*MHC, "sinkhorn_iters=1"], "mhc_h_res_balance=False", "mhc_h_res_balance=True"),
    (MHC, "mhc_h_res_proj='sinkhorn'", "mhc_h_res_proj='orthostochastic'"),
    (ORTHO, "ns_steps=2", "ns_steps=5"),
    (ORTHO, "ns_eps=1e-7", "ns_eps=1.0"),
    (ORTHO, "ns_polish_steps=0", "ns_polish_steps=3"),
    (ORTHO, "ns_coeffs=(3.0, -3.2, 1.2)", "ns_coeffs=(3.4445, -4.7750, 2.0315)"),
    ([*ORTHO, "ns_steps=8"], "ns_coeffs=(3.0, -3.2, 1.2)", "ns_coeffs=NS_COEFFS"),
    (MHC, "mhc_residual_identity_mix=False", "mhc_residual_identity_mix=True"),
    (MIX, "mhc_residual_alpha=0.01", "mhc_residual_alpha=0.5"),
    ([], "v_residual=False", "v_residual=True"),
    (VRES, "v_residual_constrained=False", "v_residual_constrained=True"),
    ([*VRES, *MHC], "v_residual_constrained=False", "v_residual_constrained=True"),
    (VRES, "v_residual_lamb_lr=1e-2", "v_residual_lamb_lr=1e-1"),
    (VRES, "v_residual_init=0.5", "v_residual_init=0.05"),
    ([*VRES, "v_residual_constrained=True"], "v_residual_init=0.5", "v_residual_init=0.05"),
]


@pytest.mark.parametrize(("base", "a", "b"), KNOBS, ids=[k[1].split("=")[0] + "-" + str(i) for i, k in enumerate(KNOBS)])
def test_every_knob_changes_the_result(base, a, b):
    out_a = fingerprint(tiny("base", *base, a))
    out_b = fingerprint(tiny("base", *base, b))
    assert out_a.shape != out_b.shape or not torch.equal(out_a, out_b), f"{a} and {b} computed the same thing"


def test_every_model_and_optimizer_knob_is_covered():
    run_control = {  # consumed by the loop and the run directory; tested in test_train_run.py
        "out_dir", "dataset", "data_dir", "resume", "heartbeat_interval_s", "eval_interval", "log_interval",
        "eval_iters", "max_iters", "batch_size", "block_size", "gradient_accumulation_steps", "dtype", "device",
        "compile_model", "backend", "wandb_log", "wandb_project", "wandb_run_name", "wandb_group",
        "wandb_log_layer_stats", "wandb_log_layer_cosine", "wandb_log_amax", "hc_num_fracs",
        "eval_batch_size", "init_from", "always_save_checkpoint", "decay_lr", "eval_only",
        "diag_batch_size",
    }
    covered = {a.split("=")[0] for _, a, _ in KNOBS}
    assert set(TrainConfig.model_fields) - run_control - covered == set()


@pytest.mark.parametrize("preset", ["hc", "mhc", "hc_48l", "cvres_mhc_48l"])
def test_presets_follow_the_papers(preset):
    """The settings docs/trainer.md lists as the papers' values are the presets' (its deviation
    table): HC's dynamic branch reads LayerNorm'd streams (HC paper, eq. 10 and Appendix J,
    Algorithm 2), the output projections start sqrt(n) smaller (HC paper, §4 Implementation), the
    Sinkhorn starts from exp of the raw logits for t_max = 20 steps (mHC paper, §4.2, eq. 9),
    and a value residual starts at (0.5, 0.5) (ResFormer)."""
    cfg = resolve_config(preset)
    assert (cfg.hc_dynamic_norm, cfg.hc_out_proj_init) == ("layer", "sqrt_n")
    assert (cfg.sinkhorn_tau, cfg.sinkhorn_iters, cfg.v_residual_init) == (1.0, 20, 0.5)
    model = GPT(resolve_config(preset, ["n_embd=12", "n_head=2", "block_size=8", "vocab_size=64"]))
    gpt2 = 0.02 / math.sqrt(2 * cfg.n_layer)
    projections = [p for name, p in model.named_parameters() if name.endswith("c_proj.weight")]
    # the sample std of 2 n_layer x 144 (or 576) normal draws is within a few % of the init std
    std = torch.cat([p.detach().flatten() for p in projections]).std().item()
    assert std == pytest.approx(gpt2 / math.sqrt(cfg.hc_num_streams), rel=0.1)
    plain = GPT(resolve_config(preset, ["n_embd=12", "n_head=2", "block_size=8", "vocab_size=64",
                                        "hc_out_proj_init='gpt2'"]))
    std = torch.cat([p.detach().flatten() for n, p in plain.named_parameters() if n.endswith("c_proj.weight")]).std()
    assert std.item() == pytest.approx(gpt2, rel=0.1)


@pytest.mark.parametrize("constrained", [False, True])
def test_value_residual_starts_at_the_configured_mix(constrained):
    model = GPT(tiny("base", "v_residual=True", f"v_residual_constrained={constrained}", "v_residual_init=0.2"))
    lam = model.transformer.h[1].attn.v_lambda.detach()
    torch.testing.assert_close(torch.softmax(lam, 0) if constrained else lam, torch.tensor([0.8, 0.2]))


def test_value_residual_constrained_mix_is_convex():
    """Constrained: (l1, l2) = softmax(params), so shifting both params changes nothing; the
    unconstrained mix scales v by l1 + l2, so the same shift changes the output."""
    idx = torch.randint(0, 64, (2, 16))

    def out(constrained: bool, shift: float) -> torch.Tensor:
        torch.manual_seed(0)
        model = GPT(tiny("base", "v_residual=True", f"v_residual_constrained={constrained}"))
        assert not hasattr(model.transformer.h[0].attn, "v_lambda")  # layer 0 produces v_1
        with torch.no_grad():
            model.transformer.h[1].attn.v_lambda.copy_(torch.tensor([0.3, -0.2]) + shift)
            return model(idx)[0]

    # the same model up to softmax rounding, carried through 2 layers' length-4C (128) reductions
    assert torch.allclose(out(True, 0.0), out(True, 5.0), atol=tol(torch.float32, 2 * 128), rtol=0)
    assert not torch.allclose(out(False, 0.0), out(False, 5.0), atol=1e-3)


@pytest.mark.parametrize("variant", [["hc"], ["cvres_mhc", "mhc_residual_identity_mix=True"],
                                     ["mhc", "mhc_h_res_proj='orthostochastic'", "hc_static_only=True"]])
def test_forward_traces_as_one_graph_for_torch_compile(variant):
    """No data-dependent Python control flow: dynamo captures the whole forward without a break."""
    import torch._dynamo

    torch._dynamo.reset()
    model = GPT(tiny(*variant))
    idx = torch.randint(0, 64, (2, 16))
    explained = torch._dynamo.explain(model)(idx, idx)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_newton_schulz_output_is_orthogonal_when_converged():
    x = newton_schulz(torch.eye(3) + 0.1 * torch.randn(3, 3), NS_COEFFS_SCHEDULE, 1e-7)
    torch.testing.assert_close(x @ x.T, torch.eye(3), atol=1e-2, rtol=0)


def test_sinkhorn_tau_changes_the_projection_of_the_same_logits():
    logits = torch.randn(4, 4)
    assert not torch.allclose(sinkhorn(logits, 20, 0.05), sinkhorn(logits, 20, 0.5))
