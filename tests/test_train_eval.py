"""How runs are compared: every run of a sweep is scored on the same eval tokens whatever its
seed, batch split or world size; every metrics record carries the tokens seen; and a resume never
continues on other data or another eval set than its dataset_manifest.json records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweepctl.train.data import rank_slice, write_shard
from sweepctl.train.train import main
from test_train_run import args, finish, learnable_tokens, rows, summary

# float32 forward passes of a tiny model, summed in float64 over 64 windows of 32 tokens: batch
# composition changes the per-token losses by a few float32 ulps (~1e-7 relative), far below this.
SAME_LOSS = 1e-5


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_train_run's tiny shards: two train shards and one val shard of a learnable stream."""
    d = tmp_path_factory.mktemp("fineweb10B")
    write_shard(d / "fineweb_train_000001.bin", learnable_tokens(30000, 1))
    write_shard(d / "fineweb_train_000002.bin", learnable_tokens(20000, 2))
    write_shard(d / "fineweb_val_000000.bin", learnable_tokens(8000, 3))
    return d


def torchrun(argv: list[str], log: Path) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 "-m", "sweepctl.train", *argv], stdout=f, stderr=subprocess.STDOUT, env=env)
    return finish(proc, 180)


def test_identical_weights_score_the_same_loss_across_batch_accumulation_ranks_and_seeds(tmp_path, data_dir):
    common = ["eval_only=True", "seed=3"]  # the eval set: eval_iters (2) x eval_batch_size (32) windows
    splits = {"batch 8": ["batch_size=8", "gradient_accumulation_steps=1"],
              "batch 4 x accum 2": ["batch_size=4", "gradient_accumulation_steps=2"]}
    for name, split in splits.items():
        assert main(args(tmp_path / name.replace(" ", ""), data_dir, *common, *split)) == 0
    two_ranks = tmp_path / "2ranks"
    log = tmp_path / "ddp.log"
    assert torchrun(args(two_ranks, data_dir, *common, "batch_size=4", "gradient_accumulation_steps=2"), log) == 0, \
        log.read_text()[-3000:]
    other_seed = tmp_path / "seed4"
    assert main(args(other_seed, data_dir, "eval_only=True", "seed=4", "batch_size=8")) == 0

    outs = [tmp_path / "batch8", tmp_path / "batch4xaccum2", two_ranks]
    assert summary(two_ranks)["world_size"] == 2
    evals = [rows(out, "eval") for out in outs]
    assert all([r["iter"] for r in e] == [0] for e in evals)  # eval_only: one eval, no training
    for split in ("val", "train"):
        losses = [e[0][split] for e in evals]
        assert max(losses) - min(losses) < SAME_LOSS, (split, losses)
    # the same tokens, recorded: 2 x 32 windows of 32 from the start of each split, for every run
    manifests = [json.loads((out / "dataset_manifest.json").read_text()) for out in [*outs, other_seed]]
    assert all(m["eval"] == manifests[0]["eval"] for m in manifests)
    assert manifests[0]["eval"]["windows"] == 64 and manifests[0]["eval"]["val"]["tokens"] == 2048
    assert rows(other_seed, "eval")[0]["val"] != evals[0][0]["val"]  # another seed: other weights, same tokens


def test_ranks_split_the_eval_set_into_contiguous_slices_that_cover_it_once():
    assert [list(rank_slice(5, r, 2)) for r in range(2)] == [[0, 1], [2, 3, 4]]
    assert [list(rank_slice(2, r, 3)) for r in range(3)] == [[], [0], [1]]  # a rank may score nothing
    assert [i for r in range(8) for i in rank_slice(100, r, 8)] == list(range(100))


def test_every_record_carries_the_tokens_seen_the_same_for_every_split_of_a_step(tmp_path, data_dir):
    got = {}
    for split in (["batch_size=8", "gradient_accumulation_steps=1"], ["batch_size=4", "gradient_accumulation_steps=2"]):
        out = tmp_path / split[0]
        assert main(args(out, data_dir, "max_iters=6", "eval_interval=3", "log_interval=2", *split, preset="hc")) == 0
        got[split[0]] = [(r["event"], r["iter"], r["tokens"]) for r in rows(out)]
        s = summary(out)
        assert (s["tokens_per_iter"], s["tokens_seen"]) == (256, 6 * 256)
    expected = [("eval", 0, 0), ("diag", 0, 0), ("train", 2, 512), ("eval", 3, 768), ("diag", 3, 768),
                ("train", 4, 1024), ("train", 6, 1536), ("eval", 6, 1536), ("diag", 6, 1536)]
    assert got == {"batch_size=8": expected, "batch_size=4": expected}


# --------------------------------------------------------------------------- resume on other data


@pytest.fixture
def own_data(tmp_path, data_dir) -> Path:
    """A copy of the tiny shards that a test may change."""
    d = tmp_path / "data"
    d.mkdir()
    for p in data_dir.iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    return d


def changed_val_tokens(d: Path) -> str:
    write_shard(d / "fineweb_val_000000.bin", learnable_tokens(8000, 99))  # same size, other tokens
    return "the val eval tokens differ (sha256 "


def added_train_shard(d: Path) -> str:
    write_shard(d / "fineweb_train_000003.bin", learnable_tokens(5000, 7))
    return "train shards added: fineweb_train_000003.bin"


def shrunk_train_shard(d: Path) -> str:
    write_shard(d / "fineweb_train_000002.bin", learnable_tokens(10000, 2))
    return ("train shard fineweb_train_000002.bin changed: 41024 bytes, 20000 tokens -> 21024 bytes, "
            "10000 tokens")


@pytest.mark.parametrize(("change", "extra"), [(changed_val_tokens, []), (added_train_shard, []),
                                               (shrunk_train_shard, []), (None, ["eval_iters=3"]),
                                               (None, ["eval_batch_size=16"])],
                         ids=["val-tokens", "train-shard-added", "train-shard-size", "eval_iters", "eval_batch_size"])
def test_a_resume_on_other_data_or_another_eval_set_is_refused(tmp_path, own_data, change, extra):
    out = tmp_path / "fineweb-base-s1"
    assert main(args(out, own_data, "max_iters=4", "eval_interval=2")) == 0
    metrics_before = (out / "metrics.jsonl").read_text()
    manifest_before = (out / "dataset_manifest.json").read_text()
    expected = change(own_data) if change else None

    assert main(args(out, own_data, "max_iters=8", "eval_interval=2", "resume=True", *extra)) == 2
    s = summary(out)
    assert (s["status"], s["error_class"]) == ("failed", "exception")
    if change is None:  # an eval setting changed: the eval set is another
        key, value = extra[0].split("=")
        expected = f"eval {key}: {({'eval_iters': 2, 'eval_batch_size': 32}[key])} -> {value}; eval windows: 64 -> "
    assert s["error"].startswith(f"{out}/dataset_manifest.json: run fineweb-base-s1 was trained and evaluated on "
                                 "other data than this resume would use (")
    assert expected in s["error"]
    assert s["error"].endswith("continuing would mix the two. Resume with the data and eval settings it records, or "
                               "start the run clean: sweepctl rerun --force fineweb-base-s1 (or the trainer without "
                               "resume=True)")
    assert (out / "dataset_manifest.json").read_text() == manifest_before  # the record is kept
    assert (out / "metrics.jsonl").read_text() == metrics_before  # nothing trained on the other data


def test_a_resume_on_the_same_shards_moved_elsewhere_continues(tmp_path, own_data):
    out = tmp_path / "run"
    assert main(args(out, own_data, "max_iters=4", "eval_interval=2")) == 0
    moved = tmp_path / "moved"
    own_data.rename(moved)
    assert main(args(out, moved, "max_iters=6", "eval_interval=2", "resume=True")) == 0
    s = summary(out)
    assert s["ok"] and s["resumed_from_iter"] == 4 and s["iter_num"] == 6


def test_every_rank_of_a_ddp_resume_on_other_data_stops(tmp_path, own_data):
    """Rank 0 decides (it has the run directory) and tells the others: no rank is left waiting in a
    collective for a rank that refused."""
    out = tmp_path / "run"
    common = ["eval_interval=2", "batch_size=2", "gradient_accumulation_steps=2"]
    assert torchrun(args(out, own_data, "max_iters=2", *common), tmp_path / "first.log") == 0
    expected = changed_val_tokens(own_data)
    log = tmp_path / "resume.log"
    assert torchrun(args(out, own_data, "max_iters=4", *common, "resume=True"), log) != 0, log.read_text()[-3000:]
    s = summary(out)
    assert s["status"] == "failed" and expected in s["error"] and s["error"].endswith(
        "sweepctl rerun --force run (or the trainer without resume=True)")
    assert [r["iter"] for r in rows(out, "train")] == [2]  # nothing trained after the refusal
