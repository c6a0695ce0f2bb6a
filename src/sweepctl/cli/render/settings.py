"""`config`: each effective setting, where it came from, and what it means."""

from __future__ import annotations

from rich.table import Table

from sweepctl.console import console


def render_settings(rows: list[tuple[str, object, str, str]]) -> None:
    """(setting, value, source, meaning) per row, in precedence order's words."""
    table = Table(title="settings (flags > environment > project file > defaults)", title_justify="left")
    for col in ("setting", "value", "from", "meaning"):
        table.add_column(col, overflow="fold")
    for name, value, source, meaning in rows:
        table.add_row(name, "" if value is None else str(value), source, meaning)
    console.print(table)
