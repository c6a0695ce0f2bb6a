"""`sweepctl data prepare`: text -> GPT-2 token shards, offline, val shard first."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli import run_cli
from sweepctl.errors import SweepctlError
from sweepctl.pod.data import prepare_text, verify_shard
from sweepctl.pod.tokenizer import gpt2_encoding


def read_tokens(path):
    return np.fromfile(path, dtype="<u2", offset=1024).tolist()


def test_documents_become_eot_separated_tokens_split_val_first(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text("Hello world")
    (corpus / "sub" / "b.md").write_text(" second doc")
    (corpus / "c.jsonl").write_text('{"text": "third"}\n\n{"text": "fourth"}\n')
    (corpus / ".hidden.txt").write_text("never read")
    (corpus / "image.png").write_bytes(b"\x89PNG")
    enc = gpt2_encoding()
    # files in sorted path order: a.txt, c.jsonl (two docs), sub/b.md
    stream = []
    for doc in ["Hello world", "third", "fourth", " second doc"]:
        stream += [50256, *enc.encode_ordinary(doc)]

    report = prepare_text([corpus], tmp_path / "out", shard_tokens=4, val_tokens=3)

    names = [name for name, _ in report.shards]
    assert names[0] == "fineweb_val_000000.bin"
    assert names[1:] == [f"fineweb_train_{i:06d}.bin" for i in range(1, len(names))]
    assert report.documents == 4 and report.tokens == len(stream)
    got = []
    for name, n in report.shards:
        assert verify_shard(tmp_path / "out" / name) == n
        got += read_tokens(tmp_path / "out" / name)
    assert got == stream
    assert read_tokens(tmp_path / "out" / "fineweb_val_000000.bin") == stream[:3]
    assert [n for _, n in report.shards[1:-1]] == [4] * (len(names) - 2)
    assert read_tokens(tmp_path / "out" / "fineweb_val_000000.bin")[:3] == [50256, 15496, 995]


def test_default_val_split_is_a_tenth(tmp_path):
    (tmp_path / "t.txt").write_text("word " * 400)
    report = prepare_text([tmp_path / "t.txt"], tmp_path / "out")
    assert report.shards[0][1] == report.tokens // 10
    assert len(report.shards) == 2


def test_existing_shards_are_kept_unless_forced(tmp_path):
    (tmp_path / "t.txt").write_text("one two three four five six seven eight nine ten eleven twelve")
    prepare_text([tmp_path / "t.txt"], tmp_path / "out", shard_tokens=2, val_tokens=2)
    many = sorted(p.name for p in (tmp_path / "out").iterdir())
    with pytest.raises(SweepctlError, match="already there"):
        prepare_text([tmp_path / "t.txt"], tmp_path / "out", shard_tokens=100)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == many

    prepare_text([tmp_path / "t.txt"], tmp_path / "out", shard_tokens=100, val_tokens=2, force=True)
    # the old, smaller train shards are gone: a trainer globbing the dir sees only this corpus
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fineweb_train_000001.bin",
                                                                   "fineweb_val_000000.bin"]


@pytest.mark.parametrize(("setup", "message"), [
    (lambda d: (d / "x.txt").write_bytes(b"caf\xe9"), "not UTF-8 text (byte 3)"),
    (lambda d: (d / "x.jsonl").write_text('{"text": "ok"}\n{"body": 1}\n'), "x.jsonl:2: expected a JSON object"),
    (lambda d: (d / "x.png").write_bytes(b"img"), "no text files found"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, setup, message):
    src = tmp_path / "src"
    src.mkdir()
    setup(src)
    with pytest.raises(SweepctlError) as e:
        prepare_text([src], tmp_path / "out")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_val_tokens_must_leave_train_tokens(tmp_path):
    (tmp_path / "t.txt").write_text("tiny")
    with pytest.raises(SweepctlError, match="leaves no train tokens"):
        prepare_text([tmp_path / "t.txt"], tmp_path / "out", val_tokens=2)


def test_cli_prepare_json_and_missing_input(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("Hello world, again and again and again.")
    result = run_cli(capsys, "data", "prepare", str(tmp_path / "t.txt"), "--out", str(tmp_path / "out"),
                     "--val-tokens", "2", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["shards"][0] == ["fineweb_val_000000.bin", 2]

    missing = run_cli(capsys, "data", "prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "o2"))
    assert missing.code == 1
    assert missing.err == f"error: {tmp_path / 'nope'}: no such file or directory — check the path\n"
