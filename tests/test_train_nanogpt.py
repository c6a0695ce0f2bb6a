"""nanoGPT's train.py vocabulary, with nanoGPT's meaning: its config files and `--key=value`
commands run unchanged, and what cannot work here (GPT-2 weights from the Hub, nanoGPT's own
data folders) says so and what to do instead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sweepctl.train.config import ConfigError, resolve_config
from sweepctl.train.data import write_shard
from sweepctl.train.train import main
from test_train_run import args, learnable_tokens, rows, summary

# The settings of karpathy/nanoGPT's config/train_shakespeare_char.py, as that file writes them.
SHAKESPEARE_CHAR = """\
# train a miniature character-level shakespeare model
out_dir = 'out-shakespeare-char'
eval_interval = 250 # keep frequent because we'll overfit
eval_iters = 200
log_interval = 10 # don't print too too often

# we expect to overfit on this small dataset, so only save when val improves
always_save_checkpoint = False

wandb_log = False # override via command line if you like
wandb_project = 'shakespeare-char'
wandb_run_name = 'mini-gpt'

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256 # context of up to 256 previous characters

n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2

learning_rate = 1e-3 # with baby networks can afford to go a bit higher
max_iters = 5000
lr_decay_iters = 5000 # make equal to max_iters usually
min_lr = 1e-4 # learning_rate / 10 usually
beta2 = 0.99 # make a bit bigger because number of tokens per iter is small

warmup_iters = 100 # not super necessary potentially
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fineweb10B")
    write_shard(d / "fineweb_train_000001.bin", learnable_tokens(30000, 1))
    write_shard(d / "fineweb_val_000000.bin", learnable_tokens(8000, 3))
    return d


def test_nanogpts_shakespeare_char_config_and_laptop_overrides_load(tmp_path):
    path = tmp_path / "train_shakespeare_char.py"
    path.write_text(SHAKESPEARE_CHAR)
    cfg = resolve_config(str(path), ["--device=cpu", "--compile=False"])  # nanoGPT's README command line
    assert (cfg.always_save_checkpoint, cfg.compile_model, cfg.device, cfg.dataset) == (
        False, False, "cpu", "shakespeare_char")
    assert (cfg.batch_size, cfg.block_size, cfg.n_embd, cfg.dropout, cfg.beta2, cfg.eval_iters) == (
        64, 256, 384, 0.2, 0.99, 200)
    assert (cfg.init_from, cfg.decay_lr, cfg.eval_only) == ("scratch", True, False)  # nanoGPT's defaults
    assert resolve_config("base", ["compile=True"]).compile_model is True


def test_nanogpts_own_dataset_names_no_data_here_and_says_what_to_give(tmp_path):
    path = tmp_path / "train_shakespeare_char.py"
    path.write_text(SHAKESPEARE_CHAR)
    out = tmp_path / "out-shakespeare-char"
    assert main([str(path), f"out_dir={out}", "device=cpu", "compile=False"]) == 2
    assert summary(out)["error"] == (
        "data_dir is not set: give data_dir=/path/to/fineweb10B, a folder of fineweb_train_*.bin / "
        "fineweb_val_*.bin token shards (dataset='shakespeare_char' is only a label here: sweepctl reads no "
        "data/shakespeare_char/*.bin as nanoGPT does)")


@pytest.mark.parametrize("value", ["gpt2", "gpt2-xl"])
def test_init_from_gpt2_is_refused_naming_what_to_do(value):
    with pytest.raises(ConfigError) as e:
        resolve_config("base", [f"init_from='{value}'"])
    assert str(e.value) == (
        f"init_from={value!r} would load OpenAI's GPT-2 weights from the Hugging Face Hub, which sweepctl does "
        "not do (pods train offline, and every variant must start from the same random init); use "
        "init_from='scratch', or init_from='resume' to continue out_dir/ckpt.pt")
    with pytest.raises(ConfigError, match="init_from must be 'scratch' or 'resume', got 'latest'"):
        resolve_config("base", ["init_from='latest'"])


def test_unknown_keys_still_error_with_did_you_mean(tmp_path):
    with pytest.raises(ConfigError) as e:
        resolve_config("base", ["--compil=False"])
    assert str(e.value) == "unknown setting 'compil'; did you mean 'compile'?"
    path = tmp_path / "c.py"
    path.write_text("n_layer = 2\nalways_save_checkpoints = False\n")
    with pytest.raises(ConfigError) as e:
        resolve_config(str(path))
    assert str(e.value) == f"{path}:2: unknown setting 'always_save_checkpoints'; did you mean 'always_save_checkpoint'?"


def test_init_from_resume_continues_and_eval_only_scores_the_checkpoint_without_saving(tmp_path, data_dir):
    out = tmp_path / "run"
    assert main(args(out, data_dir, "max_iters=4", "eval_interval=2")) == 0
    ckpt = (out / "ckpt.pt").read_bytes()
    # nanoGPT's eval-only command: the checkpoint is scored once, nothing is trained or saved
    assert main(args(out, data_dir, "max_iters=4", "eval_interval=2", "init_from='resume'", "eval_only=True")) == 0
    assert (out / "ckpt.pt").read_bytes() == ckpt
    tail = [(r["event"], r["iter"]) for r in rows(out)][-2:]
    assert tail == [("resume", 4), ("eval", 4)]
    assert rows(out, "eval")[-1]["val"] == rows(out, "eval")[-2]["val"]  # the same weights, the same tokens
    s = summary(out)
    assert (s["ok"], s["iter_num"], s["resumed_from_iter"], s["tokens_seen"]) == (True, 4, 4, 4 * 128)

    assert main(args(out, data_dir, "max_iters=6", "eval_interval=2", "--init_from=resume")) == 0
    s = summary(out)
    assert (s["ok"], s["resumed_from_iter"], s["iter_num"]) == (True, 4, 6)
    assert "init_from=" not in (out / "command.sh").read_text()  # command.sh reruns from scratch


def test_decay_lr_false_trains_at_learning_rate_throughout(tmp_path, data_dir):
    out = tmp_path / "run"
    assert main(args(out, data_dir, "max_iters=6", "eval_interval=6", "log_interval=1", "decay_lr=False")) == 0
    assert [r["lr"] for r in rows(out, "train")] == [3e-3] * 6  # no warmup, no decay (TINY's learning_rate)


@pytest.mark.parametrize(("always", "saved_at"), [(True, 2), (False, 0)])
def test_always_save_checkpoint_false_keeps_the_best_checkpoint(tmp_path, data_dir, always, saved_at):
    out = tmp_path / "run"
    # a learning rate this high makes the first steps worse: val at iter 2 is above val at iter 0
    assert main(args(out, data_dir, "max_iters=2", "eval_interval=2", "learning_rate=0.3", "warmup_iters=0",
                     "min_lr=0.0", f"always_save_checkpoint={always}")) == 0
    evals = rows(out, "eval")
    assert evals[1]["val"] > evals[0]["val"]
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert ckpt["iter_num"] == saved_at and ckpt["best_val_loss"] == evals[0]["val"]
    assert json.loads((out / "summary.json").read_text())["best_val_loss"] == evals[0]["val"]


def test_every_setting_of_nanogpts_train_py_is_accepted(tmp_path):
    # karpathy/nanoGPT train.py's configurable globals, at its defaults (dtype and a laptop device aside)
    path = tmp_path / "nanogpt_defaults.py"
    path.write_text("""\
out_dir = 'out'
eval_interval = 2000
log_interval = 1
eval_iters = 200
eval_only = False
always_save_checkpoint = True
init_from = 'scratch'
wandb_log = False
wandb_project = 'owt'
wandb_run_name = 'gpt2'
dataset = 'openwebtext'
gradient_accumulation_steps = 5 * 8
batch_size = 12
block_size = 1024
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False
learning_rate = 6e-4
max_iters = 600000
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
decay_lr = True
warmup_iters = 2000
lr_decay_iters = 600000
min_lr = 6e-5
backend = 'nccl'
device = 'cuda'
dtype = 'bfloat16'
compile = True
""")
    cfg = resolve_config(str(path))
    assert (cfg.gradient_accumulation_steps, cfg.tokens_per_iter, cfg.compile_model, cfg.dataset) == (
        40, 40 * 12 * 1024, True, "openwebtext")
    assert cfg.eval_windows == 200 * 32  # eval_batch_size unset: its default, whatever batch_size is
