"""The Rich consoles every command prints through.

NO_COLOR (https://no-color.org): Rich on its own drops colours but still writes bold, italic and
underline escapes; with NO_COLOR set to anything but "" these consoles write no escape at all,
even when FORCE_COLOR or TTY_COMPATIBLE make them treat the output as a terminal.
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console


def no_color() -> bool:
    return os.environ.get("NO_COLOR", "") != ""


def make_console(**kwargs: Any) -> Console:
    """A Console that honours NO_COLOR fully (see the module docstring)."""
    if no_color():
        kwargs["color_system"] = None
    return Console(**kwargs)


console = make_console()
err_console = make_console(stderr=True)
