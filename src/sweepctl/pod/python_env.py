"""The pod's Python environment: which torch an interpreter has, and the venv that holds sweepctl.

Apart from bootstrap because it is a concern of its own with its own state (the venv, its install
marker, the wheel built from this checkout) and its own slow, subprocess-heavy checks (importing
torch, pip, `python -m venv`); bootstrap only decides when to call it. The venv goes on fast local
disk and reuses the image's CUDA torch (`--system-site-packages`), and a wheel is reinstalled only
when its bytes change, so a second bootstrap installs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweepctl import __version__
from sweepctl.errors import SweepctlError
from sweepctl.pod.checklist import Check, last_line, run_command
from sweepctl.pod.gpus import Gpu

WHEEL_MARKER = ".sweepctl-install"  # in the venv: what was installed there (wheel sha256 or version)
REPRODUCIBLE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip entry can carry

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


def probe_torch(python: str | Path) -> dict[str, Any]:
    """What torch `python` has (version, CUDA build, cuda available), without importing it here."""
    result = run_command([str(python), "-c", TORCH_PROBE], timeout=180)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"torch": None, "error": last_line(result.stderr) or f"exit {result.returncode}"}


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
        result = run_command(argv, timeout=600, env={"SOURCE_DATE_EPOCH": REPRODUCIBLE_EPOCH})
        wheels = sorted(Path(tmp).glob("sweepctl-*.whl"))
        if result.returncode != 0 or not wheels:
            raise SweepctlError(f"cannot build the sweepctl wheel: {last_line(result.stderr)}", where=str(source),
                                hint=f"run `{shlex.join(argv)}` to see the whole error")
        target = out_dir / wheels[0].name
        shutil.copy2(wheels[0], target)
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _installed_version(python: Path) -> str | None:
    result = run_command([str(python), "-c", "import importlib.metadata as m; print(m.version('sweepctl'))"],
                         timeout=60)
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
        result = run_command(argv, timeout=300)
        if result.returncode != 0:
            raise SweepctlError(f"cannot create the venv: {last_line(result.stderr)}", where=str(venv),
                                hint="choose another --venv (fast local disk) or check the Python install")
        changes.append(f"created venv {venv}" + (f" with the image's torch {info['torch']}" if system_site else ""))

    marker = venv / WHEEL_MARKER
    installed = _installed_version(python)
    if wheel is not None:
        # A wheel is exact bytes (the laptop's build): reinstall whenever they differ, even at the
        # same version number, which a developer's rebuilt wheel usually keeps.
        wanted, spec = f"wheel sha256 {file_sha256(wheel)}", str(wheel)
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
            result = run_command(argv, timeout=1800)
            if result.returncode != 0:
                raise SweepctlError(f"pip could not install {spec}: {last_line(result.stderr)}", where=str(venv),
                                    hint=f"run `{shlex.join(argv)}` to see the whole error")
        marker.write_text(wanted + "\n")
        installed = _installed_version(python)
        changes.append(f"installed sweepctl {installed} from {spec}")
    return Check("sweepctl venv", True, f"sweepctl {installed} in {venv}", changes)
