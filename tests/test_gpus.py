"""GPUs from `nvidia-smi --query-gpu` (a stand-in script here): parsed, bounded in time, never the process list."""

from __future__ import annotations

import pytest

from sweep_helpers import FakeGpus, gpu_row
from sweepctl.pod import gpus
from sweepctl.pod.gpus import Gpu, least_busy, parse_query, query_gpus

pytest_plugins = ["sweep_fixtures"]


def test_parse_query_reads_rows_and_not_available_cells() -> None:
    text = "0, NVIDIA H100 80GB HBM3, 97, 70123, 81559\n1, NVIDIA H100 80GB HBM3, [N/A], [N/A], 81559\n\n"
    found, bad = parse_query(text)
    assert bad == []
    assert found == [Gpu(0, "NVIDIA H100 80GB HBM3", 97.0, 70123.0, 81559.0),
                     Gpu(1, "NVIDIA H100 80GB HBM3", None, None, 81559.0)]


def test_parse_query_reports_lines_it_cannot_read() -> None:
    found, bad = parse_query("index, name, utilization.gpu\n0, A, 1, 2, 3\n")
    assert [g.index for g in found] == [0]
    assert bad == ["index, name, utilization.gpu"]


def test_query_uses_only_the_query_form(fake_gpus: FakeGpus) -> None:
    fake_gpus.set([gpu_row(0, util=50), gpu_row(1, util=3)])
    q = query_gpus()
    assert q.problem is None
    assert [(g.index, g.utilization) for g in q.gpus] == [(0, 50.0), (1, 3.0)]
    assert fake_gpus.calls() == [" ".join(gpus.QUERY_ARGV[1:])]


def test_no_nvidia_smi_means_no_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    q = query_gpus()
    assert q.gpus == [] and "not found" in q.problem


def test_failing_nvidia_smi_means_no_gpus_with_the_reason(fake_gpus: FakeGpus, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_NVIDIA_SMI_EXIT", "9")
    q = query_gpus()
    assert q.gpus == []
    assert q.problem.startswith("nvidia-smi exited 9: NVIDIA-SMI has failed")


def test_a_hung_nvidia_smi_is_cut_off(fake_gpus: FakeGpus, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_NVIDIA_SMI_HANG", "30")
    q = query_gpus(timeout_s=0.5)
    assert q.gpus == [] and "did not answer within 0.5 s" in q.problem


def test_least_busy_prefers_low_utilization_then_low_memory() -> None:
    found, _ = parse_query("0, A, 90, 100, 1000\n1, A, 5, 900, 1000\n2, A, 5, 100, 1000\n3, A, 0, 50, 1000\n")
    assert least_busy(found) == [3]
    assert least_busy(found, 2) == [2, 3]
