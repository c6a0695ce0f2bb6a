"""`sweepctl bootstrap` end to end with a temp HOME and a temp "volume", plus its single steps."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cli import run_cli
from hub_server import FakeHub, shard_bytes
from sweepctl.pod.bootstrap import (
    ensure_shell_env,
    ensure_tools,
    gpu_check,
    wandb_check,
    write_project_file,
)
from sweepctl.pod.data import FINEWEB_REPO, fineweb_file_names
from sweepctl.pod.gpus import query_gpus
from sweepctl.pod.python_env import torch_check

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PROVIDER_KEYS = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIProvider provider@injected\n"
WANDB_SECRET = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def pod(tmp_path, monkeypatch):
    """HOME with a provider-injected authorized_keys, a volume with persisted keys, a project file."""
    home, volume = tmp_path / "home", tmp_path / "mnt"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "authorized_keys").write_bytes(PROVIDER_KEYS)
    (volume / ".ssh").mkdir(parents=True)
    (volume / ".ssh" / "id_ed25519").write_text("private")
    (volume / ".ssh" / "id_ed25519").chmod(0o644)
    (volume / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA not-for-this-pod\n")
    (home / ".netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {WANDB_SECRET}\n")
    for key, value in {"HOME": home, "SWEEPCTL_VOLUME": volume,
                       "SWEEPCTL_PROJECT_FILE": volume / "sweepctl.toml"}.items():
        monkeypatch.setenv(key, str(value))
    for key in ("SWEEPCTL_OUT_ROOT", "SWEEPCTL_DATA_DIR", "FINEWEB10B_LOCAL_DIR", "SWEEPCTL_VENV", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def hub(tmp_path, monkeypatch):
    files = {name: shard_bytes([i, i + 1, 50256]) for i, name in enumerate(fineweb_file_names(2))}
    server = FakeHub({FINEWEB_REPO: files}).start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    yield server
    server.stop()


def test_bootstrap_twice_second_run_changes_nothing(pod, hub, capsys):
    args = ["bootstrap", "--no-venv", "--no-apt", "--train-shards", "1",
            "--out-root", str(pod / "mnt/outputs"), "--data-dir", str(pod / "mnt/data/fineweb10B")]

    first = run_cli(capsys, *args, "--json")

    assert first.code == 0, first.err
    report = json.loads(first.out)
    assert report["changed"] is True and report["ok"] is True
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["data shards"]["changes"] == ["downloaded fineweb_val_000000.bin",
                                                "downloaded fineweb_train_000001.bin"]
    assert checks["W&B credentials"]["detail"] == "present (~/.netrc, api.wandb.ai)"
    assert (pod / "home/.ssh/authorized_keys").read_bytes() == PROVIDER_KEYS
    assert stat.S_IMODE((pod / "home/.ssh/id_ed25519").stat().st_mode) == 0o600
    project = tomllib.loads((pod / "mnt/sweepctl.toml").read_text())
    assert project["out_root"] == str(pod / "mnt/outputs")
    assert project["data_dir"] == str(pod / "mnt/data/fineweb10B")
    assert "remote_bin" in project and "venv" not in project
    assert WANDB_SECRET not in first.out + first.err

    downloads = len(hub.downloaded())
    second = run_cli(capsys, *args)

    assert second.code == 0, second.err
    assert "no changes: everything was already in place" in second.out
    assert len(hub.downloaded()) == downloads
    assert (pod / "home/.ssh/authorized_keys").read_bytes() == PROVIDER_KEYS
    assert WANDB_SECRET not in second.out + second.err
    for row in ("GPUs", "CUDA torch", "tmux, git, rsync", "data shards", "free disk", "W&B credentials",
                "SSH keys"):
        assert row in second.out


def test_later_commands_read_the_paths_from_the_project_file(pod, capsys):
    out_root = pod / "mnt/pod_artifacts/outputs"
    result = run_cli(capsys, "bootstrap", "--no-venv", "--no-apt", "--out-root", str(out_root),
                     "--data-dir", str(pod / "mnt/data"), "--json")
    assert result.code == 0, result.err

    from sweepctl.settings import load_settings

    settings = load_settings()
    assert settings.out_root == str(out_root)
    assert settings.data_dir == str(pod / "mnt/data")
    assert out_root.is_dir()


def test_missing_tmux_fails_with_the_command_to_run(pod, capsys, monkeypatch):
    bin_dir = pod / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no tmux, git, rsync, nvidia-smi

    check = ensure_tools(allow_apt=False)

    assert check.ok is False
    assert check.detail == "missing: tmux git rsync (--no-apt)"
    assert check.hint == ("run: apt-get install -y tmux git rsync" if os.geteuid() == 0 else
                          "run: sudo apt-get install -y tmux git rsync")


def test_only_git_missing_is_a_warning(pod, monkeypatch):
    import shutil

    bin_dir = pod / "bin"
    bin_dir.mkdir()
    for tool in ("tmux", "rsync"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))

    check = ensure_tools(allow_apt=False)

    assert check.ok is None and check.detail == "missing: git (--no-apt)"


def test_gpus_from_the_nvidia_smi_query(monkeypatch):
    fake_bin = Path(__file__).parent / "fake_bin"  # the stand-in refuses any query but --query-gpu
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NVIDIA_SMI_ROWS", ";".join(f"{i}, NVIDIA H100 80GB HBM3, 0, 1, 81559" for i in range(8)))

    query = query_gpus()
    check = gpu_check(query)

    assert check.ok is True and check.detail == "8: 8 x NVIDIA H100 80GB HBM3 80 GiB"
    # GPUs present but a CPU-only torch: the trainer would silently run on CPU, so it is a failure.
    cpu_torch = torch_check({"torch": "2.13.0+cpu", "cuda": None, "available": False}, query.gpus, "python")
    assert cpu_torch.ok is False and "CPU-only build" in cpu_torch.detail


def test_no_nvidia_smi_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    check = gpu_check(query_gpus())
    assert check.ok is None and "nvidia-smi not found" in check.detail


def test_cuda_torch_row():
    good = torch_check({"torch": "2.5.1+cu124", "cuda": "12.4", "available": True, "devices": 8}, [], "py")
    assert good.ok is True and good.detail == "torch 2.5.1+cu124, CUDA 12.4, 8 device(s) visible"
    assert torch_check({"torch": None}, [], "/usr/bin/python3").ok is False
    assert torch_check({"torch": "2.13.0+cpu", "cuda": None, "available": False}, [], "py").ok is None


def test_wandb_presence_only_and_netrc_made_private(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", WANDB_SECRET)
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine api.wandb.ai login user password {WANDB_SECRET}\n")
    netrc.chmod(0o644)

    check = wandb_check(tmp_path)

    assert check.ok is True
    assert check.detail == "present (~/.netrc, api.wandb.ai); WANDB_API_KEY in the environment is ignored"
    assert WANDB_SECRET not in repr(check)
    assert stat.S_IMODE(netrc.stat().st_mode) == 0o600
    assert wandb_check(tmp_path / "nohome").ok is None


def test_bashrc_block_written_once_and_rewritten_in_place(tmp_path):
    (tmp_path / ".bashrc").write_text("alias ll='ls -l'")
    first = ensure_shell_env(tmp_path, tmp_path / "mnt/hf", tmp_path / "venv/bin")
    again = ensure_shell_env(tmp_path, tmp_path / "mnt/hf", tmp_path / "venv/bin")
    moved = ensure_shell_env(tmp_path, tmp_path / "mnt/hf2", None)

    text = (tmp_path / ".bashrc").read_text()
    assert first.changes and not again.changes and moved.changes
    assert text.startswith("alias ll='ls -l'\n# >>> sweepctl bootstrap >>>\n")
    assert text.count(">>> sweepctl bootstrap >>>") == 1
    assert f"export HF_HOME={tmp_path}/mnt/hf2\n" in text and "PATH" not in text
    assert (tmp_path / "mnt/hf2").is_dir()


def test_project_file_merge_keeps_comments_and_tables(tmp_path):
    path = tmp_path / "sweepctl.toml"
    path.write_text('# my pod\nhost = "pod"\nout_root = "/old"\n\n[extra]\nout_root = "table value"\n')

    assert write_project_file(path, {"out_root": "/mnt/o", "venv": "/opt/v"}) is True
    assert write_project_file(path, {"out_root": "/mnt/o", "venv": "/opt/v"}) is False

    text = path.read_text()
    assert text.startswith('# my pod\nhost = "pod"\nout_root = "/mnt/o"\nvenv = "/opt/v"\n')
    data = tomllib.loads(text)
    assert data["extra"] == {"out_root": "table value"}
    assert data["host"] == "pod"


def test_project_file_values_with_quotes_round_trip(tmp_path):
    path = tmp_path / "p.toml"
    write_project_file(path, {"data_dir": 'C:\\data "x"', "n": 3, "flag": True})
    assert tomllib.loads(path.read_text()) == {"data_dir": 'C:\\data "x"', "n": 3, "flag": True}


def test_bootstrap_help_lists_its_flags(capsys):
    result = run_cli(capsys, "bootstrap", "--help")
    assert result.code == 0
    for flag in ("--ssh-dir", "--train-shards", "--data-dir", "--out-root", "--venv", "--no-venv", "--wheel",
                 "--no-apt", "--json"):
        assert flag in result.out
