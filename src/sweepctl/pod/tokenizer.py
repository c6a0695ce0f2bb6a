"""The GPT-2 encoding, offline.

tiktoken's own `get_encoding("gpt2")` downloads `vocab.bpe` and `encoder.json` on first use, which
fails on a pod without internet (and in tests). The same two MIT-licensed files ship as package data
(`sweepctl/assets/`), pinned by sha256, so we always build the encoding from them: the result is the
same ranks tiktoken would build, with no network and no cache to go stale.

    >>> gpt2_encoding().encode_ordinary("Hello world")
    [15496, 995]
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

ENDOFTEXT = "<|endoftext|>"
EOT_TOKEN = 50256
N_VOCAB = 50257

# sha256 of the shipped files; the same hashes tiktoken_ext.openai_public pins for its download.
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"

# The GPT-2 pre-tokenizer pattern as in tiktoken <0.7 (no possessive quantifiers); used only when the
# installed tiktoken does not expose its own (newer, faster, equivalent) spelling.
_GPT2_PAT_FALLBACK = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def asset_paths() -> tuple[Path, Path]:
    """(vocab.bpe, encoder.json) as real files inside the installed package."""
    root = resources.files("sweepctl") / "assets"
    return Path(str(root / "vocab.bpe")), Path(str(root / "encoder.json"))


def _gpt2_pattern() -> str:
    try:
        from tiktoken_ext.openai_public import r50k_pat_str  # the pattern tiktoken itself uses for gpt2

        return r50k_pat_str
    except ImportError:
        return _GPT2_PAT_FALLBACK


@contextlib.contextmanager
def _no_tiktoken_cache() -> Iterator[None]:
    """tiktoken's reader copies every file it reads into a cache dir keyed by the path; an empty
    TIKTOKEN_CACHE_DIR turns that off, so reading local package data leaves nothing behind."""
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old


@functools.lru_cache(maxsize=1)
def gpt2_encoding() -> tiktoken.Encoding:
    """The GPT-2 `tiktoken.Encoding`, built from the shipped files (hash-checked by tiktoken)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    vocab_bpe, encoder_json = asset_paths()
    with _no_tiktoken_cache():
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(vocab_bpe),
            encoder_json_file=str(encoder_json),
            vocab_bpe_hash=VOCAB_BPE_SHA256,
            encoder_json_hash=ENCODER_JSON_SHA256,
        )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=N_VOCAB,
        pat_str=_gpt2_pattern(),
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: EOT_TOKEN},
    )
