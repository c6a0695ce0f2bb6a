"""The README is the front door: every command and flag it shows exists, its example CSV
validates, and its quick start is the two commands CI runs the second of.

Commands are read from the README itself (fenced code blocks, and inline code that starts with
`sweepctl`), so a README edit is checked without editing this file."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main

from cli import run_cli
from sweepctl.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
PROMPT = re.compile(r"^\w+\$\s+")  # `laptop$ `, `pod$ ` as in the README's examples


@dataclass(frozen=True)
class Shown:
    """One sweepctl command line the README shows: the words after `sweepctl`, and where."""

    words: tuple[str, ...]
    where: str


def readme_text() -> str:
    return README.read_text()


def code_blocks(lang: str | None = None) -> list[tuple[str, str]]:
    """(language, body) of each fenced block, outside-in order; only `lang` when given."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(readme_text()) if lang is None or m.group(1) == lang]


def shown_commands() -> list[Shown]:
    text = readme_text()
    found: list[Shown] = []
    for lang, body in code_blocks():
        if lang not in ("bash", "sh", "console", ""):
            continue
        for n, line in enumerate(body.splitlines(), 1):
            found += _commands_in(PROMPT.sub("", line.strip()), f"code block line {n}: {line.strip()}")
    prose = FENCE.sub("", text)
    for m in INLINE.finditer(prose):
        span = m.group(1)
        if span.startswith("sweepctl "):
            found += _commands_in(span, f"inline `{span}`")
    return found


def _commands_in(line: str, where: str) -> list[Shown]:
    """Every `sweepctl ...` in a shell line (also `.venv/bin/sweepctl`, after `&&`, `;` or `|`)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    out, current = [], None
    for w in words:
        if w in ("&&", "||", ";", "|"):
            current = None
        elif current is None and (w == "sweepctl" or w.endswith("/sweepctl")):
            current = []
            out.append((current, where))
        elif current is not None:
            current.append(w)
    return [Shown(tuple(ws), wh) for ws, wh in out]


def resolve(words: tuple[str, ...]) -> tuple[list[str], object, list[str]]:
    """(command path, click command, flags used): walk subcommands, then collect `-x`/`--xx` words."""
    command = typer.main.get_command(app)
    path: list[str] = []
    flags: list[str] = []
    placeholder = False
    for w in words:
        if w.startswith("-"):
            flags.append(w.split("=", 1)[0])
            continue
        subcommands = getattr(command, "commands", None)
        if subcommands is not None and not placeholder:
            if w in subcommands:
                command = subcommands[w]
                path.append(w)
                continue
            assert w.isupper() or w == "...", f"`sweepctl {' '.join([*path, w])}`: no such command"
            placeholder = True  # `sweepctl COMMAND --help`, `sweepctl --debug ...`: any command
    return path, (None if placeholder else command), flags


def flag_names(command: object) -> set[str]:
    names = {"--help"}
    for p in getattr(command, "params", []):
        names.update(getattr(p, "opts", []))
        names.update(getattr(p, "secondary_opts", []))
    return names


def test_the_readme_shows_commands_to_check() -> None:
    shown = shown_commands()
    paths = {tuple(resolve(s.words)[0]) for s in shown}
    for expected in [("demo",), ("bootstrap",), ("launch",), ("status",), ("rerun",), ("report",), ("validate",),
                     ("train",), ("data", "prepare")]:
        assert expected in paths, expected


@pytest.mark.parametrize("shown", shown_commands(), ids=lambda s: " ".join(s.words)[:60])
def test_every_command_and_flag_the_readme_shows_exists(shown: Shown, capsys: pytest.CaptureFixture[str]) -> None:
    path, command, flags = resolve(shown.words)
    root_flags = flag_names(typer.main.get_command(app))
    if command is None:  # a placeholder command: only flags every command has, or the root's
        assert set(flags) <= {"--help"} | root_flags, shown.where
        return
    known = flag_names(command) | (root_flags if not path else set())
    missing = [f for f in flags if f not in known]
    assert not missing, f"{shown.where}: `sweepctl {' '.join(path)}` has no {', '.join(missing)}"
    # and its --help lists them, which is what a reader will look at
    r = run_cli(capsys, *path, "--help")
    assert r.code == 0, r.err
    for f in flags:
        assert f in r.out, f"{shown.where}: `sweepctl {' '.join(path)} --help` does not list {f}"


def test_every_flag_named_alone_in_the_prose_belongs_to_some_command() -> None:
    everything: set[str] = set()
    stack = [typer.main.get_command(app)]
    while stack:
        c = stack.pop()
        everything |= flag_names(c)
        stack.extend(getattr(c, "commands", {}).values())
    prose = FENCE.sub("", readme_text())
    named = {m.group(1).split()[0].split("=")[0] for m in INLINE.finditer(prose) if m.group(1).startswith("--")}
    assert named and not named - everything, named - everything


def test_the_readme_csv_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = code_blocks("csv")
    assert blocks, "the README shows a sweep CSV"
    for i, (_, body) in enumerate(blocks):
        path = tmp_path / f"readme-{i}.csv"
        path.write_text(body)
        r = run_cli(capsys, "validate", str(path))
        assert r.code == 0, r.err
        assert r.err == ""  # not even a warning: an example shows no mistakes


def test_the_quick_start_is_exactly_two_commands_the_second_being_what_ci_runs() -> None:
    section = readme_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = [body for _, body in FENCE.findall(section)]
    assert len(blocks) == 1
    lines = [line for line in blocks[0].splitlines() if line.strip()]
    assert lines == ["scripts/demo", "scripts/test"]
    for line in lines:
        script = ROOT / line
        assert script.is_file() and os.access(script, os.X_OK), line
    assert "scripts/setup-env" in (ROOT / "scripts/demo").read_text()
    assert "sweepctl demo" in (ROOT / "scripts/demo").read_text()
    assert "scripts/test" in (ROOT / ".ci/run").read_text()


def test_files_the_readme_points_at_exist() -> None:
    text = readme_text()
    for rel in sorted(set(re.findall(r"\b((?:examples|sweeps|bench|scripts|docs)/[\w./-]+\.?\w*)", text))):
        assert (ROOT / rel.rstrip(".")).exists(), rel


def python_commands() -> list[tuple[list[str], list[str], str]]:
    """(program argv, flags used, the line) for each `python -m MODULE ...`/`python FILE.py ...` shown."""
    found = []
    for lang, body in code_blocks():
        if lang not in ("bash", "sh", "console", ""):
            continue
        for line in body.splitlines():
            words = shlex.split(PROMPT.sub("", line.strip()), comments=True)
            if not words or words[0] not in ("python", "python3"):
                continue
            take = 3 if words[1:2] == ["-m"] else 2
            found.append((words[1:take], [w.split("=", 1)[0] for w in words[take:] if w.startswith("-")], line))
    return found


@pytest.mark.parametrize(("program", "flags", "line"), python_commands(), ids=lambda v: str(v)[:50])
def test_every_python_program_and_flag_the_readme_shows_exists(program: list[str], flags: list[str],
                                                                line: str) -> None:
    out = subprocess.run([sys.executable, *program, "--help"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, f"{line}: {out.stderr[-500:]}"
    for f in flags:
        assert re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", out.stdout), f"{line}: --help does not list {f}"


def test_every_test_the_docs_name_exists() -> None:
    """docs/postmortem.md (and any page) names the tests that prove a claim: each must exist, so a
    renamed or deleted test cannot leave a page pointing at nothing."""
    named = set()
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        named |= {(page.name, f, t) for f, t in re.findall(r"(tests/test_\w+\.py)::(test_\w+)", page.read_text())}
    assert len(named) >= 20  # docs/postmortem.md alone names more
    missing = [f"{page}: {f}::{t}" for page, f, t in sorted(named)
               if not (ROOT / f).exists() or not re.search(rf"^def {t}\(", (ROOT / f).read_text(), re.M)]
    assert not missing
