"""FineWeb10B GPT-2 token shards, read through numpy.memmap, and the batches drawn from them.

A shard (`fineweb_train_*.bin`, `fineweb_val_*.bin`) is a 256 x int32 header (magic 20240520,
version 1, token count) followed by the tokens as uint16. Shards are memory-mapped, never loaded:
a process's memory does not grow with the number of shards (the reference read every shard into
an int64 tensor — 8 bytes per token, in every process).

Training batches are random contiguous windows from a numpy Generator whose state is
checkpointed (resume continues the exact stream). `BatchPrefetcher` draws the next batches in a
background thread (into pinned memory on CUDA, copied to the GPU with non_blocking=True) while
the model works on the current one.

Evals score a fixed set instead (`EvalWindows`): the first N non-overlapping windows from the
start of a split's shards, the same for every seed, batch size, accumulation and world size, so
that every run of a sweep is measured on the same tokens; `dataset_manifest.json` records which.

    from sweepctl.train.data import write_shard, TokenWindows
    write_shard("/tmp/d/fineweb_val_000000.bin", range(1000))
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch only where batches become tensors: write_shard users need no torch
    import torch

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


class BatchPrefetcher:
    """(x, y) batches of `windows.sample(rng, batch_size)`, drawn `depth` batches ahead by a
    background thread, as int64 tensors on `device`.

    Why: drawing windows from the memmaps and copying them to the GPU is host work the GPU would
    otherwise wait for at every micro-step. The worker fills pinned (page-locked) buffers on CUDA,
    so the host-to-device copy is asynchronous (non_blocking=True) and overlaps with compute.

    The batches are exactly those of calling `windows.sample(rng, batch_size)` in turn. The
    worker owns `rng` while the prefetcher runs: `rng_state()` is the state after the batches
    handed out so far — what a checkpoint must store, since the worker has already drawn ahead.
    An error while drawing (a bad shard) is raised by the `next()` that would have returned that
    batch. Use as a context manager, or call `close()`.
    """

    def __init__(self, windows: TokenWindows, rng: np.random.Generator, batch_size: int,
                 device: torch.device, depth: int = 2):
        self.windows, self.rng, self.batch_size, self.device = windows, rng, batch_size, device
        self._state: dict[str, Any] = rng.bit_generator.state  # a copy: the generator's own moves on
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.worker = threading.Thread(target=self._work, name="batch-prefetch", daemon=True)
        self.worker.start()

    def _work(self) -> None:
        import torch

        pin = self.device.type == "cuda"
        try:
            while not self._stop.is_set():
                x, y = self.windows.sample(self.rng, self.batch_size)
                state = self.rng.bit_generator.state
                tx, ty = torch.from_numpy(x), torch.from_numpy(y)
                if pin:
                    tx, ty = tx.pin_memory(), ty.pin_memory()
                self._put((tx, ty, state))
        except BaseException as e:  # handed to the consumer, raised where the batch is taken
            self._put(e)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():  # a full queue, until the consumer takes one or closes
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y), (batch_size, block_size) int64 on the device (copy still in flight on CUDA)."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        x, y, self._state = item
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def rng_state(self) -> dict[str, Any]:
        """The train RNG state that continues with the first batch not yet handed out."""
        return self._state

    def close(self) -> None:
        self._stop.set()
        while self.worker.is_alive():  # unblock a worker waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self.worker.join(timeout=0.1)

    def __enter__(self) -> BatchPrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EvalWindows:
    """The first `count` non-overlapping windows of block_size tokens of a split's shards.

    Window i of a shard is x = tokens[i*B : (i+1)*B], y = tokens[i*B+1 : (i+1)*B+1]; a shard gives
    (len - 1) // B windows, then the next shard (sorted by name) continues. No randomness: the set
    depends only on the shards, block_size and count, so every run of a sweep scores the same tokens.
    """

    def __init__(self, paths: list[Path], block_size: int, vocab_size: int, count: int):
        self.block_size, self.vocab_size, self.count = block_size, vocab_size, count
        self.spans: list[tuple[Path, np.memmap, int, int]] = []  # (path, tokens, first window, windows)
        first = 0
        for p in paths:
            if first == count:
                break
            shard = open_shard(p)
            n = min(max((len(shard) - 1) // block_size, 0), count - first)
            if n:
                self.spans.append((p, shard, first, n))
                first += n
        if first < count:
            have = sum(max((len(open_shard(p)) - 1) // block_size, 0) for p in paths)
            raise ShardError(
                f"{paths[0].parent}: the eval set needs {count} windows of block_size={block_size} tokens "
                f"(eval_iters x eval_batch_size) but the {paths[0].name.split('_')[1]} shards hold {have}; "
                f"lower eval_iters or eval_batch_size so that their product is at most {have}")

    def batch(self, first: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) int64 (n, block_size) of windows first..first+n-1 of the set."""
        B = self.block_size
        out = np.empty((n, B + 1), dtype=np.int64)
        for row, i in enumerate(range(first, first + n)):
            path, shard, start, _ = next(sp for sp in self.spans if sp[2] <= i < sp[2] + sp[3])
            offset = (i - start) * B
            out[row] = shard[offset:offset + B + 1]
            if out[row].max() >= self.vocab_size:
                raise ShardError(f"{path}: token id {int(out[row].max())} at offset about {offset} "
                                 f">= vocab_size {self.vocab_size}")
        return np.ascontiguousarray(out[:, :-1]), np.ascontiguousarray(out[:, 1:])

    def record(self) -> dict[str, Any]:
        """Which tokens the set is, for dataset_manifest.json: shard, token offsets [start, end)
        (targets included), the count of predicted tokens, and a sha256 of those tokens."""
        digest = hashlib.sha256()
        spans = []
        for path, shard, _, n in self.spans:
            end = n * self.block_size + 1
            digest.update(np.ascontiguousarray(shard[:end]).tobytes())
            spans.append({"shard": path.name, "path": str(path.resolve()), "start": 0, "end": end, "windows": n})
        return {"windows": self.count, "tokens": self.count * self.block_size, "spans": spans,
                "sha256": digest.hexdigest()}


def rank_slice(count: int, rank: int, world_size: int) -> range:
    """The windows of an eval set that one rank scores: contiguous, sizes differing by at most one."""
    return range(rank * count // world_size, (rank + 1) * count // world_size)


def shard_manifest(paths: list[Path]) -> list[dict]:
    """path, size_bytes, num_tokens per shard (from the headers, already checked)."""
    return [{"path": str(p.resolve()), "size_bytes": p.stat().st_size,
             "num_tokens": int(np.fromfile(p, dtype="<i4", count=3)[2])} for p in paths]


def train_rng(seed: int, rank: int) -> np.random.Generator:
    """Each rank draws its own train stream; (seed, rank) fixes it."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, rank, 0])))


def manifest_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two dataset_manifest.json records that a resume must not cross: the
    shard set (names, sizes, token counts; data_dir may move) and the eval set. Empty if none."""
    diffs = []
    for split in ("train", "val"):
        before = {Path(s["path"]).name: (s["size_bytes"], s["num_tokens"]) for s in old.get(split, [])}
        after = {Path(s["path"]).name: (s["size_bytes"], s["num_tokens"]) for s in new.get(split, [])}
        if gone := sorted(set(before) - set(after)):
            diffs.append(f"{split} shards gone: {', '.join(gone)}")
        if added := sorted(set(after) - set(before)):
            diffs.append(f"{split} shards added: {', '.join(added)}")
        for name in sorted(set(before) & set(after)):
            if before[name] != after[name]:
                diffs.append(f"{split} shard {name} changed: {before[name][0]} bytes, {before[name][1]} tokens "
                             f"-> {after[name][0]} bytes, {after[name][1]} tokens")
    old_eval, new_eval = old.get("eval"), new.get("eval")
    if old_eval is None:
        diffs.append("the manifest records no eval set (written before evals scored fixed windows)")
    else:
        for key in ("block_size", "eval_iters", "eval_batch_size", "windows"):
            if old_eval.get(key) != new_eval.get(key):
                diffs.append(f"eval {key}: {old_eval.get(key)} -> {new_eval.get(key)}")
        for split in ("train", "val"):
            a, b = old_eval.get(split, {}), new_eval.get(split, {})
            if a.get("sha256") != b.get("sha256"):
                diffs.append(f"the {split} eval tokens differ (sha256 {str(a.get('sha256'))[:12]}... -> "
                             f"{str(b.get('sha256'))[:12]}...)")
    return diffs
