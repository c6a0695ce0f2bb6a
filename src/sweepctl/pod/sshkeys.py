"""Bootstrap's SSH step: persisted keys on the volume into a real ~/.ssh, without locking anyone out.

Its own module because it is the one step whose mistakes are unrecoverable: the provider injects
`authorized_keys` into ~/.ssh, and losing it locks everyone out of the pod (postmortem, failure 1).
So this module never writes, replaces or removes an `authorized_keys`; it copies only `id_*` keys
and `config` from the volume (`/mnt/.ssh` or `/mnt/ssh`), appends missing known_hosts lines, fixes
modes, and turns a symlinked ~/.ssh into a real directory holding the same files, swapped in with
one atomic rename so sshd never sees a missing ~/.ssh. Kept apart, its rules are read (and
reviewed) in one place.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import time
from pathlib import Path

from sweepctl.pod.checklist import Check, set_mode


def default_ssh_dir(volume: Path) -> Path | None:
    """The persisted keys dir on the volume: `.ssh`, else `ssh`, else none."""
    for name in (".ssh", "ssh"):
        if (volume / name).is_dir():
            return volume / name
    return None


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE): at every instant each name
    exists, so sshd never looks into a missing ~/.ssh. Falls back to two renames elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(a))
    aside = a.with_name(a.name + ".sweepctl-aside")
    os.rename(a, aside)
    os.rename(b, a)
    os.rename(aside, b)


def materialize_ssh_dir(ssh: Path) -> str | None:
    """If `ssh` is a symlink, replace it by a real directory with a copy of everything visible
    through it (authorized_keys included, byte for byte). The link's target is left untouched."""
    if not ssh.is_symlink():
        return None
    target = os.readlink(ssh)
    staging = ssh.with_name(f"{ssh.name}.sweepctl-new-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    if ssh.is_dir():
        shutil.copytree(ssh, staging, symlinks=True)  # copy2: modes and mtimes kept
    else:  # a dangling link: nothing to keep
        staging.mkdir()
    staging.chmod(0o700)
    _exchange(ssh, staging)
    staging.unlink()  # now the old symlink: removes the link only, never its target
    return f"~/.ssh was a symlink to {target}: now a real directory with the same files"


def _is_private_key(name: str) -> bool:
    return name.startswith("id_") and not name.endswith(".pub")


def _copy_private(src: Path, dest: Path, mode: int) -> None:
    """Copy via a temp file created 0600 (whatever the umask), so a private key is never readable
    by others, not even between the copy and a chmod; then rename into place."""
    tmp = dest.with_name(f".{dest.name}.sweepctl-tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(src.read_bytes())
    tmp.chmod(mode)
    os.replace(tmp, dest)


def merge_known_hosts(source: Path, dest: Path) -> int:
    """Append the lines of `source` that `dest` lacks; never drops or reorders an existing line."""
    have = dest.read_text().splitlines() if dest.exists() else []
    seen = {line.strip() for line in have}
    new = [line.strip() for line in source.read_text().splitlines()
           if line.strip() and not line.lstrip().startswith("#") and line.strip() not in seen]
    new = list(dict.fromkeys(new))  # the source may repeat itself
    if new:
        prefix = "" if not have or dest.read_text().endswith("\n") else "\n"
        with dest.open("a") as f:
            f.write(prefix + "\n".join(new) + "\n")
    return len(new)


def ensure_ssh(home: Path, ssh_dir: Path | None) -> Check:
    """Copy persisted `id_*` keys, `config` and known hosts into a real ~/.ssh (700; keys 600,
    .pub 644). Never touches authorized_keys: not copied, not written, not removed."""
    ssh = home / ".ssh"
    changes: list[str] = []
    swapped = materialize_ssh_dir(ssh)
    if swapped:
        changes.append(swapped)
    if not ssh.exists():
        ssh.mkdir(mode=0o700)
        changes.append("created ~/.ssh")
    set_mode(ssh, 0o700, changes, "~/.ssh")

    copied = 0
    if ssh_dir is not None and ssh_dir.resolve() != ssh.resolve():
        for src in sorted(ssh_dir.iterdir()):
            if not src.is_file() or not (src.name.startswith("id_") or src.name == "config"):
                continue  # authorized_keys (and anything else) stays on the volume
            dest = ssh / src.name
            if dest.exists() and dest.read_bytes() == src.read_bytes():
                continue
            if dest.exists():
                backup = dest.with_name(f"{dest.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
                shutil.copy2(dest, backup)
                changes.append(f"~/.ssh/{dest.name} differed from {src}: old one kept as {backup.name}")
            _copy_private(src, dest, 0o644 if src.name.endswith(".pub") else 0o600)
            changes.append(f"copied {src.name} from {ssh_dir}")
            copied += 1
        if (ssh_dir / "known_hosts").is_file():
            added = merge_known_hosts(ssh_dir / "known_hosts", ssh / "known_hosts")
            if added:
                changes.append(f"added {added} known_hosts line(s) from {ssh_dir}")

    for path in sorted(ssh.iterdir()):
        if path.is_file() and not path.is_symlink():
            if _is_private_key(path.name) or path.name == "config":
                set_mode(path, 0o600, changes, f"~/.ssh/{path.name}")
            elif path.name.startswith("id_") and path.name.endswith(".pub"):
                set_mode(path, 0o644, changes, f"~/.ssh/{path.name}")

    keys = sorted(p.name for p in ssh.iterdir() if _is_private_key(p.name))
    detail = f"keys: {', '.join(keys) or 'none'}"
    detail += f"; from {ssh_dir}" if ssh_dir else "; no persisted keys dir on the volume"
    detail += "; authorized_keys untouched" if (ssh / "authorized_keys").exists() else ""
    return Check("SSH keys", True, detail, changes)
