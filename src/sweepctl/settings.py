"""Layered settings: flags > environment > project file > defaults.

    SWEEPCTL_OUT_ROOT, SWEEPCTL_DATA_DIR (or FINEWEB10B_LOCAL_DIR), SWEEPCTL_HOST, ...
    project file: $SWEEPCTL_PROJECT_FILE, else ./sweepctl.toml, else /mnt/sweepctl.toml (on a pod)

`sweepctl config` prints every effective value with the layer it came from, so nobody has to
guess which of the four won.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sweepctl.errors import SweepctlError

PROJECT_FILE_NAME = "sweepctl.toml"
DEFAULT_REMOTE_BIN = "/opt/sweepctl-venv/bin/sweepctl"  # where `bootstrap` installs on a pod


def volume() -> Path:
    """The pod's persistent volume (`/mnt`); a setting so tests can use a temp dir."""
    return Path(os.environ.get("SWEEPCTL_VOLUME", "/mnt"))


def on_pod_volume() -> bool:
    v = volume()
    return v.is_dir() and (os.path.ismount(v) or (v / PROJECT_FILE_NAME).exists()
                           or (v / "pod_artifacts").is_dir())


def _default_out_root() -> str:
    # The run-artifact contract's path on a pod; a plain folder elsewhere (a laptop, CI).
    return str(volume() / "pod_artifacts" / "outputs") if on_pod_volume() else str(Path("outputs").absolute())


def _default_data_dir() -> str:
    return str(volume() / "data" / "fineweb10B") if on_pod_volume() else str(Path("data/fineweb10B").absolute())


def project_file() -> Path | None:
    """The project file in effect, if any."""
    explicit = os.environ.get("SWEEPCTL_PROJECT_FILE")
    if explicit:
        return Path(explicit)
    for candidate in (Path.cwd() / PROJECT_FILE_NAME, volume() / PROJECT_FILE_NAME):
        if candidate.is_file():
            return candidate
    return None


class Settings(BaseSettings):
    """Where things live and how to reach the pod. Field comments are shown by `sweepctl config`."""

    model_config = SettingsConfigDict(env_prefix="SWEEPCTL_", extra="ignore", populate_by_name=True)

    out_root: str = Field(default_factory=_default_out_root, description="run directories live here")
    data_dir: str = Field(
        default_factory=_default_data_dir,
        validation_alias=AliasChoices("data_dir", "SWEEPCTL_DATA_DIR", "FINEWEB10B_LOCAL_DIR"),
        description="FineWeb token shards (fineweb_train_*.bin, fineweb_val_*.bin)",
    )
    host: str | None = Field(None, description="ssh alias of the pod; unset = this machine")
    hosts: list[str] = Field(default_factory=list, description="several pods for one sweep")
    remote_bin: str = Field(DEFAULT_REMOTE_BIN, description="sweepctl executable on the pod")
    venv: str | None = Field(None, description="the pod's virtualenv (written by bootstrap)")
    tmux_socket: str | None = Field(None, description="tmux server socket path; unset = the default server")
    stale_after_s: float = Field(120.0, gt=0, description="a heartbeat older than this means the run is dead")
    notify_url: SecretStr | None = Field(None, description="webhook (Slack, Discord) told of failed runs and the "
                                                           "sweep's end, by the pod; a secret")
    runs_per_gpu: int = Field(1, ge=1, description="runs sharing one GPU (slots per GPU); > 1 claims rows (dynamic)")
    compile_cache: str | None = Field(None, description="torch.compile's cache, shared by the sweep's runs; "
                                                        "unset = <out_root>/.cache/torch-compile, 'off' = none")
    gpu_hour_price: float | None = Field(None, ge=0, description="price of one GPU-hour, for status's cost line")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, *_file_sources(settings_cls)


def _file_sources(settings_cls: type[BaseSettings]) -> tuple[PydanticBaseSettingsSource, ...]:
    path = project_file()
    return (TomlConfigSettingsSource(settings_cls, toml_file=path),) if path else ()


COMPILE_CACHE_DEFAULT = Path(".cache") / "torch-compile"  # under the out-root, on the pod's volume


def compile_cache_dir(settings: Settings, out_root: Path) -> Path | None:
    """TORCHINDUCTOR_CACHE_DIR for a sweep's trainers: on the volume next to the outputs, so the second
    run of a preset, and every run after a pod is replaced, starts from a warm cache. None: 'off'."""
    if settings.compile_cache == "off":
        return None
    if settings.compile_cache:
        return Path(settings.compile_cache).expanduser().absolute()
    return out_root / COMPILE_CACHE_DEFAULT


def load_settings(**flags: Any) -> Settings:
    """Settings with command-line flags on top; flags that are None were not given."""
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as e:
        err = e.errors()[0]
        raise SweepctlError(
            f"bad setting {'.'.join(map(str, err['loc']))}: {err['msg']}",
            where=str(project_file() or "environment"),
            hint="fix the value in the project file or the SWEEPCTL_* environment variable",
        ) from None


def project_file_value(name: str) -> Any:
    """A setting as the project file gives it (None: no file, or not set there)."""
    path = project_file()
    return TomlConfigSettingsSource(Settings, toml_file=path)().get(name) if path else None


def explain_settings(**flags: Any) -> list[tuple[str, Any, str]]:
    """(name, effective value, source) for every setting; source is flag/env/project file/default."""
    settings = load_settings(**flags)
    given = {k for k, v in flags.items() if v is not None}
    env = EnvSettingsSource(Settings)()
    path = project_file()
    from_file = TomlConfigSettingsSource(Settings, toml_file=path)() if path else {}
    rows = []
    for name in Settings.model_fields:
        if name in given:
            source = "flag"
        elif name in env:
            source = f"env {_env_name(name)}"
        elif name in from_file:
            source = f"project file {path}"
        else:
            source = "default"
        rows.append((name, getattr(settings, name), source))
    return rows


def _env_name(name: str) -> str:
    if name == "data_dir" and "SWEEPCTL_DATA_DIR" not in os.environ and "FINEWEB10B_LOCAL_DIR" in os.environ:
        return "FINEWEB10B_LOCAL_DIR"
    return f"SWEEPCTL_{name.upper()}"
