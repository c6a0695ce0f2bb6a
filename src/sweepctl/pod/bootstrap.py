"""Make a fresh GPU pod ready for `launch`, safely and idempotently.

    pod$    sweepctl bootstrap --train-shards 8
    laptop$ sweepctl bootstrap --host pod --train-shards 8     # installs this laptop's wheel first

Each step looks before it acts and returns a `Check` (one row of the checklist) listing what it
changed, so a second run changes nothing and says so. This module is the orchestration: it runs
the steps in order and assembles the checklist. The steps with rules of their own live apart:

- SSH (`sweepctl.pod.sshkeys`): persisted keys on the volume are *copied* into a real `~/.ssh`; an
  `authorized_keys` is never written, replaced or removed (postmortem, failure 1).
- Python (`sweepctl.pod.python_env`): a venv on fast local disk, reusing the image's CUDA torch
  (`--system-site-packages`), and the torch probe.

The smaller steps stay here:

- Tools: tmux, git, rsync through apt-get, only as root and only when allowed.
- Shell: `HF_HOME` on the volume and the venv on PATH, in a marked block of `~/.bashrc`.
- The project file (`/mnt/sweepctl.toml`): out_root, data_dir, venv, remote_bin, so later
  commands need no flags.

Roots are parameters (HOME, `SWEEPCTL_VOLUME`, `SWEEPCTL_PROJECT_FILE`) so tests run it all in
temp dirs. W&B credentials are only ever reported present/absent, never read out or printed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from sweepctl.errors import RemoteError, SweepctlError
from sweepctl.pod.checklist import Check, last_line, run_command, set_mode
from sweepctl.pod.gpus import GpuQuery, query_gpus
from sweepctl.pod.python_env import (
    TORCH_PROBE,
    WHEEL_MARKER,
    default_venv,
    ensure_venv,
    file_sha256,
    probe_torch,
    torch_check,
)

# Re-exported (`X as X`): the CLI reaches bootstrap through this one module, so cli.remote_cmds
# (`bootstrap --host`) and cli.pod_cmds import these from here, though they live in the step modules.
from sweepctl.pod.python_env import build_wheel as build_wheel
from sweepctl.pod.sshkeys import default_ssh_dir as default_ssh_dir
from sweepctl.pod.sshkeys import ensure_ssh
from sweepctl.train.contract import write_text_atomic

SYSTEM_TOOLS = ("tmux", "git", "rsync")
BASHRC_BEGIN = "# >>> sweepctl bootstrap >>>"
BASHRC_END = "# <<< sweepctl bootstrap <<<"
LOW_DISK_GB = 20  # one FineWeb train shard is 200 MB; checkpoints of big models are GBs each


# ---- system tools -----------------------------------------------------------------------------


def ensure_tools(tools: Sequence[str] = SYSTEM_TOOLS, *, allow_apt: bool = True) -> Check:
    """tmux (needed to launch), git and rsync: install the missing ones with apt-get when we are
    root and allowed; otherwise say exactly which command to run."""
    missing = [t for t in tools if shutil.which(t) is None]
    changes: list[str] = []
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if missing and allow_apt and is_root and shutil.which("apt-get"):
        env = {"DEBIAN_FRONTEND": "noninteractive"}  # no prompts (tzdata) on a headless pod
        run_command(["apt-get", "update", "-q"], timeout=600, env=env)
        result = run_command(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                             timeout=900, env=env)
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


# ---- GPUs -------------------------------------------------------------------------------------


def gpu_check(query: GpuQuery) -> Check:
    """GPUs from sweepctl.pod.gpus (`nvidia-smi --query-gpu`, never its process list, which is empty
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
        write_text_atomic(bashrc, new, mode=stat.S_IMODE(bashrc.stat().st_mode) if bashrc.exists() else None)
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
    set_mode(path, 0o600, changes, "~/.netrc")  # other users must not read it; netrc refuses otherwise
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
    from sweepctl.pod.data import fineweb_download, shard_problem

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
    write_text_atomic(path, new)
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
    sha = file_sha256(wheel)
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
                          f"{last_line(result.stderr) or 'no output'}", where=transport_host(transport),
                          hint=f"run `{venv}/bin/sweepctl bootstrap` on the pod to see the whole output") from None
    if changes:
        report["changed"] = True
        report["checks"].insert(0, asdict(Check("sweepctl wheel", True, f"{wheel.name} in {venv}", changes)))
    report["remote_error"] = None if result.exit_code == 0 else last_line(result.stderr)
    return report


def transport_host(transport: Any) -> str:
    return str(getattr(transport, "host", "pod"))
