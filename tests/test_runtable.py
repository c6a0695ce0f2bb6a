"""The run table, one function for every caller: each state under each flag, the NaN rule, a row
another runner of the same launch finished, and what `rerun` refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweepctl.state import runs
from sweepctl.state.runtable import Decision, Policy, decide, decide_rerun, refusals

OOM = {"ok": False, "status": "failed", "error_class": "oom", "error": "Traceback ...\nCUDA out of memory"}
NAN = {"ok": False, "status": "failed", "error_class": "nan", "error": "loss is nan"}


def view(tmp_path: Path, state: runs.RunState, *, summary: dict | None = None, checkpoint: bool = False,
         why: str = "") -> runs.RunView:
    directory = tmp_path / "r"
    directory.mkdir(exist_ok=True)
    if checkpoint:
        (directory / runs.CHECKPOINT).write_bytes(b"state")
    return runs.RunView(run_id="r", directory=directory, state=state, summary=summary, why=why)


NONE, FORCE, RETRY, SKIP = Policy(), Policy(force=True), Policy(retry_failed=True), Policy(skip_failed=True)
RESUMING, STARTING_OVER = "; resuming from ckpt.pt", "; no usable checkpoint, starting over"


@pytest.mark.parametrize(("state", "summary", "checkpoint", "policy", "expected"), [
    ("pending", None, False, NONE, ("run", "pending", "")),
    ("pending", None, False, FORCE, ("run", "pending", "")),
    ("ok", {"ok": True}, True, NONE, ("skip", "already ok", "")),
    ("ok", {"ok": True}, True, FORCE, ("restart", "--force", "")),
    ("ok", {"ok": True}, True, RETRY, ("skip", "already ok", "")),
    ("failed", OOM, True, NONE, ("skip", "oom: CUDA out of memory; not retried", "r (oom: CUDA out of memory)")),
    ("failed", OOM, True, FORCE, ("restart", "--force", "")),
    ("failed", OOM, True, RETRY, ("resume", "retrying a failed run (oom: CUDA out of memory)" + RESUMING, "")),
    ("failed", OOM, False, RETRY, ("restart", "retrying a failed run (oom: CUDA out of memory)" + STARTING_OVER, "")),
    ("failed", NAN, True, RETRY, ("restart", "retrying a failed run (nan: loss is nan)" + STARTING_OVER, "")),
    ("failed", OOM, True, SKIP, ("skip", "--skip-failed (oom: CUDA out of memory)", "")),
    ("running", None, True, NONE, ("skip", "running; never started twice", "")),
    ("running", None, True, FORCE, ("skip", "running; never started twice", "r")),
    ("stale", None, True, NONE, ("resume", "stale (heartbeat is old)" + RESUMING, "")),
    ("stale", None, False, NONE, ("restart", "stale (heartbeat is old)" + STARTING_OVER, "")),
    ("stale", None, True, FORCE, ("restart", "--force (heartbeat is old)", "")),
])
def test_each_state_under_each_flag(tmp_path: Path, state: runs.RunState, summary: dict | None, checkpoint: bool,
                                    policy: Policy, expected: tuple[str, str, str]) -> None:
    v = view(tmp_path, state, summary=summary, checkpoint=checkpoint, why="heartbeat is old" if state == "stale" else "")
    assert decide(v, policy) == Decision("r", state, *expected)


@pytest.mark.parametrize("policy", [FORCE, RETRY])
def test_a_result_of_this_launch_is_never_redone(tmp_path: Path, policy: Policy) -> None:
    """A runner passes older=False for a row another runner of the same launch finished."""
    assert decide(view(tmp_path, "ok", summary={"ok": True}), policy, older=False).action == "skip"
    failed = decide(view(tmp_path, "failed", summary=OOM, checkpoint=True), policy, older=False)
    assert failed == Decision("r", "failed", "skip", "oom: CUDA out of memory; not retried")


def test_refusals_name_the_failed_rows_and_the_running_ones_force_would_restart(tmp_path: Path) -> None:
    rows = [Decision("a", "failed", "skip", "", refusal="a (oom: x)"), Decision("b", "ok", "skip", "already ok"),
            Decision("c", "failed", "skip", "", refusal="c (nan: y)"), Decision("d", "running", "skip", "", refusal="d")]
    assert refusals(rows, Path("/out")) == [
        "2 failed run(s) in /out: a (oom: x); c (nan: y)",
        "--force would restart 1 running run(s): d; stop them first (sweepctl stop)"]
    assert refusals(rows[1:2], Path("/out")) == []


def test_rerun_refuses_a_running_run_and_an_ok_one_without_force(tmp_path: Path) -> None:
    assert decide_rerun(view(tmp_path, "running"), force=True).refusal == "the run is running"
    assert decide_rerun(view(tmp_path, "ok", summary={"ok": True}), force=False).refusal == "the run finished ok"
    assert decide_rerun(view(tmp_path, "ok", summary={"ok": True}), force=True) == Decision("r", "ok", "restart", "--force")
    assert decide_rerun(view(tmp_path, "failed", summary=OOM, checkpoint=True), force=False) == Decision(
        "r", "failed", "restart", "--force")


CANCELLED = {"ok": False, "status": "cancelled", "error_class": "cancelled"}


@pytest.mark.parametrize(("marked", "checkpoint", "policy", "expected"), [
    # launch, told the flag
    (True, True, Policy(include_cancelled=False), ("skip", "cancelled; --include-cancelled runs it")),
    (True, True, Policy(include_cancelled=True), ("resume", "--include-cancelled")),
    (True, False, Policy(include_cancelled=True), ("restart", "--include-cancelled")),
    (True, True, Policy(force=True, include_cancelled=True), ("restart", "--include-cancelled")),
    # a runner or the Ray driver (include_cancelled None): the marker decides
    (True, True, NONE, ("skip", "cancelled (sweepctl cancel)")),
    (True, True, FORCE, ("skip", "cancelled (sweepctl cancel)")),
    (False, True, NONE, ("resume", "cancelled before, included again" + RESUMING)),
    (False, False, NONE, ("restart", "cancelled before, included again" + STARTING_OVER)),
])
def test_a_cancelled_row_runs_only_when_included(tmp_path: Path, marked: bool, checkpoint: bool, policy: Policy,
                                                 expected: tuple[str, str]) -> None:
    v = view(tmp_path, "cancelled", summary=CANCELLED, checkpoint=checkpoint)
    v.cancel_marked = marked
    assert decide(v, policy) == Decision("r", "cancelled", *expected)


def test_a_checkpoint_without_a_readable_heartbeat_is_stale_and_resumed(tmp_path: Path) -> None:
    directory = tmp_path / "r"
    directory.mkdir()
    (directory / runs.CHECKPOINT).write_bytes(b"state")
    (directory / runs.HEARTBEAT).write_text("{not json")
    v = runs.read_run(directory, stale_after_s=120.0)
    assert v.state == "stale"
    assert decide(v, NONE).action == "resume"
    assert decide(v, FORCE).action == "restart"


def test_rerun_of_a_cancelled_run_starts_it_over(tmp_path: Path) -> None:
    v = view(tmp_path, "cancelled", summary=CANCELLED, checkpoint=True)
    v.cancel_marked = True
    assert decide_rerun(v, force=False) == Decision("r", "cancelled", "restart", "--include-cancelled")
