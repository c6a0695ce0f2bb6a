"""Presets of one depth differ only in the residual stream, and the public reference's own
48-layer mHC setting stays runnable as a config file."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sweepctl.sweep.spec import read_sweep
from sweepctl.train.config import PRESETS, TrainConfig, resolve_config

REPO = Path(__file__).resolve().parents[1]
REFERENCE_48L = REPO / "examples" / "configs" / "mhc_48l_reference.py"
# The settings that make up the residual stream: the only ones presets of one depth may differ in.
RESIDUAL_PREFIXES = ("hc_", "mhc", "sinkhorn_", "ns_", "v_residual")


def is_residual_setting(name: str) -> bool:
    return name.startswith(RESIDUAL_PREFIXES)


def test_presets_of_one_depth_differ_only_in_the_residual_stream():
    by_depth: dict[int, dict[str, TrainConfig]] = defaultdict(dict)
    for name in PRESETS:
        cfg = resolve_config(name)
        by_depth[cfg.n_layer][name] = cfg
    assert {depth: sorted(group) for depth, group in by_depth.items()} == {
        6: ["base", "cvres_mhc", "hc", "mhc", "vres", "vres_mhc"],
        48: ["base_48l", "cvres_mhc_48l", "hc_48l", "mhc_48l", "vres_48l", "vres_mhc_48l"],
    }
    shared = [f for f in TrainConfig.model_fields if not is_residual_setting(f)]
    for depth, group in by_depth.items():
        for field in shared:
            values = {name: getattr(cfg, field) for name, cfg in group.items()}
            assert len(set(values.values())) == 1, f"{depth} layers: {field} differs: {values}"
        # the comparison's terms, named: tokens per iteration, length, schedule, eval cadence and set
        terms = {name: (cfg.tokens_per_iter, cfg.max_iters, cfg.lr_decay_iters, cfg.warmup_iters,
                        cfg.learning_rate, cfg.min_lr, cfg.decay_lr, cfg.eval_interval, cfg.eval_windows)
                 for name, cfg in group.items()}
        assert len(set(terms.values())) == 1, terms
        assert len({cfg.variant for cfg in group.values()}) == len(group)  # and the streams do differ


def test_the_presets_tokens_per_iteration_and_iterations():
    got = {name: (resolve_config(name).tokens_per_iter, resolve_config(name).max_iters)
           for name in ("base", "mhc", "base_48l", "hc_48l", "mhc_48l", "cvres_mhc_48l")}
    assert got == {"base": (131072, 5000), "mhc": (131072, 5000), "base_48l": (65536, 10000),
                   "hc_48l": (65536, 10000), "mhc_48l": (65536, 10000), "cvres_mhc_48l": (65536, 10000)}


def test_the_reference_48_layer_mhc_setting_runs_from_the_csv_config_column(tmp_path):
    cfg = resolve_config(str(REFERENCE_48L))
    assert (cfg.batch_size, cfg.gradient_accumulation_steps, cfg.max_iters, cfg.lr_decay_iters) == (24, 4, 6666, 6666)
    assert cfg.tokens_per_iter == 98304 and cfg.variant == "mhc" and cfg.n_layer == 48
    # everything else is the mhc_48l preset's
    preset = resolve_config("mhc_48l")
    differs = {f for f in TrainConfig.model_fields if getattr(cfg, f) != getattr(preset, f)}
    assert differs == {"batch_size", "max_iters", "lr_decay_iters", "eval_batch_size", "sinkhorn_tau", "sinkhorn_iters",
                       "mhc_h_res_balance", "hc_dynamic_norm", "hc_out_proj_init"}  # docs/trainer.md: deviations

    csv = tmp_path / "sweep.csv"
    csv.write_text("run_id,config,seed,overrides,notes\n"
                   f"ref-s1,{REFERENCE_48L},1,,the reference's own setting\n")
    (row,) = read_sweep(csv).runs
    assert (row.config.batch_size, row.config.max_iters, row.config.mhc, row.config.seed) == (24, 6666, True, 1)
