"""`sweepctl data fineweb`: the real huggingface_hub client against a stand-in Hub on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from cli import run_cli
from hub_server import FakeHub, shard_bytes
from sweepctl.errors import RemoteError, SweepctlError
from sweepctl.pod.data import FINEWEB_REPO, fineweb_download, fineweb_file_names

FILES = {name: shard_bytes(list(range(i * 7, i * 7 + 5 + i))) for i, name in enumerate(fineweb_file_names(3))}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = FakeHub({FINEWEB_REPO: dict(FILES)}).start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.stop()


def visible_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir() if not p.name.startswith("."))


def test_exact_files_land_in_the_data_dir_as_real_files(hub, tmp_path):
    data_dir = tmp_path / "data"

    report = fineweb_download(data_dir, 2, progress=False)

    expected = ["fineweb_train_000001.bin", "fineweb_train_000002.bin", "fineweb_val_000000.bin"]
    assert visible_files(data_dir) == expected
    for name in expected:
        assert not (data_dir / name).is_symlink()
        assert (data_dir / name).read_bytes() == FILES[name]
    assert report.downloaded == ["fineweb_val_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    assert sorted(hub.downloaded()) == expected
    assert not report.staged


def test_second_run_makes_no_request_at_all(hub, tmp_path):
    fineweb_download(tmp_path / "data", 2, progress=False)
    before = hub.requests()

    report = fineweb_download(tmp_path / "data", 2, progress=False)

    assert hub.requests() == before
    assert not report.changed
    assert report.kept == report.files


def test_more_shards_later_downloads_only_the_new_one(hub, tmp_path):
    fineweb_download(tmp_path / "data", 1, progress=False)

    report = fineweb_download(tmp_path / "data", 2, progress=False)

    assert report.downloaded == ["fineweb_train_000002.bin"]
    assert hub.downloaded() == ["fineweb_val_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin"]


@pytest.mark.parametrize("damage", ["truncate", "bad_magic"])
def test_corrupted_shard_is_fetched_again(hub, tmp_path, damage):
    data_dir = tmp_path / "data"
    fineweb_download(data_dir, 2, progress=False)
    shard = data_dir / "fineweb_train_000001.bin"
    data = shard.read_bytes()
    # huggingface_hub's own metadata still says this file is up to date: only our header check notices.
    shard.write_bytes(data[:-3] if damage == "truncate" else b"\0\0\0\0" + data[4:])

    report = fineweb_download(data_dir, 2, progress=False)

    assert report.downloaded == ["fineweb_train_000001.bin"]
    assert list(report.refetched) == ["fineweb_train_000001.bin"]
    assert shard.read_bytes() == FILES["fineweb_train_000001.bin"]
    assert hub.downloaded()[-1:] == ["fineweb_train_000001.bin"]
    assert len(hub.downloaded()) == 4


def test_missing_repo_is_one_line_error(hub, tmp_path):
    with pytest.raises(SweepctlError) as e:
        fineweb_download(tmp_path / "data", 1, repo_id="nobody/no-such-data", progress=False)
    text = str(e.value)
    assert "\n" not in text
    assert "dataset repo nobody/no-such-data not found" in text
    assert "HF_ENDPOINT" in text  # says what to check
    assert hub.downloaded() == []


def test_missing_file_is_one_line_error_before_any_download(hub, tmp_path):
    with pytest.raises(SweepctlError) as e:
        fineweb_download(tmp_path / "data", 5, progress=False)
    text = str(e.value)
    assert "\n" not in text
    assert "file fineweb_train_000004.bin not found in dataset repo kjj0/fineweb10B-gpt2 (and 1 more)" in text
    assert "--train-shards 3 or fewer" in text
    assert hub.downloaded() == []


def test_file_vanishing_between_listing_and_download_is_one_line_error(tmp_path, monkeypatch):
    server = FakeHub({FINEWEB_REPO: dict(FILES)}, ghosts=("fineweb_train_000004.bin",)).start()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    try:
        with pytest.raises(SweepctlError) as e:
            fineweb_download(tmp_path / "data", 4, endpoint=server.endpoint, progress=False)
        downloaded = server.downloaded()
    finally:
        server.stop()
    text = str(e.value)
    assert "\n" not in text
    assert "cannot download fineweb_train_000004.bin: file not found in dataset repo kjj0/fineweb10B-gpt2" in text
    assert "--train-shards" in text
    assert len(downloaded) == 4  # the files before it are kept; a rerun with fewer shards needs no download


def test_unreachable_hub_is_a_remote_error(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))

    with pytest.raises(RemoteError) as e:
        fineweb_download(tmp_path / "data", 1, endpoint=f"http://127.0.0.1:{port}", progress=False)
    assert "\n" not in str(e.value)
    assert "cannot reach the Hub" in str(e.value)


def test_network_mount_is_staged_on_local_disk(hub, tmp_path):
    data_dir = tmp_path / "volume" / "data"
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nsomefs {tmp_path / 'volume'} fuse.s3fs rw 0 0\n")
    staging = tmp_path / "staging"
    staging.mkdir()

    report = fineweb_download(data_dir, 1, mounts_file=mounts, staging_root=staging, progress=False)

    assert report.staged and report.fstype == "fuse.s3fs"
    assert sorted(p.name for p in data_dir.iterdir()) == ["fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    assert (data_dir / "fineweb_val_000000.bin").read_bytes() == FILES["fineweb_val_000000.bin"]
    assert list(staging.iterdir()) == []  # the staging dir is cleaned up


def test_cli_reports_downloads_then_nothing_to_do(hub, tmp_path, capsys):
    data_dir = tmp_path / "data"
    first = run_cli(capsys, "data", "fineweb", "--train-shards", "1", "--data-dir", str(data_dir))
    assert first.code == 0, first.err
    assert "fineweb_train_000001.bin │ downloaded" in first.out
    assert "nothing to download" not in first.out

    second = run_cli(capsys, "data", "fineweb", "--train-shards", "1", "--data-dir", str(data_dir), "--json")
    assert second.code == 0, second.err
    report = json.loads(second.out)
    assert (report["changed"], report["downloaded"], report["kept"]) == (False, [], report["files"])

    third = run_cli(capsys, "data", "fineweb", "--train-shards", "1", "--data-dir", str(data_dir))
    assert "nothing to download: all 2 files present and valid" in third.out


def test_data_dir_comes_from_fineweb10b_local_dir(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SWEEPCTL_DATA_DIR", raising=False)
    monkeypatch.setenv("FINEWEB10B_LOCAL_DIR", str(tmp_path / "legacy"))
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, "data", "fineweb", "--train-shards", "0", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["data_dir"] == str(tmp_path / "legacy")
    assert visible_files(tmp_path / "legacy") == ["fineweb_val_000000.bin"]


def test_cli_missing_repo_exits_1_with_one_red_line(hub, tmp_path, capsys):
    result = run_cli(capsys, "data", "fineweb", "--train-shards", "1", "--data-dir", str(tmp_path / "d"),
                     "--repo", "nobody/no-such-data")
    assert result.code == 1
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert result.err.startswith("error: ") and "nobody/no-such-data not found" in result.err
