"""Several pods for one sweep, the pure part: the row split, the per-host CSV, the merged status."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweepctl.errors import SweepctlError
from sweepctl.hosts import HostAnswer, default_shards, merge_status, parse_host, split_rows, subset_csv
from sweepctl.plan import make_plan
from sweepctl.spec import read_sweep


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
            "sessions": [{"name": "sweep-0", "alive": False, "devices": "0"}]}


def test_merged_status_has_a_host_column_and_names_the_host_that_did_not_answer() -> None:
    from rich.console import Console

    from sweepctl.status import render

    on_b = _model("/out/b", ["r1"])
    on_b["sessions"][0]["devices"] = "3"  # b's sweep-0 is pinned elsewhere than a's sweep-0
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
    assert "host c: unreachable — connection refused by 127.0.0.1:9 (no runs shown for it)" in text


def test_one_host_renders_exactly_as_on_the_pod() -> None:
    from rich.console import Console

    from sweepctl.status import render

    def text(model: dict) -> str:
        console = Console(width=200, record=True)
        console.print(render(model))
        return console.export_text()

    pod = _model("/out/a", ["r0"])
    merged = merge_status([HostAnswer("a", pod)], host_column=False)
    assert text(merged) == text(pod)
    stale = merge_status([HostAnswer("a", pod, "unreachable — timed out", age_s=12.0)], host_column=False)
    assert "host a: unreachable — timed out (showing its answer from 12s ago)" in text(stale)
