"""The Rich consoles every command prints through (NO_COLOR is honoured by Rich itself)."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
