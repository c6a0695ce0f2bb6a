"""bootstrap, data fineweb, data prepare: get a pod (or a laptop) ready to train.

Thin: parse flags, call sweepctl.pod.data / sweepctl.pod.bootstrap, render a table or JSON.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from sweepctl.cli import remote_opts
from sweepctl.cli.remote_opts import Pods
from sweepctl.cli.render.pod import render_checklist, render_downloaded, render_prepared
from sweepctl.console import err_console
from sweepctl.errors import SweepctlError

data_app = typer.Typer(help="FineWeb token shards: download them, or make them from your own text.",
                       no_args_is_help=True)


def _data_dir(flag: str | None) -> str:
    from sweepctl.settings import load_settings

    return load_settings(data_dir=flag).data_dir


@data_app.command("fineweb")
def fineweb(
    train_shards: int = typer.Option(..., "--train-shards", min=0,
                                     help="Train shards to have (fineweb_train_000001..N); the val shard always."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Where the shards go "
                                        "(default: SWEEPCTL_DATA_DIR, FINEWEB10B_LOCAL_DIR, project file)."),
    repo: str = typer.Option("kjj0/fineweb10B-gpt2", "--repo", help="Hugging Face dataset repo."),
    revision: str = typer.Option("main", "--revision", help="Branch, tag or commit of the dataset repo."),
    stage: bool | None = typer.Option(None, "--stage/--no-stage", show_default=False,
                                      help="Download to local disk first, then move \\[default: when the data "
                                      "dir is a FUSE/network mount]."),
    as_json: bool = typer.Option(False, "--json", help="Print what was found and done as JSON."),
) -> None:
    """Download FineWeb10B GPT-2 shards; files already present and valid are kept, corrupt ones fetched again."""
    from sweepctl.pod.data import fineweb_download

    report = fineweb_download(_data_dir(data_dir), train_shards, repo_id=repo, revision=revision, stage=stage,
                              progress=not as_json)
    if as_json:
        typer.echo(json.dumps(asdict(report) | {"changed": report.changed}, indent=2))
        return
    render_downloaded(report)


@data_app.command("prepare")
def prepare(
    inputs: list[Path] = typer.Argument(..., help="Text files or dirs (.txt .md .text .jsonl under dirs).",
                                        show_default=False),
    out: Path = typer.Option(..., "--out", help="Directory for the shards."),
    shard_tokens: int = typer.Option(100_000_000, "--shard-tokens", min=1, help="Tokens per train shard."),
    val_tokens: int | None = typer.Option(None, "--val-tokens", min=1, show_default=False,
                                          help="Tokens in the val shard \\[default: 10%, at most one shard]."),
    force: bool = typer.Option(False, "--force", help="Replace shards already in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the shards written as JSON."),
) -> None:
    """GPT-2-tokenize text into FineWeb-format shards (val shard first), offline."""
    from sweepctl.pod.data import prepare_text

    def on_file(path: Path) -> None:
        if not as_json:
            err_console.print(f"tokenizing {path}", markup=False, highlight=False, style="dim")

    report = prepare_text(inputs, out, shard_tokens=shard_tokens, val_tokens=val_tokens, force=force,
                          on_file=on_file)
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
        return
    render_prepared(report)


def bootstrap(
    ssh_dir: Path | None = typer.Option(None, "--ssh-dir", show_default=False,
                                        help="Persisted SSH keys to copy in \\[default: /mnt/.ssh or /mnt/ssh]."),
    train_shards: int = typer.Option(0, "--train-shards", min=0, help="FineWeb train shards to download (0: none)."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Where the FineWeb shards go."),
    out_root: str | None = typer.Option(None, "--out-root", help="Where run directories go."),
    venv: Path | None = typer.Option(None, "--venv", show_default=False,
                                     help="The venv to create/use \\[default: /opt/sweepctl-venv as root, "
                                     "else ~/.local/share/sweepctl/venv; or the project file's]."),
    no_venv: bool = typer.Option(False, "--no-venv", help="Use the running Python; no venv."),
    wheel: Path | None = typer.Option(None, "--wheel", exists=True, dir_okay=False, show_default=False,
                                      help="Install this sweepctl wheel into the venv \\[default: this version]."),
    no_apt: bool = typer.Option(False, "--no-apt", help="Never run apt-get; say what to install instead."),
    as_json: bool = typer.Option(False, "--json", help="Print the checklist as JSON."),
    python: str = typer.Option("python3", "--python", metavar="PATH",
                               help="With --host: the pod's Python that creates the venv."),
    host: list[str] | None = remote_opts.HOST,
    remote_bin: str | None = remote_opts.REMOTE_BIN,
    accept_new_host_key: bool = remote_opts.ACCEPT_NEW_HOST_KEY,
) -> None:
    """Make this pod ready for `launch`: SSH keys, venv, tmux, data, project file.

    authorized_keys is never touched. Safe to run again: a second run changes nothing. With
    --host: install this machine's sweepctl on the pod first, then run it there."""
    from sweepctl import settings as st
    from sweepctl.pod import bootstrap as bs

    if pods := remote_opts.resolve(host, remote_bin, accept_new_host_key):
        if no_venv:
            raise SweepctlError("--no-venv is for a bootstrap run on the pod itself",
                                hint="with --host, sweepctl goes into a venv on the pod (--venv DIR picks it)")
        # --venv and the wheel are the laptop's to pass (bootstrap_remote); --json is asked for there.
        return bootstrap_on_pods(pods, remote_opts.forwarded(exclude=("venv", "wheel", "as_json", "python")),
                                     venv=venv, wheel=wheel, python=python, as_json=as_json)

    home = Path.home()
    volume = st.volume()
    settings = st.load_settings(out_root=out_root, data_dir=data_dir)
    chosen_venv = None if no_venv else (venv or (Path(settings.venv) if settings.venv else bs.default_venv(home)))
    opts = bs.BootstrapOptions(
        home=home, volume=volume, project_file=bs.project_file_path(volume, st.on_pod_volume()),
        out_root=Path(settings.out_root).absolute(), data_dir=Path(settings.data_dir).absolute(),
        ssh_dir=ssh_dir or bs.default_ssh_dir(volume), venv=chosen_venv and chosen_venv.absolute(),
        wheel=wheel and wheel.absolute(), train_shards=train_shards, allow_apt=not no_apt, progress=not as_json)

    def on_step(name: str) -> None:
        if not as_json:
            err_console.print(f"bootstrap: {name}", markup=False, highlight=False, style="dim")

    report = bs.run_bootstrap(opts, on_step)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        render_checklist(report.to_json())
    if report.failed:
        first = report.failed[0]
        raise SweepctlError(f"bootstrap incomplete: {', '.join(c.name for c in report.failed)}", hint=first.hint)


def bootstrap_on_pods(pods: Pods, args: list[str], *, venv: Path | None, wheel: Path | None, python: str,
              as_json: bool) -> None:
    """Install this laptop's sweepctl (as a wheel) on each pod, then run its bootstrap there."""
    from sweepctl.pod.bootstrap import bootstrap_remote, build_wheel

    with tempfile.TemporaryDirectory(prefix="sweepctl-wheel-") as tmp:
        built = wheel or build_wheel(Path(tmp))
        answers = pods.each(lambda h, t: bootstrap_remote(t, built, args, venv=str(venv) if venv else None,
                                                          python=python))
    if as_json:
        out = answers[0].value if pods.single else {a.host: a.value for a in answers}
        typer.echo(json.dumps(out, indent=2))
    failed: list[remote_opts.Answer[Any]] = []
    for a in answers:
        if a.value is None:
            failed.append(a)
            continue
        if not as_json:
            render_checklist(a.value, host=None if pods.single else a.host)
        bad = [c["name"] for c in a.value["checks"] if c["ok"] is False]
        if bad or a.value.get("remote_error"):
            hint = next((c["hint"] for c in a.value["checks"] if c["ok"] is False and c["hint"]), None)
            failed.append(remote_opts.Answer(a.host, error=SweepctlError(
                f"bootstrap incomplete: {', '.join(bad) or a.value['remote_error']}", where=a.host, hint=hint)))
    remote_opts.raise_if_failed(failed)


def register(app: typer.Typer) -> None:
    app.command("bootstrap")(bootstrap)
    app.add_typer(data_app, name="data")
