"""The Rich consoles every command prints through.

NO_COLOR (https://no-color.org): Rich on its own drops colours but still writes bold, italic and
underline escapes; with NO_COLOR set to anything but "" these consoles write no escape at all,
even when FORCE_COLOR or TTY_COMPATIBLE make them treat the output as a terminal.

Piped or redirected output is read by programs (grep, awk, a file): Rich would wrap it at 80
columns (or at the width of a terminal on stdin), splitting numbers and dropping a table's right
columns. Without a terminal these consoles are as wide as the longest line, so a row stays one
line; `COLUMNS` still wins when set.
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console, ConsoleDimensions

# Wide enough for any row sweepctl prints (a plan row holds a whole trainer command).
PIPE_WIDTH = 100_000


def no_color() -> bool:
    return os.environ.get("NO_COLOR", "") != ""


class PipeAwareConsole(Console):
    """A Console that never wraps or cuts when its output is not a terminal."""

    @property
    def size(self) -> ConsoleDimensions:
        if self._width is None and not self.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
            return ConsoleDimensions(PIPE_WIDTH, super().size.height)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def rule(self, title: Any = "", *args: Any, **kwargs: Any) -> None:
        if self.is_terminal or self._width is not None:
            super().rule(title, *args, **kwargs)
        else:  # a rule as wide as PIPE_WIDTH would be a 100,000-character line
            self.print(f"── {title} ──" if title else "──", markup=False, highlight=False)


def make_console(**kwargs: Any) -> Console:
    """A Console that honours NO_COLOR fully and does not wrap pipes (see the module docstring)."""
    if no_color():
        kwargs["color_system"] = None
    return PipeAwareConsole(**kwargs)


console = make_console()
err_console = make_console(stderr=True)
