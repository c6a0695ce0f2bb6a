"""Every pod's answer to one command run on several pods (stop, cancel, prioritize)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from sweepctl.console import console

if TYPE_CHECKING:
    from sweepctl.cli.remote_opts import Answer, Pods


def show_answers(pods: Pods, answers: list[Answer[Any]], *, as_json: bool,
                 render: Callable[[Any, str], None]) -> None:
    """Every pod's answer: as JSON (one pod's value, or {host: value or {"error"}}), or each value
    rendered with a `host: ` prefix when there are several, and a pod that did not answer in red.
    The failures are raised afterwards, by raise_if_failed."""
    if as_json:
        out = answers[0].value if pods.single else {a.host: a.value if a.error is None else {"error": str(a.error)}
                                                     for a in answers}
        if out is not None:
            typer.echo(json.dumps(out, indent=2))
        return
    for a in answers:
        if a.value is not None:
            render(a.value, "" if pods.single else f"{a.host}: ")
        elif not pods.single:
            console.print(f"{a.host}: {a.describe()}", style="red", markup=False, highlight=False)
