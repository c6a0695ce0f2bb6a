"""Steering a sweep while it runs: priorities, rows added to the live queue, cancel, notifications.

The runner's queue mechanics use the stand-in trainer of test_runner.py (no torch, fast); the
end-to-end cases launch real tmux runners and the real trainer on tiny CPU models.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from sweepctl.runner import RunnerOptions, ShardRunner
from sweepctl.state import manifest, runs
from sweepctl.sweep.plan import claim_order
from sweepctl.sweep.spec import read_sweep
from sweepctl.views import status
from test_remote_cli import pod as pod  # a fixture
from test_runner import FAKE_TRAINER, make_plan

pytest_plugins = ["sshd", "sweep_fixtures"]


@pytest.fixture()
def fake(tmp_path: Path) -> Path:
    path = tmp_path / "fake_trainer.py"
    path.write_text(FAKE_TRAINER)
    return path


def write_plan(sweep_dir: Path, plan) -> None:
    runs.write_json_atomic(sweep_dir / "plan.json", plan.model_dump(mode="json"))


def runner_of(tmp_path: Path, sweep_dir: Path, shard: int = 0) -> ShardRunner:
    options = RunnerOptions(sweep_dir=sweep_dir, shard=shard, devices=str(shard), session=f"sweep-{shard}",
                            claims_dir=sweep_dir / "claims" / "L1", kill_grace_s=5.0)
    return ShardRunner(make_plan(tmp_path, Path("unused"), {}, schedule="dynamic", shards=2), options,
                       pane=io.BytesIO())


# --- priority --------------------------------------------------------------------------------------

def test_the_priority_column_is_read_and_checked(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("run_id,config,seed,priority\na,base,1,5\nb,base,2,\nc,base,3,-1\n")
    sweep = read_sweep(tmp_path / "s.csv")
    assert [(r.run_id, r.priority) for r in sweep.runs] == [("a", 5), ("b", 0), ("c", -1)]
    (tmp_path / "bad.csv").write_text("run_id,config,seed,priority\na,base,1,high\n")
    from sweepctl.errors import SpecError

    with pytest.raises(SpecError) as e:
        read_sweep(tmp_path / "bad.csv")
    assert str(e.value) == f"{tmp_path / 'bad.csv'}:2: priority 'high' is not an integer (higher is claimed first)"


def test_claim_order_is_priority_then_longest_then_row_order(tmp_path: Path, fake: Path) -> None:
    plan = make_plan(tmp_path, fake, {f"r{i}": "ok" for i in range(5)}, schedule="dynamic", iters=[10, 30, 20, 30, 10])
    assert claim_order(plan) == ["r1", "r3", "r2", "r0", "r4"]  # no priorities: longest first
    plan.runs[4].priority = 2
    plan.runs[0].priority = 1
    plan.runs[2].priority = -1
    assert claim_order(plan) == ["r4", "r0", "r1", "r3", "r2"]


# --- the live queue --------------------------------------------------------------------------------

def test_a_dynamic_runner_claims_rows_appended_to_plan_json_while_it_walks(tmp_path: Path, fake: Path) -> None:
    sweep_dir = tmp_path / "out" / ".sweeps" / "t"
    sweep_dir.mkdir(parents=True)
    write_plan(sweep_dir, make_plan(tmp_path, fake, {"a": "ok", "b": "ok"}, schedule="dynamic", shards=2))
    runner = runner_of(tmp_path, sweep_dir)
    walk = runner.rows()
    assert next(walk).run_id == "a"
    # a second `launch` appends c (highest priority) and d while a runs
    grown = make_plan(tmp_path, fake, {"a": "ok", "b": "ok", "c": "ok", "d": "ok"}, schedule="dynamic", shards=2)
    grown.runs[2].priority = 1
    write_plan(sweep_dir, grown)
    assert [r.run_id for r in walk] == ["c", "b", "d"]
    assert sorted(p.name for p in (sweep_dir / "claims" / "L1").iterdir()) == ["a", "b", "c", "d"]
    runner.shard_log.close()



def test_a_runner_that_runs_out_of_rows_says_so_under_the_sweep_lock(tmp_path: Path, fake: Path) -> None:
    from sweepctl.launch import live_runners

    sweep_dir = tmp_path / "out" / ".sweeps" / "t"
    sweep_dir.mkdir(parents=True)
    write_plan(sweep_dir, make_plan(tmp_path, fake, {"a": "ok"}, schedule="dynamic", shards=2))
    runner = runner_of(tmp_path, sweep_dir)
    runner._write_state(started=runner.started)  # as run() does first
    assert [r["session"] for r in live_runners(sweep_dir)] == ["sweep-0"]  # claiming: rows may join it
    walk = runner.rows()
    assert next(walk).run_id == "a"
    with manifest.sweep_lock(sweep_dir):  # a launch merging rows: the runner cannot drain meanwhile
        grown = make_plan(tmp_path, fake, {"a": "ok", "b": "ok"}, schedule="dynamic", shards=2)
        write_plan(sweep_dir, grown)
    assert [r.run_id for r in walk] == ["b"]
    assert runs.read_json(sweep_dir / "shard-0.json")["drained"] > 0
    assert live_runners(sweep_dir) == []  # drained: a launch now must start runners itself
    runner.shard_log.close()

# --- cancel ----------------------------------------------------------------------------------------

def cancel_marker(tmp_path: Path, run_id: str) -> None:
    runs.write_json_atomic(tmp_path / "out" / run_id / runs.CANCEL, {"run_id": run_id})


def test_a_cancelled_pending_row_is_never_claimed_and_shows_cancelled(tmp_path: Path, fake: Path) -> None:
    sweep_dir = tmp_path / "out" / ".sweeps" / "t"
    sweep_dir.mkdir(parents=True)
    write_plan(sweep_dir, make_plan(tmp_path, fake, {"a": "ok", "b": "ok", "c": "ok"}, schedule="dynamic", shards=2))
    cancel_marker(tmp_path, "b")
    runner = runner_of(tmp_path, sweep_dir)
    assert runner.run() == 0
    assert [(o.run_id, o.result) for o in runner.outcomes] == [("a", "ok"), ("c", "ok")]
    assert sorted(p.name for p in (sweep_dir / "claims" / "L1").iterdir()) == ["a", "c"]
    assert sorted(p.name for p in (tmp_path / "out" / "b").iterdir()) == [runs.CANCEL]  # never started
    assert runs.read_run(tmp_path / "out" / "b", stale_after_s=60).state == "cancelled"


def test_a_static_shard_skips_a_cancelled_row(tmp_path: Path, fake: Path) -> None:
    from test_runner import run_shard

    cancel_marker(tmp_path, "b")
    runner, code, pane = run_shard(tmp_path, make_plan(tmp_path, fake, {"a": "ok", "b": "ok"}))
    assert code == 0
    assert [(o.run_id, o.result) for o in runner.outcomes] == [("a", "ok"), ("b", "skipped")]
    assert "b: cancelled (sweepctl cancel); skipped" in pane
    assert not (tmp_path / "out" / "b" / runs.OWNER).exists()


def test_a_running_row_that_is_cancelled_ends_cancelled_and_the_runner_goes_on(tmp_path: Path, fake: Path) -> None:
    import threading

    from sweep_helpers import wait_until
    from test_runner import run_shard

    plan = make_plan(tmp_path, fake, {"long": "hang", "next": "ok"})
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(zip(("runner", "code", "pane"),
                                                               run_shard(tmp_path, plan), strict=True)))
    thread.start()
    long_dir = tmp_path / "out" / "long"
    wait_until(lambda: runs.read_run(long_dir, stale_after_s=60).state == "running", timeout=60,
               what="the long row to run")
    cancel_marker(tmp_path, "long")
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert [(o.run_id, o.result) for o in result["runner"].outcomes] == [("long", "cancelled"), ("next", "ok")]
    summary = runs.read_json(long_dir / runs.SUMMARY)
    assert (summary["ok"], summary["status"], summary["error_class"]) == (False, "cancelled", "cancelled")
    assert runs.read_run(long_dir, stale_after_s=60).state == "cancelled"
    assert "long: cancelled (sweepctl cancel); ending it" in result["pane"]
    assert "sweep-0 done: 1 ok, 0 failed, 0 interrupted, 1 cancelled, 0 skipped in" in result["pane"]
    # the cancelled row's stdout and summary stay; nothing was deleted
    assert (long_dir / runs.STDOUT_LOG).read_text().startswith("fake trainer hang")


def test_classify_cancelled_is_neither_failed_nor_pending() -> None:
    def state(**kw) -> str:
        args = {"summary": None, "heartbeat": None, "held": False, "owner_started": None, "now": 100.0,
                "stale_after_s": 60.0, **kw}
        return runs.classify(**args)[0]

    assert state(cancelled=True) == "cancelled"  # pending, withdrawn
    assert state(cancelled=True, held=True) == "running"  # still ending under its runner
    assert state(summary={"ok": False, "status": "cancelled"}) == "cancelled"
    assert state(summary={"ok": False, "status": "failed"}, cancelled=True) == "cancelled"
    assert state(summary={"ok": True}, cancelled=True) == "ok"  # finished before the cancel took effect
    assert state(summary={"ok": False, "status": "interrupted"}) == "failed"


# --- notifications ---------------------------------------------------------------------------------

class Webhook:
    """A local HTTP server on loopback that records every POST; answers `statuses` in turn, then 200."""

    def __init__(self, statuses: list[int] | None = None):
        import http.server
        import threading

        self.bodies: list[dict] = []
        self.statuses = list(statuses or [])
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append({"path": self.path, "type": self.headers["Content-Type"],
                                    "json": json.loads(body)})
                self.send_response(hook.statuses.pop(0) if hook.statuses else 200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/sEcReT"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        return [b["json"]["text"] for b in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture()
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def test_a_failed_run_sends_one_notification_and_the_sweep_end_one_more(tmp_path: Path, fake: Path, webhook) -> None:
    from test_runner import run_shard

    plan = make_plan(tmp_path, fake, {"bad": "exit3", "good": "ok"})
    _, code, pane = run_shard(tmp_path, plan, notify_url=webhook.url, notify_delays_s=(0.05,))
    assert code == 1
    host = runs.HOST
    assert webhook.bodies == [
        {"path": "/services/T000/B000/sEcReT", "type": "application/json",
         "json": {"text": f"sweep t: bad failed (nonzero_exit) on {host} (sweep-0). Logs: sweepctl logs bad",
                  "content": f"sweep t: bad failed (nonzero_exit) on {host} (sweep-0). Logs: sweepctl logs bad"}},
        {"path": "/services/T000/B000/sEcReT", "type": "application/json",
         "json": {"text": f"sweep t done on {host}: 1 ok, 1 failed.", "content": f"sweep t done on {host}: 1 ok, 1 failed."}},
    ]
    assert "sEcReT" not in pane and "B000" not in pane  # the URL is a secret: never in a log
    # a second runner that ends after the sweep is done sends nothing again: one message per event
    run_shard(tmp_path, plan, shard=1, session="sweep-1", notify_url=webhook.url, notify_delays_s=(0.05,))
    assert len(webhook.bodies) == 2
    markers = sorted(p.name for p in (tmp_path / "out" / ".sweeps" / "t" / "notified").iterdir())
    assert len(markers) == 2 and re.fullmatch(r"done-[0-9a-f]{12}", markers[0]) and markers[1] == "failed-bad-1"


def test_a_notification_is_retried_with_backoff_and_the_url_stays_hidden(tmp_path: Path, fake: Path) -> None:
    from test_runner import run_shard

    hook = Webhook(statuses=[503, 500])
    try:
        _, _, pane = run_shard(tmp_path, make_plan(tmp_path, fake, {"bad": "exit3"}), notify_url=hook.url,
                               notify_delays_s=(0.05, 0.1, 0.1))
    finally:
        hook.close()
    failed = f"sweep t: bad failed (nonzero_exit) on {runs.HOST} (sweep-0). Logs: sweepctl logs bad"
    done = f"sweep t done on {runs.HOST}: 1 failed."
    # two of the four POSTs met the failing answers, whichever event they carried; each event got through
    assert len(hook.bodies) == 4 and set(hook.texts()) == {failed, done}
    assert pane.count("notification to http://127.0.0.1/… failed (HTTP 50") == 2
    assert "sEcReT" not in pane


# --- end to end: real tmux runners, the real trainer on tiny CPU models -----------------------------

LONG = "max_iters=100000 lr_decay_iters=100000 eval_interval=100000"  # runs until cancelled


def write_csv(path: Path, rows: list[tuple[str, int, str, str]]) -> Path:
    """A sweep CSV of (run_id, seed, extra overrides, priority) rows on the tiny CPU model."""
    from sweep_helpers import tiny

    lines = ["run_id,config,seed,overrides,notes,priority"]
    lines += [f'{run_id},base,{seed},"{tiny(extra)}",,{priority}' for run_id, seed, extra, priority in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def launch_in_subprocess(csv: Path, *args: str):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "sweepctl", "launch", str(csv), "--name", "live", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_rows_added_cancelled_and_prioritized_while_a_dynamic_sweep_runs(
        workspace, capsys: pytest.CaptureFixture[str], webhook) -> None:
    from cli import run_cli
    from test_launch import wait_for

    ws = workspace
    base = [("long", 1, LONG, ""), ("p1", 2, "", "")]
    csv = write_csv(ws.root / "live.csv", base)
    r = run_cli(capsys, "launch", str(csv), "--name", "live", "--shards", "1", "--schedule", "dynamic",
                "--notify", webhook.url)
    assert r.code == 0, r.err
    wait_for(lambda: runs.read_run(ws.run_dir("long"), stale_after_s=60).state == "running", "long to run")

    # p1 waits behind long on the one shard; cancel it before it is claimed
    r = run_cli(capsys, "cancel", "p1")
    assert (r.code, r.out) == (0, "cancelled p1 (pending): will not start\n"), r.err

    # two launches add rows at the same moment: each CSV holds the old rows and one new row
    first = launch_in_subprocess(write_csv(ws.root / "a.csv", [*base, ("add1", 3, "", "")]))
    second = launch_in_subprocess(write_csv(ws.root / "b.csv", [*base, ("add2", 4, "", "5")]))
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert "joined the live queue of sweep-0: 1 row(s) added (add1), 0 updated" in outs[0][0]
    assert "joined the live queue of sweep-0: 1 row(s) added (add2), 0 updated" in outs[1][0]
    sweep_dir = ws.out_root / ".sweeps" / "live"
    plan = json.loads((sweep_dir / "plan.json").read_text())
    assert sorted(row["run_id"] for row in plan["runs"]) == ["add1", "add2", "long", "p1"]

    # a row that has started cannot change its config under the same run_id
    changed = write_csv(ws.root / "c.csv", [("long", 1, f"{LONG} learning_rate=0.001", "")])
    r = run_cli(capsys, "launch", str(changed), "--name", "live")
    assert (r.code, r.out) == (2, "")
    assert r.err == (f"error: 1 row(s) already started with a different config: {changed}:2: long (learning_rate: "
                     "0.0006 -> 0.001) — give a changed row a new run_id (e.g. add -v2), or put its old values back\n")

    # add1 goes first now; add2 had priority 5 from its CSV
    r = run_cli(capsys, "prioritize", "add1", "--priority", "9")
    assert (r.code, r.out) == (0, "prioritized add1 (pending): priority 9\n"), r.err

    # the running row ends cancelled; the runner goes on with the rows added, each once
    r = run_cli(capsys, "cancel", "lo*")
    assert r.code == 0 and r.out.startswith("cancelling long (running): its runner ends the trainer"), r.out
    done = wait_for(lambda: summaries_of(ws, ["add1", "add2"]), "the added rows")
    assert all(s["ok"] for s in done.values())
    wait_for(lambda: not Tmux_alive(), "the runner to end")
    claims = sorted((p.name, json.loads(p.read_text())["ts"]) for p in sweep_dir.glob("claims/*/*"))
    assert [name for name, _ in claims] == ["add1", "add2", "long"]
    assert [name for name, _ in sorted(claims, key=lambda c: c[1])] == ["long", "add1", "add2"]
    for run_id in ("add1", "add2"):
        assert json.loads((ws.run_dir(run_id) / runs.METADATA).read_text())["attempt"] == 1
        assert not list(ws.run_dir(run_id).glob("*.bak-*"))  # trained once: no earlier attempt moved aside
    assert sorted(p.name for p in ws.run_dir("p1").iterdir()) == [runs.CANCEL]
    model = status.collect(ws.out_root, with_gpus=False, with_sessions=False)
    assert {row["run_id"]: row["state"] for row in model["runs"]} == {
        "long": "cancelled", "p1": "cancelled", "add1": "ok", "add2": "ok"}
    assert model["counts"] == {"pending": 0, "running": 0, "ok": 2, "failed": 0, "stale": 0, "cancelled": 2}

    # the pod told the webhook once, at the end: cancelled rows are no failures
    assert len(webhook.bodies) == 1, webhook.texts()
    assert re.fullmatch(rf"sweep live done on {re.escape(runs.HOST)}: 2 ok, 2 cancelled\. Best \(mean best val loss\): "
                        r"add[12] \d+\.\d{4} \(1 run\); add[12] \d+\.\d{4} \(1 run\)\.", webhook.texts()[0])
    leaked = [p for p in ws.root.rglob("*") if p.is_file() and b"sEcReT" in p.read_bytes()]
    assert leaked == []  # the URL is in no file: not launch.json, not a log

    # a relaunch skips the cancelled rows; the report leaves them out
    r = run_cli(capsys, "launch", str(csv), "--name", "live", "--shards", "1", "--dry-run", "--json")
    assert r.code == 0, r.err
    assert {row["run_id"]: (row["action"], row["detail"]) for row in json.loads(r.out)["rows"]} == {
        "long": ("skip", "cancelled; --include-cancelled runs it"), "p1": ("skip", "cancelled; --include-cancelled runs it")}
    from sweepctl.views import report

    data = report.collect(ws.out_root, sweep="live")
    assert sorted(rid for g in data["groups"] for rid in g["run_ids"]) == ["add1", "add2"]
    assert "2 cancelled run(s) left out: long, p1" in data["warnings"]


def summaries_of(ws, ids: list[str]) -> dict | None:
    found = {i: runs.read_json(ws.run_dir(i) / runs.SUMMARY) for i in ids}
    return found if all(v is not None for v in found.values()) else None


def Tmux_alive() -> bool:
    import os

    from sweepctl.pod.tmux import Tmux

    info = Tmux(os.environ["SWEEPCTL_TMUX_SOCKET"]).session("sweep-0")
    return info is not None and info.alive


def test_rows_cannot_join_a_live_static_sweep_and_launch_says_what_to_do(
        workspace, capsys: pytest.CaptureFixture[str]) -> None:
    from cli import run_cli
    from test_launch import wait_for

    ws = workspace
    csv = write_csv(ws.root / "st.csv", [("long", 1, LONG, "")])
    r = run_cli(capsys, "launch", str(csv), "--shards", "1")
    assert r.code == 0, r.err
    wait_for(lambda: runs.read_run(ws.run_dir("long"), stale_after_s=60).state == "running", "long to run")
    more = write_csv(ws.root / "st.csv", [("long", 1, LONG, ""), ("more", 2, "", "")])
    r = run_cli(capsys, "launch", str(more))
    assert (r.code, r.out) == (2, "")
    assert r.err == (f"error: {ws.out_root}/.sweeps/st/plan.json: sweep st is running (sweep-0) under the static "
                     "schedule: its rows were dealt to the shards at launch, so new rows cannot join them — wait for "
                     "it to finish and launch again, or stop it and relaunch under the dynamic schedule (interrupted "
                     f"rows resume): sweepctl stop --all && sweepctl launch {more} --schedule dynamic --retry-failed\n")
    assert not ws.run_dir("more").exists()
    assert run_cli(capsys, "cancel", "long").code == 0
    wait_for(lambda: runs.read_run(ws.run_dir("long"), stale_after_s=60).state == "cancelled", "long to end")


def test_add_cancel_and_prioritize_over_ssh(pod, workspace, capsys: pytest.CaptureFixture[str]) -> None:
    from cli import run_cli
    from test_remote_cli import wait_for

    ws = workspace
    base = [("long", 1, LONG, "")]
    csv = write_csv(ws.root / "remote.csv", base)
    r = run_cli(capsys, "launch", str(csv), "--host", "pod", "--shards", "1", "--schedule", "dynamic")
    assert r.code == 0, r.err
    wait_for(lambda: runs.read_run(pod.run_dir("long"), stale_after_s=60).state == "running", "long to run",
             pod.tmux_socket)
    grown = write_csv(ws.root / "remote.csv", [*base, ("more", 2, "", ""), ("most", 3, "", "")])
    r = run_cli(capsys, "launch", str(grown), "--host", "pod")
    assert r.code == 0, r.err
    assert "joined the live queue of sweep-0: 2 row(s) added (more, most), 0 updated" in r.out
    layout = json.loads((pod.out_root / ".sweeps" / "remote" / "upload" / "hosts.json").read_text())
    assert layout["placed"] == {"long": "pod", "more": "pod", "most": "pod"}  # the placement record has them
    r = run_cli(capsys, "prioritize", "most", "--host", "pod")
    assert (r.code, r.out) == (0, "prioritized most (pending): priority 1\n"), r.err
    r = run_cli(capsys, "cancel", "long", "--host", "pod")
    assert r.code == 0 and r.out.startswith("cancelling long (running): its runner ends the trainer"), r.err
    wait_for(lambda: summaries_of_dirs([pod.run_dir("more"), pod.run_dir("most")]), "the added rows",
             pod.tmux_socket)
    r = run_cli(capsys, "status", "--host", "pod", "--json")
    assert {row["run_id"]: row["state"] for row in json.loads(r.out)["runs"]} == {
        "long": "cancelled", "more": "ok", "most": "ok"}
    started = {rid: runs.read_json(pod.run_dir(rid) / runs.OWNER)["started"] for rid in ("more", "most")}
    assert started["most"] < started["more"]  # prioritized: claimed first


def summaries_of_dirs(dirs: list[Path]) -> bool:
    return all((d / runs.SUMMARY).exists() for d in dirs)


def test_cancel_and_prioritize_say_what_they_did_to_each_row_and_refuse_a_typo(
        tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from cli import run_cli

    monkeypatch.setenv("SWEEPCTL_OUT_ROOT", str(tmp_path / "out"))
    sweep_dir = tmp_path / "out" / ".sweeps" / "t"
    sweep_dir.mkdir(parents=True)
    write_plan(sweep_dir, make_plan(tmp_path, fake, {"m-6l-s1": "ok", "m-6l-s2": "ok", "m-48l-s1": "ok"},
                                    schedule="dynamic", shards=2))
    runs.write_json_atomic(sweep_dir / "launch.json", {"ts": 1.0, "launch_id": "L1"})
    runs.write_json_atomic(tmp_path / "out" / "m-6l-s1" / runs.SUMMARY, {"ok": True})

    r = run_cli(capsys, "cancel", "m-6l-*", "--sweep", "t")
    assert (r.code, r.out) == (0, "left m-6l-s1 (ok): finished ok; nothing to cancel\n"
                                  "cancelled m-6l-s2 (pending): will not start\n"), r.err
    r = run_cli(capsys, "cancel", "m-6l-s2")
    assert (r.code, r.out) == (0, "left m-6l-s2 (cancelled): cancelled already\n")
    r = run_cli(capsys, "cancel", "m-84l-*")
    assert (r.code, r.out) == (1, "")
    assert r.err == (f"error: {sweep_dir}/plan.json: 'm-84l-*' matches no row of sweep t — see its rows with: "
                     "sweepctl status --sweep t\n")

    # prioritize: the default goes one above the highest; a claimed row is left as it is
    (sweep_dir / "claims" / "L1").mkdir(parents=True)
    (sweep_dir / "claims" / "L1" / "m-6l-s2").write_text("{}")
    r = run_cli(capsys, "prioritize", "m-48l-s1", "m-6l-s2")
    assert (r.code, r.out) == (0, "left m-6l-s2 (claimed): already claimed; the order no longer matters for it\n"
                                  "prioritized m-48l-s1 (pending): priority 1\n"), r.err
    plan = json.loads((sweep_dir / "plan.json").read_text())
    assert {row["run_id"]: row["priority"] for row in plan["runs"]} == {"m-6l-s1": 0, "m-6l-s2": 0, "m-48l-s1": 1}


def test_a_cancelled_row_runs_again_only_once_its_cancel_is_withdrawn(tmp_path: Path, fake: Path) -> None:
    from sweepctl.launch import LaunchOptions
    from sweepctl.state import runtable
    from test_runner import run_shard

    plan = make_plan(tmp_path, fake, {"c": "ok"})
    out = tmp_path / "out"
    runs.write_json_atomic(out / "c" / runs.SUMMARY, {"ok": False, "status": "cancelled", "error_class": "cancelled"})
    cancel_marker(tmp_path, "c")
    rows = runtable.read_table(plan, LaunchOptions(shards=1).table_policy(), stale_after_s=60.0)
    assert [(r.state, r.action, r.detail) for r in rows] == [("cancelled", "skip",
                                                              "cancelled; --include-cancelled runs it")]
    assert runtable.refusals(rows, out) == []  # neither failed (a refusal) nor pending (run)
    rows = runtable.read_table(plan, LaunchOptions(shards=1, include_cancelled=True).table_policy(), stale_after_s=60.0)
    assert [(r.state, r.action, r.detail) for r in rows] == [("cancelled", "restart", "--include-cancelled")]

    runner, _, _ = run_shard(tmp_path, plan)
    assert [(o.run_id, o.result) for o in runner.outcomes] == [("c", "skipped")]
    runs.backup(out / "c", [runs.CANCEL])  # what launch --include-cancelled and rerun do
    runner, _, pane = run_shard(tmp_path, plan)
    assert [(o.run_id, o.result) for o in runner.outcomes] == [("c", "ok")]
    assert "c: attempt 1, restart (cancelled before, included again; no usable checkpoint, starting over)" in pane
    assert [p.name.split(".bak-")[0] for p in sorted(out.joinpath("c").glob("*.bak-*"))] == [runs.CANCEL, runs.SUMMARY]


def test_the_messages_name_the_event_and_hold_no_error_text() -> None:
    from sweepctl import notify

    summary = {"error_class": "stalled", "error": "NCCL watchdog token=hf_SECRET", "iter_num": 120, "max_iters": 5000}
    assert notify.failed_text("fw", "fw-mhc-48l-s1", summary, host="pod1", session="sweep-3") == (
        "sweep fw: fw-mhc-48l-s1 stalled (no progress) at iteration 120/5000 on pod1 (sweep-3). "
        "Logs: sweepctl logs fw-mhc-48l-s1")
    best = [{"label": "fw-mhc-6l", "mean": 3.21234, "std": 0.0123, "n": 3},
            {"label": "fw-base-6l", "mean": 3.3, "std": None, "n": 1}]
    assert notify.done_text("fw", {"ok": 4, "failed": 1, "cancelled": 0}, best, host="pod1") == (
        "sweep fw done on pod1: 4 ok, 1 failed. Best (mean best val loss): fw-mhc-6l 3.2123 ± 0.0123 (3 runs); "
        "fw-base-6l 3.3000 (1 run).")
    assert notify.redact("https://hooks.slack.com/services/T0/B0/XXXX") == "https://hooks.slack.com/…"
    assert json.loads(notify.payload("hi")) == {"text": "hi", "content": "hi"}


def test_the_runner_takes_the_webhook_from_the_project_file_when_launch_gave_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sweepctl.cli.run_cmds import _notify_url

    monkeypatch.delenv("SWEEPCTL_NOTIFY_URL", raising=False)
    project = tmp_path / "sweepctl.toml"
    project.write_text('notify_url = "https://discord.com/api/webhooks/1/abc"\n')
    monkeypatch.setenv("SWEEPCTL_PROJECT_FILE", str(project))
    assert _notify_url() == "https://discord.com/api/webhooks/1/abc"
    monkeypatch.setenv("SWEEPCTL_NOTIFY_URL", "https://hooks.slack.com/services/T/B/C")  # launch --notify wins
    assert _notify_url() == "https://hooks.slack.com/services/T/B/C"
    project.write_text("stale_after_s = -1\n")  # a bad project file costs the notifications, never the runs
    monkeypatch.delenv("SWEEPCTL_NOTIFY_URL")
    assert _notify_url() is None
