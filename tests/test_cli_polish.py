"""The CLI's manners: --version, shell completion, exit codes (0 ok, 1 user error, 2 refused by
the run table, 3 remote), NO_COLOR, and errors as one red line unless --debug.

Most checks run the installed `sweepctl` program in a subprocess, because what is under test is
what a terminal sees: escapes, tracebacks, the exit status of the process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from cli import run_cli
from sweep_helpers import Workspace
from sweepctl.state import runs

pytest_plugins = ["sweep_fixtures"]

SWEEPCTL = shutil.which("sweepctl") or str(Path(sys.executable).with_name("sweepctl"))
ESC = "\x1b["


def sweepctl(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "SWEEPCTL_DEBUG")}
    full_env.update(env or {})
    return subprocess.run([SWEEPCTL, *args], capture_output=True, text=True, env=full_env, cwd=cwd,
                          timeout=timeout)


def bad_csv(tmp_path: Path) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text("run_id,config,seed,overrides,notes\nr1,base,1337,n_layr=2,\n")
    return path


# --------------------------------------------------------------------------- version, completion


def test_version_is_the_installed_package_version() -> None:
    r = sweepctl("--version")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"sweepctl {version('sweepctl')}\n", "")


def test_bash_completion_completes_commands_and_flags(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # Typer guesses the shell from the process tree, which depends on how pytest was started (it
    # found none under a job runner); its own switch makes the options take the shell's name.
    shell_env = {"HOME": str(home), "SHELL": "/bin/bash", "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    r = sweepctl("--install-completion", "bash", env=shell_env)
    assert r.returncode == 0, r.stderr
    script = home / ".bash_completions" / "sweepctl.sh"
    assert script.is_file() and str(script) in (home / ".bashrc").read_text()

    def complete(words: str) -> list[str]:
        # What bash does on <TAB>: the completion function fills COMPREPLY from the words so far.
        program = (f"source {script}; COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); "
                   "_sweepctl_completion sweepctl; printf '%s\\n' \"${COMPREPLY[@]}\"")
        env = {**os.environ, "PATH": f"{Path(SWEEPCTL).parent}{os.pathsep}{os.environ['PATH']}"}
        out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert complete("sweepctl lau") == ["launch"]
    assert "--shards" in complete("sweepctl launch x.csv --sh")
    assert complete("sweepctl demo --ke") == ["--keep"]

    shown = sweepctl("--show-completion", "bash", env=shell_env)
    assert shown.returncode == 0 and "_SWEEPCTL_COMPLETE=complete_bash" in shown.stdout


# --------------------------------------------------------------------------- exit codes


def test_bad_input_exits_1_with_one_red_line_per_problem_and_no_traceback(tmp_path: Path) -> None:
    r = sweepctl("validate", str(bad_csv(tmp_path)), env={"FORCE_COLOR": "1"})
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"{ESC}1;31merror: {tmp_path / 'bad.csv'}:2:") and "n_layr" in lines[0]
    assert "n_layer" in lines[0]  # the "did you mean" that makes the line useful
    assert "Traceback" not in r.stderr and len(lines) == 2  # the problem, then the count


@pytest.mark.parametrize(("args", "message"), [
    (("nosuch",), "error: No such command 'nosuch'. — see `sweepctl --help`"),
    (("plan", "x.csv"), "error: Missing option '--shards'. — see `sweepctl plan --help`"),
])
def test_a_usage_error_is_a_user_error(args: tuple[str, ...], message: str) -> None:
    r = sweepctl(*args)
    assert (r.returncode, r.stderr.strip()) == (1, message)


def test_a_bare_group_shows_its_help_and_exits_0() -> None:
    for args in ((), ("data",)):
        r = sweepctl(*args)
        assert r.returncode == 0 and "Usage: sweepctl" in r.stdout and r.stderr == "", args


def test_a_failed_run_in_the_way_exits_2(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    csv = workspace.csv([("a", "")])
    runs.write_json_atomic(workspace.run_dir("a") / runs.SUMMARY, {"ok": False, "error_class": "oom"})
    r = run_cli(capsys, "launch", str(csv), "--shards", "1")
    assert r.code == 2 and "launch refused: 1 failed run(s)" in r.err


def test_an_unreachable_host_exits_3(tmp_path: Path) -> None:
    from typer.main import get_command

    from sweepctl.cli.app import app

    status = get_command(app).commands["status"]  # type: ignore[attr-defined]
    if not any("--host" in p.opts for p in status.params):
        pytest.skip("status --host has not landed")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    # 127.0.0.1 port 1: nothing listens there, so the connection is refused at once, offline.
    (home / ".ssh" / "config").write_text("Host nowhere\n  HostName 127.0.0.1\n  Port 1\n")
    r = sweepctl("status", "--host", "nowhere", env={"HOME": str(home)}, timeout=120)
    assert r.returncode == 3, r.stderr
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr and "nowhere" in r.stderr


def test_an_explicit_exit_code_from_a_command_reaches_the_shell(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while a command runs: Typer turns it into exit 130, which must not become 0."""
    import sweepctl.sweep.spec

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sweepctl.sweep.spec, "read_sweep", interrupted)
    assert run_cli(capsys, "validate", str(bad_csv(tmp_path))).code == 130


# --------------------------------------------------------------------------- unexpected errors, --debug


def test_an_unexpected_exception_is_one_line_with_a_hint_and_debug_shows_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sweepctl.sweep.spec

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(sweepctl.sweep.spec, "read_sweep", broken)
    csv = str(bad_csv(tmp_path))
    r = run_cli(capsys, "validate", csv)
    assert r.code == 1
    assert r.err.strip() == ("error: unexpected RuntimeError: disk on fire — rerun with `sweepctl --debug ...` "
                             "to see the traceback")
    with pytest.raises(RuntimeError, match="disk on fire"):  # the traceback is Python's own
        run_cli(capsys, "--debug", "validate", csv)
    assert run_cli(capsys, "validate", csv).code == 1  # --debug does not stick to the next command


def test_debug_shows_the_traceback_of_an_expected_error(tmp_path: Path) -> None:
    r = sweepctl("--debug", "validate", str(bad_csv(tmp_path)))
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr and "SpecError" in r.stderr


# --------------------------------------------------------------------------- NO_COLOR


@pytest.mark.parametrize("args", [("presets",), ("validate", "--help"), ("--help",), ("validate", "BAD")])
def test_no_color_means_no_escapes_even_on_a_forced_terminal(args: tuple[str, ...], tmp_path: Path) -> None:
    args = tuple(str(bad_csv(tmp_path)) if a == "BAD" else a for a in args)
    forced = sweepctl(*args, env={"FORCE_COLOR": "1"})
    assert ESC in forced.stdout + forced.stderr  # the control: forced, Rich does style this output
    plain = sweepctl(*args, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert plain.returncode == forced.returncode
    assert ESC not in plain.stdout + plain.stderr
    assert plain.stdout + plain.stderr != ""


def test_main_returns_on_success_so_it_can_run_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The console script turns the return into exit 0; callers in Python (fixtures, embedding)
    get control back instead of a SystemExit."""
    from sweepctl.cli.app import main

    for argv in (["sweepctl", "presets"], ["sweepctl"]):
        monkeypatch.setattr(sys, "argv", argv)
        assert main() is None


def test_every_command_summary_is_one_line() -> None:
    """A command list entry is its help's first paragraph: written over several lines, it is shown
    with its line breaks and reads as broken text in `sweepctl --help`."""
    import typer

    from sweepctl.cli.app import app

    def walk(command, path: str):
        yield path, command
        for name, sub in (getattr(command, "commands", None) or {}).items():
            yield from walk(sub, f"{path} {name}")

    commands = list(walk(typer.main.get_command(app), "sweepctl"))
    assert len(commands) > 20
    broken = [path for path, c in commands if "\n" in (c.help or "").strip().split("\n\n")[0]]
    assert not broken
