"""Several runs per GPU: the gate that lets a row have its GPUs alone, and what a run needs in memory.

A slot is a shard runner in its own tmux session; `runs_per_gpu` K slots share one GPU group
(`plan.Plan.slot`). Every slot claims from the same longest-first queue. A row normally runs
beside its siblings (shared), but two kinds of row must have the group to themselves:

- a row with `gpus > 1`: it takes whole GPUs and is never packed;
- the one retry of a packed run that ran out of memory (`oom`), "retried alone".

Any slot may claim such a row; it then waits until its siblings' current rows end, and no sibling
starts a new row until it is done. We chose this over dedicated slots for multi-GPU rows because
a dedicated slot idles whenever the queue holds no multi-GPU row, and the queue is longest first,
so the (usually long) multi-GPU rows come early, when the wait is short.

The gate is two flock(2) files per GPU group (a turnstile and a room, the classic readers-writer
lock with writer preference): the kernel releases them when a runner dies, so a killed slot
never blocks its siblings. Waits poll with LOCK_NB so that `sweepctl stop` is heard while waiting.

    gate = GpuGate(manifest.slots_dir(sweep_dir), "0")
    with gate.hold(alone=False, stopped=lambda: runner.stop_signal is not None) as got:
        if got: ...run the trainer...

Memory: `MEMORY_ESTIMATES` maps a model shape (`memory_key`) to the peak memory one run of it
needs, as `bench/packing.py` measured it on a GPU. Launch refuses K runs per GPU that cannot fit
when the shape is in the table, and says when it is not (never a guessed figure).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweepctl.train.config import TrainConfig

POLL_S = 0.2
# Above what the runs need: the CUDA context (~500 MiB per process on an H100/H200) and fragmentation.
HEADROOM_MIB_PER_RUN = 1024.0
ESTIMATES_ASSET = "memory_estimates.json"


class GpuGate:
    """Shared (packed) or alone use of one GPU group, across the slot processes of one sweep."""

    def __init__(self, directory: Path, group: str):
        directory.mkdir(parents=True, exist_ok=True)
        self.turnstile = directory / f"gpus-{group}.turnstile"
        self.room = directory / f"gpus-{group}.lock"

    @contextlib.contextmanager
    def hold(self, *, alone: bool, stopped: Callable[[], bool] = lambda: False) -> Iterator[bool]:
        """Yields True once held (shared, or alone), False when `stopped()` became true while waiting."""
        turn = os.open(self.turnstile, os.O_RDWR | os.O_CREAT, 0o644)
        room = os.open(self.room, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _wait_lock(turn, fcntl.LOCK_EX, stopped):
                yield False
                return
            if not alone:
                # through the turnstile and into the room, then let the next one through: a slot
                # waiting to be alone holds the turnstile, so no new shared row starts meanwhile
                got = _wait_lock(room, fcntl.LOCK_SH, stopped)
                fcntl.flock(turn, fcntl.LOCK_UN)
            else:
                got = _wait_lock(room, fcntl.LOCK_EX, stopped)
            yield got
        finally:
            os.close(room)  # closing releases the locks
            os.close(turn)


def _wait_lock(fd: int, how: int, stopped: Callable[[], bool]) -> bool:
    while True:
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if stopped():
                return False
            time.sleep(POLL_S)


# --- memory ------------------------------------------------------------------------------------------

def memory_key(config: TrainConfig) -> str:
    """The shape of a run that decides its memory (and its speed): residual variant, size, batch,
    dtype, compile."""
    c = config
    variant = "base" if c.hc_disable else f"{'mhc' if c.mhc else 'hc'}{c.hc_num_streams}"
    if c.v_residual:
        variant += "+vres"
    return (f"{variant} L{c.n_layer} C{c.n_embd} H{c.n_head} B{c.batch_size}x{c.block_size} "
            f"V{c.vocab_size} {c.dtype}{' compiled' if c.compile_model else ''}")


def load_estimates() -> dict[str, dict[str, Any]]:
    """memory_key -> {"peak_mib", "gpu", "source"}: what bench/packing.py measured on a GPU."""
    text = (resources.files("sweepctl") / "assets" / ESTIMATES_ASSET).read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def fit_problem(configs: list[TrainConfig], runs_per_gpu: int, gpu_mib: float | None,
                estimates: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, str]:
    """(why K runs per GPU cannot fit, or None; what was known) for the rows of a sweep.

    The K largest known rows are assumed to meet on one GPU: the worst case of the claim order."""
    known = sorted(((float(e["peak_mib"]), key) for c in configs
                    if (e := estimates.get(key := memory_key(c))) is not None), reverse=True)
    unknown = sorted({memory_key(c) for c in configs} - {k for _, k in known})
    note = f"no measured peak memory for {', '.join(unknown[:2])}{' ...' if len(unknown) > 2 else ''}" \
        if unknown else ""
    if not known or gpu_mib is None:
        return None, note or "GPU memory unknown"
    worst = [mib for mib, _ in known[:runs_per_gpu]]  # fewer when the sweep has fewer known rows than K
    need = sum(worst) + HEADROOM_MIB_PER_RUN * len(worst)
    found = f"{len(worst)} x up to {worst[0]:.0f} MiB ({known[0][1]}) + headroom = {need:.0f} of {gpu_mib:.0f} MiB"
    if need > gpu_mib:
        return found, note
    return None, found + (f"; {note}" if note else "")
