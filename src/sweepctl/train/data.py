"""FineWeb10B GPT-2 token shards, read through numpy.memmap, and the batches drawn from them.

A shard (`fineweb_train_*.bin`, `fineweb_val_*.bin`) is a 256 x int32 header (magic 20240520,
version 1, token count) followed by the tokens as uint16. Shards are memory-mapped, never loaded:
a process's memory does not grow with the number of shards (the reference read every shard into
an int64 tensor — 8 bytes per token, in every process).

Batches are random contiguous windows. Train windows come from a numpy Generator whose state is
checkpointed (resume continues the exact stream); val windows come from a Generator re-seeded at
every eval, so every eval scores the same held-out batches.

    from sweepctl.train.data import write_shard, TokenWindows
    write_shard("/tmp/d/fineweb_val_000000.bin", range(1000))
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


class ShardError(ValueError):
    """A shard that is missing, foreign, truncated or otherwise unusable; names the file."""


def write_shard(path: str | os.PathLike, tokens: Iterable[int] | np.ndarray) -> int:
    """Write tokens (ints in [0, 65536)) as a shard, atomically. Returns the token count."""
    arr = np.asarray(tokens if isinstance(tokens, np.ndarray) else list(tokens))
    if arr.size and (arr.min() < 0 or arr.max() >= 2**16):
        raise ValueError("token ids must fit in uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, arr.size)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(header.tobytes())
        f.write(arr.astype("<u2").tobytes())
    os.replace(tmp, path)
    return int(arr.size)


def open_shard(path: str | os.PathLike) -> np.memmap:
    """The shard's tokens as a read-only uint16 memmap, after checking header and size."""
    path = Path(path)
    try:
        size = path.stat().st_size
        header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    except OSError as e:
        raise ShardError(f"{path}: cannot read shard ({e.strerror})") from None
    if header.size < HEADER_INTS:
        raise ShardError(f"{path}: {size} bytes, shorter than the {HEADER_BYTES}-byte shard header")
    if header[0] != MAGIC:
        raise ShardError(f"{path}: magic number mismatch in the data .bin file ({header[0]} != {MAGIC})")
    if header[1] != VERSION:
        raise ShardError(f"{path}: unsupported shard version {header[1]} (expected {VERSION})")
    n = int(header[2])
    if n < 0 or size != HEADER_BYTES + 2 * n:
        raise ShardError(f"{path}: {size} bytes but the header promises {n} tokens "
                         f"({HEADER_BYTES + 2 * n} bytes); truncated or corrupted")
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))


def find_shards(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """Sorted `fineweb_<split>_*.bin` in data_dir; an error naming the folder when there are none."""
    d = Path(data_dir)
    paths = sorted(d.glob(f"fineweb_{split}_*.bin"))
    if not paths:
        raise ShardError(f"{d}: no fineweb_{split}_*.bin shards in this folder")
    return paths


class TokenWindows:
    """Random (x, y) windows of block_size tokens from a set of memory-mapped shards.

    A window is drawn by picking a shard with probability proportional to its usable windows,
    then an offset in it: sampling is uniform over all windows without ever concatenating shards.
    """

    def __init__(self, paths: list[Path], block_size: int, vocab_size: int):
        self.paths = paths
        self.block_size = block_size
        self.vocab_size = vocab_size
        self.shards = [open_shard(p) for p in paths]
        windows = np.array([max(len(s) - block_size, 0) for s in self.shards], dtype=np.float64)
        if windows.sum() == 0:
            raise ShardError(f"{paths[0].parent}: no shard has more than block_size={block_size} tokens")
        self.weights = windows / windows.sum()

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) int64 arrays of shape (batch_size, block_size); y is x shifted by one token."""
        which = rng.choice(len(self.shards), size=batch_size, p=self.weights)
        out = np.empty((batch_size, self.block_size + 1), dtype=np.int64)
        for row, s in enumerate(which):
            shard = self.shards[s]
            start = int(rng.integers(0, len(shard) - self.block_size))
            out[row] = shard[start:start + self.block_size + 1]
            if out[row].max() >= self.vocab_size:
                # an embedding lookup past the table is a device assert on CUDA; say where instead
                raise ShardError(f"{self.paths[s]}: token id {int(out[row].max())} at offset about {start} "
                                 f">= vocab_size {self.vocab_size}")
        return np.ascontiguousarray(out[:, :-1]), np.ascontiguousarray(out[:, 1:])


def shard_manifest(paths: list[Path]) -> list[dict]:
    """path, size_bytes, num_tokens per shard (from the headers, already checked)."""
    return [{"path": str(p.resolve()), "size_bytes": p.stat().st_size,
             "num_tokens": int(np.fromfile(p, dtype="<i4", count=3)[2])} for p in paths]


def train_rng(seed: int, rank: int) -> np.random.Generator:
    """Each rank draws its own train stream; (seed, rank) fixes it."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, rank, 0])))


def val_rng(seed: int, rank: int) -> np.random.Generator:
    """A fresh val stream, independent of the train stream; the same at every eval."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, rank, 1])))
