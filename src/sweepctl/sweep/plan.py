"""RunSpec[] -> Plan: which shard runs which row, on which GPUs, with which trainer command. Pure.

Static schedule: row i (0-based, file order) goes to shard i % N, and shard i owns devices
[i*K .. i*K+K-1] — so N shards on an N-GPU pod use every GPU (the postmortem's sweep used one).
Dynamic schedule: every shard claims the next unclaimed row at run time, which keeps all GPUs busy
when run lengths differ; the plan then fixes only the devices. Rows are claimed by the CSV's optional
`priority` column (higher first), then longest first (`claim_order`: estimated training FLOPs,
descending, ties in row order), so the long runs do not start last and leave the other GPUs idle at
the end.

Slots (`runs_per_gpu` K > 1): each GPU group of `gpus_per_shard` devices gets K shards, and
shard i runs on group i // K as its slot i % K — K runners share the group's
CUDA_VISIBLE_DEVICES. Slots always claim (dynamic schedule): a static split cannot balance K
runs that slow each other down.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, field_validator

from sweepctl.errors import RefusedError, SpecError
from sweepctl.sweep.spec import RunSpec, Sweep, with_settings
from sweepctl.train.config import TrainConfig, format_override

Schedule = Literal["static", "dynamic"]
_FIELD_NAMES = frozenset(TrainConfig.model_fields)
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
    priority: int = 0  # dynamic schedule: claimed before every row of a lower priority
    config: TrainConfig  # the row's settings after preset, config file, overrides and launch settings
    argv: list[str]  # the trainer command; "python" is replaced by the runner's interpreter

    @field_validator("config", mode="before")
    @classmethod
    def _known_settings(cls, v: Any) -> Any:
        # plan.json written by another sweepctl version may name a setting this one lacks (the
        # trainer refuses it on the row's command line, which is what runs); a missing one reads
        # as its default.
        if isinstance(v, dict) and not _FIELD_NAMES.issuperset(v):
            return {k: x for k, x in v.items() if k in _FIELD_NAMES}
        return v


class Plan(BaseModel):
    sweep: str
    shard_count: int
    schedule: Schedule
    gpus_per_shard: int
    shards: list[ShardPlan]
    runs: list[PlannedRun]
    runs_per_gpu: int = 1  # slots per GPU group; shard i is slot i % K of group i // K
    # TORCHINDUCTOR_CACHE_DIR (Triton's cache under it) the runners give every trainer; None: torch's own
    compile_cache: str | None = None

    def slot(self, shard: int) -> tuple[int, int]:
        """(GPU group, slot within it) of a shard."""
        return shard // self.runs_per_gpu, shard % self.runs_per_gpu

    def run(self, run_id: str) -> PlannedRun:
        for r in self.runs:
            if r.run_id == run_id:
                return r
        raise KeyError(run_id)

    def runs_of_shard(self, shard: int) -> list[PlannedRun]:
        return [r for r in self.runs if r.shard == shard]


def launch_values(run: RunSpec, *, run_dirs: str, data_dir: str | Path | None,
                  no_wandb: bool = False, wandb_project: str | None = None,
                  wandb_group: str | None = None) -> dict[str, str | bool]:
    """Settings sweepctl owns for every run: its run directory, its data, and W&B naming.
    `run_dirs` is `run_dir_prefix(out_root)`."""
    values: dict[str, str | bool] = {"out_dir": run_dirs + run.run_id}
    if data_dir is not None and not any(w.startswith("data_dir=") for w in run.overrides):
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


def run_dir_prefix(out_root: str | Path) -> str:
    """`str(Path(out_root) / run_id)` is this + run_id for every run_id (a safe name: no "/", not
    "." or ".."), as pathlib spells it ("" for ".", "/o/" for "/o/" or "/o"), without a Path per row."""
    return str(Path(out_root) / "x")[:-1]


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
              config_refs: dict[Path, str] | None = None, runs_per_gpu: int = 1,
              compile_cache: str | Path | None = None) -> Plan:
    """config_refs maps a config file to the path the trainer should read (a manifest copy).
    `shards` counts GPU groups; with runs_per_gpu K the plan has shards x K slots (sessions)."""
    problems = []
    if shards < 1:
        problems.append(f"{sweep.csv_path}:1: --shards must be at least 1 (got {shards})")
    if gpus_per_shard < 1:
        problems.append(f"{sweep.csv_path}:1: --gpus-per-shard must be at least 1 (got {gpus_per_shard})")
    for r in sweep.runs:
        if r.gpus > gpus_per_shard:
            problems.append(f"{sweep.csv_path}:{r.line}: {r.run_id!r} asks for {r.gpus} GPUs but each shard has "
                            f"{gpus_per_shard}; use --gpus-per-shard {r.gpus}")
    if runs_per_gpu < 1:
        problems.append(f"{sweep.csv_path}:1: --runs-per-gpu must be at least 1 (got {runs_per_gpu})")
    elif runs_per_gpu > 1 and schedule != "dynamic":
        problems.append(f"{sweep.csv_path}:1: --runs-per-gpu {runs_per_gpu} needs the dynamic schedule (slots claim "
                        "rows); drop --schedule static or pass --schedule dynamic")
    if problems:
        raise SpecError(problems)
    k = runs_per_gpu
    shard_plans = [ShardPlan(index=i, devices=list(range((i // k) * gpus_per_shard, (i // k + 1) * gpus_per_shard)),
                             run_ids=[]) for i in range(shards * k)]
    runs = []
    prefix = run_dir_prefix(out_root)
    for r in sweep.runs:
        shard = r.row_index % shards if schedule == "static" else None
        extra = launch_values(r, run_dirs=prefix, data_dir=data_dir, no_wandb=no_wandb,
                              wandb_project=wandb_project, wandb_group=wandb_group)
        ref = (config_refs or {}).get(r.config_path) if r.config_path else None
        # Built from checked values (the row's config was validated, the launch settings are
        # ours): validating a PlannedRun would validate its config's 55 fields again.
        runs.append(_planned_run(
            run_id=r.run_id, line=r.line, row_index=r.row_index, shard=shard, seed=r.seed, gpus=r.gpus,
            priority=r.priority, config=with_settings(r.config, extra), argv=trainer_argv(r, extra, ref)))
        if shard is not None:
            shard_plans[shard].run_ids.append(r.run_id)
    return Plan(sweep=sweep.name, shard_count=shards * k, schedule=schedule, gpus_per_shard=gpus_per_shard,
                shards=shard_plans, runs=runs, runs_per_gpu=k,
                compile_cache=str(compile_cache) if compile_cache is not None else None)


_EVERY_FIELD = set(PlannedRun.model_fields)


def _planned_run(**values: Any) -> PlannedRun:
    """`PlannedRun.model_construct(**values)` for values of every field, in field order: the
    instance pydantic's own would build (its __dict__, every field set, no extras or private
    values), without its per-field loop, the largest part of planning a big sweep."""
    run = PlannedRun.__new__(PlannedRun)
    object.__setattr__(run, "__dict__", values)
    object.__setattr__(run, "__pydantic_fields_set__", _EVERY_FIELD)  # shared: it never changes, all are set
    object.__setattr__(run, "__pydantic_extra__", None)
    object.__setattr__(run, "__pydantic_private__", None)
    return run


def cuda_visible_devices(plan: Plan, shard: int) -> str:
    return ",".join(str(d) for d in plan.shards[shard].devices)


# --- claim order (dynamic schedule) ----------------------------------------------------------------

def run_cost(config: TrainConfig) -> float:
    """Training FLOPs of a run from its resolved settings (a plan row's `config`): tokens seen x
    (6 N + 12 L C T) per token, N = 12 L C^2 + V C — the estimate nanoGPT's MFU uses. Torch-free.

    Only the order it gives matters. It ranks the reference sweep right (a 48-layer run above a
    6-layer one), but it underrates deep narrow models and mHC: they are bound by memory traffic
    and kernel count, not FLOPs (~1.5x the FLOPs of a 6-layer run, ~8x its time on an H200).
    A resumed run is costed whole."""
    tokens = config.max_iters * config.tokens_per_iter
    layers, width = config.n_layer, config.n_embd
    params = 12 * layers * width * width + config.vocab_size * width
    return float(tokens) * (6 * params + 12 * layers * width * config.block_size)


def longest_first(costs: Sequence[float]) -> list[int]:
    """Indices by descending cost, ties by index: a stable order every runner computes alike."""
    return sorted(range(len(costs)), key=lambda i: (-costs[i], i))


def claim_order(plan: Plan) -> list[str]:
    """The run_ids in the order dynamic runners claim them: priority descending (the researcher's
    word), then estimated cost descending (LPT), which brings the sweep's end close to
    max(longest run, total / shards), then row order."""
    costs = [run_cost(r.config) for r in plan.runs]
    order = sorted(range(len(plan.runs)), key=lambda i: (-plan.runs[i].priority, -costs[i], i))
    return [plan.runs[i].run_id for i in order]


# --- adding rows to a live dynamic queue -----------------------------------------------------------

def merge_plans(live: Plan, wanted: Plan, started: set[str], where: str) -> tuple[Plan, list[str], list[str]]:
    """The live queue with `wanted`'s rows joined: (merged plan, added run_ids, updated run_ids).
    `where` is the CSV `wanted` was read from, for the messages.

    A new run_id is appended; a row that has not started takes its new settings and priority; a
    row of `started` (claimed, running or finished) whose effective config changed is refused,
    naming the difference — its results would no longer match its row. Rows missing from `wanted`
    stay: they may be running. The live plan's shards and devices are kept. Pure."""
    merged = live.model_copy(deep=True)
    index = {r.run_id: i for i, r in enumerate(merged.runs)}
    added, updated, conflicts = [], [], []
    for new in wanted.runs:
        new = new.model_copy(update={"shard": None})
        if new.run_id not in index:
            merged.runs.append(new.model_copy(update={"row_index": len(merged.runs)}))
            added.append(new.run_id)
            continue
        old = merged.runs[index[new.run_id]]
        differences = describe_difference(old, new)
        if not differences and old.priority == new.priority:
            continue
        if new.run_id in started:
            if differences:
                conflicts.append(f"{where}:{new.line}: {new.run_id} ({'; '.join(differences)})")
            continue  # a priority change means nothing once a row is claimed
        merged.runs[index[new.run_id]] = new.model_copy(update={"row_index": old.row_index})
        updated.append(new.run_id)
    if conflicts:
        raise RefusedError(f"{len(conflicts)} row(s) already started with a different config: "
                           + "; ".join(conflicts),
                           hint="give a changed row a new run_id (e.g. add -v2), or put its old values back")
    return merged, added, updated


def describe_difference(old: PlannedRun, new: PlannedRun, shown: int = 4) -> list[str]:
    """`key: old -> new` for each setting that differs, then the trainer command if only it does."""
    was, now = old.config.model_dump(mode="json"), new.config.model_dump(mode="json")  # as plan.json shows them
    out = [f"{k}: {was[k]!r} -> {now[k]!r}" for k in sorted(was) if was[k] != now[k]]
    if old.gpus != new.gpus:
        out.append(f"gpus: {old.gpus} -> {new.gpus}")
    if not out and old.argv != new.argv:
        out.append(f"trainer command: {' '.join(old.argv[3:])} -> {' '.join(new.argv[3:])}")
    return out[:shown] + ([f"{len(out) - shown} more"] if len(out) > shown else [])
