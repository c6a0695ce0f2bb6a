"""Notifications from the pod: a short JSON message to a webhook when a run fails and when the
sweep is done, so nobody has to keep a laptop open to find out.

    notifier = Notifier(url, say=print)
    notifier.send_once(marker_dir, "failed-fineweb-mhc-6l-s1337-1", "sweep fineweb: ... failed (oom)")
    notifier.wait(30)   # at the runner's end: let queued messages go out

The body is `{"text": ..., "content": ...}`: Slack reads `text`, Discord `content`. Each message
is posted from a daemon thread with a timeout and a few retries with backoff, so a slow or dead
webhook never holds up a runner. One event is sent once, however many runners see it: its marker
file is created with O_CREAT|O_EXCL first, which one process wins. The URL is a secret (whoever
holds it can post to the channel): it is never written to a file and shown only as `redact(url)`.
Messages carry names, counts and error classes, never error text (it can quote anything).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sweepctl.state.runs import create_once

TIMEOUT_S = 10.0  # one POST; a webhook answers in well under a second
RETRY_DELAYS_S = (1.0, 4.0, 15.0)  # after the first try: a flapping network, a 429 from the service


def redact(url: str) -> str:
    """`https://hooks.slack.com/…`: enough to tell which service, nothing that lets anyone post."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…" if parts.scheme else "(a webhook URL)"


def payload(text: str) -> bytes:
    return json.dumps({"text": text, "content": text}).encode()


def post(url: str, text: str, *, timeout_s: float = TIMEOUT_S) -> None:
    """One POST; raises OSError (urllib's errors are OSErrors) on a network error or a non-2xx."""
    request = urllib.request.Request(url, data=payload(text), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "sweepctl"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read()


class Notifier:
    def __init__(self, url: str, *, say: Callable[[str], None], delays_s: tuple[float, ...] = RETRY_DELAYS_S):
        self.url = url
        self.say = say
        self.delays_s = delays_s
        self.threads: list[threading.Thread] = []

    def send_once(self, marker_dir: Path, event: str, text: str) -> bool:
        """Queue `text` unless this event was sent already (by anyone); True when queued here."""
        if not create_once(marker_dir / event, {"ts": time.time(), "pid": os.getpid(), "text": text}):
            return False
        thread = threading.Thread(target=self._deliver, args=(text,), daemon=True, name=f"notify-{event}")
        thread.start()
        self.threads.append(thread)
        return True

    def _deliver(self, text: str) -> None:
        for attempt, delay in enumerate((0.0, *self.delays_s), start=1):
            time.sleep(delay)
            try:
                post(self.url, text)
                return
            except (OSError, ValueError) as e:  # ValueError: a malformed URL
                last = _reason(e)
            if attempt <= len(self.delays_s):
                self.say(f"notification to {redact(self.url)} failed ({last}); retrying")
        self.say(f"notification to {redact(self.url)} not delivered after {len(self.delays_s) + 1} tries ({last}); "
                 "check the URL: sweepctl config shows whether notify_url is set")

    def wait(self, timeout_s: float) -> None:
        """Give queued messages up to `timeout_s` in all to go out (the runner is about to exit)."""
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _reason(e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return type(e).__name__


def failed_text(sweep: str, run_id: str, summary: dict[str, Any], *, host: str, session: str) -> str:
    error_class = summary.get("error_class") or "unknown"
    what = {"stalled": "stalled (no progress)", "timeout": "ran past --run-timeout"}.get(error_class,
                                                                                         f"failed ({error_class})")
    it, mx = summary.get("iter_num"), summary.get("max_iters")
    at = f" at iteration {it}/{mx}" if it is not None and mx else ""
    return f"sweep {sweep}: {run_id} {what}{at} on {host} ({session}). Logs: sweepctl logs {run_id}"


def done_text(sweep: str, counts: dict[str, int], best: list[dict[str, Any]], *, host: str) -> str:
    shown = ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no runs"
    text = f"sweep {sweep} done on {host}: {shown}."
    if best:
        text += " Best (mean best val loss): " + "; ".join(
            f"{g['label']} {g['mean']:.4f}" + (f" ± {g['std']:.4f}" if g.get("std") is not None else "")
            + f" ({g['n']} run{'s' if g['n'] != 1 else ''})" for g in best) + "."
    return text
