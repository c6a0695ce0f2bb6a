"""Bootstrap's SSH step never locks anyone out (postmortem failure 1), with a temp HOME and volume."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sweepctl.pod.sshkeys import default_ssh_dir, ensure_ssh, materialize_ssh_dir, merge_known_hosts

PROVIDER_KEYS = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIProvider provider@injected\n"
VOLUME_KEYS = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIVolume stale@volume\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def volume(tmp_path):
    """A persisted keys dir like /mnt/.ssh, with deliberately loose modes and its own authorized_keys."""
    ssh_dir = tmp_path / "mnt" / ".ssh"
    ssh_dir.mkdir(parents=True)
    (ssh_dir / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    (ssh_dir / "id_ed25519.pub").write_text("ssh-ed25519 AAAA me@laptop\n")
    (ssh_dir / "config").write_text("Host github.com\n  IdentityFile ~/.ssh/id_ed25519\n")
    (ssh_dir / "known_hosts").write_text("github.com ssh-ed25519 AAAAgh\npod ssh-ed25519 AAAApod\n")
    (ssh_dir / "authorized_keys").write_bytes(VOLUME_KEYS)
    (ssh_dir / "notes.txt").write_text("not a key")
    for p in ssh_dir.iterdir():
        p.chmod(0o644)
    return ssh_dir


def test_plain_ssh_dir_keeps_authorized_keys_and_gets_keys_600(tmp_path, volume):
    home = tmp_path / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, mode=0o755)
    (ssh / "authorized_keys").write_bytes(PROVIDER_KEYS)
    (ssh / "authorized_keys").chmod(0o644)
    (ssh / "known_hosts").write_text("pod ssh-ed25519 AAAApod\n")
    before = (ssh / "authorized_keys").stat()

    check = ensure_ssh(home, volume)

    assert (ssh / "authorized_keys").read_bytes() == PROVIDER_KEYS
    assert (ssh / "authorized_keys").stat().st_ino == before.st_ino  # not even replaced by a copy
    assert mode(ssh / "authorized_keys") == 0o644  # its mode is the provider's business too
    assert mode(ssh) == 0o700
    assert mode(ssh / "id_ed25519") == 0o600
    assert mode(ssh / "config") == 0o600
    assert mode(ssh / "id_ed25519.pub") == 0o644
    assert (ssh / "id_ed25519").read_text() == (volume / "id_ed25519").read_text()
    assert not (ssh / "notes.txt").exists()
    assert (ssh / "known_hosts").read_text() == "pod ssh-ed25519 AAAApod\ngithub.com ssh-ed25519 AAAAgh\n"
    assert check.ok is True and check.changes
    assert "keys: id_ed25519" in check.detail and "authorized_keys untouched" in check.detail


def test_authorized_keys_on_the_volume_is_never_copied_in(tmp_path, volume):
    home = tmp_path / "home"
    home.mkdir()

    ensure_ssh(home, volume)
    ensure_ssh(home, volume)

    assert mode(home / ".ssh") == 0o700
    assert not (home / ".ssh" / "authorized_keys").exists()
    assert (volume / "authorized_keys").read_bytes() == VOLUME_KEYS


def test_symlinked_ssh_dir_becomes_a_real_dir_with_the_same_files(tmp_path, volume):
    home = tmp_path / "home"
    home.mkdir()
    real = tmp_path / "elsewhere" / "ssh"
    real.mkdir(parents=True)
    (real / "authorized_keys").write_bytes(PROVIDER_KEYS)
    (real / "authorized_keys").chmod(0o600)
    (real / "id_rsa").write_text("old key")
    (real / "id_rsa").chmod(0o600)
    (home / ".ssh").symlink_to(real)

    check = ensure_ssh(home, volume)

    ssh = home / ".ssh"
    assert ssh.is_dir() and not ssh.is_symlink()
    assert (ssh / "authorized_keys").read_bytes() == PROVIDER_KEYS
    assert mode(ssh / "authorized_keys") == 0o600
    assert (ssh / "id_rsa").read_text() == "old key"
    assert (ssh / "id_ed25519").exists()
    # The link's target is left as it was: nothing copied into it, nothing removed.
    assert sorted(p.name for p in real.iterdir()) == ["authorized_keys", "id_rsa"]
    assert sorted(p.name for p in home.iterdir()) == [".ssh"]  # no staging dir or old link left behind
    assert any("was a symlink" in c for c in check.changes)


def test_symlink_to_the_volume_itself_keeps_the_visible_authorized_keys(tmp_path, volume):
    # The exact shape the old script left behind: ~/.ssh -> /mnt/.ssh.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".ssh").symlink_to(volume)

    ensure_ssh(home, volume)

    assert not (home / ".ssh").is_symlink()
    assert (home / ".ssh" / "authorized_keys").read_bytes() == VOLUME_KEYS  # what sshd was reading
    assert mode(home / ".ssh" / "id_ed25519") == 0o600
    assert (volume / "authorized_keys").read_bytes() == VOLUME_KEYS


def test_dangling_symlink_becomes_an_empty_real_dir(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".ssh").symlink_to(tmp_path / "gone")

    assert materialize_ssh_dir(home / ".ssh")

    assert (home / ".ssh").is_dir() and not (home / ".ssh").is_symlink()
    assert list((home / ".ssh").iterdir()) == []
    assert not (tmp_path / "gone").exists()


def test_second_run_changes_nothing(tmp_path, volume):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "authorized_keys").write_bytes(PROVIDER_KEYS)
    ensure_ssh(home, volume)
    snapshot = {p.name: (p.read_bytes(), mode(p)) for p in (home / ".ssh").iterdir()}

    again = ensure_ssh(home, volume)

    assert again.changes == []
    assert {p.name: (p.read_bytes(), mode(p)) for p in (home / ".ssh").iterdir()} == snapshot


def test_a_different_key_already_in_home_is_backed_up_not_lost(tmp_path, volume):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("the pod's own key")

    check = ensure_ssh(home, volume)

    backups = list((home / ".ssh").glob("id_ed25519.bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == "the pod's own key"
    assert (home / ".ssh" / "id_ed25519").read_text() == (volume / "id_ed25519").read_text()
    assert any("old one kept as" in c for c in check.changes)


def test_no_persisted_keys_still_fixes_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    check = ensure_ssh(home, None)
    assert mode(home / ".ssh") == 0o700
    assert "no persisted keys dir" in check.detail


def test_known_hosts_merge_appends_only_missing_lines(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.write_text("# comment\na ssh-ed25519 A\nb ssh-ed25519 B\nb ssh-ed25519 B\n\n")
    dest.write_text("c ssh-rsa C\na ssh-ed25519 A")  # no trailing newline
    assert merge_known_hosts(src, dest) == 1
    assert dest.read_text() == "c ssh-rsa C\na ssh-ed25519 A\nb ssh-ed25519 B\n"
    assert merge_known_hosts(src, dest) == 0


def test_default_ssh_dir_prefers_dot_ssh(tmp_path):
    assert default_ssh_dir(tmp_path) is None
    (tmp_path / "ssh").mkdir()
    assert default_ssh_dir(tmp_path) == tmp_path / "ssh"
    (tmp_path / ".ssh").mkdir()
    assert default_ssh_dir(tmp_path) == tmp_path / ".ssh"


def test_permissive_umask_still_gives_private_keys_600(tmp_path, volume):
    old = os.umask(0o000)
    try:
        home = tmp_path / "home"
        home.mkdir()
        ensure_ssh(home, volume)
    finally:
        os.umask(old)
    assert mode(home / ".ssh" / "id_ed25519") == 0o600
