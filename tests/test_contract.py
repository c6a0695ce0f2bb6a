"""The one atomic writer (sweepctl.train.contract): a file appears whole, with its mode, or not at
all; a full disk leaves the old file and no temp file behind."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sweepctl.train.contract import write_json_atomic, write_text_atomic


def test_a_mode_is_set_before_the_file_appears(tmp_path: Path) -> None:
    script = tmp_path / "deep" / "er" / "sweep.sbatch"
    write_text_atomic(script, "#!/bin/bash\necho hi\n", mode=0o755)
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert script.read_text() == "#!/bin/bash\necho hi\n"
    write_text_atomic(script, "#!/bin/bash\necho again\n")  # no mode: the umask decides, as for open()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(script.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in script.parent.iterdir()) == ["sweep.sbatch"]


@contextlib.contextmanager
def tiny_volume(where: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs: a disk that fills up."""
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True, timeout=30)


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    with tiny_volume(tmp_path / "vol") as vol:
        path = vol / "launch.json"
        write_json_atomic(path, {"n": 1})
        with pytest.raises(OSError) as e:
            write_json_atomic(path, {"n": 2, "pad": "x" * 200_000})
        assert e.value.errno == errno.ENOSPC
        assert json.loads(path.read_text()) == {"n": 1}
        assert [p.name for p in vol.iterdir()] == ["launch.json"]
