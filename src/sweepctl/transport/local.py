"""This machine, through subprocess: the transport every command uses without `--host`.

It answers exactly as `SSHTransport` does for the same argv (exit 127 for a missing command, the
same one-line errors, timeouts that kill the whole process tree), so the tests run each behaviour
against both and a command's code never asks which one it holds.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path

from sweepctl.errors import RemoteError
from sweepctl.transport.base import (
    DEFAULT_COMMAND_TIMEOUT,
    POLL_S,
    Result,
    StrInput,
    Transport,
    as_bytes,
    checked_result,
    decode_output,
)
from sweepctl.transport.sync import RemoteFile, atomic_download


class LocalTransport(Transport):
    """This machine, through subprocess: what every command uses without `--host`."""

    host = "localhost"

    def run(self, argv: Sequence[str], timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
            stdin: StrInput = None, *, check: bool = False,
            env: Mapping[str, str] | None = None) -> Result:
        argv = list(argv)
        try:
            # A new session (process group) so a timeout kills the whole tree: killing only the
            # child leaves grandchildren holding the pipes open and `communicate` waiting on them.
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True,
                                    env=_merged_env(env))
        except FileNotFoundError:
            # Same answer as a remote shell gives, so callers test one exit code for "missing".
            return checked_result(self, argv, Result(127, "", f"{argv[0]}: command not found\n"), check)
        except PermissionError:
            return checked_result(self, argv, Result(126, "", f"{argv[0]}: permission denied\n"), check)
        try:
            out, err = proc.communicate(as_bytes(stdin), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise self._timed_out(argv, timeout or 0.0) from None
        except BaseException:  # Ctrl-C: do not leave the command running behind our back
            _kill_group(proc)
            raise
        return checked_result(self, argv, Result(proc.returncode, decode_output(out), decode_output(err)), check)

    def stream(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True,
               env: Mapping[str, str] | None = None) -> Generator[str, None, Result]:
        argv = list(argv)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True,
                                    env=_merged_env(env))
        except (FileNotFoundError, PermissionError):
            missing = Result(127, "", f"{argv[0]}: command not found\n")
            if check:
                raise self.error_for(argv, missing) from None
            return missing
        deadline = None if timeout is None else time.monotonic() + timeout
        assert proc.stdout is not None and proc.stderr is not None  # both are PIPEs above
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        pending, err = b"", b""
        try:
            while sel.get_map():
                if deadline is not None and time.monotonic() > deadline:
                    raise self._timed_out(argv, timeout or 0.0)
                for key, _ in sel.select(POLL_S):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                    elif key.data == "err":
                        err += chunk
                    else:
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            yield decode_output(line)
            if pending:
                yield decode_output(pending)
            proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise self._timed_out(argv, timeout or 0.0) from None
        finally:
            sel.close()
            if proc.poll() is None:
                _kill_group(proc)
            proc.stdout.close()
            proc.stderr.close()
        result = Result(proc.returncode, "", decode_output(err))
        if check and proc.returncode != 0:
            raise self.error_for(argv, result)
        return result

    def put(self, local: str | os.PathLike[str], remote: str) -> None:
        self._copy(Path(local), Path(remote))

    def get(self, remote: str, local: str | os.PathLike[str]) -> None:
        self._copy(Path(remote), Path(local))

    def exists(self, remote: str) -> bool:
        return os.path.lexists(remote)

    def list_files(self, remote_dir: str) -> list[RemoteFile]:
        root = Path(remote_dir)
        if not root.is_dir():
            raise RemoteError(f"{remote_dir}: no such directory", where=self.host)
        found = []
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                st = path.lstat()
                if stat.S_ISREG(st.st_mode):
                    found.append(RemoteFile(path.relative_to(root).as_posix(), st.st_size, st.st_mtime))
        return sorted(found, key=lambda f: f.relpath)

    def fetch_file(self, remote: str, local: Path, progress: Callable[[int], None] | None) -> None:
        import shutil

        shutil.copyfile(remote, local)
        if progress:
            progress(local.stat().st_size)

    def _copy(self, src: Path, dst: Path) -> None:
        import shutil

        if not src.is_file():
            raise RemoteError(f"{src}: no such file", where=self.host)
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_download(lambda tmp: shutil.copy2(src, tmp), dst)


def _merged_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if not env else {**os.environ, **env}


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
