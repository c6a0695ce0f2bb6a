"""How do validate, plan and status cost at the size of a big sweep, next to merely reading it?

    python bench/cli_scale.py [--rows 10000] [--plan-rows 20000] [--runs 2000] [--ssh]

Prints one table. Each command is run as a user runs it, `sweepctl ...` in a fresh process with
stdout to a file, and measured by its CPU time (user + system, its children's included: steadier
than wall time on a shared machine) and its peak memory (max RSS). Each is set beside a bare pass
in this process over the same input: `csv` + `ast.literal_eval` of every override value for a
CSV; a loop that json-loads every summary.json or heartbeat.json for run directories, and
plan.json too for a launched sweep. Both sides are best of 3. Targets (issue 17): validate and
plan within 4x the bare pass, under 200 MB for 20,000 rows; status within 4x its bare loop;
`--ssh`: status over SSH on loopback (tests/sshd.py) under 2 s of wall time.

The CLI's own start (Python, typer, rich, and pydantic where a command needs it) is in every
fresh-process row: `sweepctl presets` shows it, and it alone is 2.5x the bare pass over 10,000
rows. The last rows run each command's entry point in this process after a warm-up, which is the
command's own work: both are printed, and each ratio says which it is. Wall times depend on what
else the machine runs: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEPCTL = str(Path(sys.executable).with_name("sweepctl"))
CLIENT_CPU = [0.0]  # CPU of every sweepctl process run here, so the rest of the children's CPU is sshd's side
PRESETS = ["base", "hc", "mhc", "vres", "vres_mhc", "cvres_mhc", "base_48l", "mhc_48l"]


def write_sweep(path: Path, rows: int) -> Path:
    """Every row its own group (its own learning rate): the shape that made validate print 30,000 lines."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run_id", "config", "seed", "overrides", "notes"])
        for i in range(rows):
            w.writerow([f"run-{i:05d}-s{1337 + i % 3}", PRESETS[i % len(PRESETS)], 1337 + i % 3,
                        f"learning_rate={1e-4 + i * 1e-8:.8g} wandb_log=False", ""])
    return path


def bare_csv(path: Path) -> None:
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for word in row["overrides"].split():
                ast.literal_eval(word.split("=", 1)[1])


def write_runs(out_root: Path, run_ids: list[str]) -> None:
    """A run directory per run_id: 3 in 4 finished ok, the rest failed or with only a heartbeat (stale)."""
    now = time.time()
    for i, run_id in enumerate(run_ids):
        d = out_root / run_id
        d.mkdir(parents=True)
        if i % 4 == 3 and i % 8 == 7:
            (d / "heartbeat.json").write_text(json.dumps({"ts": now - 3600, "iter": 10, "max_iters": 100, "pid": 1}))
            (d / "metrics.jsonl").write_text(json.dumps({"iter": 10, "loss": 5.0, "elapsed_s": 2.0}) + "\n")
        else:
            ok = i % 4 != 3
            (d / "summary.json").write_text(json.dumps({"ok": ok, "status": "completed" if ok else "failed",
                                                        "iter_num": 100, "max_iters": 100, "train_loss": 3.2,
                                                        "error_class": None if ok else "exception"}))


def write_launched(out_root: Path, csv_path: Path, n: int) -> None:
    """A sweep of n rows launched into out_root, as launch leaves it: plan.json and launch.json in
    its manifest, and a run directory per row (write_runs)."""
    from sweepctl.state import manifest, runs
    from sweepctl.sweep.plan import make_plan
    from sweepctl.sweep.spec import read_sweep

    write_sweep(csv_path, n)
    plan = make_plan(read_sweep(csv_path), shards=8, schedule="dynamic", out_root=out_root)
    write_runs(out_root, [r.run_id for r in plan.runs])
    d = manifest.sweep_dir(out_root, csv_path.stem)
    manifest.write_plan(d, plan)
    runs.write_json_atomic(d / manifest.LAUNCH_FILE, {"ts": time.time(), "csv": str(csv_path)})


def bare_runs(out_root: Path) -> None:
    for plan in out_root.glob(".sweeps/*/plan.json"):
        with open(plan) as f:
            json.load(f)
    for d in out_root.iterdir():
        if d.name.startswith("."):
            continue
        for name in ("summary.json", "heartbeat.json"):
            try:
                with open(d / name) as f:
                    json.load(f)
                break
            except FileNotFoundError:
                continue


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def command(args: list[str], env: dict[str, str] | None = None, repeat: int = 3) -> tuple[float, float, float]:
    """(CPU seconds, wall seconds, peak MB) of one `sweepctl` process, best of `repeat`."""
    best = (float("inf"), float("inf"), 0.0)
    for _ in range(repeat):
        with tempfile.TemporaryFile() as out:
            t = time.perf_counter()
            proc = subprocess.Popen([SWEEPCTL, *args], stdout=out, stderr=subprocess.PIPE,
                                    env={**os.environ, **(env or {})})
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t
            err = proc.stderr.read().decode() if proc.stderr else ""
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                raise SystemExit(f"sweepctl {' '.join(args)} exited {proc.returncode}: {err[-2000:]}")
        cpu = usage.ru_utime + usage.ru_stime
        CLIENT_CPU[0] += cpu
        if cpu < best[0]:
            best = (cpu, wall, usage.ru_maxrss / 1024)
    return best


def in_process(args: list[str], env: dict[str, str], repeat: int = 3) -> tuple[float, float, float]:
    """(CPU seconds, wall seconds, 0) of `sweepctl ARGS` run by its entry point in this process,
    after a first run that pays for the imports: the command's own work, without the start-up."""
    import contextlib

    from sweepctl.cli.app import main

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        best = (float("inf"), float("inf"), 0.0)
        for _ in range(repeat + 1):
            sys.argv = ["sweepctl", *args]
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                t, w = time.process_time(), time.perf_counter()
                try:
                    main()
                except SystemExit as e:
                    if e.code:
                        raise
                got = (time.process_time() - t, time.perf_counter() - w, 0.0)
            best = min(best, got)
        return best
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def row(name: str, n: int, got: tuple[float, float, float], bare: float | None, target: str) -> str:
    cpu, wall, mb = got
    ratio = f"{cpu / bare:.1f}x" if bare else "-"
    return f"{name:<52}{n:>7}{cpu:>9.2f}{wall:>9.2f}{mb:>9.0f}{(f'{bare:.2f}' if bare else '-'):>9}{ratio:>8}  {target}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--plan-rows", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=2_000)
    parser.add_argument("--ssh", action="store_true", help="also status over SSH to a loopback sshd (tests/sshd.py)")
    args = parser.parse_args()
    load_at_start = _load()
    lines = [f"{'command (in a fresh process)':<52}{'rows':>7}{'cpu s':>9}{'wall s':>9}{'peak MB':>9}{'bare s':>9}{'ratio':>8}  target"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {"SWEEPCTL_OUT_ROOT": str(root / "outputs"), "SWEEPCTL_VOLUME": str(root / "no-volume")}
        lines.append(row("sweepctl presets (start-up alone)", 0, command(["presets"], env), None, ""))
        big = write_sweep(root / "big.csv", args.rows)
        bare = best_of(lambda: bare_csv(big))
        lines.append(row("sweepctl validate", args.rows, command(["validate", str(big)], env), bare, "< 4x"))
        lines.append(row("sweepctl validate --json", args.rows, command(["validate", str(big), "--json"], env),
                         bare, ""))
        lines.append(row("sweepctl plan --shards 8", args.rows,
                         command(["plan", str(big), "--shards", "8"], env), bare, "< 4x"))

        huge = write_sweep(root / "huge.csv", args.plan_rows)
        bare_huge = best_of(lambda: bare_csv(huge), repeat=1)
        lines.append(row("sweepctl plan --shards 8", args.plan_rows,
                         command(["plan", str(huge), "--shards", "8"], env, repeat=1), bare_huge, "< 200 MB"))
        lines.append(row("sweepctl plan --shards 8 --json", args.plan_rows,
                         command(["plan", str(huge), "--shards", "8", "--json"], env, repeat=1), bare_huge,
                         "< 200 MB"))
        out_root = root / "outputs"
        write_runs(out_root, [f"run-{i:05d}" for i in range(args.runs)])
        bare_status = best_of(lambda: bare_runs(out_root))
        path = f"{Path(__file__).resolve().parents[1] / 'tests' / 'fake_bin'}:{os.environ.get('PATH', '')}"
        env_status = {**env, "PATH": path, "SWEEPCTL_TMUX_SOCKET": str(root / "tmux.sock")}
        lines.append(row("sweepctl status", args.runs, command(["status"], env_status), bare_status, "< 4x"))
        lines.append(row("sweepctl status --all", args.runs, command(["status", "--all"], env_status),
                         bare_status, ""))
        lines.append(row("sweepctl status --json", args.runs, command(["status", "--json"], env_status),
                         bare_status, ""))
        launched = root / "launched"  # the usual case: a launched sweep, its plan.json read too
        write_launched(launched, root / "sweep.csv", args.runs)
        bare_launched = best_of(lambda: bare_runs(launched))
        env_launched = {**env_status, "SWEEPCTL_OUT_ROOT": str(launched)}
        lines.append(row("sweepctl status, launched sweep", args.runs, command(["status"], env_launched),
                         bare_launched, "< 4x"))
        if args.ssh:
            lines.extend(ssh_rows(root, {"run directories": env_status, "launched sweep": env_launched}, args.runs))
        # Last: a process forked after these would report their memory as its own peak.
        lines.append(f"{'in this process, after a warm-up':<52}")
        lines.append(row("sweepctl validate", args.rows, in_process(["validate", str(big)], env), bare, "< 4x"))
        lines.append(row("sweepctl plan --shards 8", args.rows, in_process(["plan", str(big), "--shards", "8"], env),
                         bare, "< 4x"))
        lines.append(row("sweepctl status", args.runs, in_process(["status"], env_status), bare_status, "< 4x"))
        lines.append(row("sweepctl status, launched sweep", args.runs, in_process(["status"], env_launched),
                         bare_launched, "< 4x"))
    print("\n".join(lines))
    print(f"(bare: in this process, CPU s; peak MB of this process: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}; load average at the start "
          f"{load_at_start}, at the end {_load()})")


def _load() -> str:
    """The 1-minute load average and the CPUs there are to share it."""
    return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def ssh_rows(root: Path, pods: dict[str, dict[str, str]], n: int) -> list[str]:
    """status --host over a real OpenSSH sshd on loopback (tests/sshd.py), run as the test suite
    runs it: a throwaway HOME whose ~/.ssh/config reaches the server as `pod`. One server per
    environment in `pods` (what the pod's sweepctl sees: its out-root)."""
    import getpass
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from sshd import SSHServer, keygen  # type: ignore[import-not-found]

    keys, home = root / "keys", root / "home"
    for d in (keys, home / ".ssh"):
        d.mkdir(parents=True)
    host_key, client = keygen(keys / "host"), keygen(keys / "client")
    out = []
    for what, env in pods.items():
        server_dir = root / f"sshd-{len(out)}"
        server_dir.mkdir()
        shutil.copy(client.with_suffix(".pub"), server_dir / "authorized_keys")
        server = SSHServer(workdir=server_dir, authorized_keys=server_dir / "authorized_keys", host_key=host_key)
        # The pod's side (sshd, the remote `sweepctl status --json`) runs in sshd's children, reaped
        # by sshd, which is reaped at stop(): the children's CPU here, minus the laptop-side commands.
        before, client_before = _children_cpu(), CLIENT_CPU[0]
        server.start(server_env={k: v for k, v in env.items() if k.startswith("SWEEPCTL_")} | {"PATH": env["PATH"]})
        try:
            pub = host_key.with_suffix(".pub").read_text().split()
            (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{server.port} {pub[0]} {pub[1]}\n")
            (home / ".ssh" / "config").write_text(
                f"Host pod\n    HostName 127.0.0.1\n    Port {server.port}\n    User {getpass.getuser()}\n"
                f"    IdentityFile {client}\n    IdentitiesOnly yes\n    BatchMode yes\n"
                f"    UserKnownHostsFile {home / '.ssh' / 'known_hosts'}\n")
            client_env = {**env, "HOME": str(home), "SWEEPCTL_REMOTE_BIN": SWEEPCTL}
            client_env.pop("SSH_AUTH_SOCK", None)
            for extra in ([], ["--json"]):
                got = command(["status", "--host", "pod", *extra], client_env)
                out.append(row(" ".join(["sweepctl status --host pod", *extra]) + f", {what}", n, got, None,
                               f"< 2 s wall (load {_load()})"))
        finally:
            server.stop()
        pod_cpu = (_children_cpu() - before - (CLIENT_CPU[0] - client_before)) / 6  # 2 commands x best of 3
        out.append(f"  the pod's side of each (sshd + remote sweepctl), {what}: {pod_cpu:.2f} cpu s; an idle "
                   "laptop and pod wait about the sum of both sides' CPU")
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
