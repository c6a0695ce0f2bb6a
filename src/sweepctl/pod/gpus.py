"""What GPUs this machine has and how busy they are, from `nvidia-smi --query-gpu`.

Never from nvidia-smi's process list: inside containers it is empty while the GPU is at 100%
(postmortem, failure 5). No nvidia-smi, or one that fails, means no GPUs — the caller decides
whether that is fine (CPU rows) or a refusal.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

QUERY_FIELDS = ("index", "name", "utilization.gpu", "memory.used", "memory.total")
QUERY_ARGV = ["nvidia-smi", f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits"]
TIMEOUT_S = 10.0  # a wedged driver makes nvidia-smi hang; status must still answer


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    utilization: float | None  # percent; None when the driver reports [N/A]
    memory_used_mib: float | None
    memory_total_mib: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def busy_key(self) -> tuple[float, float, int]:
        """Sort key for "least busy": utilization, then memory in use, then index."""
        return (self.utilization or 0.0, self.memory_used_mib or 0.0, self.index)


@dataclass(frozen=True)
class GpuQuery:
    gpus: list[Gpu]
    problem: str | None = None  # why the list is empty or partial (no nvidia-smi, timeout, bad output)


def parse_query(text: str) -> tuple[list[Gpu], list[str]]:
    """Rows of `index, name, util, mem.used, mem.total`; returns the GPUs and the lines it could not read."""
    gpus, bad = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(QUERY_FIELDS) or not cells[0].isdigit():
            bad.append(line)
            continue
        gpus.append(Gpu(index=int(cells[0]), name=cells[1], utilization=_number(cells[2]),
                        memory_used_mib=_number(cells[3]), memory_total_mib=_number(cells[4])))
    return gpus, bad


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def query_gpus(timeout_s: float = TIMEOUT_S) -> GpuQuery:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return GpuQuery([], "nvidia-smi not found (no NVIDIA driver on this machine)")
    try:
        proc = subprocess.run([exe, *QUERY_ARGV[1:]], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return GpuQuery([], f"nvidia-smi did not answer within {timeout_s:g} s (driver hung?)")
    except OSError as e:
        return GpuQuery([], f"nvidia-smi could not run: {e}")
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        return GpuQuery([], f"nvidia-smi exited {proc.returncode}: {last[-1] if last else 'no output'}")
    gpus, bad = parse_query(proc.stdout)
    return GpuQuery(gpus, f"could not read nvidia-smi line {bad[0]!r}" if bad else None)


def least_busy(gpus: list[Gpu], count: int = 1) -> list[int]:
    """Indices of the `count` least busy GPUs (utilization, then memory), lowest index on ties."""
    return sorted(g.index for g in sorted(gpus, key=lambda g: g.busy_key)[:count])
