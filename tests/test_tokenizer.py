"""The GPT-2 encoding works offline from the shipped BPE files."""

from __future__ import annotations

import hashlib
import socket

import pytest

from sweepctl.pod import tokenizer


def test_shipped_files_are_the_pinned_gpt2_files():
    vocab_bpe, encoder_json = tokenizer.asset_paths()
    assert hashlib.sha256(vocab_bpe.read_bytes()).hexdigest() == (
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    )
    assert hashlib.sha256(encoder_json.read_bytes()).hexdigest() == (
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    )


def test_hello_world_encodes_without_network(monkeypatch, tmp_path):
    # Any socket use would mean tiktoken tried to download: make it fail loudly.
    def no_network(*args, **kwargs):
        raise AssertionError("the GPT-2 encoding must not touch the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    tokenizer.gpt2_encoding.cache_clear()

    enc = tokenizer.gpt2_encoding()

    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.n_vocab == 50257
    assert enc.eot_token == 50256
    assert enc.decode([15496, 995]) == "Hello world"
    # The shipped files are read in place: nothing is copied into tiktoken's cache.
    assert not (tmp_path / "cache").exists()
    assert tokenizer.os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "cache")


@pytest.mark.parametrize("text", ["naïve café — 東京 🙂", "  leading spaces\n\ttabs", "it's we'll 12345"])
def test_round_trips_unicode_and_whitespace(text):
    enc = tokenizer.gpt2_encoding()
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_endoftext_is_special_token():
    enc = tokenizer.gpt2_encoding()
    assert enc.encode("a<|endoftext|>b", allowed_special={"<|endoftext|>"}) == [64, 50256, 65]
