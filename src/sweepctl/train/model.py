"""GPT-2 style language model with a choice of residual stream (plain, HC, mHC) and value residual.

nanoGPT's model (learned positions, tied embedding and head, pre-norm blocks, causal attention
through scaled_dot_product_attention, 4x GELU MLP) with two additions:
  * each attention and MLP sub-layer is wrapped by a connection from `hyper.py`;
  * value residual (ResFormer, arXiv 2410.17897): layers after the first mix the first layer's
    attention values into their own, v = l1 v + l2 v_1, with learned (l1, l2) per layer —
    softmax-normalised (a convex mix) when v_residual_constrained.

    from sweepctl.train.config import resolve_config
    from sweepctl.train.model import GPT
    model = GPT(resolve_config("mhc", ["n_layer=2", "vocab_size=256"]))
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from sweepctl.train.config import TrainConfig
from sweepctl.train.hyper import make_connection, static_h_res, static_mappings


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TrainConfig, layer: int):
        super().__init__()
        self.n_head, self.n_embd = cfg.n_head, cfg.n_embd
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)
        # layer 0 produces v_1; later layers mix it in (a structural choice, not data-dependent)
        self.mix_values = cfg.v_residual and layer > 0
        self.constrained = cfg.v_residual_constrained
        if self.mix_values:
            # (l1, l2) = (1 - w, w) with w = v_residual_init: 0.5 each by default, as in ResFormer;
            # constrained: the softmax logits (log(1 - w), log w) give the same pair
            w = cfg.v_residual_init
            init = torch.tensor([1.0 - w, w])
            self.v_lambda = nn.Parameter(init.log() if self.constrained else init)

    def forward(self, x: torch.Tensor, v1: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if self.mix_values:
            lam = torch.softmax(self.v_lambda, 0) if self.constrained else self.v_lambda
            v = lam[0] * v + lam[1] * v1
        else:
            v1 = v
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), v1


class MLP(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm block; `res_attn`/`res_mlp` decide how each sub-layer meets the residual state."""

    def __init__(self, cfg: TrainConfig, layer: int):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, cfg.bias)
        self.attn = CausalSelfAttention(cfg, layer)
        self.ln_2 = LayerNorm(cfg.n_embd, cfg.bias)
        self.mlp = MLP(cfg)
        self.res_attn = make_connection(cfg, 2 * layer)
        self.res_mlp = make_connection(cfg, 2 * layer + 1)

    def forward(self, x: torch.Tensor, v1: torch.Tensor | None, maps_attn: tuple | None = None,
                maps_mlp: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, T, C) plain, (B, T, n, C) with hyper-connections; maps_*: the sub-layers'
        # precomputed static mappings (GPT.static_maps), or None
        h, ctx = self.res_attn.read(x, maps_attn)  # (B, T, C)
        y, v1 = self.attn(self.ln_1(h), v1)
        x = self.res_attn.write(x, y, ctx)
        h, ctx = self.res_mlp.read(x, maps_mlp)
        x = self.res_mlp.write(x, self.mlp(self.ln_2(h)), ctx)
        return x, v1


def out_proj_std(cfg: TrainConfig) -> float:
    """Init std of every sub-layer's output projection (attention's and the MLP's c_proj).

    GPT-2 scales it by depth, 0.02 / sqrt(2 n_layer). With n residual streams the HC paper
    (arXiv 2409.19606, §4 "Implementation") also scales it by sqrt(n), so that the std of the
    streams' sum before the final norm stays the original's; `hc_out_proj_init='gpt2'` keeps
    GPT-2's (the public mHC reference's choice)."""
    std = 0.02 / math.sqrt(2 * cfg.n_layer)
    if not cfg.hc_disable and cfg.hc_out_proj_init == "sqrt_n":
        std /= math.sqrt(cfg.hc_num_streams)
    return std


class GPT(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.streams = 0 if cfg.hc_disable else cfg.hc_num_streams  # 0: plain (B, T, C) state
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layer)]),
            ln_f=LayerNorm(cfg.n_embd, cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=out_proj_std(cfg))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # only Linear/Embedding: the connections' parameters keep the init `hyper.py` documents
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape
        assert self.cfg.block_size >= T, f"sequence of {T} tokens is longer than block_size {self.cfg.block_size}"
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        if self.streams:
            # (B, T, n, C): n copies, materialised so that every sub-layer sees one contiguous layout
            x = x.unsqueeze(2).expand(B, T, self.streams, x.shape[-1]).contiguous()
        maps = self.static_maps()
        v1 = None
        for i, block in enumerate(self.transformer.h):
            x, v1 = block(x, v1, *((None, None) if maps is None else (maps[2 * i], maps[2 * i + 1])))
        if self.streams:
            x = x.sum(2)  # (B, T, C): the streams' sum; ln_f makes its scale irrelevant
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, vocab)
        loss = None
        if targets is not None:
            # under autocast cross_entropy runs in float32 by itself; no extra float32 copy of the logits
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def connections(self) -> list[nn.Module]:
        return [c for b in self.transformer.h for c in (b.res_attn, b.res_mlp)]

    def static_maps(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None:
        """Per sub-layer (H_pre, H_post, H_res) when they do not depend on the tokens (mHC with
        hc_static_only), all projected in one batched call, once per forward; None otherwise (the
        connections then compute their own, per token)."""
        if not (self.cfg.mhc and self.cfg.hc_static_only):
            return None
        pre, post, res = static_mappings(self.connections(), self.cfg)  # (L, n), (L, n), (L, n, n)
        return [(pre[i], post[i], res[i]) for i in range(pre.shape[0])]

    def h_res_static(self) -> torch.Tensor | None:
        """(2 n_layer, n, n): every mHC sub-layer's static H_res, projected in one call; None otherwise."""
        return static_h_res(self.connections(), self.cfg) if self.cfg.mhc else None

    @torch.no_grad()
    def layer_stats(self, idx: torch.Tensor) -> dict[str, list[float]]:
        """Per block: RMS of the residual state after it, and cosine(state before, state after).
        For logging only (wandb_log_layer_stats / _cosine); runs the blocks eagerly."""
        B, T = idx.shape
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        if self.streams:
            x = x.unsqueeze(2).expand(B, T, self.streams, x.shape[-1]).contiguous()
        maps = self.static_maps()
        rms, cos, v1 = [], [], None
        for i, block in enumerate(self.transformer.h):
            before = x
            x, v1 = block(x, v1, *((None, None) if maps is None else (maps[2 * i], maps[2 * i + 1])))
            rms.append(float(x.float().pow(2).mean().sqrt()))
            cos.append(float(F.cosine_similarity(before.float().flatten(0, -2), x.float().flatten(0, -2), dim=-1)
                             .mean()))
        return {"rms": rms, "cosine": cos}

    def configure_optimizer(self, device_type: str) -> torch.optim.AdamW:
        """AdamW with three groups: weight-decayed matrices (Linear/Embedding weights and dynamic
        HC/mHC projections, as the HC paper decays its dynamic part), non-decayed rest (norms,
        biases, static HC/mHC mappings, gates), and the value-residual lambdas at their own lr
        (`v_residual_lamb_lr`, scaled by the schedule like the others via `lr_scale`)."""
        cfg = self.cfg
        decay, no_decay, lambdas = [], [], []
        for name, p in self.named_parameters():  # tied weights appear once
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "v_lambda":
                lambdas.append(p)
            elif p.dim() >= 2 and not leaf.startswith("static_"):
                decay.append(p)
            else:
                no_decay.append(p)
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
        ]
        if lambdas:
            groups.append({"params": lambdas, "weight_decay": 0.0,
                           "lr_scale": cfg.v_residual_lamb_lr / cfg.learning_rate})
        for g in groups:
            g["lr"] = cfg.learning_rate * g["lr_scale"]
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                                 fused=device_type == "cuda")
