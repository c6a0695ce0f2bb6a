"""Make a fresh GPU pod ready for `launch`, safely and idempotently.

    pod$    sweepctl bootstrap --train-shards 8
    laptop$ sweepctl bootstrap --host pod --train-shards 8     # installs this laptop's wheel first

Each step looks before it acts and returns a `Check` (one row of the checklist) listing what it
changed, so a second run changes nothing and says so. The steps that touch the world:

- SSH: persisted keys (`/mnt/.ssh` or `/mnt/ssh`) are *copied* into a real `~/.ssh`. The provider
  injects `authorized_keys` there; losing it locks everyone out (postmortem, failure 1), so this
  module never writes, replaces or removes an `authorized_keys`, and a symlinked `~/.ssh` is turned
  into a real directory holding the same files, swapped in with one atomic rename.
- Python: a venv on fast local disk, reusing the image's CUDA torch (`--system-site-packages`).
- Tools: tmux, git, rsync through apt-get, only as root and only when allowed.
- Shell: `HF_HOME` on the volume and the venv on PATH, in a marked block of `~/.bashrc`.
- The project file (`/mnt/sweepctl.toml`): out_root, data_dir, venv, remote_bin, so later
  commands need no flags.

Roots are parameters (HOME, `SWEEPCTL_VOLUME`, `SWEEPCTL_PROJECT_FILE`) so tests run it all in
temp dirs. W&B credentials are only ever reported present/absent, never read out or printed.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sweepctl import __version__
from sweepctl.errors import RemoteError, SweepctlError
from sweepctl.gpus import Gpu, GpuQuery, query_gpus

SYSTEM_TOOLS = ("tmux", "git", "rsync")
WHEEL_MARKER = ".sweepctl-install"  # in the venv: what was installed there (wheel sha256 or version)
BASHRC_BEGIN = "# >>> sweepctl bootstrap >>>"
BASHRC_END = "# <<< sweepctl bootstrap <<<"
REPRODUCIBLE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip entry can carry
LOW_DISK_GB = 20  # one FineWeb train shard is 200 MB; checkpoints of big models are GBs each

# Run by an interpreter that may not have sweepctl: is there a torch, and is it a CUDA build?
TORCH_PROBE = (
    "import json\n"
    "try:\n"
    "    import torch\n"
    "    info = {'torch': torch.__version__, 'cuda': torch.version.cuda,\n"
    "            'available': torch.cuda.is_available(), 'devices': torch.cuda.device_count()}\n"
    "except Exception as e:\n"
    "    info = {'torch': None, 'error': type(e).__name__}\n"
    "print(json.dumps(info))\n"
)


@dataclass
class Check:
    """One checklist row. ok: True fine, None worth a look (warn), False bootstrap is incomplete."""

    name: str
    ok: bool | None
    detail: str
    changes: list[str] = field(default_factory=list)
    hint: str | None = None  # what to do when not ok


def _run(argv: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A command with a deadline; a missing program is exit code 127, like a shell says it."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              env=None if env is None else {**os.environ, **env})
    except FileNotFoundError:
        return subprocess.CompletedProcess(list(argv), 127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        raise SweepctlError(f"`{shlex.join(argv)}` did not finish within {timeout:.0f} s",
                            hint="run it by hand to see where it hangs") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---- SSH keys ---------------------------------------------------------------------------------


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


def _set_mode(path: Path, mode: int, changes: list[str], label: str) -> None:
    if path.stat().st_mode & 0o777 != mode:
        path.chmod(mode)
        changes.append(f"chmod {mode:o} {label}")


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
    _set_mode(ssh, 0o700, changes, "~/.ssh")

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
                _set_mode(path, 0o600, changes, f"~/.ssh/{path.name}")
            elif path.name.startswith("id_") and path.name.endswith(".pub"):
                _set_mode(path, 0o644, changes, f"~/.ssh/{path.name}")

    keys = sorted(p.name for p in ssh.iterdir() if _is_private_key(p.name))
    detail = f"keys: {', '.join(keys) or 'none'}"
    detail += f"; from {ssh_dir}" if ssh_dir else "; no persisted keys dir on the volume"
    detail += "; authorized_keys untouched" if (ssh / "authorized_keys").exists() else ""
    return Check("SSH keys", True, detail, changes)


# ---- system tools -----------------------------------------------------------------------------


def ensure_tools(tools: Sequence[str] = SYSTEM_TOOLS, *, allow_apt: bool = True) -> Check:
    """tmux (needed to launch), git and rsync: install the missing ones with apt-get when we are
    root and allowed; otherwise say exactly which command to run."""
    missing = [t for t in tools if shutil.which(t) is None]
    changes: list[str] = []
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if missing and allow_apt and is_root and shutil.which("apt-get"):
        env = {"DEBIAN_FRONTEND": "noninteractive"}  # no prompts (tzdata) on a headless pod
        _run(["apt-get", "update", "-q"], timeout=600, env=env)
        result = _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], timeout=900, env=env)
        if result.returncode == 0:
            changes.append(f"apt-get installed {' '.join(missing)}")
        missing = [t for t in tools if shutil.which(t) is None]
    present = [t for t in tools if t not in missing]
    if not missing:
        return Check("tmux, git, rsync", True, ", ".join(present) + " present", changes)
    command = ("" if is_root else "sudo ") + "apt-get install -y " + " ".join(missing)
    why = "" if allow_apt else " (--no-apt)"
    ok = False if "tmux" in missing else None  # launch cannot work without tmux; git/rsync are conveniences
    return Check("tmux, git, rsync", ok, f"missing: {' '.join(missing)}{why}", changes, hint=f"run: {command}")


# ---- GPUs and torch ---------------------------------------------------------------------------


def gpu_check(query: GpuQuery) -> Check:
    """GPUs from sweepctl.gpus (`nvidia-smi --query-gpu`, never its process list, which is empty
    inside containers)."""
    if not query.gpus:
        hint = "fine on a laptop; on a pod, check that the image has the NVIDIA driver mounted"
        return Check("GPUs", None, query.problem or "nvidia-smi lists no GPU", hint=hint)
    names: dict[str, int] = {}
    for gpu in query.gpus:
        label = gpu.name + (f" {gpu.memory_total_mib / 1024:.0f} GiB" if gpu.memory_total_mib else "")
        names[label] = names.get(label, 0) + 1
    detail = f"{len(query.gpus)}: " + ", ".join(f"{n} x {label}" for label, n in names.items())
    if query.problem:  # some lines unreadable: show the GPUs found, flag the rest
        return Check("GPUs", None, f"{detail} ({query.problem})")
    return Check("GPUs", True, detail)


def probe_torch(python: str | Path) -> dict[str, Any]:
    """What torch `python` has (version, CUDA build, cuda available), without importing it here."""
    result = _run([str(python), "-c", TORCH_PROBE], timeout=180)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"torch": None, "error": _last_line(result.stderr) or f"exit {result.returncode}"}


def torch_check(info: dict[str, Any], gpus: Sequence[Gpu], python: str | Path) -> Check:
    if not info.get("torch"):
        return Check("CUDA torch", False, f"no torch in {python}", hint="bootstrap without --no-venv installs it")
    version = f"torch {info['torch']}"
    if info.get("available"):
        return Check("CUDA torch", True, f"{version}, CUDA {info['cuda']}, {info['devices']} device(s) visible")
    if gpus:
        why = "a CPU-only build" if not info.get("cuda") else f"CUDA {info['cuda']} build, but no device available"
        return Check("CUDA torch", False, f"{version}: {why}",
                     hint="reuse the image's CUDA torch (a --system-site-packages venv) or install a CUDA wheel")
    return Check("CUDA torch", None, f"{version} (CPU only; no GPU here)")


# ---- Python environment -----------------------------------------------------------------------


def default_venv(home: Path, euid: int | None = None) -> Path:
    """Fast local disk, not the (network) volume: importing torch from a FUSE mount takes minutes."""
    euid = os.geteuid() if euid is None else euid
    return Path("/opt/sweepctl-venv") if euid == 0 else home / ".local/share/sweepctl/venv"


def source_tree() -> Path | None:
    """The checkout this sweepctl runs from, if it is one (an editable or in-tree run)."""
    import sweepctl

    root = Path(sweepctl.__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(r'^name\s*=\s*"sweepctl"', pyproject.read_text(), re.M):
        return root
    return None


def build_wheel(out_dir: Path, source: Path | None = None) -> Path:
    """This checkout as a wheel (for `--host`: the pod gets exactly the laptop's code). Built from a
    copy, so the checkout gets no build/ or egg-info litter, and without build isolation when
    setuptools is here, so it works offline."""
    import importlib.util
    import tempfile

    source = source or source_tree()
    if source is None:
        raise SweepctlError("this sweepctl is not a source checkout, so there is no wheel to build",
                            hint="pass --wheel PATH (e.g. from `pip wheel --no-deps sweepctl`)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sweepctl-build-") as tmp:
        copy = Path(tmp) / "src-copy"
        shutil.copytree(source / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (source / name).exists():
                shutil.copy2(source / name, copy / name)
        isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
        argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                *isolation, "-w", tmp, str(copy)]
        # A fixed zip timestamp makes the same source give the same bytes, so the pod's install
        # marker (the wheel's sha256) sees a second `bootstrap --host` as nothing to do.
        result = _run(argv, timeout=600, env={"SOURCE_DATE_EPOCH": REPRODUCIBLE_EPOCH})
        wheels = sorted(Path(tmp).glob("sweepctl-*.whl"))
        if result.returncode != 0 or not wheels:
            raise SweepctlError(f"cannot build the sweepctl wheel: {_last_line(result.stderr)}", where=str(source),
                                hint=f"run `{shlex.join(argv)}` to see the whole error")
        target = out_dir / wheels[0].name
        shutil.copy2(wheels[0], target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _installed_version(python: Path) -> str | None:
    result = _run([str(python), "-c", "import importlib.metadata as m; print(m.version('sweepctl'))"], timeout=60)
    return (result.stdout.strip() or None) if result.returncode == 0 else None


def _pick_base_python(candidates: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The first interpreter with a CUDA torch (the image's), else the first one."""
    probes = []
    for python in dict.fromkeys(candidates):
        info = probe_torch(python)
        if info.get("cuda"):
            return python, info
        probes.append((python, info))
    return probes[0]


def ensure_venv(venv: Path, *, wheel: Path | None = None, base_pythons: Sequence[str] | None = None,
                pip_args: Sequence[str] = ()) -> Check:
    """A venv holding this sweepctl: the given wheel (reinstalled when its sha256 changes), else
    this version (from this checkout, else the package index). `pip_args` go to every pip call."""
    changes: list[str] = []
    python = venv / "bin" / "python"
    if not python.exists():
        candidates = base_pythons or [getattr(sys, "_base_executable", sys.executable),
                                      *filter(None, [shutil.which("python3")])]
        base, info = _pick_base_python(candidates)
        system_site = bool(info.get("cuda"))
        argv = [base, "-m", "venv", *(["--system-site-packages"] if system_site else []), str(venv)]
        venv.parent.mkdir(parents=True, exist_ok=True)
        result = _run(argv, timeout=300)
        if result.returncode != 0:
            raise SweepctlError(f"cannot create the venv: {_last_line(result.stderr)}", where=str(venv),
                                hint="choose another --venv (fast local disk) or check the Python install")
        changes.append(f"created venv {venv}" + (f" with the image's torch {info['torch']}" if system_site else ""))

    marker = venv / WHEEL_MARKER
    installed = _installed_version(python)
    if wheel is not None:
        # A wheel is exact bytes (the laptop's build): reinstall whenever they differ, even at the
        # same version number, which a developer's rebuilt wheel usually keeps.
        wanted, spec = f"wheel sha256 {_sha256(wheel)}", str(wheel)
        have = marker.read_text().strip() if marker.exists() else None
        needed = installed is None or have != wanted
    else:
        # No wheel: this very version (installed from a wheel earlier, this checkout, or the index).
        tree = source_tree()
        wanted, spec = (f"source {tree}", str(tree)) if tree else (f"index {__version__}", f"sweepctl=={__version__}")
        needed = installed != __version__
    if needed:
        # First the package with its dependencies, then the exact bytes: pip treats a wheel of an
        # already installed version as "already satisfied" and would silently keep the old code.
        for extra in ([], ["--no-deps", "--force-reinstall"]):
            argv = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *extra, *pip_args, spec]
            result = _run(argv, timeout=1800)
            if result.returncode != 0:
                raise SweepctlError(f"pip could not install {spec}: {_last_line(result.stderr)}", where=str(venv),
                                    hint=f"run `{shlex.join(argv)}` to see the whole error")
        marker.write_text(wanted + "\n")
        installed = _installed_version(python)
        changes.append(f"installed sweepctl {installed} from {spec}")
    return Check("sweepctl venv", True, f"sweepctl {installed} in {venv}", changes)


# ---- caches, credentials, disk ----------------------------------------------------------------


def ensure_shell_env(home: Path, hf_home: Path | None, venv_bin: Path | None) -> Check:
    """HF_HOME on the volume (models and datasets survive the pod) and the venv on PATH, in one
    marked block of ~/.bashrc that is rewritten in place, never duplicated."""
    lines = []
    if hf_home is not None:
        hf_home.mkdir(parents=True, exist_ok=True)
        lines.append(f"export HF_HOME={shlex.quote(str(hf_home))}")
    if venv_bin is not None:
        lines.append(f'export PATH={shlex.quote(str(venv_bin))}:"$PATH"')
    if not lines:
        return Check("HF_HOME", None, "no volume: HF_HOME left as it is")
    block = "\n".join([BASHRC_BEGIN, *lines, BASHRC_END]) + "\n"
    bashrc = home / ".bashrc"
    text = bashrc.read_text() if bashrc.exists() else ""
    pattern = re.compile(re.escape(BASHRC_BEGIN) + r".*?" + re.escape(BASHRC_END) + r"\n?", re.S)
    new = pattern.sub(lambda _: block, text) if pattern.search(text) else (
        text + ("" if not text or text.endswith("\n") else "\n") + block)
    changes = []
    if new != text:
        tmp = bashrc.with_name(".bashrc.sweepctl-tmp")
        tmp.write_text(new)
        if bashrc.exists():
            shutil.copymode(bashrc, tmp)
        os.replace(tmp, bashrc)
        changes.append("updated the sweepctl block in ~/.bashrc")
    detail = f"HF_HOME={hf_home}" if hf_home else "HF_HOME unchanged"
    detail += f"; {venv_bin} on PATH (new shells)" if venv_bin else ""
    return Check("HF_HOME", True, detail, changes)


def wandb_check(home: Path) -> Check:
    """Whether ~/.netrc holds W&B credentials. Only presence is reported; the secret is never
    returned, printed, or copied anywhere (not into tmux, not into files)."""
    import netrc

    path = home / ".netrc"
    changes: list[str] = []
    env_note = "; WANDB_API_KEY in the environment is ignored" if os.environ.get("WANDB_API_KEY") else ""
    if not path.is_file():
        return Check("W&B credentials", None, "absent (no ~/.netrc)" + env_note,
                     hint="run `wandb login` on the pod if you want W&B logging")
    _set_mode(path, 0o600, changes, "~/.netrc")  # other users must not read it; netrc refuses otherwise
    try:
        present = netrc.netrc(str(path)).authenticators("api.wandb.ai") is not None
    except (netrc.NetrcParseError, OSError):
        return Check("W&B credentials", None, "~/.netrc unreadable" + env_note, changes,
                     hint="fix ~/.netrc or run `wandb login` again")
    if present:
        return Check("W&B credentials", True, "present (~/.netrc, api.wandb.ai)" + env_note, changes)
    return Check("W&B credentials", None, "absent (~/.netrc has no api.wandb.ai entry)" + env_note, changes,
                 hint="run `wandb login` on the pod if you want W&B logging")


def disk_check(path: Path) -> Check:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_gb, total_gb = usage.free / 1e9, usage.total / 1e9
    detail = f"{free_gb:,.0f} GB free of {total_gb:,.0f} GB on {probe}"
    if free_gb < LOW_DISK_GB:
        return Check("free disk", None, detail, hint="free space before a sweep: checkpoints need GBs")
    return Check("free disk", True, detail)


def data_check(data_dir: Path, train_shards: int, *, progress: bool) -> Check:
    from sweepctl.data import fineweb_download, shard_problem

    if train_shards > 0:
        report = fineweb_download(data_dir, train_shards, progress=progress)
        changes = [f"downloaded {n}" for n in report.downloaded]
        return Check("data shards", True, f"val + {train_shards} train shards valid in {data_dir}", changes)
    present = sorted(p.name for p in data_dir.glob("fineweb_*.bin") if shard_problem(p) is None) \
        if data_dir.is_dir() else []
    train = sum(1 for n in present if n.startswith("fineweb_train_"))
    val = sum(1 for n in present if n.startswith("fineweb_val_"))
    detail = f"{train} train + {val} val valid shards in {data_dir} (none requested)"
    return Check("data shards", True if train and val else None, detail,
                 hint=None if train and val else "pass --train-shards N to download FineWeb10B shards")


# ---- the project file -------------------------------------------------------------------------


def project_file_path(volume: Path, on_pod: bool) -> Path:
    """Where bootstrap records its paths: $SWEEPCTL_PROJECT_FILE, the volume on a pod, else ./."""
    explicit = os.environ.get("SWEEPCTL_PROJECT_FILE")
    if explicit:
        return Path(explicit)
    return volume / "sweepctl.toml" if on_pod else Path.cwd() / "sweepctl.toml"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def write_project_file(path: str | Path, updates: dict[str, Any]) -> bool:
    """Set top-level keys in a TOML file, keeping every other line (comments, tables) as it was.
    Returns whether the file changed. Atomic: a reader never sees half a file."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    path = Path(path)
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines()
    first_table = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    top, rest = lines[:first_table], lines[first_table:]
    for key, value in updates.items():
        new_line = f"{key} = {_toml_value(value)}"
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        index = next((i for i, line in enumerate(top) if pattern.match(line)), None)
        if index is None:  # after the last key, before the blank lines that end the section
            last = max((i for i, line in enumerate(top) if line.strip()), default=-1)
            top.insert(last + 1, new_line)
        else:
            top[index] = new_line
    if rest and top and top[-1].strip():
        top.append("")
    new = "\n".join(top + rest) + "\n"
    try:
        tomllib.loads(new)
    except tomllib.TOMLDecodeError as e:
        raise SweepctlError(f"cannot update the project file: {e}", where=str(path),
                            hint="fix the TOML by hand (a multi-line value for one of the keys?)") from None
    if new == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(new)
    os.replace(tmp, path)
    return True


# ---- the whole bootstrap ----------------------------------------------------------------------


@dataclass
class BootstrapOptions:
    home: Path
    volume: Path
    project_file: Path
    out_root: Path
    data_dir: Path
    ssh_dir: Path | None = None
    venv: Path | None = None  # None: --no-venv, use the running interpreter
    wheel: Path | None = None
    train_shards: int = 0
    allow_apt: bool = True
    pip_args: tuple[str, ...] = ()
    progress: bool = True


@dataclass
class BootstrapReport:
    checks: list[Check]
    project_file: str

    @property
    def changed(self) -> bool:
        return any(c.changes for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def to_json(self) -> dict[str, Any]:
        return {"changed": self.changed, "ok": not self.failed, "project_file": self.project_file,
                "checks": [asdict(c) for c in self.checks]}


def _project_check(opts: BootstrapOptions, remote_bin: Path) -> Check:
    """Create out_root and data_dir, and record them (with venv and remote_bin) in the project file."""
    changes = []
    for label, path in (("out_root", opts.out_root), ("data_dir", opts.data_dir)):
        if not path.is_dir():
            path.mkdir(parents=True)
            changes.append(f"created {label} {path}")
    updates: dict[str, Any] = {"out_root": str(opts.out_root), "data_dir": str(opts.data_dir),
                               "remote_bin": str(remote_bin)}
    if opts.venv is not None:
        updates["venv"] = str(opts.venv)
    if write_project_file(opts.project_file, updates):
        changes.append(f"wrote {', '.join(updates)} to {opts.project_file}")
    return Check("project file", True, f"{opts.project_file}: out_root={opts.out_root}", changes)


def run_bootstrap(opts: BootstrapOptions, on_step: Callable[[str], None] | None = None) -> BootstrapReport:
    """Every step in order; the checklist in the order a reader cares about."""
    step = on_step or (lambda _: None)
    checks: dict[str, Check] = {}

    step("SSH keys")
    checks["ssh"] = ensure_ssh(opts.home, opts.ssh_dir)
    step("system tools")
    checks["tools"] = ensure_tools(allow_apt=opts.allow_apt)
    if opts.venv is not None:
        step("Python venv")
        checks["venv"] = ensure_venv(opts.venv, wheel=opts.wheel, pip_args=opts.pip_args)
        python: Path = opts.venv / "bin" / "python"
        remote_bin = opts.venv / "bin" / "sweepctl"
    else:
        python = Path(sys.executable)
        remote_bin = Path(shutil.which("sweepctl") or Path(sys.executable).parent / "sweepctl")
    # Importing torch takes seconds: probe it in the background while the other steps run.
    with ThreadPoolExecutor(max_workers=1) as pool:
        torch_info = pool.submit(probe_torch, python)
        step("GPUs")
        gpus = query_gpus()
        checks["gpus"] = gpu_check(gpus)
        on_volume = opts.volume.is_dir()
        checks["hf"] = ensure_shell_env(opts.home, opts.volume / ".cache" / "huggingface" if on_volume else None,
                                        opts.venv / "bin" if opts.venv is not None else None)
        checks["wandb"] = wandb_check(opts.home)
        step("project file")
        checks["project"] = _project_check(opts, remote_bin)
        if opts.train_shards > 0:
            step(f"FineWeb: val + {opts.train_shards} train shards")
        checks["data"] = data_check(opts.data_dir, opts.train_shards, progress=opts.progress)
        checks["disk"] = disk_check(opts.volume if on_volume else opts.data_dir)
        step("torch")
        checks["torch"] = torch_check(torch_info.result(), gpus.gpus, python)

    order = ("gpus", "torch", "venv", "tools", "data", "disk", "wandb", "ssh", "hf", "project")
    return BootstrapReport([checks[k] for k in order if k in checks], str(opts.project_file))


# ---- bootstrap --host: the seam for the SSH transport -----------------------------------------


class CommandTransport(Protocol):
    """What `bootstrap_remote` needs from sweepctl.transport.Transport (which has more)."""

    def run(self, argv: Sequence[str], timeout: float | None = ..., stdin: Any = None, *,
            check: bool = False, env: Any = None) -> Any: ...

    def put(self, local: str | os.PathLike[str], remote: str) -> None: ...

    def exists(self, remote: str) -> bool: ...


REMOTE_PROBE = TORCH_PROBE.replace(
    "print(json.dumps(info))\n",
    "import os\ninfo['euid'] = os.geteuid()\ninfo['home'] = os.path.expanduser('~')\nprint(json.dumps(info))\n")


def bootstrap_remote(transport: CommandTransport, wheel: Path, bootstrap_args: Sequence[str], *,
                     venv: str | None = None, python: str = "python3") -> dict[str, Any]:
    """Install `wheel` (this laptop's sweepctl) into the pod's venv, then run `sweepctl bootstrap
    --json` there and return its report. The wheel is uploaded and installed only when the venv's
    marker says it holds different bytes, so a second run uploads nothing.

    Wiring (for the CLI's `--host`): build the wheel (`pip wheel --no-deps`), open the transport
    for the host, call this, render the returned JSON like a local run.
    """
    probe = transport.run([python, "-c", REMOTE_PROBE], timeout=180)
    try:
        pod = json.loads(probe.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RemoteError(f"cannot run {python} on the pod (exit {probe.exit_code})", where=transport_host(transport),
                          hint="install python3 on the pod, or pass its path") from None
    venv = venv or str(default_venv(Path(pod["home"]), pod["euid"]))
    sha = _sha256(wheel)
    marker = f"{venv}/{WHEEL_MARKER}"
    changes: list[str] = []
    current = transport.run(["cat", marker], timeout=30)
    if current.stdout.strip() != f"wheel sha256 {sha}":
        remote_wheel = f"/tmp/sweepctl-wheels/{wheel.name}"
        transport.put(wheel, remote_wheel)
        if not transport.exists(f"{venv}/bin/python"):
            site = ["--system-site-packages"] if pod.get("cuda") else []  # keep the image's CUDA torch
            transport.run([python, "-m", "venv", *site, venv], timeout=300, check=True)
            changes.append(f"created venv {venv}")
        pip = [f"{venv}/bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        transport.run([*pip, remote_wheel], timeout=1800, check=True)
        transport.run([*pip, "--no-deps", "--force-reinstall", remote_wheel], timeout=600, check=True)
        transport.run([f"{venv}/bin/python", "-c", "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text("
                       "sys.argv[2] + '\\n')", marker, f"wheel sha256 {sha}"], timeout=60, check=True)
        changes.append(f"installed {wheel.name} into {venv}")
    result = transport.run([f"{venv}/bin/sweepctl", "bootstrap", "--venv", venv, "--json", *bootstrap_args],
                           timeout=7200)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        raise RemoteError(f"remote bootstrap failed (exit {result.exit_code}): "
                          f"{_last_line(result.stderr) or 'no output'}", where=transport_host(transport),
                          hint=f"run `{venv}/bin/sweepctl bootstrap` on the pod to see the whole output") from None
    if changes:
        report["changed"] = True
        report["checks"].insert(0, asdict(Check("sweepctl wheel", True, f"{wheel.name} in {venv}", changes)))
    report["remote_error"] = None if result.exit_code == 0 else _last_line(result.stderr)
    return report


def transport_host(transport: Any) -> str:
    return str(getattr(transport, "host", "pod"))
