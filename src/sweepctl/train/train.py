"""The training program every sweep row runs; it leaves a complete run directory on every ending.

    python -m sweepctl.train CONFIG [key=value ...]
    python -m sweepctl.train mhc out_dir=/mnt/out/mhc-s1 data_dir=/mnt/data/fineweb10B seed=1
    torchrun --standalone --nproc_per_node=8 -m sweepctl.train mhc out_dir=... data_dir=...

CONFIG is a preset name or a config file (nanoGPT-style .py read as data, or .toml); each
key=value (or nanoGPT's --key=value) is a Python literal checked against TrainConfig. The run_id is the last component of
out_dir. Optional env SWEEPCTL_RUN_CONTEXT (contract.CONTEXT_ENV): JSON {"sweep": {name, row_index, shard_index,
shard_count, schedule}, "attempt": N, "slot": {slot, runs_per_gpu, alone}} from the launcher,
recorded in run_metadata.json with the compile cache (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR).

Files in out_dir (contract_version 1; every JSON written atomically, no secret in any file):
  command.sh             executable; reruns this run from scratch (same cwd, CUDA_VISIBLE_DEVICES, argv)
  run_metadata.json      argv, host, versions, GPUs, package git commit, sweep/attempt from the context
  config_effective.json  every TrainConfig field + run_id, variant, tokens_per_iter, world_size, ...
  dataset_manifest.json  dataset, data_dir, train/val: [{path, size_bytes, num_tokens}], eval: the fixed
                         eval set {block_size, eval_iters, eval_batch_size, windows, train/val: {windows,
                         tokens, spans: [{shard, path, start, end, windows}], sha256}}; a resume must match it
  metrics.jsonl          {"event": "train", iter, loss, lr, tok_per_s, ms_per_iter, grad_norm, elapsed_s,
                         mem (MB)} per log_interval; {"event": "eval", iter, train, val, best_val} per eval;
                         {"event": "diag", iter, tokens, fwd_gain_mean/_max, bwd_gain_mean/_max (L
                         floats), h_res_row_err, h_res_col_err, n_layers} per eval for HC/mHC, on a
                         fixed val batch (see diagnostics.py); {"event": "resume", iter}: later rows
                         supersede a killed attempt's rows. Every record has tokens = iter * tokens_per_iter
  heartbeat.json         ts, iter, max_iters, pid, host, phase; every heartbeat_interval_s from a thread
  ckpt.pt                model, optimizer, scaler, iter_num, every rank's RNG states, config; each eval
                         and on SIGTERM/SIGINT (always_save_checkpoint=False: only when val improved)
  summary.json           ok, status (completed|failed|interrupted), error + error_class
                         (exception|oom|nan|signal) when not ok, times, iterations, tokens, losses, memory

Exit codes: 0 completed; 1 failed (exception, oom, nan, bad data); 2 bad command line or config
(including a DDP world size that does not divide gradient_accumulation_steps); 128+N interrupted
by signal N (130 SIGINT, 143 SIGTERM), after saving a checkpoint when possible.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import signal
import socket
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from sweepctl.train.config import ConfigError, TrainConfig, parse_override, read_config_file, resolve_config
from sweepctl.train.contract import (
    CHECKPOINT,
    COMMAND,
    CONFIG_EFFECTIVE,
    CONTEXT_ENV,
    CONTRACT_VERSION,
    DATASET_MANIFEST,
    HEARTBEAT,
    METADATA,
    METRICS,
    RUN_KIND,
    SUMMARY,
    write_text_atomic,
)
from sweepctl.train.data import (
    BatchPrefetcher,
    EvalWindows,
    ShardError,
    TokenWindows,
    find_shards,
    manifest_differences,
    rank_slice,
    shard_manifest,
    train_rng,
)
from sweepctl.train.diagnostics import GAIN_FWD, model_diagnostics
from sweepctl.train.model import GPT
from sweepctl.train.rundir import (
    Heartbeat,
    disk_cause,
    disk_error_text,
    git_info,
    is_disk_error,
    package_version,
    remove_partial,
    scrub,
    secret_values,
    wandb_run_id,
    write_json,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
FAULT_OOM_PACKED_ENV = "SWEEPCTL_FAULT_OOM_WHEN_PACKED"
# Settings that may differ between a checkpoint and the run resuming it: where and how long it
# runs and logs, not what it computes.
# The eval set (eval_iters, eval_batch_size) is not among them: evals before and after a resume
# must score the same tokens.
RESUME_MAY_CHANGE = {
    "out_dir", "resume", "init_from", "always_save_checkpoint", "eval_only", "max_iters", "eval_interval",
    "log_interval", "heartbeat_interval_s", "data_dir", "device", "compile_model", "backend", "wandb_log",
    "wandb_project", "wandb_run_name", "wandb_group", "wandb_log_layer_stats", "wandb_log_layer_cosine",
    "wandb_log_amax",
}


class UsageError(Exception):
    """A bad command line or config (exit 2)."""


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite (error_class nan)."""


class DiskError(Exception):
    """A write failed because the volume is full or read-only (error_class disk); the message names
    the file and the space left."""


class Interrupted(BaseException):
    """SIGTERM/SIGINT: a BaseException so that no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --------------------------------------------------------------------------- small helpers


def finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def lr_at(it: int, cfg: TrainConfig) -> float:
    """Linear warmup to learning_rate, cosine decay to min_lr at lr_decay_iters, then min_lr;
    learning_rate throughout with decay_lr=False (nanoGPT's meaning: no warmup either)."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def format_duration(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def peak_mem_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated, or the process's peak RSS elsewhere, in MB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def guess_out_dir(config: str, overrides: list[str]) -> Path | None:
    """out_dir when the config itself is invalid: from an override, else from the config file."""
    for word in reversed(overrides):
        if word.split("=", 1)[0].strip().removeprefix("--") == "out_dir":
            try:
                return Path(parse_override(word)[1])
            except ConfigError:
                return None
    try:
        v = read_config_file(Path(config)).values.get("out_dir")
    except (ConfigError, OSError):
        return None
    return Path(v) if isinstance(v, str) else None


# --------------------------------------------------------------------------- the run


class Run:
    """One training run from argv to its summary.json. `execute()` returns the exit code."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.t_start = time.time()
        self.cfg: TrainConfig | None = None
        self.out_dir: Path | None = None
        self.rank, self.local_rank, self.world_size, self.ddp = 0, 0, 1, False
        self.device = torch.device("cpu")
        self.dtype = "float32"
        self.context = self._read_context()
        self.iter_num = self.start_iter = 0
        self.best_val: float | None = None
        self.last_eval: dict[str, float] | None = None
        self.last_eval_iter: int | None = None
        self.ckpt_iter: int | None = None  # the iteration ckpt.pt holds (rank 0 knows)
        self.t_loop: float | None = None
        self.stop_signal: int | None = None
        self.defer_signals = False  # True from the loop on: a signal stops at the next safe point
        self.status: str | None = None
        self.heartbeat: Heartbeat | None = None
        self.wandb = None
        self.wandb_info: dict[str, Any] = {"enabled": False}
        self.resumed_from: int | None = None
        self.model = self.raw_model = self.optimizer = self.scaler = None
        self.train_batches: BatchPrefetcher | None = None  # from the loop on: owns self.train_rng
        self.stdout_gone = False

    @property
    def master(self) -> bool:
        return self.rank == 0

    def log(self, msg: str) -> None:
        if self.master and not self.stdout_gone:
            try:
                print(scrub(msg, secret_values()), flush=True)  # a pipe into stdout.log: flush every line
            except OSError:  # the reader went away: keep training, metrics.jsonl has it all
                self.stdout_gone = True

    @staticmethod
    def _read_context() -> dict[str, Any]:
        raw = os.environ.get(CONTEXT_ENV)
        if not raw:
            return {}
        try:
            ctx = json.loads(raw)
        except json.JSONDecodeError as e:
            print(f"warning: {CONTEXT_ENV} is not JSON ({e}); ignored", file=sys.stderr, flush=True)
            return {}
        return ctx if isinstance(ctx, dict) else {}

    # ----------------------------------------------------------------- endings

    def execute(self) -> int:
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._setup()
            self._train()
            self._finish("completed")
            return EXIT_OK
        except Interrupted as e:
            name = signal.Signals(e.signum).name
            self.log(f"interrupted by {name} at iter {self.iter_num}")
            self._finish("interrupted", error=f"interrupted by {name} at iter {self.iter_num}", error_class="signal")
            return 128 + e.signum
        except UsageError as e:
            self._fail(str(e), "exception")
            return EXIT_USAGE
        except NonFiniteLoss as e:
            self._fail(str(e), "nan")
            return EXIT_FAILED
        except ShardError as e:
            self._fail(str(e), "exception")
            return EXIT_FAILED
        except DiskError as e:
            self._fail(str(e), "disk")
            return EXIT_FAILED
        except Exception as e:
            if (cause := disk_cause(e)) is not None:  # metrics, heartbeat or start files on a full volume
                self._fail(disk_error_text(cause, Path(cause.filename or self.out_dir or ".")), "disk")
                return EXIT_FAILED
            oom = isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()
            self._fail(traceback.format_exc(), "oom" if oom else "exception", short=f"{type(e).__name__}: {e}")
            return EXIT_FAILED
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            if self.train_batches is not None:
                self.train_batches.close()
            if self.heartbeat is not None:
                self.heartbeat.stop()
            if self.wandb is not None:
                try:
                    self.wandb.finish(exit_code=0 if self.status == "completed" else 1)
                except Exception:
                    pass
            if self.ddp and dist.is_initialized():
                dist.destroy_process_group()

    def _on_signal(self, signum: int, frame: Any) -> None:
        # In the loop: finish the step, checkpoint, then stop (a consistent checkpoint). Before
        # the loop there is nothing to save: stop now.
        self.stop_signal = signum
        if not self.defer_signals:
            raise Interrupted(signum)

    def _fail(self, error: str, error_class: str, short: str | None = None) -> None:
        secrets = secret_values()
        print(scrub(f"error: {short or error}", secrets), file=sys.stderr, flush=True)
        if short:
            print(scrub(error, secrets), file=sys.stderr, flush=True)
        self._finish("failed", error=error, error_class=error_class)

    def _finish(self, status: str, error: str | None = None, error_class: str | None = None) -> None:
        """summary.json: written on every ending (by rank 0), when out_dir is known."""
        self.status = status
        if not self.master or self.out_dir is None:
            return
        cfg = self.cfg
        end = time.time()
        tokens_per_iter = cfg.tokens_per_iter if cfg else None
        trained = self.iter_num - self.start_iter
        loop_s = end - self.t_loop if self.t_loop else None
        summary = {
            "contract_version": CONTRACT_VERSION,
            "run_id": self.out_dir.name,
            "run_kind": RUN_KIND,
            "ok": status == "completed",
            "status": status,
            "start_time": self.t_start,
            "end_time": end,
            "elapsed_s": end - self.t_start,
            "iter_num": self.iter_num,
            "max_iters": cfg.max_iters if cfg else None,
            "resumed_from_iter": self.resumed_from,
            "tokens_per_iter": tokens_per_iter,
            "tokens_seen": self.iter_num * tokens_per_iter if tokens_per_iter else 0,
            "best_val_loss": finite_or_none(self.best_val),
            "last_eval": self.last_eval,
            "last_eval_iter": self.last_eval_iter,
            "tok_per_s": trained * tokens_per_iter / loop_s if tokens_per_iter and loop_s and trained else None,
            "peak_mem_mb": peak_mem_mb(self.device),
            "ddp": self.ddp,
            "world_size": self.world_size,
            "device": str(self.device),
            "dtype": self.dtype,
            "wandb": self.wandb_info,
        }
        if status != "completed":
            summary["error"] = error
            summary["error_class"] = error_class
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.out_dir / SUMMARY, summary)
        except OSError as e:
            print(f"error: could not write {self.out_dir / SUMMARY}: {e}", file=sys.stderr, flush=True)

    # ----------------------------------------------------------------- setup

    def _setup(self) -> None:
        if not self.argv or self.argv[0].startswith("-"):
            raise UsageError("usage: python -m sweepctl.train CONFIG [key=value ...] (CONFIG: preset or file)")
        config, overrides = self.argv[0], self.argv[1:]
        try:
            self.cfg = cfg = resolve_config(config, overrides)
        except ConfigError as e:
            self.out_dir = guess_out_dir(config, overrides)
            raise UsageError(f"bad config: {e}") from None
        self.out_dir = Path(cfg.out_dir)
        self._setup_distributed()
        if self.master:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.heartbeat = Heartbeat(self.out_dir / HEARTBEAT, cfg.heartbeat_interval_s, cfg.max_iters)
            self.heartbeat.start()
        ckpt_path = self.out_dir / CHECKPOINT
        resuming = cfg.wants_resume and ckpt_path.exists()
        if self.master:
            self._set_aside_old_outputs(resuming)
            self._write_start_files()  # now, so that a run failing on its data is still reproducible
        slot = self.context.get("slot") or {}
        if os.environ.get(FAULT_OOM_PACKED_ENV) == "1" and slot and not slot.get("alone"):
            # a fault on demand, for testing the runner's "retry an oom alone" without a GPU to fill
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by {FAULT_OOM_PACKED_ENV}=1 "
                                              "in a packed run)")
        self._setup_data(resuming)
        torch.manual_seed(cfg.seed + self.rank)
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 matmuls
        self.raw_model = GPT(cfg).to(self.device)
        self.optimizer = self.raw_model.configure_optimizer(self.device.type)
        self.scaler = torch.amp.GradScaler(self.device.type if self.device.type == "cuda" else "cpu",
                                           enabled=self.dtype == "float16")
        self.train_rng = train_rng(cfg.seed, self.rank)
        if resuming:
            self._load_checkpoint(ckpt_path)
        elif cfg.wants_resume:
            how = "resume=True" if cfg.resume else "init_from='resume'"
            self.log(f"{how} but there is no {ckpt_path}: starting from scratch")
        if self.master:
            self._write_start_files()  # again, with the parameter count and the resume point
        n = self.raw_model.num_params()
        self.log(f"run {self.out_dir.name} | variant {cfg.variant} | device {self.device} {self.dtype} | "
                 f"world_size {self.world_size}")
        self.log(f"parameters: {n / 1e6:.2f}M (non-embedding; {self.raw_model.num_params(False) / 1e6:.2f}M total)")
        self.log(f"tokens/iter: {self.tokens_per_iter:,} = batch {cfg.batch_size} x block {cfg.block_size} x "
                 f"grad_accum {cfg.gradient_accumulation_steps} (total over {self.world_size} process(es))")
        self.model = self._maybe_compile(self.raw_model)
        self.eval_model = self.model
        if self.ddp:
            self.model = DDP(self.model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)
        self._start_wandb()

    def _setup_distributed(self) -> None:
        cfg = self.cfg
        self.ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        if self.ddp:
            self.rank = int(os.environ["RANK"])
            self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
            self.world_size = int(os.environ["WORLD_SIZE"])
            if cfg.gradient_accumulation_steps % self.world_size:
                raise UsageError(
                    f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} is not divisible by the DDP "
                    f"world size {self.world_size}: it is the total over all processes; set it to a multiple of "
                    f"{self.world_size}")
        cuda = torch.cuda.is_available()
        if self.ddp:
            self.device = torch.device("cuda", self.local_rank) if cuda and cfg.device != "cpu" else torch.device("cpu")
        elif cfg.device:
            self.device = torch.device(cfg.device)
        else:
            mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
            self.device = torch.device("cuda" if cuda else "mps" if mps else "cpu")
        if self.device.type == "cuda" and not cuda:
            raise UsageError(f"device={cfg.device!r} but CUDA is not available here")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        # autocast only on CUDA: CPU bf16 autocast is slow and not what a CPU run is for
        self.dtype = cfg.dtype if self.device.type == "cuda" else "float32"
        if self.dtype == "bfloat16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UsageError("dtype='bfloat16' but this GPU has no bf16 support; use dtype='float16'")
        self.autocast = (torch.autocast(self.device.type, dtype=getattr(torch, self.dtype))
                         if self.dtype != "float32" else nullcontext())
        if self.ddp:
            backend = cfg.backend if self.device.type == "cuda" else "gloo"  # NCCL needs GPUs
            dist.init_process_group(backend=backend)
        self.accum = cfg.gradient_accumulation_steps // self.world_size
        self.tokens_per_iter = cfg.tokens_per_iter

    def _set_aside_old_outputs(self, resuming: bool) -> None:
        """A previous attempt's summary (and, for a fresh start, its metrics) move to
        <name>.bak-<time>: never deleted, and the directory no longer reads as finished."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        names = [SUMMARY] if resuming else [SUMMARY, METRICS]
        for name in names:
            p = self.out_dir / name
            if p.exists():
                target, n = p.with_name(f"{name}.bak-{stamp}"), 1
                while target.exists():  # two attempts in one second: keep both
                    target, n = p.with_name(f"{name}.bak-{stamp}-{n}"), n + 1
                os.replace(p, target)

    def _setup_data(self, resuming: bool) -> None:
        cfg = self.cfg
        if cfg.data_dir is None:
            label = "" if cfg.dataset == "fineweb10B" else (
                f" (dataset={cfg.dataset!r} is only a label here: sweepctl reads no data/{cfg.dataset}/*.bin as"
                " nanoGPT does)")
            raise UsageError("data_dir is not set: give data_dir=/path/to/fineweb10B, a folder of "
                             f"fineweb_train_*.bin / fineweb_val_*.bin token shards{label}")
        train_paths = find_shards(cfg.data_dir, "train")
        val_paths = find_shards(cfg.data_dir, "val")
        self.train_windows = TokenWindows(train_paths, cfg.block_size, cfg.vocab_size)
        # Both splits are scored on fixed windows, the same for every run (docs/trainer.md, "How
        # runs are compared"); the train estimate reads from the start of the first train shard.
        self.eval_sets: dict[str, EvalWindows] = {
            split: EvalWindows(paths, cfg.block_size, cfg.vocab_size, cfg.eval_windows)
            for split, paths in (("train", train_paths), ("val", val_paths))}
        manifest = {
            "contract_version": CONTRACT_VERSION, "dataset": cfg.dataset,
            "data_dir": str(Path(cfg.data_dir).resolve()),
            "train": shard_manifest(train_paths), "val": shard_manifest(val_paths),
            "eval": {"block_size": cfg.block_size, "eval_iters": cfg.eval_iters,
                     "eval_batch_size": cfg.eval_batch_size, "windows": cfg.eval_windows,
                     **{split: w.record() for split, w in self.eval_sets.items()}},
        }
        if resuming:
            self._check_same_data(manifest)
        if self.master:
            write_json(self.out_dir / DATASET_MANIFEST, manifest)
            n_train = sum(len(s) for s in self.train_windows.shards)
            n_val = sum(s["num_tokens"] for s in manifest["val"])
            self.log(f"data: {len(train_paths)} train shards ({n_train:,} tokens), "
                     f"{len(val_paths)} val shards ({n_val:,} tokens) in {cfg.data_dir}")
            self.log(f"eval set: the first {cfg.eval_windows:,} windows of {cfg.block_size} tokens of each split "
                     f"({cfg.eval_windows * cfg.block_size:,} tokens; val sha256 "
                     f"{manifest['eval']['val']['sha256'][:12]})")

    def _check_same_data(self, manifest: dict[str, Any]) -> None:
        """A resume continues only on the shards and eval set its dataset_manifest.json records;
        decided by rank 0 (which has the run directory) for every rank."""
        problem = None
        if self.master:
            path = self.out_dir / DATASET_MANIFEST
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
                diffs = manifest_differences(old, manifest)
            except (OSError, ValueError) as e:
                diffs = [f"it cannot be read ({e})"]
            if diffs:
                run_id = self.out_dir.name
                problem = (f"{path}: run {run_id} was trained and evaluated on other data than this resume would "
                           f"use ({'; '.join(diffs)}); continuing would mix the two. Resume with the data and eval "
                           f"settings it records, or start the run clean: sweepctl rerun --force {run_id} "
                           "(or the trainer without resume=True)")
        if self.ddp:
            box = [problem]
            dist.broadcast_object_list(box, src=0)
            problem = box[0]
        if problem:
            raise UsageError(problem)

    def _maybe_compile(self, model: GPT) -> torch.nn.Module:
        """torch.compile, checked by one warm-up step (compilation is lazy); eager if it fails."""
        if not self.cfg.compile_model:
            return model
        if self.heartbeat:
            self.heartbeat.phase = "compiling"
        self.log("compiling the model (torch.compile)...")
        t0 = time.time()
        compiled = torch.compile(model)
        rng = torch.get_rng_state()  # the warm-up must not shift dropout's random stream
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        try:
            x = torch.zeros(self.cfg.batch_size, self.cfg.block_size, dtype=torch.long, device=self.device)
            with self.autocast:
                _, loss = compiled(x, x)
            self.scaler.scale(loss).backward()
        except Exception as e:
            if isinstance(e, torch.cuda.OutOfMemoryError):
                raise
            self.log(f"warning: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
                     "continuing in eager mode")
            compiled = model
        finally:
            model.zero_grad(set_to_none=True)
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.device)
        if compiled is not model:
            self.log(f"compiled in {time.time() - t0:.1f}s")
        return compiled

    def _start_wandb(self) -> None:
        cfg = self.cfg
        run_id = self.out_dir.name
        self.wandb_info = {"enabled": False, "project": cfg.wandb_project, "group": cfg.wandb_group,
                           "run_name": cfg.wandb_run_name or run_id, "id": wandb_run_id(run_id)}
        if not (cfg.wandb_log and self.master):
            return
        try:
            import wandb
        except ImportError:
            self.log("warning: wandb_log=True but wandb is not installed; not logging to W&B")
            self.wandb_info["error"] = "wandb not installed"
            return
        os.environ["WANDB_DIR"] = str(self.out_dir.resolve())  # W&B's files stay with the run
        try:
            self.wandb = wandb.init(project=cfg.wandb_project, group=cfg.wandb_group,
                                    name=self.wandb_info["run_name"], id=self.wandb_info["id"], resume="allow",
                                    dir=str(self.out_dir.resolve()), config=self.effective_config())
        except Exception as e:  # no key, no network: the training is still worth running
            self.log(f"warning: W&B init failed ({type(e).__name__}: {e}); not logging to W&B")
            self.wandb_info["error"] = f"{type(e).__name__}: {e}"
            return
        self.wandb_info["enabled"] = True

    # ----------------------------------------------------------------- run-directory files

    def config_record(self) -> dict[str, Any]:
        """The settings as stored in ckpt.pt: JSON types, secrets scrubbed like every file."""
        return scrub(self.cfg.model_dump(mode="json"), secret_values())

    def effective_config(self) -> dict[str, Any]:
        cfg = self.cfg
        d = cfg.model_dump(mode="json")
        d.update({
            "run_id": self.out_dir.name, "variant": cfg.variant, "tokens_per_iter": self.tokens_per_iter,
            "world_size": self.world_size, "ddp": self.ddp,
            "gradient_accumulation_steps_per_rank": self.accum, "ns_schedule": [list(t) for t in cfg.ns_schedule],
            "eval_windows": cfg.eval_windows, "eval_tokens": cfg.eval_windows * cfg.block_size,
            "device_effective": str(self.device), "dtype_effective": self.dtype,
            "num_params": self.raw_model.num_params(False) if self.raw_model is not None else None,
        })
        return d

    def _command_line(self) -> list[str]:
        args = [a for a in self.argv if a.split("=", 1)[0].strip().lstrip("-") not in ("resume", "init_from")]
        if self.ddp:
            nproc = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
            nnodes = self.world_size // max(nproc, 1)
            return [sys.executable, "-m", "torch.distributed.run", "--standalone" if nnodes == 1 else
                    f"--nnodes={nnodes}", f"--nproc_per_node={nproc}", "-m", "sweepctl.train", *args]
        return [sys.executable, "-m", "sweepctl.train", *args]

    def _write_start_files(self) -> None:
        cfg, out = self.cfg, self.out_dir
        secrets = secret_values()
        lines = ["#!/usr/bin/env bash", f"# Reproduces run {out.name} from scratch (written by {RUN_KIND}).",
                 "set -euo pipefail", f"cd {shlex.quote(os.getcwd())}"]
        if "CUDA_VISIBLE_DEVICES" in os.environ:
            lines.append(f"export CUDA_VISIBLE_DEVICES={shlex.quote(os.environ['CUDA_VISIBLE_DEVICES'])}")
        lines.append("exec " + shlex.join(self._command_line()))
        write_text_atomic(out / COMMAND, scrub("\n".join(lines) + "\n", secrets), mode=0o755)
        gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                if torch.cuda.is_available() else [])
        meta = {
            "contract_version": CONTRACT_VERSION, "run_id": out.name, "run_kind": RUN_KIND,
            "out_dir": str(out.resolve()), "argv": [sys.executable, "-m", "sweepctl.train", *self.argv],
            "cwd": os.getcwd(), "host": socket.gethostname(), "pid": os.getpid(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "cuda": torch.version.cuda, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "gpus": gpus, "ddp": self.ddp, "world_size": self.world_size, "device": str(self.device),
            "device_type": self.device.type, "dtype": self.dtype,
            "package": {"name": "sweepctl", "version": package_version(), "git": git_info()},
            "sweep": self.context.get("sweep"), "attempt": self.context.get("attempt"),
            "slot": self.context.get("slot"),  # {slot, runs_per_gpu, alone} when several runs share a GPU
            "compile_cache": {k: os.environ.get(k) for k in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")},
            "resume": cfg.wants_resume, "resumed_from_iter": self.resumed_from,
            "wandb": {"enabled": cfg.wandb_log, "project": cfg.wandb_project, "group": cfg.wandb_group,
                      "run_name": cfg.wandb_run_name or out.name, "id": wandb_run_id(out.name)},
            "ts": time.time(),
        }
        write_json(out / METADATA, meta)
        write_json(out / CONFIG_EFFECTIVE, self.effective_config())

    def _append_metrics(self, row: dict[str, Any]) -> None:
        """One metrics.jsonl record; every record carries `tokens`, the training tokens seen at its
        iteration, so runs that split a step's tokens differently line up."""
        row = scrub({**row, "tokens": row["iter"] * self.tokens_per_iter, "ts": time.time()}, secret_values())
        with open(self.out_dir / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")  # one write per line: a reader sees whole lines

    # ----------------------------------------------------------------- checkpoints

    def _save_checkpoint(self) -> None:
        """ckpt.pt, atomically: everything a resume needs to continue bit-for-bit."""
        # the prefetcher has drawn ahead: its state is the one after the batches actually trained on
        data_state = self.train_batches.rng_state() if self.train_batches else self.train_rng.bit_generator.state
        rng = {"torch": torch.get_rng_state(), "data": data_state,
               "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        ranks = [rng]
        if self.ddp:  # every rank's data stream differs: gather them all
            ranks = [None] * self.world_size
            dist.all_gather_object(ranks, rng)
        if not self.master:
            return
        ckpt = {"model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "iter_num": self.iter_num, "best_val_loss": self.best_val,
                "last_eval": self.last_eval, "last_eval_iter": self.last_eval_iter,
                "rng": ranks, "world_size": self.world_size, "config": self.config_record(),
                "contract_version": CONTRACT_VERSION}
        path = self.out_dir / CHECKPOINT
        tmp = path.with_name(f".{CHECKPOINT}.tmp-{os.getpid()}")
        try:
            # Through a Python file: torch.save(path) reports ENOSPC as an opaque RuntimeError.
            with open(tmp, "wb") as f:
                torch.save(ckpt, f)
            os.replace(tmp, path)
            self.ckpt_iter = self.iter_num
        except BaseException as e:
            remove_partial(tmp)  # a partial checkpoint keeps the volume full: the summary would not fit
            if is_disk_error(e):
                raise DiskError(disk_error_text(e, path)) from e
            raise

    def _load_checkpoint(self, path: Path) -> None:
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        old = ckpt.get("config", {})
        new = self.config_record()
        changed = sorted(k for k in new if k not in RESUME_MAY_CHANGE and old.get(k) != new[k])
        if changed:
            diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed)
            raise UsageError(f"{path} was written with different settings ({diffs}); resuming would not "
                             "continue the same run. Resume with the same settings, or start the run clean: "
                             f"sweepctl rerun --force {self.out_dir.name} (or the trainer without resume=True)")
        if ckpt.get("world_size", 1) != self.world_size:
            raise UsageError(f"{path} was written by {ckpt.get('world_size')} process(es), this run has "
                             f"{self.world_size}: the data streams would differ. Resume with the same world size, "
                             f"or start the run clean: sweepctl rerun --force {self.out_dir.name}")
        self.raw_model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.iter_num = self.start_iter = self.resumed_from = self.ckpt_iter = int(ckpt["iter_num"])
        self.best_val, self.last_eval = ckpt.get("best_val_loss"), ckpt.get("last_eval")
        self.last_eval_iter = ckpt.get("last_eval_iter")
        rng = ckpt["rng"][self.rank]
        torch.set_rng_state(rng["torch"].cpu())
        if rng.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)
        self.train_rng.bit_generator.state = rng["data"]
        self.log(f"resumed from {path} at iter {self.iter_num}")
        if self.master:  # rows a killed attempt logged after this checkpoint are superseded by what follows
            self._append_metrics({"event": "resume", "iter": self.iter_num})

    # ----------------------------------------------------------------- the loop

    def _to_device(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch of windows as tensors on the device (the training loop uses BatchPrefetcher)."""
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        """Mean loss per token over each split's fixed eval set. Each rank scores its slice in
        micro-batches of batch_size; the summed losses and token counts are all-reduced, so the
        result is the same for any batch x accumulation x world-size split (up to float rounding)."""
        cfg = self.cfg
        self.eval_model.eval()
        out = {}
        mine = rank_slice(cfg.eval_windows, self.rank, self.world_size)
        for split, windows in self.eval_sets.items():
            sums = []
            for first in range(mine.start, mine.stop, cfg.batch_size):
                x, y = self._to_device(*windows.batch(first, min(cfg.batch_size, mine.stop - first)))
                with self.autocast:
                    _, loss = self.eval_model(x, y)
                sums.append(loss.float() * y.numel())  # the model's loss is the mean over the batch's tokens
            total = torch.stack(sums).to("cpu", torch.float64).sum() if sums else torch.zeros((), dtype=torch.float64)
            if self.ddp:  # gloo reduces CPU tensors; NCCL needs them on the GPU
                total = total.to(self.device) if self.device.type == "cuda" else total
                dist.all_reduce(total)
            out[split] = total.item() / (cfg.eval_windows * cfg.block_size)
        self.eval_model.train()
        return out

    def _should_stop(self) -> int | None:
        """The signal to stop on, agreed by all ranks (else one rank leaves a collective hanging)."""
        if not self.ddp:
            return self.stop_signal
        flag = torch.tensor([self.stop_signal or 0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def _train(self) -> None:
        cfg, model, opt = self.cfg, self.model, self.optimizer
        if self.heartbeat:
            self.heartbeat.phase, self.heartbeat.iter = "training", self.iter_num
        self.t_loop = t_log = time.time()
        it_log = self.iter_num
        self.defer_signals = True  # and stays so: a signal after the loop must not cut the summary short
        if self.stop_signal is not None:  # arrived between setup and here
            raise Interrupted(self.stop_signal)
        loss_sum = torch.zeros((), device=self.device)
        if cfg.eval_only:  # nanoGPT's: one eval (of the checkpoint when resuming), nothing saved
            self._eval_and_checkpoint(self.iter_num, save=False)
            return
        # from here the worker thread owns self.train_rng; checkpoints read the prefetcher's state
        self.train_batches = BatchPrefetcher(self.train_windows, self.train_rng, cfg.batch_size, self.device)
        while True:
            it = self.iter_num
            if (it % cfg.eval_interval == 0 or it == cfg.max_iters) and it != self.resumed_from:
                self._eval_and_checkpoint(it)
            if it >= cfg.max_iters:
                break
            sig = self._should_stop()
            if sig is not None:
                # never replace a good checkpoint with a diverged state, nor the best one with a later
                # state when only improvements are saved
                if torch.isfinite(loss_sum) and cfg.always_save_checkpoint:
                    self._save_checkpoint()
                raise Interrupted(sig)
            lr = lr_at(it, cfg)
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_scale"]
            loss_sum = torch.zeros((), device=self.device)
            for micro in range(self.accum):
                if self.ddp:  # all-reduce gradients only on the last micro-step
                    model.require_backward_grad_sync = micro == self.accum - 1
                x, y = self.train_batches.next()
                with self.autocast:
                    _, loss = model(x, y)
                    loss = loss / self.accum
                loss_sum += loss.detach().float()
                self.scaler.scale(loss).backward()
            grad_norm = None
            if cfg.grad_clip > 0:
                self.scaler.unscale_(opt)
                grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.grad_clip)
            self.scaler.step(opt)
            self.scaler.update()
            opt.zero_grad(set_to_none=True)
            self.iter_num = it + 1
            if self.heartbeat:
                self.heartbeat.iter = self.iter_num
            if self.iter_num % cfg.log_interval == 0 or self.iter_num == cfg.max_iters:
                if self.ddp:
                    dist.all_reduce(loss_sum)
                    loss_sum /= self.world_size
                loss_v = loss_sum.item()  # the one host sync per log interval
                now = time.time()
                self._log_progress(lr, loss_v, grad_norm, now - t_log, self.iter_num - it_log)
                t_log, it_log = now, self.iter_num
                if not math.isfinite(loss_v):
                    raise NonFiniteLoss(f"loss is {loss_v} at iter {self.iter_num} (lr {lr:.3g}); stopping. "
                                        f"The last good checkpoint is at iter {self.ckpt_iter}")

    def _log_progress(self, lr: float, loss: float, grad_norm: torch.Tensor | None, dt: float, iters: int) -> None:
        cfg = self.cfg
        ms = 1000 * dt / max(iters, 1)
        tok_s = self.tokens_per_iter * iters / dt if dt > 0 else 0.0
        eta = (cfg.max_iters - self.iter_num) * ms / 1000
        gn = float(grad_norm) if grad_norm is not None else None
        mem = peak_mem_mb(self.device)
        self.log(f"iter {self.iter_num}/{cfg.max_iters} | loss {loss:.4f} | lr {lr:.2e} | {tok_s:,.0f} tok/s | "
                 f"{ms:.1f} ms/iter | ETA {format_duration(eta)}")
        if self.master:
            self._append_metrics({"event": "train", "iter": self.iter_num, "loss": finite_or_none(loss), "lr": lr,
                                  "tok_per_s": tok_s, "ms_per_iter": ms, "grad_norm": finite_or_none(gn),
                                  "elapsed_s": time.time() - self.t_start, "mem": mem})
            if self.wandb is not None:
                self.wandb.log({"train/loss": loss, "train/lr": lr, "perf/tok_per_s": tok_s, "perf/ms_per_iter": ms,
                                "train/grad_norm": gn, "perf/mem_mb": mem}, step=self.iter_num)

    def _eval_and_checkpoint(self, it: int, save: bool = True) -> None:
        """Evaluate, log, and checkpoint (with always_save_checkpoint=False only when val improved)."""
        if self.heartbeat:
            self.heartbeat.phase = "eval"
        losses = self._evaluate()
        if not all(math.isfinite(v) for v in losses.values()):  # before the checkpoint: keep the last good one
            raise NonFiniteLoss(f"eval loss is not finite at iter {it} ({losses}); stopping. "
                                f"The last good checkpoint is at iter {self.ckpt_iter}")
        self.last_eval, self.last_eval_iter = losses, it
        improved = self.best_val is None or losses["val"] < self.best_val
        if improved:
            self.best_val = losses["val"]
        self.log(f"eval iter {it}: train {losses['train']:.4f} | val {losses['val']:.4f} | "
                 f"best val {self.best_val if self.best_val is not None else float('nan'):.4f}")
        if self.master:
            self._append_metrics({"event": "eval", "iter": it, "train": finite_or_none(losses["train"]),
                                  "val": finite_or_none(losses["val"]), "best_val": finite_or_none(self.best_val)})
            diag = self._residual_diagnostics()
            if diag is not None:
                self._append_metrics({"event": "diag", "iter": it, "tokens": it * self.tokens_per_iter, **diag})
            self._log_wandb_eval(it, losses, diag)
        if save and (improved or self.cfg.always_save_checkpoint):
            if self.heartbeat:
                self.heartbeat.phase = "checkpoint"
            self._save_checkpoint()
        if self.heartbeat:
            self.heartbeat.phase = "training"

    def _residual_diagnostics(self) -> dict[str, Any] | None:
        """HC/mHC: the paper's gains of the H_res the model applies to a fixed val batch (None when
        plain). The batch is the first diag_batch_size windows of the sweep's fixed eval set: the
        same tokens at every eval and in every run of a sweep."""
        idx, _ = self._to_device(*self.eval_sets["val"].batch(0, min(self.cfg.diag_batch_size, self.cfg.eval_windows)))
        with self.autocast:
            return model_diagnostics(self.raw_model, idx)

    def _log_wandb_eval(self, it: int, losses: dict[str, float], diag: dict[str, Any] | None) -> None:
        if self.wandb is None:
            return
        cfg = self.cfg
        row: dict[str, Any] = {"val/loss": losses["val"], "train/loss_eval": losses["train"],
                               "tokens/seen": it * self.tokens_per_iter}
        if cfg.wandb_log_layer_stats or cfg.wandb_log_layer_cosine:
            x, _ = self._to_device(*self.eval_sets["val"].batch(0, min(cfg.batch_size, cfg.eval_windows)))
            self.raw_model.eval()
            stats = self.raw_model.layer_stats(x)
            self.raw_model.train()
            for i, (r, c) in enumerate(zip(stats["rms"], stats["cosine"], strict=True)):
                if cfg.wandb_log_layer_stats:
                    row[f"layers/rms_{i}"] = r
                if cfg.wandb_log_layer_cosine:
                    row[f"layers/cosine_{i}"] = c
        if cfg.wandb_log_amax and diag is not None:
            row["mhc/amax"] = diag[GAIN_FWD]
        self.wandb.log(row, step=it)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return EXIT_OK
    return Run(argv).execute()
