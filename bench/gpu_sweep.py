"""A real sweep, as a user runs it, with every promise checked: one PASS/FAIL line per check.

    python bench/gpu_sweep.py --work /tmp/gpu-check/sweep                 # on the GPU machine (GPU 0)
    python bench/gpu_sweep.py --work /tmp/x --device cpu                   # the same path on the CPU

What it does, through the `sweepctl` CLI of this checkout (`python -m sweepctl`, PYTHONPATH=src):
`data prepare` makes token shards offline from the Python standard library's sources (as the demo
does); a three-row CSV (plain, HC, mHC; short runs at a reduced size, eager) is `launch`ed as one
shard in tmux on a private socket; `status` is read while it runs (its GPU lines against the real
`nvidia-smi`); the mHC trainer is sent SIGTERM mid-run; once the shard is done, `launch
--retry-failed` resumes it from its checkpoint; then `status --json` and `report`. Checked: each
step's exit code, the interrupted summary, the resume point, every run's contract files, and that
each summary agrees with its metrics and config (iterations, tokens, last eval, device, dtype).

Without a tmux binary (`--no-tmux`, or none on PATH) the shard runner is started directly, the
way the Ray and Slurm launchers start it (`launch.write_manifest` + the runner's argv), and every
line of output says NO TMUX: everything but the tmux session is then still checked.
Exit status: 0 when every check passed, 1 otherwise; `--json FILE` writes the checks.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from sweepctl.demo import corpus_files  # noqa: E402
from sweepctl.train import contract  # noqa: E402

SWEEP = "gpucheck"
ROWS = (("base", "plain residual"), ("mhc", "mHC, SIGTERMed mid-run, resumed"), ("hc", "hyper-connections"))
KILLED = f"{SWEEP}-mhc-s1"
SIZES = {  # reduced preset sizes: a few seconds per run on an H200, a minute or so on 2 CPU cores
    "cuda": dict(corpus_bytes=1_500_000, words="n_layer=4 n_head=4 n_embd=256 block_size=256 batch_size=16",
                 max_iters=300, eval_interval=100, eval_iters=10, log_interval=20),
    "cpu": dict(corpus_bytes=300_000, words="n_layer=2 n_head=2 n_embd=32 block_size=32 batch_size=4",
                max_iters=24, eval_interval=12, eval_iters=1, log_interval=6),
}


class Checks:
    def __init__(self, label: str):
        self.label = label
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.rows.append({"check": name, "ok": bool(ok), "detail": detail})
        print(f"{'PASS' if ok else 'FAIL'} sweep{self.label}: {name}" + (f" — {detail}" if detail else ""), flush=True)
        return bool(ok)

    @property
    def failed(self) -> int:
        return sum(not r["ok"] for r in self.rows)


def sweepctl(*args: str, env: dict[str, str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sweepctl", *args]
    print("$ sweepctl " + " ".join(args), flush=True)
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(argv, 124, str(e.stdout or ""), f"timed out after {timeout:.0f} s")
    sys.stdout.write(p.stdout)
    sys.stdout.write(p.stderr)
    return p


def csv_text(device: str) -> str:
    s = SIZES["cpu" if device == "cpu" else "cuda"]
    n = s["max_iters"]
    dtype = "float32" if device == "cpu" else "bfloat16"
    words = (f"device='{device}' dtype='{dtype}' {s['words']} gradient_accumulation_steps=1 max_iters={n} "
             f"lr_decay_iters={n} warmup_iters={max(1, n // 10)} eval_interval={s['eval_interval']} "
             f"eval_iters={s['eval_iters']} log_interval={s['log_interval']} learning_rate=3e-3 min_lr=3e-4 "
             "heartbeat_interval_s=0.5 always_save_checkpoint=True compile_model=False wandb_log=False")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run_id", "config", "seed", "overrides", "notes"])
    w.writerows([f"{SWEEP}-{preset}-s1", preset, 1, words, notes] for preset, notes in ROWS)
    return buf.getvalue()


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def metrics_rows(run_dir: Path) -> list[dict[str, Any]]:
    try:
        lines = (run_dir / contract.METRICS).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def wait_until(pred, timeout: float, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def status_json(env: dict[str, str], out_root: Path) -> dict[str, Any] | None:
    p = subprocess.run([sys.executable, "-m", "sweepctl", "status", "--json", "--out-root", str(out_root),
                        "--sweep", SWEEP], capture_output=True, text=True, env=env, timeout=60)
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


def settled(env: dict[str, str], out_root: Path) -> dict[str, Any] | None:
    """The status once no run is pending or running and no shard session is alive."""
    s = status_json(env, out_root)
    if s and not s["counts"]["running"] and not s["counts"]["pending"] and \
            not any(x.get("alive") for x in s.get("sessions", [])):
        return s
    return None


def launch_direct(csv_file: Path, out_root: Path, data_dir: Path, *, retry_failed: bool, env: dict[str, str]
                  ) -> list[subprocess.Popen[bytes]]:
    """NO TMUX: what `launch` does, minus the tmux session (the Ray/Slurm launchers' path)."""
    from sweepctl import launch
    from sweepctl.settings import load_settings

    settings = load_settings(out_root=str(out_root), data_dir=str(data_dir))
    preview = launch.prepare(csv_file, launch.LaunchOptions(shards=1, retry_failed=retry_failed, no_wandb=True),
                             settings)
    bad = [c for c in preview.checks if not c.ok and c.name != "tmux"]
    if bad or preview.refusals:
        print(f"NO TMUX launch refused: {[c.detail for c in bad]} {preview.refusals}", flush=True)
        return []
    launched_at = time.time()
    launch_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(launched_at)) + f"-{os.getpid()}"
    launch.write_manifest(preview, launch_id=launch_id, launched_at=launched_at, shards=preview.shards_to_start)
    procs = []
    for s in preview.shards_to_start:
        argv = launch.runner_argv(preview, s, launch_id=launch_id, launched_at=launched_at)
        devices = launch.cuda_visible_devices(preview.plan, s)
        print(f"NO TMUX: shard {s} runner started directly: CUDA_VISIBLE_DEVICES={devices} {' '.join(argv)}")
        log = open(out_root / f"runner-{s}-{'retry' if retry_failed else 'first'}.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(argv, env={**env, "CUDA_VISIBLE_DEVICES": devices}, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def check_summary(c: Checks, run_dir: Path, *, device: str, max_iters: int) -> None:
    """Each summary against the run's own metrics and effective config: the figures a report trusts."""
    s = read_json(run_dir / contract.SUMMARY) or {}
    cfg = read_json(run_dir / contract.CONFIG_EFFECTIVE) or {}
    rows = metrics_rows(run_dir)
    evals = [r for r in rows if "val" in r and "iter" in r]
    name = run_dir.name
    missing = [f for f in contract.COMPLETE_FILES if not (run_dir / f).is_file()]
    c.add(f"{name}: every contract file present", not missing, f"missing {missing}" if missing else "")
    c.add(f"{name}: summary completed at max_iters", s.get("status") == "completed" and s.get("ok") is True
          and s.get("iter_num") == max_iters, f"status {s.get('status')}, iter {s.get('iter_num')}/{max_iters}")
    tpi = cfg.get("batch_size", 0) * cfg.get("block_size", 0) * cfg.get("gradient_accumulation_steps", 0)
    c.add(f"{name}: tokens = iterations x tokens per iteration",
          s.get("tokens_per_iter") == tpi and s.get("tokens_seen") == max_iters * tpi,
          f"{s.get('tokens_seen')} = {s.get('iter_num')} x {s.get('tokens_per_iter')} (config: {tpi})")
    last = evals[-1] if evals else {}
    c.add(f"{name}: last eval in summary = last eval row of metrics.jsonl",
          bool(last) and s.get("last_eval_iter") == last.get("iter") == max_iters
          and (s.get("last_eval") or {}).get("val") == last.get("val"),
          f"summary iter {s.get('last_eval_iter')} val {(s.get('last_eval') or {}).get('val')}; "
          f"metrics iter {last.get('iter')} val {last.get('val')}")
    first_val = evals[0].get("val") if evals else None
    best = s.get("best_val_loss")
    c.add(f"{name}: val loss finite and fell", isinstance(best, float) and math.isfinite(best)
          and first_val is not None and best < first_val, f"first {first_val}, best {best}")
    want_dtype = "float32" if device == "cpu" else "bfloat16"
    c.add(f"{name}: ran on {device} in {want_dtype}", str(s.get("device", "")).startswith(device)
          and s.get("dtype") == want_dtype, f"device {s.get('device')}, dtype {s.get('dtype')}")
    if device != "cpu":
        c.add(f"{name}: peak GPU memory recorded", (s.get("peak_mem_mb") or 0) > 0, f"{s.get('peak_mem_mb')} MB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="a new folder: data, CSV, out-root, tmux socket")
    p.add_argument("--device", default="cuda", help="cuda (GPU 0) or cpu")
    p.add_argument("--no-tmux", action="store_true", help="start the shard runner directly (no tmux binary)")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds for the whole sweep, both launches")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    t_end = time.monotonic() + a.timeout
    no_tmux = a.no_tmux or shutil.which("tmux") is None
    c = Checks(" [NO TMUX: runner started directly]" if no_tmux else "")
    work = a.work.absolute()
    data_dir, out_root, csv_path = work / "data", work / "out", work / f"{SWEEP}.csv"
    work.mkdir(parents=True, exist_ok=True)
    sock = work / "tmux.sock"
    env = {**os.environ, "SWEEPCTL_TMUX_SOCKET": str(sock), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    size = SIZES["cpu" if a.device == "cpu" else "cuda"]
    if a.device == "cpu":  # one thread per trainer: on a loaded machine torch's spinning threads cost 10x
        env["OMP_NUM_THREADS"] = "1"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        files = [str(f) for f in corpus_files(size["corpus_bytes"])]
        r = sweepctl("data", "prepare", *files, "--out", str(data_dir), env=env, timeout=300)
        if not c.add("data prepare: token shards made offline", r.returncode == 0,
                     f"exit {r.returncode}, {len(files)} stdlib files"):
            return 1
        csv_path.write_text(csv_text(a.device))
        common = [str(csv_path), "--out-root", str(out_root), "--data-dir", str(data_dir), "--shards", "1", "--no-wandb"]
        if no_tmux:
            procs = launch_direct(csv_path, out_root, data_dir, retry_failed=False, env=env)
            started = c.add("launch (runner started directly)", bool(procs))
        else:
            r = sweepctl("launch", *common, env=env)
            started = c.add("launch: one shard in tmux", r.returncode == 0 and "sweep-0" in r.stdout,
                            f"exit {r.returncode}")
        if not started:
            return 1

        killed = out_root / KILLED
        beat = wait_until(lambda: (b := read_json(killed / contract.HEARTBEAT)) and
                          b.get("iter", 0) >= size["max_iters"] // 4 and b, max(1.0, t_end - time.monotonic()))
        r = sweepctl("status", "--out-root", str(out_root), "--sweep", SWEEP, env=env)
        smi = shutil.which("nvidia-smi")
        names = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=30).stdout.split("\n") if smi else []
        names = [n.strip() for n in names if n.strip()]
        s = status_json(env, out_root) or {}
        seen = [g.get("name") for g in s.get("gpus", [])]
        if smi:
            c.add("status: GPUs as the real nvidia-smi names them", r.returncode == 0 and seen == names
                  and all(n in r.stdout for n in names), f"nvidia-smi {names}; status --json {seen}")
        else:
            c.add("status: no nvidia-smi here, no GPU listed", r.returncode == 0 and seen == [], f"{seen}")
        if not no_tmux:
            c.add("status: the shard's tmux session is alive while it runs",
                  any(x.get("name") == "sweep-0" and x.get("alive") for x in s.get("sessions", [])),
                  f"{s.get('sessions')}")

        if not beat:
            c.add(f"SIGTERM {KILLED} mid-run", False, "its heartbeat never reached a quarter of max_iters")
            return 1
        os.kill(int(beat["pid"]), signal.SIGTERM)
        c.add(f"SIGTERM {KILLED} mid-run", True, f"trainer pid {beat['pid']} at iter {beat['iter']}")

        first = wait_until(lambda: settled(env, out_root), max(1.0, t_end - time.monotonic()), every=1.0)
        stopped = read_json(killed / contract.SUMMARY) or {}
        c.add("first pass: the killed run says interrupted, with a checkpoint",
              bool(first) and stopped.get("status") == "interrupted" and (killed / contract.CHECKPOINT).is_file(),
              f"summary {stopped.get('status')} at iter {stopped.get('iter_num')}: {stopped.get('error')}")
        others = {rid: (read_json(out_root / rid / contract.SUMMARY) or {}).get("status")
                  for rid in (f"{SWEEP}-base-s1", f"{SWEEP}-hc-s1")}
        c.add("first pass: the runner went on to the other rows", set(others.values()) == {"completed"}, f"{others}")

        if no_tmux:
            for proc in procs:
                proc.wait(timeout=max(1.0, t_end - time.monotonic()))
            procs = launch_direct(csv_path, out_root, data_dir, retry_failed=True, env=env)
            c.add("launch --retry-failed (runner started directly)", bool(procs))
        else:
            r = sweepctl("launch", *common, "--retry-failed", env=env)
            c.add("launch --retry-failed", r.returncode == 0, f"exit {r.returncode}")
        if no_tmux:  # the runner's exit is the end of the retry
            for proc in procs:
                proc.wait(timeout=max(1.0, t_end - time.monotonic()))

        def retried() -> dict[str, Any] | None:
            # Settled alone is true at once, before the new runner has taken the row back up:
            # wait until the interrupted summary is gone (moved aside, then replaced).
            again = (read_json(killed / contract.SUMMARY) or {}).get("status") != "interrupted"
            return settled(env, out_root) if again else None

        final = wait_until(retried, max(1.0, t_end - time.monotonic()), every=1.0)
        resumed = read_json(killed / contract.SUMMARY) or {}
        events = [row for row in metrics_rows(killed) if row.get("event") == "resume"]
        c.add(f"{KILLED}: resumed from its checkpoint, not from scratch",
              resumed.get("resumed_from_iter") is not None and resumed.get("resumed_from_iter") == stopped.get("iter_num")
              and bool(events) and events[-1].get("iter") == stopped.get("iter_num"),
              f"resumed_from_iter {resumed.get('resumed_from_iter')}, interrupted at {stopped.get('iter_num')}, "
              f"resume events {[e.get('iter') for e in events]}")
        c.add("status --json: every run ok", bool(final) and final["counts"]["ok"] == len(ROWS),
              f"counts {final['counts'] if final else 'not settled before the timeout'}")
        for preset, _ in ROWS:
            check_summary(c, out_root / f"{SWEEP}-{preset}-s1", device=a.device, max_iters=size["max_iters"])
        r = sweepctl("report", "--out-root", str(out_root), "--sweep", SWEEP, "--baseline", f"{SWEEP}-base", env=env)
        c.add("report: exit 0, one line per variant", r.returncode == 0
              and all(f"{SWEEP}-{p}" in r.stdout for p, _ in ROWS), f"exit {r.returncode}")
        return 0 if c.failed == 0 else 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        if sock.exists() and shutil.which("tmux"):  # our private server only
            if not settled(env, out_root):  # out of time: stop the runners as a user would, then wait
                sweepctl("stop", "--all", "--out-root", str(out_root), env=env)
                wait_until(lambda: settled(env, out_root), 60.0, every=1.0)
            subprocess.run(["tmux", "-S", str(sock), "kill-server"], capture_output=True, timeout=30)
        print(f"sweep{c.label}: {len(c.rows) - c.failed} passed, {c.failed} failed (run directories: {out_root})")
        if a.json:
            a.json.write_text(json.dumps({"no_tmux": no_tmux, "device": a.device, "checks": c.rows}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
