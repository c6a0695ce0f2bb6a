"""bench/gpu_check.sh, the script a session with a GPU runs first, kept working where there is none.

Its CPU mode (DEVICE=cpu) runs every part on tiny sizes: the benchmark script, a real sweep in
tmux with a trainer SIGTERMed and resumed, the trainer through torchrun (gloo), and the profiler.
Only CUDA is missing; every check that the GPU run relies on runs here, so a change that breaks
the script is seen in CI and not in the lent GPU minutes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("out")
    tmp = tmp_path_factory.mktemp("tmp")
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(out), "TMPDIR": str(tmp), "PYTHON": sys.executable}
    env.pop("PYTHONPATH", None)
    p = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True, env=env,
                       timeout=1200)
    return p, out


def test_every_part_passes_and_the_summary_comes_last(cpu_check):
    p, out = cpu_check
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    summary = (out / "gpu_check_summary.txt").read_text()
    assert p.stdout.rstrip().endswith(summary.rstrip())  # printed last, as written
    lines = summary.splitlines()
    assert re.fullmatch(rf"gpu_check: DEVICE=cpu, parts: bench sweep ddp profile, \d+ s; logs in "
                        rf"{re.escape(str(out))}/gpu_check.tar.gz", lines[0])
    assert lines[1].startswith("work folder (run directories, checkpoints, token shards; left in place): ")
    heads = [line for line in lines[2:] if not line.startswith("    ")]
    assert [h.split(":")[0] for h in heads] == ["bench", "sweep", "ddp (gloo)", "profile"], heads
    assert all(h.split(": ")[1].startswith("PASS") for h in heads), heads
    assert re.fullmatch(r"sweep: PASS: sweep: (\d+) passed, 0 failed \(run directories: .*\)", heads[1])
    assert re.fullmatch(r"ddp \(gloo\): PASS: status completed, ddp True, world_size 1, device cpu, float32, "
                        r"iter 6, [\d,]+ tok/s, peak mem .* MB", heads[2])
    # the bench's merged table and the profile's top operators are quoted under their parts
    body = "\n".join(lines)
    assert re.search(r"^    .*\bbase\b.*$", body, re.M) and re.search(r"^    .*\bmhc_48l\b.*$", body, re.M)
    assert re.search(r"^    CPU operator calls per step: \d+ \(\d+ distinct\)", body, re.M)


def test_the_tarball_holds_every_log_and_no_checkpoint(cpu_check):
    _, out = cpu_check
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.tar.gz", "gpu_check_summary.txt"]
    with tarfile.open(out / "gpu_check.tar.gz") as tar:
        names = tar.getnames()
        sweep = json.load(tar.extractfile("./sweep.json"))
    assert {"./bench.log", "./sweep.log", "./ddp.log", "./profile.log", "./profile.json", "./sweep.json",
            "./nvidia-smi.txt"} <= set(names)
    assert not [n for n in names if n.endswith((".pt", ".bin"))]
    assert sweep["device"] == "cpu" and not sweep["no_tmux"]
    checks = {c["check"]: c["ok"] for c in sweep["checks"]}
    assert all(checks.values()) and len(checks) == 29, checks
    assert checks["gpucheck-mhc-s1: resumed from its checkpoint, not from scratch"]


def test_without_tmux_the_sweep_runs_its_runner_directly_and_says_so(tmp_path):
    """A GPU image without tmux (and no .whl/deb carried): every check but the session's still runs,
    and every line says NO TMUX, so the figures are never mistaken for a tmux launch's."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_sweep.py"), "--work", str(tmp_path / "w"),
                        "--device", "cpu", "--no-tmux", "--timeout", "600", "--json", str(tmp_path / "s.json")],
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    verdicts = [line for line in p.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert verdicts and all(v.startswith("PASS sweep [NO TMUX: runner started directly]: ") for v in verdicts)
    assert "NO TMUX: shard 0 runner started directly: CUDA_VISIBLE_DEVICES=" in p.stdout
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["no_tmux"] is True and len(result["checks"]) == 28 and all(c["ok"] for c in result["checks"])
    assert not (tmp_path / "w" / "tmux.sock").exists()  # no tmux server was started
