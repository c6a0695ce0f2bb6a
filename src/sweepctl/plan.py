"""RunSpec[] -> Plan: which shard runs which row, on which GPUs, with which trainer command. Pure.

Static schedule: row i (0-based, file order) goes to shard i % N, and shard i owns devices
[i*K .. i*K+K-1] — so N shards on an N-GPU pod use every GPU (the postmortem's sweep used one).
Dynamic schedule: every shard claims the next unclaimed row at run time, which keeps all GPUs busy
when run lengths differ; the plan then fixes only the devices. Rows are claimed longest first
(`claim_order`: estimated training FLOPs, descending, ties in row order), so the long runs do not
start last and leave the other GPUs idle at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from sweepctl.errors import SpecError
from sweepctl.spec import RunSpec, Sweep, shared_fields_set
from sweepctl.train.config import TrainConfig, format_override

Schedule = Literal["static", "dynamic"]
TRAINER_MODULE = "sweepctl.train"


class ShardPlan(BaseModel):
    index: int
    devices: list[int]
    run_ids: list[str]  # static: this shard's rows in order; dynamic: empty (rows are claimed)


class PlannedRun(BaseModel):
    run_id: str
    line: int
    row_index: int
    shard: int | None  # None under the dynamic schedule
    seed: int
    gpus: int
    config: dict[str, Any]  # every TrainConfig field after preset, config file, overrides, launch settings
    argv: list[str]  # the trainer command; "python" is replaced by the runner's interpreter


class Plan(BaseModel):
    sweep: str
    shard_count: int
    schedule: Schedule
    gpus_per_shard: int
    shards: list[ShardPlan]
    runs: list[PlannedRun]

    def run(self, run_id: str) -> PlannedRun:
        for r in self.runs:
            if r.run_id == run_id:
                return r
        raise KeyError(run_id)

    def runs_of_shard(self, shard: int) -> list[PlannedRun]:
        return [r for r in self.runs if r.shard == shard]


def launch_values(run: RunSpec, *, out_root: str | Path, data_dir: str | Path | None,
                  no_wandb: bool = False, wandb_project: str | None = None,
                  wandb_group: str | None = None) -> dict[str, str | bool]:
    """Settings sweepctl owns for every run: its run directory, its data, and W&B naming."""
    values: dict[str, str | bool] = {"out_dir": str(Path(out_root) / run.run_id)}
    if data_dir is not None and "data_dir" not in _override_keys(run):
        values["data_dir"] = str(data_dir)
    if run.config.wandb_run_name is None:
        values["wandb_run_name"] = run.run_id
    if wandb_project:
        values["wandb_project"] = wandb_project
    if wandb_group:
        values["wandb_group"] = wandb_group
    if no_wandb:
        values["wandb_log"] = False  # --no-wandb always wins (postmortem: it did not)
    return values


def _override_keys(run: RunSpec) -> set[str]:
    return {w.split("=", 1)[0] for w in run.overrides}


def trainer_argv(run: RunSpec, extra: dict[str, Any], config_ref: str | None = None) -> list[str]:
    """`python -m sweepctl.train CONFIG seed=... overrides... launch settings...`.

    Values are written as Python literals (`wandb_log=False`), never lowercase words, so the
    command reads back exactly as planned."""
    ref = config_ref or (str(run.config_path) if run.config_path else run.config_ref)
    words = [f"seed={run.seed}", *run.overrides, *(format_override(k, v) for k, v in extra.items())]
    return ["python", "-m", TRAINER_MODULE, ref, *words]


def make_plan(sweep: Sweep, *, shards: int, schedule: Schedule = "static", gpus_per_shard: int = 1,
              out_root: str | Path, data_dir: str | Path | None = None, no_wandb: bool = False,
              wandb_project: str | None = None, wandb_group: str | None = None,
              config_refs: dict[Path, str] | None = None) -> Plan:
    """config_refs maps a config file to the path the trainer should read (a manifest copy)."""
    problems = []
    if shards < 1:
        problems.append(f"{sweep.csv_path}:1: --shards must be at least 1 (got {shards})")
    if gpus_per_shard < 1:
        problems.append(f"{sweep.csv_path}:1: --gpus-per-shard must be at least 1 (got {gpus_per_shard})")
    for r in sweep.runs:
        if r.gpus > gpus_per_shard:
            problems.append(f"{sweep.csv_path}:{r.line}: {r.run_id!r} asks for {r.gpus} GPUs but each shard has "
                            f"{gpus_per_shard}; use --gpus-per-shard {r.gpus}")
    if problems:
        raise SpecError(problems)
    shard_plans = [ShardPlan(index=i, devices=list(range(i * gpus_per_shard, (i + 1) * gpus_per_shard)),
                             run_ids=[]) for i in range(shards)]
    runs = []
    for r in sweep.runs:
        shard = r.row_index % shards if schedule == "static" else None
        extra = launch_values(r, out_root=out_root, data_dir=data_dir, no_wandb=no_wandb,
                              wandb_project=wandb_project, wandb_group=wandb_group)
        config = r.config.model_copy(update=extra)
        ref = (config_refs or {}).get(r.config_path) if r.config_path else None
        # Built from checked values: a validated PlannedRun would copy its 50-key config dict again.
        runs.append(shared_fields_set(PlannedRun.model_construct(
            run_id=r.run_id, line=r.line, row_index=r.row_index, shard=shard, seed=r.seed, gpus=r.gpus,
            config=config.model_dump(mode="json"), argv=trainer_argv(r, extra, ref))))
        if shard is not None:
            shard_plans[shard].run_ids.append(r.run_id)
    return Plan(sweep=sweep.name, shard_count=shards, schedule=schedule, gpus_per_shard=gpus_per_shard,
                shards=shard_plans, runs=runs)


def cuda_visible_devices(plan: Plan, shard: int) -> str:
    return ",".join(str(d) for d in plan.shards[shard].devices)


# --- claim order (dynamic schedule) ----------------------------------------------------------------

_COST_FIELDS = ("max_iters", "batch_size", "block_size", "gradient_accumulation_steps", "n_layer", "n_embd",
                "vocab_size")
_COST_DEFAULTS = {k: TrainConfig.model_fields[k].default for k in _COST_FIELDS}


def run_cost(config: Mapping[str, Any]) -> float:
    """Training FLOPs of a run from its resolved settings (a plan row's `config`): tokens seen x
    (6 N + 12 L C T) per token, N = 12 L C^2 + V C — the estimate nanoGPT's MFU uses. Torch-free.

    Only the order it gives matters. It ranks the reference sweep right (a 48-layer run above a
    6-layer one), but it underrates deep narrow models and mHC: they are bound by memory traffic
    and kernel count, not FLOPs (~1.5x the FLOPs of a 6-layer run, ~8x its time on an H200).
    A resumed run is costed whole."""
    v = {k: config.get(k, _COST_DEFAULTS[k]) for k in _COST_FIELDS}
    tokens = v["max_iters"] * v["gradient_accumulation_steps"] * v["batch_size"] * v["block_size"]
    layers, width = v["n_layer"], v["n_embd"]
    params = 12 * layers * width * width + v["vocab_size"] * width
    return float(tokens) * (6 * params + 12 * layers * width * v["block_size"])


def longest_first(costs: Sequence[float]) -> list[int]:
    """Indices by descending cost, ties by index: a stable order every runner computes alike."""
    return sorted(range(len(costs)), key=lambda i: (-costs[i], i))


def claim_order(plan: Plan) -> list[str]:
    """The run_ids in the order dynamic runners claim them: estimated cost descending (LPT), which
    brings the sweep's end close to max(longest run, total / shards)."""
    return [plan.runs[i].run_id for i in longest_first([run_cost(r.config) for r in plan.runs])]
