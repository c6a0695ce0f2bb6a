"""The trainer end to end on CPU: tiny models on a small learnable token stream. Each variant
learns; the run directory matches the contract; signals, crashes, bad data and bad configs all
leave an honest summary.json; resume after SIGKILL is bit-for-bit; no secret reaches a file."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sweepctl.train.config import TrainConfig
from sweepctl.train.data import (
    EvalWindows,
    ShardError,
    TokenWindows,
    find_shards,
    open_shard,
    train_rng,
    write_shard,
)
from sweepctl.train.rundir import Heartbeat, wandb_run_id
from sweepctl.train.train import main

torch.set_num_threads(1)  # tiny models on a shared 2-core machine: no OpenMP spin-waiting

TINY = ["n_layer=2", "n_embd=32", "n_head=2", "block_size=32", "vocab_size=256", "batch_size=4",
        "gradient_accumulation_steps=1", "eval_iters=2", "learning_rate=3e-3", "warmup_iters=5", "min_lr=3e-4",
        "lr_decay_iters=40"]
SECRETS = {"WANDB_API_KEY": "wandb-secret-0123456789abcdef", "HF_TOKEN": "hf_secretTOKEN9876543210"}
CONTEXT = {"sweep": {"name": "fineweb", "row_index": 3, "shard_index": 1, "shard_count": 4, "schedule": "static"},
           "attempt": 2}


def learnable_tokens(n: int, seed: int) -> np.ndarray:
    """A period-64 sequence with 10% random tokens: easy to learn, not trivially so."""
    rng = np.random.default_rng(seed)
    pattern = (np.arange(n) % 64) * 7 % 256
    return np.where(rng.random(n) < 0.1, rng.integers(0, 256, n), pattern)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fineweb10B")
    write_shard(d / "fineweb_train_000001.bin", learnable_tokens(30000, 1))
    write_shard(d / "fineweb_train_000002.bin", learnable_tokens(20000, 2))
    write_shard(d / "fineweb_val_000000.bin", learnable_tokens(8000, 3))
    return d


def args(out: Path, data: Path, *overrides: str, preset: str = "base") -> list[str]:
    return [preset, f"out_dir={out}", f"data_dir={data}", *TINY, *overrides]


def rows(out: Path, event: str | None = None) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    got = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in got if event is None or r["event"] == event]


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def ckpt_iter(out: Path) -> int:
    """The checkpoint's iteration, -1 while there is none (ckpt.pt is replaced atomically)."""
    if not (out / "ckpt.pt").exists():
        return -1
    return torch.load(out / "ckpt.pt", weights_only=False)["iter_num"]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def start(argv: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("wb") as f:
        return subprocess.Popen([sys.executable, "-m", "sweepctl.train", *argv], stdout=f, stderr=subprocess.STDOUT,
                                env=env)


def finish(proc: subprocess.Popen, timeout: float = 60) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("variant", [["base"], ["hc"], ["mhc"], ["mhc", "mhc_h_res_proj='orthostochastic'"],
                                     ["cvres_mhc", "mhc_residual_identity_mix=True"]],
                         ids=["plain", "hc", "mhc-sinkhorn", "mhc-orthostochastic", "cvres-mhc-mix"])
def test_each_variant_trains_and_val_loss_falls(tmp_path, data_dir, variant):
    out = tmp_path / "run"
    assert main(args(out, data_dir, "max_iters=40", "eval_interval=20", "log_interval=10", *variant[1:],
                     preset=variant[0])) == 0
    evals = rows(out, "eval")
    assert [r["iter"] for r in evals] == [0, 20, 40]
    assert evals[-1]["val"] < evals[0]["val"] - 1.0, evals
    s = summary(out)
    assert s["ok"] is True and s["status"] == "completed"
    assert s["best_val_loss"] == min(r["val"] for r in evals)
    diag = rows(out, "diag")  # residual-map diagnostics at each eval, for HC/mHC only
    assert [r["iter"] for r in diag] == ([] if variant == ["base"] else [0, 20, 40])
    if "mhc" in variant[0]:
        for r in diag:  # the applied maps stay on the manifold: gains ~1 at every depth
            assert r["n_layers"] == 4 and len(r["fwd_gain_max"]) == 4 and (r["tokens"] > 0) == (r["iter"] > 0)
            assert r["h_res_row_err"] < 1e-3 and r["h_res_col_err"] < 1e-3
            assert all(abs(g - 1) < 1e-2 for k in ("fwd_gain_max", "bwd_gain_max") for g in r[k]), r


# --------------------------------------------------------------------------- the run directory


@pytest.fixture(scope="module")
def contract_run(tmp_path_factory, data_dir) -> tuple[Path, str]:
    """One completed run with secrets and a launcher context in its environment; the HF token
    also appears in an override (as a careless user might pass it)."""
    out = tmp_path_factory.mktemp("runs") / "fineweb-base-s7"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in SECRETS.items():
            mp.setenv(k, v)
        mp.setenv("SWEEPCTL_RUN_CONTEXT", json.dumps(CONTEXT))
        mp.setenv("CUDA_VISIBLE_DEVICES", "")
        code = main(args(out, data_dir, "max_iters=12", "eval_interval=5", "log_interval=4", "seed=7",
                         f"wandb_group={SECRETS['HF_TOKEN']}"))
    return out, code


def test_run_directory_matches_the_contract(contract_run):
    out, code = contract_run
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {"command.sh", "run_metadata.json", "config_effective.json", "dataset_manifest.json", "metrics.jsonl",
            "heartbeat.json", "ckpt.pt", "summary.json"} <= names
    assert not [n for n in names if ".tmp" in n]  # atomic writes leave no temp files

    command = (out / "command.sh").read_text()
    assert os.access(out / "command.sh", os.X_OK) and command.startswith("#!/usr/bin/env bash")
    assert f"-m sweepctl.train base out_dir={out}" in command and "export CUDA_VISIBLE_DEVICES=''" in command

    meta = json.loads((out / "run_metadata.json").read_text())
    for key in ("contract_version", "run_id", "run_kind", "out_dir", "argv", "host", "platform", "python", "torch",
                "cuda", "cuda_visible_devices", "gpus", "ddp", "world_size", "device", "package", "sweep", "attempt",
                "wandb", "ts"):
        assert key in meta, key
    assert meta["contract_version"] == 1 and meta["run_id"] == "fineweb-base-s7"
    assert meta["sweep"] == CONTEXT["sweep"] and meta["attempt"] == 2
    assert meta["cuda_visible_devices"] == "" and meta["ddp"] is False and meta["world_size"] == 1
    assert meta["package"]["version"] and set(meta["package"]["git"]) == {"commit", "dirty"}
    assert meta["wandb"]["enabled"] is False

    cfg = json.loads((out / "config_effective.json").read_text())
    assert set(TrainConfig.model_fields) <= set(cfg)
    assert cfg["seed"] == 7 and cfg["n_layer"] == 2 and cfg["variant"] == "base" and cfg["world_size"] == 1
    assert cfg["tokens_per_iter"] == 4 * 32 * 1 and (cfg["eval_windows"], cfg["eval_tokens"]) == (64, 64 * 32)

    manifest = json.loads((out / "dataset_manifest.json").read_text())
    assert manifest["dataset"] == "fineweb10B"
    assert [Path(s["path"]).name for s in manifest["train"]] == ["fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    assert [s["num_tokens"] for s in manifest["train"]] == [30000, 20000]
    assert manifest["val"][0]["size_bytes"] == 1024 + 2 * 8000
    # the eval set: eval_iters (2) x the preset's eval_batch_size (32) windows of 32 tokens from the
    # start of each split's first shard, the same for every seed, batch split and world size
    val_path = str((manifest_dir := Path(manifest["data_dir"])) / "fineweb_val_000000.bin")
    val_tokens = np.asarray(open_shard(val_path))[:64 * 32 + 1]
    assert manifest["eval"]["val"] == {
        "windows": 64, "tokens": 2048, "spans": [{"shard": "fineweb_val_000000.bin", "path": val_path, "start": 0,
                                                  "end": 2049, "windows": 64}],
        "sha256": hashlib.sha256(val_tokens.astype("<u2").tobytes()).hexdigest()}
    assert manifest["eval"]["train"]["spans"][0]["path"] == str(manifest_dir / "fineweb_train_000001.bin")
    assert {k: manifest["eval"][k] for k in ("block_size", "eval_iters", "eval_batch_size", "windows")} == {
        "block_size": 32, "eval_iters": 2, "eval_batch_size": 32, "windows": 64}

    train_rows, eval_rows = rows(out, "train"), rows(out, "eval")
    assert [r["iter"] for r in train_rows] == [4, 8, 12]  # every log_interval, and the last iteration
    assert [r["iter"] for r in eval_rows] == [0, 5, 10, 12]  # every eval_interval, and the end
    for r in train_rows:
        assert {"iter", "loss", "lr", "tok_per_s", "grad_norm", "elapsed_s", "mem"} <= set(r)
    assert {"iter", "train", "val"} <= set(eval_rows[0])
    assert all(r["tokens"] == r["iter"] * 128 for r in rows(out))  # every record: tokens seen at its iteration

    beat = json.loads((out / "heartbeat.json").read_text())
    assert {"ts", "iter", "max_iters", "pid", "host"} <= set(beat) and beat["iter"] == 12

    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert {"model", "optimizer", "iter_num", "rng", "config"} <= set(ckpt) and ckpt["iter_num"] == 12
    assert "data" in ckpt["rng"][0] and "torch" in ckpt["rng"][0]

    s = summary(out)
    for key in ("contract_version", "run_id", "ok", "status", "start_time", "end_time", "elapsed_s", "iter_num",
                "max_iters", "tokens_per_iter", "tokens_seen", "best_val_loss", "last_eval", "last_eval_iter",
                "tok_per_s", "peak_mem_mb", "ddp", "world_size", "device", "dtype", "wandb"):
        assert key in s, key
    assert s["ok"] is True and s["status"] == "completed" and "error" not in s
    assert s["iter_num"] == 12 and s["tokens_seen"] == 12 * 128 and s["last_eval_iter"] == 12
    assert s["last_eval"] == {"train": eval_rows[-1]["train"], "val": eval_rows[-1]["val"]}
    assert s["end_time"] >= s["start_time"] and s["device"] == "cpu" and s["dtype"] == "float32"


def test_no_secret_reaches_any_file(contract_run):
    out, _ = contract_run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 8
    for p in files:
        data = p.read_bytes()
        for value in SECRETS.values():
            assert value.encode() not in data, f"{value} in {p.name}"
    assert "<redacted>" in (out / "command.sh").read_text()


def test_heartbeat_beats_from_its_own_thread_while_the_main_thread_is_busy(tmp_path):
    hb = Heartbeat(tmp_path / "heartbeat.json", 0.05, 100)
    hb.start()
    try:
        first = json.loads((tmp_path / "heartbeat.json").read_text())["ts"]
        hb.iter = 7  # the main thread does nothing else: only the thread can write the next beat
        wait_for(lambda: json.loads((tmp_path / "heartbeat.json").read_text())["iter"] == 7, 5, "a beat")
        beat = json.loads((tmp_path / "heartbeat.json").read_text())
        assert beat["ts"] > first and beat["pid"] == os.getpid() and beat["max_iters"] == 100
    finally:
        hb.stop()
    assert json.loads((tmp_path / "heartbeat.json").read_text())["phase"] == "ended"


# --------------------------------------------------------------------------- endings


def test_sigterm_mid_run_checkpoints_and_reports_interrupted(tmp_path, data_dir):
    out = tmp_path / "run"
    proc = start(args(out, data_dir, "max_iters=100000", "eval_interval=1000", "log_interval=5"), tmp_path / "log")
    try:
        wait_for(lambda: len(rows(out, "train")) >= 1, 60, "the first progress row")
        proc.send_signal(signal.SIGTERM)
        assert finish(proc) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    s = summary(out)
    assert s["ok"] is False and s["status"] == "interrupted" and s["error_class"] == "signal"
    assert "SIGTERM" in s["error"]
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert ckpt["iter_num"] == s["iter_num"] >= 5  # the checkpoint was taken at the stop, not at iter 0
    assert "interrupted by SIGTERM" in (tmp_path / "log").read_text()


def test_resume_after_sigkill_continues_bit_for_bit(tmp_path, data_dir):
    common = ["eval_interval=10", "log_interval=5", "gradient_accumulation_steps=2", "dropout=0.1"]
    reference = tmp_path / "reference"
    assert main(args(reference, data_dir, "max_iters=30", *common, preset="mhc")) == 0

    out = tmp_path / "killed"
    proc = start(args(out, data_dir, "max_iters=100000", *common, preset="mhc"), tmp_path / "log")
    try:
        wait_for(lambda: ckpt_iter(out) >= 10, 60, "a checkpoint at iter 10 or later")
        proc.send_signal(signal.SIGKILL)
        finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "summary.json").exists()

    # the runner asks for the same run with resume=True (here with the reference's length)
    assert main(args(out, data_dir, "max_iters=30", *common, "resume=True", preset="mhc")) == 0
    s = summary(out)
    assert s["ok"] is True and 10 <= s["resumed_from_iter"] < 30 and s["iter_num"] == 30
    assert any(r["event"] == "resume" for r in rows(out))
    ref_train, got_train = rows(reference, "train"), rows(out, "train")
    assert got_train[-1]["iter"] == ref_train[-1]["iter"] == 30
    assert got_train[-1]["loss"] == ref_train[-1]["loss"]  # bit for bit, not approximately
    assert rows(out, "eval")[-1]["val"] == rows(reference, "eval")[-1]["val"]

    # resuming with settings that change the computation is refused, not silently mixed
    assert main(args(out, data_dir, "max_iters=30", *common, "resume=True", "learning_rate=1e-3",
                     preset="mhc")) == 2
    assert "learning_rate" in summary(out)["error"]


def test_corrupted_shard_fails_naming_the_file(tmp_path, data_dir):
    bad = tmp_path / "data"
    bad.mkdir()
    for p in data_dir.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    victim = bad / "fineweb_train_000002.bin"
    victim.write_bytes(victim.read_bytes()[:5000])  # truncated mid-download
    out = tmp_path / "run"
    proc = start(args(out, bad, "max_iters=5"), tmp_path / "log")
    assert finish(proc) == 1
    s = summary(out)
    assert s["ok"] is False and s["status"] == "failed" and s["error_class"] == "exception"
    assert str(victim) in s["error"] and "truncated" in s["error"]
    assert str(victim) in (tmp_path / "log").read_text()
    assert (out / "command.sh").exists() and (out / "config_effective.json").exists()  # reproducible anyway


@pytest.mark.parametrize(("header", "message"), [((1, 1, 10), "magic number mismatch"),
                                                 ((20240520, 2, 10), "unsupported shard version"),
                                                 ((20240520, 1, 11), "header promises 11 tokens")])
def test_bad_shard_headers_are_errors_naming_the_file(tmp_path, header, message):
    path = tmp_path / "fineweb_val_000000.bin"
    h = np.zeros(256, dtype="<i4")
    h[:3] = header
    path.write_bytes(h.tobytes() + np.arange(10, dtype="<u2").tobytes())
    with pytest.raises(ShardError, match=message) as e:
        open_shard(path)
    assert str(path) in str(e.value)


def test_bad_config_writes_a_failed_summary_and_exits_2(tmp_path, data_dir):
    out = tmp_path / "run"
    assert main(args(out, data_dir, "n_layr=3")) == 2
    s = summary(out)
    assert s["status"] == "failed" and "unknown setting 'n_layr'" in s["error"] and "n_layer" in s["error"]


def test_ddp_world_size_must_divide_grad_accum(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    out = tmp_path / "run"
    assert main(args(out, data_dir, "gradient_accumulation_steps=4")) == 2
    s = summary(out)
    assert s["status"] == "failed" and "gradient_accumulation_steps=4 is not divisible by the DDP world size 3" in s["error"]


def test_missing_data_is_a_failed_run_naming_the_folder(tmp_path):
    out, empty = tmp_path / "run", tmp_path / "empty"
    empty.mkdir()
    assert main(args(out, empty)) == 1
    assert f"{empty}: no fineweb_train_*.bin shards" in summary(out)["error"]


def test_non_finite_loss_ends_the_run_as_nan(tmp_path, data_dir):
    out = tmp_path / "run"
    code = main(args(out, data_dir, "max_iters=200", "log_interval=2", "eval_interval=100", "learning_rate=1e30",
                     "min_lr=0.0", "grad_clip=0.0", "warmup_iters=0"))
    s = summary(out)
    assert code == 1 and s["status"] == "failed" and s["error_class"] == "nan", s.get("error")
    assert s["iter_num"] < 200


@pytest.mark.parametrize(("knob", "a", "b"), [("batch_size", 4, 2), ("gradient_accumulation_steps", 1, 2),
                                             ("eval_iters", 2, 3)])
def test_loop_knobs_change_the_run(tmp_path, data_dir, knob, a, b):
    results = []
    for value in (a, b):
        out = tmp_path / f"{knob}-{value}"
        assert main(args(out, data_dir, "max_iters=2", "eval_interval=2", "log_interval=1", f"{knob}={value}")) == 0
        results.append((rows(out, "train")[-1]["loss"], rows(out, "eval")[-1]["val"], summary(out)["tokens_per_iter"]))
    assert results[0] != results[1]


def test_a_failing_torch_compile_falls_back_to_eager_and_says_so(tmp_path, data_dir, monkeypatch, capsys):
    def broken_compile(model, **kwargs):
        def compiled(*a, **k):
            raise RuntimeError("inductor: no C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    out = tmp_path / "run"
    assert main(args(out, data_dir, "max_iters=4", "eval_interval=4", "compile_model=True")) == 0
    printed = capsys.readouterr().out
    assert "torch.compile failed (RuntimeError: inductor: no C++ compiler); continuing in eager mode" in printed
    assert summary(out)["ok"] is True


def test_wandb_is_used_only_when_asked_with_a_stable_id_and_its_files_in_the_run(tmp_path, data_dir, monkeypatch):
    calls: dict = {"log": []}

    class FakeRun:
        def log(self, row, step):
            calls["log"].append((step, row))

        def finish(self, exit_code=0):
            calls["finish"] = exit_code

    class FakeWandb:  # W&B itself needs an account and the network; this records what it was given
        @staticmethod
        def init(**kwargs):
            calls["init"] = kwargs
            calls["WANDB_DIR"] = os.environ.get("WANDB_DIR")
            return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", FakeWandb)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    out = tmp_path / "mhc-s1"
    assert main(args(out, data_dir, "max_iters=4", "eval_interval=4", "log_interval=2", preset="mhc")) == 0
    assert "init" not in calls  # wandb_log=False: never touched
    assert main(args(out, data_dir, "max_iters=4", "eval_interval=4", "log_interval=2", "wandb_log=True",
                     "wandb_log_layer_stats=True", "wandb_log_amax=True", preset="mhc")) == 0
    init = calls["init"]
    assert init["id"] == wandb_run_id("mhc-s1") and init["resume"] == "allow" and init["name"] == "mhc-s1"
    assert Path(calls["WANDB_DIR"]) == out.resolve()
    logged = {k for _, row in calls["log"] for k in row}
    assert {"train/loss", "val/loss", "layers/rms_0", "mhc/amax"} <= logged and "layers/cosine_0" not in logged
    assert summary(out)["wandb"]["enabled"] is True
    # the first (fresh) run's records were set aside by the second fresh start, not deleted
    assert len(list(out.glob("metrics.jsonl.bak-*"))) == 1 and len(list(out.glob("summary.json.bak-*"))) == 1


def test_ddp_under_torchrun_with_mhc(tmp_path, data_dir):
    """Two CPU processes (gloo): DDP accepts the mHC parameters, gradient accumulation is split
    across ranks, and the checkpoint carries every rank's data stream."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with (tmp_path / "log").open("wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 "-m", "sweepctl.train", *args(out, data_dir, "max_iters=6", "eval_interval=6",
                                                               "log_interval=3", "gradient_accumulation_steps=2",
                                                               preset="mhc")],
                                stdout=f, stderr=subprocess.STDOUT, env=env)
    assert finish(proc, 120) == 0, (tmp_path / "log").read_text()[-3000:]
    s = summary(out)
    assert s["ok"] and s["ddp"] is True and s["world_size"] == 2 and s["tokens_per_iter"] == 2 * 4 * 32
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert len(ckpt["rng"]) == 2 and ckpt["rng"][0]["data"] != ckpt["rng"][1]["data"]
    assert "torch.distributed.run --standalone --nproc_per_node=2 -m sweepctl.train" in (out / "command.sh").read_text()


# --------------------------------------------------------------------------- data


def test_shards_are_memory_mapped_and_the_eval_set_is_the_first_windows(data_dir):
    train = TokenWindows(find_shards(data_dir, "train"), 32, 256)
    assert all(isinstance(s, np.memmap) for s in train.shards)  # nothing loaded into memory
    a, b = train.sample(train_rng(1, 0), 4), train.sample(train_rng(1, 0), 4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[0][:, 1:], a[1][:, :-1])
    assert not np.array_equal(train.sample(train_rng(2, 0), 4)[0], a[0])

    val = EvalWindows(find_shards(data_dir, "val"), 32, 256, count=10)
    tokens = np.asarray(open_shard(data_dir / "fineweb_val_000000.bin"))
    x, y = val.batch(3, 4)  # windows 3..6: consecutive, non-overlapping, from the start of the shard
    assert np.array_equal(x, tokens[96:224].reshape(4, 32)) and np.array_equal(y, tokens[97:225].reshape(4, 32))
    record = val.record()
    assert {k: v for k, v in record.items() if k != "sha256"} == {
        "windows": 10, "tokens": 320,
        "spans": [{"shard": "fineweb_val_000000.bin", "path": str((data_dir / "fineweb_val_000000.bin").resolve()),
                   "start": 0, "end": 321, "windows": 10}]}
    assert record["sha256"] == hashlib.sha256(tokens[:321].astype("<u2").tobytes()).hexdigest()


def test_the_eval_set_continues_into_the_next_shard_and_must_fit(tmp_path):
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(50))  # one window of 32 (33 tokens used)
    write_shard(tmp_path / "fineweb_val_000001.bin", np.arange(100, 200))  # three windows
    paths = find_shards(tmp_path, "val")
    val = EvalWindows(paths, 32, 256, count=3)
    x, _ = val.batch(0, 3)
    assert x[:, 0].tolist() == [0, 100, 132]
    assert [(s["shard"], s["end"], s["windows"]) for s in val.record()["spans"]] == [
        ("fineweb_val_000000.bin", 33, 1), ("fineweb_val_000001.bin", 65, 2)]
    with pytest.raises(ShardError) as e:
        EvalWindows(paths, 32, 256, count=5)
    assert str(e.value) == (f"{tmp_path}: the eval set needs 5 windows of block_size=32 tokens (eval_iters x "
                            "eval_batch_size) but the val shards hold 4; lower eval_iters or eval_batch_size so "
                            "that their product is at most 4")


def test_token_ids_past_the_vocab_are_an_error_naming_the_shard(tmp_path):
    write_shard(tmp_path / "fineweb_val_000000.bin", [300] * 100)
    windows = TokenWindows(find_shards(tmp_path, "val"), 8, 256)
    with pytest.raises(ShardError, match=r"token id 300 .* >= vocab_size 256"):
        windows.sample(train_rng(0, 0), 1)
    with pytest.raises(ShardError, match=r"fineweb_val_000000.bin: token id 300 .* >= vocab_size 256"):
        EvalWindows(find_shards(tmp_path, "val"), 8, 256, count=2).batch(0, 2)


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_smoke_bf16_compiled_one_eval(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    assert main(args(out, data_dir, "max_iters=20", "eval_interval=20", "log_interval=10", "device='cuda'",
                     "dtype='bfloat16'", "compile_model=True", preset="mhc")) == 0
    s = summary(out)
    assert s["ok"] and s["dtype"] == "bfloat16" and s["device"].startswith("cuda") and s["peak_mem_mb"] > 0
    printed = capsys.readouterr().out
    assert "compiled in" in printed and "continuing in eager mode" not in printed
    assert rows(out, "eval")[-1]["iter"] == 20
