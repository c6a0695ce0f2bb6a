"""What cancel and prioritize did to each row."""

from __future__ import annotations

from typing import Any

from sweepctl.console import console

VERB = {"cancelled": "cancelled", "ending": "cancelling", "left": "left", "prioritized": "prioritized"}


def render_steered(model: list[dict[str, Any]], *, prefix: str = "") -> None:
    for s in model:
        console.print(f"{prefix}{VERB.get(s['action'], s['action'])} {s['run_id']} ({s['state']}): {s['detail']}",
                      highlight=False, markup=False)
