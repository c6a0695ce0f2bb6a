"""Several pods for one sweep, the pure part: the row split, the per-host CSV, the merged status."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweepctl.errors import RefusedError, SweepctlError
from sweepctl.sweep.hosts import (
    HostAnswer,
    PodRecord,
    check_forget,
    check_hosts,
    check_local_launch,
    default_shards,
    layout_json,
    merge_status,
    parse_host,
    place,
    recorded_split,
    split_rows,
    subset_csv,
)
from sweepctl.sweep.plan import make_plan
from sweepctl.sweep.spec import read_sweep


def test_parse_host_takes_an_optional_shard_count_after_equals() -> None:
    assert parse_host("pod-a") == ("pod-a", None)
    assert parse_host("pod-a=8") == ("pod-a", 8)
    assert parse_host("root@10.0.0.5:2222=4") == ("root@10.0.0.5:2222", 4)  # ':' stays the port's
    for bad in ("pod=0", "pod=x", "=3", "pod=-1"):
        with pytest.raises(SweepctlError, match="--host"):
            parse_host(bad)


def test_row_i_goes_to_global_shard_i_mod_total_numbered_host_by_host() -> None:
    parts = split_rows(11, [("a", 2), ("b", 1), ("c", 3)])
    assert [(p.host, p.first_shard, p.shards) for p in parts] == [("a", 0, 2), ("b", 2, 1), ("c", 3, 3)]
    for p in parts:
        assert p.row_indices == [i for i in range(11) if i % 6 in p.global_shards]
    assert sorted(i for p in parts for i in p.row_indices) == list(range(11))  # every row exactly once
    assert split_rows(1, [("a", 1), ("b", 2)])[1].row_indices == []  # more shards than rows
    with pytest.raises(SweepctlError, match="twice"):
        split_rows(3, [("a", 1), ("a", 1)])


def test_each_hosts_own_plan_puts_its_rows_on_the_global_shards_minus_its_offset(tmp_path: Path) -> None:
    # The point of the subset CSV: a pod plans its part with its own --shards and gets the same
    # placement as one global plan, so its runner and run table need no notion of other pods.
    lines = ["run_id,config,seed,overrides,notes"] + [f"r{i},base,{i},\"device='cpu'\"," for i in range(13)]
    full = tmp_path / "sweep.csv"
    full.write_text("\n".join(lines) + "\n")
    everything = make_plan(read_sweep(full), shards=5, out_root=tmp_path / "out")
    for part in split_rows(13, [("a", 2), ("b", 3)]):
        sub = tmp_path / part.host / "sweep.csv"
        sub.parent.mkdir()
        sub.write_text(subset_csv(full.read_text(), part.row_indices))
        mine = make_plan(read_sweep(sub), shards=part.shards, out_root=tmp_path / "out")
        assert [r.run_id for r in mine.runs] == [f"r{i}" for i in part.row_indices]
        for r in mine.runs:
            assert r.shard + part.first_shard == everything.run(r.run_id).shard
            assert r.line == everything.run(r.run_id).line  # errors on the pod name the laptop's line


def test_subset_csv_keeps_line_numbers_quotes_and_rewrites_config_refs(tmp_path: Path) -> None:
    text = ('\ufeffrun_id,config,seed,overrides,notes\n'
            '\n'
            'a,configs/tiny.py,1,"device=\'cpu\' n_layer=1","a note, with a comma"\n'
            'b,base,2,"device=\'cpu\'","two\nlines"\n'
            'c,../elsewhere/tiny.py,3,"device=\'cpu\'",\n')
    out = subset_csv(text, [0, 2], {0: "configs/tiny.py", 2: "configs/1-tiny.py"})
    assert out.splitlines()[2] == text.splitlines()[2]  # unchanged rows are copied as written, quotes and all
    assert out.splitlines()[5].startswith("c,configs/1-tiny.py,3,")  # line 6, as in the original
    (tmp_path / "configs").mkdir()
    for name in ("tiny.py", "1-tiny.py"):
        (tmp_path / "configs" / name).write_text("n_embd = 32\nn_head = 2\n")
    (tmp_path / "s.csv").write_text(out)
    sweep = read_sweep(tmp_path / "s.csv")
    assert [(r.run_id, r.line, r.config_path.name) for r in sweep.runs] == [("a", 3, "tiny.py"), ("c", 6, "1-tiny.py")]
    assert sweep.runs[0].notes == "a note, with a comma"
    assert subset_csv(text) == text.removeprefix("\ufeff")  # everything kept, nothing to rewrite: the same file


def test_default_shards_is_the_gpu_count_per_shard_width() -> None:
    assert default_shards(8, 1, where="pod") == 8
    assert default_shards(8, 2, where="pod") == 4
    with pytest.raises(SweepctlError) as e:
        default_shards(0, 1, where="pod-b", problem="nvidia-smi not found")
    assert str(e.value).startswith("pod-b: no shard count given and 0 GPU(s) visible (nvidia-smi not found)")
    assert "--host HOST=N" in str(e.value)


def _model(out_root: str, run_ids: list[str], state: str = "ok") -> dict:
    runs = [{"run_id": r, "state": state, "shard": 0} for r in run_ids]
    return {"out_root": out_root, "sweep": "s", "counts": {"pending": 0, "running": 0, "ok": len(runs), "failed": 0,
                                                           "stale": 0},
            "runs": runs, "gpus": [{"index": 0, "name": "H100", "utilization": 5.0, "memory_used_mib": 1.0,
                                    "memory_total_mib": 80.0}],
            "sessions": [{"name": "sweep-0", "alive": False, "devices": "0"}],
            "disks": [{"free_bytes": 200 << 30, "total_bytes": 1000 << 30}]}


def test_merged_status_has_a_host_column_and_names_the_host_that_did_not_answer() -> None:
    from rich.console import Console

    from sweepctl.cli.render.status import render

    on_b = _model("/out/b", ["r1"])
    on_b["sessions"][0]["devices"] = "3"  # b's sweep-0 is pinned elsewhere than a's sweep-0
    on_b["disks"][0]["free_bytes"] = 20 << 30  # 2% of its volume: said in yellow, with what to do
    merged = merge_status([HostAnswer("a", _model("/out/a", ["r0", "r2"])),
                           HostAnswer("b", on_b),
                           HostAnswer("c", None, "unreachable — connection refused by 127.0.0.1:9")])
    assert merged["counts"]["ok"] == 3 and merged["sweep"] == "s"
    assert [(r["host"], r["run_id"]) for r in merged["runs"]] == [("a", "r0"), ("a", "r2"), ("b", "r1")]
    assert [h["ok"] for h in merged["hosts"]] == [True, True, False]
    console = Console(width=200, record=True)
    console.print(render(merged))
    text = console.export_text()
    assert "sweep s in a:/out/a, b:/out/b" in text
    assert "│ host ┃" not in text and "┃ host ┃ run_id" in text
    assert "│ a    │ r0               │ ok      │ 0/0 " in text  # each host's shard 0 shows its own devices
    assert "│ b    │ r1               │ ok      │ 0/3 " in text
    assert "│ b    │ 0     │ H100 │" in text  # GPUs by host too
    assert "sessions running: none; finished: a:sweep-0, b:sweep-0" in text
    assert "disk: a: 200.0 GiB free of 1,000 GiB\n" in text
    assert "disk: b: 20.0 GiB free of 1,000 GiB — low: checkpoints may fail to save; free some space" in text
    assert "host c: unreachable — connection refused by 127.0.0.1:9 (no runs shown for it)" in text


def test_one_host_renders_exactly_as_on_the_pod() -> None:
    from rich.console import Console

    from sweepctl.cli.render.status import render

    def text(model: dict) -> str:
        console = Console(width=200, record=True)
        console.print(render(model))
        return console.export_text()

    pod = _model("/out/a", ["r0"])
    merged = merge_status([HostAnswer("a", pod)], host_column=False)
    assert text(merged) == text(pod)
    stale = merge_status([HostAnswer("a", pod, "unreachable — timed out", age_s=12.0)], host_column=False)
    assert "host a: unreachable — timed out (showing its answer from 12s ago)" in text(stale)


# -- a relaunch never moves a row to another pod ---------------------------------------------------

IDS = [f"r{i}" for i in range(6)]


def _rows_by_host(placement, run_ids: list[str] = IDS) -> dict[str, list[str]]:
    return {p.host: [run_ids[i] for i in p.row_indices] for p in placement.parts}


def _launched(shards: list[tuple[str, int]], ts: float = 1.0, run_ids: list[str] = IDS) -> dict:
    """The layout a first launch over `shards` leaves on its pods."""
    return layout_json("s", "/laptop/s.csv", place(run_ids, shards, None, sweep="s"), ts=ts)


def test_a_first_launch_places_rows_by_the_rule_and_records_each_rows_pod() -> None:
    layout = _launched([("a", 2), ("b", 1)])
    assert [(h["host"], h["shards"], h["row_indices"]) for h in layout["hosts"]] == [
        ("a", 2, [0, 1, 3, 4]), ("b", 1, [2, 5])]  # split_rows' rule
    assert layout["placed"] == {"r0": "a", "r1": "a", "r2": "b", "r3": "a", "r4": "a", "r5": "b"}
    assert layout["total_shards"] == 3 and layout["sweep"] == "s" and layout["ts"] == 1.0


def test_a_relaunch_keeps_every_row_on_its_pod_whatever_the_host_order_or_shard_counts() -> None:
    layout = _launched([("a", 2), ("b", 1)])
    recorded = recorded_split([PodRecord("a", layout), PodRecord("b", layout)], IDS)
    assert recorded is not None and recorded.hosts == ["a", "b"] and recorded.host_args() == "--host a=2 --host b=1"
    check_hosts("s", recorded, ["b", "a"])  # the same pods: no refusal
    ids = [*IDS, "r6", "r7"]  # two rows appended to the CSV since
    again = place(ids, [("b", 3), ("a", 1)], recorded, sweep="s")
    assert _rows_by_host(again, ids) == {"b": ["r2", "r5", "r6"], "a": ["r0", "r1", "r3", "r4", "r7"]}
    assert again.moved == [] and again.elsewhere == {}
    # what the rule alone would have done with the new order: rows done on one pod run on the other
    assert [ids[i] for i in split_rows(8, [("b", 3), ("a", 1)])[0].row_indices] == ["r0", "r1", "r2", "r4", "r5", "r6"]


def test_naming_other_pods_than_the_recorded_ones_is_refused_saying_what_changed() -> None:
    layout = _launched([("a", 2), ("b", 1)])
    recorded = recorded_split([PodRecord("a", layout)], IDS)
    with pytest.raises(RefusedError) as e:
        check_hosts("s", recorded, ["a", "c"])
    assert e.value.exit_code == 2
    assert str(e.value).startswith("sweep s was launched on a, b at ")
    assert "this launch names a, c: b is left out (2 rows recorded there), c is new to it." in str(e.value)
    assert "relaunch with --host a=2 --host b=1 (the recorded pods), or add --reassign" in str(e.value)
    for named in (["a"], ["a", "b", "c"], ["b"]):
        with pytest.raises(RefusedError):
            check_hosts("s", recorded, named)
    check_hosts("s", None, ["x", "y"])  # a sweep new to every pod: any pods


def test_reassign_moves_only_rows_that_never_started_and_only_off_idle_pods() -> None:
    layout = _launched([("a", 2), ("b", 1)])  # a: r0 r1 r3 r4, b: r2 r5
    a = PodRecord("a", layout, {"r0": "ok", "r1": "running", "r3": "failed", "r4": "pending"})
    b = PodRecord("b", layout, {"r2": "stale", "r5": "pending"})
    recorded = recorded_split([a, b], IDS)
    # b is dropped: its pending r5 moves to a; its stale r2 (a checkpoint on b's volume) stays on b
    moved = place(IDS, [("a", 1)], recorded, sweep="s", reassign={"a": a, "b": b})
    assert _rows_by_host(moved) == {"a": ["r0", "r1", "r3", "r4", "r5"]}
    assert moved.moved == [("r5", "b", "a")] and moved.elsewhere == {"b": ["r2"]}
    assert moved.placed["r5"] == "a" and moved.placed["r2"] == "b"
    # c is added: pending rows follow the rule over c, a (even rows to c, odd to a); started rows stay
    spread = place(IDS, [("c", 1), ("a", 1)], recorded, sweep="s", reassign={"a": a, "b": b, "c": PodRecord("c")})
    assert _rows_by_host(spread) == {"c": ["r4"], "a": ["r0", "r1", "r3", "r5"]}
    assert spread.moved == [("r4", "a", "c"), ("r5", "b", "a")] and spread.elsewhere == {"b": ["r2"]}
    # the next plain relaunch on the pods of the reassign: the same placement, nothing refused
    after = recorded_split([PodRecord("a", layout_json("s", "x", moved, ts=2.0)), a], IDS)
    check_hosts("s", after, ["a"])
    assert _rows_by_host(place(IDS, [("a", 2)], after, sweep="s")) == {"a": ["r0", "r1", "r3", "r4", "r5"]}
    check_hosts("s", after, ["a", "b"])  # b may come back: it gets its own r2 again, nothing else
    assert _rows_by_host(place(IDS, [("a", 2), ("b", 1)], after, sweep="s")) == {
        "a": ["r0", "r1", "r3", "r4", "r5"], "b": ["r2"]}
    # a pod with a live runner keeps its rows: that runner would still start them
    busy_b = PodRecord("b", layout, {"r2": "ok", "r5": "pending"}, live_sessions=["sweep-0"])
    with pytest.raises(RefusedError, match=r"b still has live session\(s\) sweep-0, whose runners would start the "
                                           r"1 row --reassign moves off it"):
        place(IDS, [("a", 1)], recorded, sweep="s", reassign={"a": a, "b": busy_b})
    with pytest.raises(RefusedError, match="r2 is recorded on b, which did not answer"):
        place(IDS, [("a", 1)], recorded, sweep="s", reassign={"a": a})
    # a pod the sweep never reached (its launch failed after the layout was written): nothing started there
    never = place(IDS, [("a", 1)], recorded, sweep="s", reassign={"a": a, "b": PodRecord("b", layout)})
    assert never.moved == [("r2", "b", "a"), ("r5", "b", "a")]


def test_forget_starts_a_lost_pods_rows_over_on_the_named_pods_unless_ok_there() -> None:
    layout = _launched([("a", 1), ("b", 1), ("c", 1)])  # a: r0 r3, b: r1 r4, c: r2 r5
    layout["placed"]["gone"] = "b"  # a row of b's no longer in the CSV: dropped from the record too
    a = PodRecord("a", layout, {"r0": "ok", "r3": "failed", "r4": "ok"})  # r4 also ran on a once
    c = PodRecord("c", layout, {"r2": "running", "r5": "pending"})
    recorded = recorded_split([a, c], IDS)
    check_forget("s", recorded, ["a", "c"], ["b"])
    # b is not asked: its r1 starts over where the rule puts it, its r4 is ok on a and stays there
    lost = place(IDS, [("a", 1), ("c", 1)], recorded, sweep="s", reassign={"a": a, "c": c}, forget=["b"])
    assert lost.moved == [("r1", "b", "c")] and lost.forgotten == ["b"] and lost.elsewhere == {}
    assert _rows_by_host(lost) == {"a": ["r0", "r3", "r4"], "c": ["r1", "r2", "r5"]}
    after = layout_json("s", "x", lost, ts=2.0)
    assert "b" not in after["placed"].values() and [h["host"] for h in after["hosts"]] == ["a", "c"]
    assert "gone" not in after["placed"]
    # the next plain launch on a and c needs nothing from b
    check_hosts("s", recorded_split([PodRecord("a", after)], IDS), ["a", "c"])
    # without --forget, b must answer; the refusal names the way out
    with pytest.raises(RefusedError, match=r"r1 is recorded on b, which did not answer.*add --forget b"):
        place(IDS, [("a", 1), ("c", 1)], recorded, sweep="s", reassign={"a": a, "c": c})
    with pytest.raises(RefusedError, match=r"--forget b: b is also named with --host.*drop --host b"):
        check_forget("s", recorded, ["a", "b"], ["b"])
    with pytest.raises(RefusedError, match=r"--forget d: d is not a pod of sweep s \(its pods are a, b, c\)"):
        check_forget("s", recorded, ["a"], ["d"])
    with pytest.raises(RefusedError, match="--forget b: b is not a pod of sweep s"):
        check_forget("s", None, ["a"], ["b"])


def test_the_record_is_the_newest_layout_else_each_pods_own_plan() -> None:
    old = _launched([("a", 1), ("b", 1)], ts=1.0)
    new = _launched([("b", 1), ("a", 1)], ts=2.0)
    assert recorded_split([PodRecord("a", old), PodRecord("b", new)], IDS).placed == new["placed"]
    legacy = {k: v for k, v in old.items() if k not in ("placed", "ts")}  # hosts.json before `placed`
    assert recorded_split([PodRecord("a", legacy)], IDS).placed == old["placed"]
    # launched on pod a itself (no layout): a's plan is the record, so adding b is a change
    on_a = recorded_split([PodRecord("a", None, {"r0": "ok", "r1": "pending"}), PodRecord("b")], IDS)
    assert on_a.hosts == ["a"] and on_a.placed == {"r0": "a", "r1": "a"}
    with pytest.raises(RefusedError, match="b is new to it"):
        check_hosts("s", on_a, ["a", "b"])
    assert recorded_split([PodRecord("a"), PodRecord("b")], IDS) is None


def test_a_launch_on_a_pod_itself_refuses_the_rows_recorded_on_other_pods() -> None:
    layout = _launched([("a", 2), ("b", 1)])  # a: r0 r1 r3 r4, b: r2 r5
    with pytest.raises(RefusedError) as e:
        check_local_launch("s", layout, IDS, "b", where="/out/.sweeps/s/upload/hosts.json")
    assert e.value.exit_code == 2
    assert str(e.value).startswith(f"/out/.sweeps/s/upload/hosts.json: sweep s was launched from a laptop on a, b at "
                                   f"{layout['time']}; 4 rows of this launch are recorded on other pods, where they "
                                   "may be done or running: a: 4 rows (r0, r1, r3, ... 1 more) (this pod is b there)")
    assert "launch from the laptop with --host a=2 --host b=1 (the recorded pods" in str(e.value)
    assert "--reassign" in str(e.value)
    check_local_launch("s", layout, ["r2", "r5"], "b")  # b's own rows: its subset CSV, or a part of it
    check_local_launch("s", layout, ["r5", "r6"], "b")  # r6 is new to the sweep: it may start here
    check_local_launch("s", None, IDS, None)  # no layout: a sweep of this pod alone
    # A machine that does not know its name in the layout owns none of its rows, even when all are on one pod.
    with pytest.raises(RefusedError, match=r"1 row of this launch is recorded on other pods, where it may be done or "
                                           r"running: b: 1 row \(r5\) \(no launch from the laptop has told"):
        check_local_launch("s", layout, ["r5"], None)
    with pytest.raises(RefusedError, match=r"a: 1 row \(r0\); b: 1 row \(r2\) \(this pod is c there\)"):
        check_local_launch("s", layout, ["r0", "r2"], "c")
