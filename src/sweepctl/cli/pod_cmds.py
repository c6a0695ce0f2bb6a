"""bootstrap, data fineweb, data prepare: get a pod (or a laptop) ready to train.

Thin: parse flags, call sweepctl.data / sweepctl.bootstrap, render a table or JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from sweepctl.console import console, err_console

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
                                      help="Download to local disk first, then move [default: when the data "
                                      "dir is a FUSE/network mount]."),
    as_json: bool = typer.Option(False, "--json", help="Print what was found and done as JSON."),
) -> None:
    """Download FineWeb10B GPT-2 shards; files already present and valid are kept, corrupt ones fetched again."""
    from sweepctl.data import fineweb_download

    report = fineweb_download(_data_dir(data_dir), train_shards, repo_id=repo, revision=revision, stage=stage,
                              progress=not as_json)
    if as_json:
        typer.echo(json.dumps(asdict(report) | {"changed": report.changed}, indent=2))
        return
    table = Table(title=f"{report.data_dir}{' (staged via local disk)' if report.staged else ''}",
                  title_justify="left")
    table.add_column("file")
    table.add_column("status")
    for name in report.files:
        if name in report.refetched:
            status = f"downloaded again (was: {report.refetched[name]})"
        else:
            status = "downloaded" if name in report.downloaded else "present, valid"
        table.add_row(name, status)
    console.print(table)
    if not report.changed:
        console.print(f"nothing to download: all {len(report.files)} files present and valid")


@data_app.command("prepare")
def prepare(
    inputs: list[Path] = typer.Argument(..., help="Text files or dirs (.txt .md .text .jsonl under dirs).",
                                        show_default=False),
    out: Path = typer.Option(..., "--out", help="Directory for the shards."),
    shard_tokens: int = typer.Option(100_000_000, "--shard-tokens", min=1, help="Tokens per train shard."),
    val_tokens: int | None = typer.Option(None, "--val-tokens", min=1, show_default=False,
                                          help="Tokens in the val shard [default: 10%, at most one shard]."),
    force: bool = typer.Option(False, "--force", help="Replace shards already in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the shards written as JSON."),
) -> None:
    """GPT-2-tokenize text into FineWeb-format shards (val shard first), offline."""
    from sweepctl.data import prepare_text

    def on_file(path: Path) -> None:
        if not as_json:
            err_console.print(f"tokenizing {path}", markup=False, highlight=False, style="dim")

    report = prepare_text(inputs, out, shard_tokens=shard_tokens, val_tokens=val_tokens, force=force,
                          on_file=on_file)
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
        return
    table = Table(title=f"{report.out_dir}: {report.documents} documents, {report.tokens:,} tokens",
                  title_justify="left")
    table.add_column("shard")
    table.add_column("tokens", justify="right")
    for name, n in report.shards:
        table.add_row(name, f"{n:,}")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
