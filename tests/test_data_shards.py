"""The shard format: header checks, the writer, and where a data dir is mounted."""

from __future__ import annotations

import struct

import pytest

from hub_server import shard_bytes
from sweepctl.pod.data import (
    ShardError,
    is_network_fs,
    mount_fstype,
    shard_problem,
    verify_shard,
    write_shard,
)


def test_valid_shard_reports_its_token_count(tmp_path):
    path = tmp_path / "s.bin"
    path.write_bytes(shard_bytes([1, 2, 50256]))
    assert verify_shard(path) == 3
    assert shard_problem(path) is None


@pytest.mark.parametrize(("data", "message"), [
    (b"", "shorter than its 1024-byte header"),
    (shard_bytes([1, 2, 3])[:-1], "header promises 3 tokens (1030 bytes)"),
    (shard_bytes([1, 2, 3]) + b"\0\0", "header promises 3 tokens (1030 bytes)"),
    (struct.pack("<i", 1234) + shard_bytes([1])[4:], "magic number mismatch in the data .bin file (1234 != 20240520)"),
    (shard_bytes([1])[:4] + struct.pack("<i", 2) + shard_bytes([1])[8:], "unsupported shard version 2"),
])
def test_damaged_shard_says_what_is_wrong(tmp_path, data, message):
    path = tmp_path / "s.bin"
    path.write_bytes(data)
    with pytest.raises(ShardError) as e:
        verify_shard(path)
    assert message in str(e.value)
    assert str(path) in str(e.value)
    assert shard_problem(path) == e.value.message


def test_missing_shard_is_a_problem(tmp_path):
    assert shard_problem(tmp_path / "nope.bin") == "missing"


def test_writer_matches_the_independent_reference_bytes(tmp_path):
    path = tmp_path / "w.bin"
    assert write_shard(path, [0, 1, 65535, 50256]) == 4
    assert path.read_bytes() == shard_bytes([0, 1, 65535, 50256])
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]  # no temp file left behind


def test_writer_refuses_ids_beyond_uint16(tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        write_shard(tmp_path / "w.bin", [70000])
    assert not (tmp_path / "w.bin").exists()


def test_mount_fstype_takes_the_longest_mount_point_and_unescapes_spaces(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "overlay / overlay rw 0 0\n"
        "nfs.example:/vol /mnt nfs4 rw 0 0\n"
        "s3fs /mnt/my\\040bucket fuse.s3fs rw 0 0\n"
        "s3fs /mnt/my fuse.other rw 0 0\n"
    )
    assert mount_fstype("/mnt/my bucket/data", mounts) == "fuse.s3fs"
    assert mount_fstype("/mnt/data/fineweb10B", mounts) == "nfs4"
    assert mount_fstype("/mnt/mybucket", mounts) == "nfs4"  # a prefix of the name is not a parent dir
    assert mount_fstype("/root/data", mounts) == "overlay"
    assert mount_fstype("/x", tmp_path / "no-such-file") is None


@pytest.mark.parametrize(("fstype", "network"), [
    ("fuse.s3fs", True), ("fuse", True), ("nfs4", True), ("cifs", True), ("ext4", False), ("overlay", False),
    ("xfs", False), (None, False),
])
def test_network_filesystems(fstype, network):
    assert is_network_fs(fstype) is network


def test_header_constants_agree_with_the_trainer_reader(tmp_path):
    from sweepctl.pod import data
    from sweepctl.train import data as train_data

    assert (data.SHARD_MAGIC, data.SHARD_VERSION, data.HEADER_BYTES) == (
        train_data.MAGIC, train_data.VERSION, train_data.HEADER_BYTES)
    write_shard(tmp_path / "s.bin", [5, 6, 7])
    assert train_data.open_shard(tmp_path / "s.bin").tolist() == [5, 6, 7]  # what we write, it reads
