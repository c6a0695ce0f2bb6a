"""A stand-in Hugging Face Hub on 127.0.0.1 for the real `huggingface_hub` client.

It answers the routes `HfApi.dataset_info` and `hf_hub_download` use, the way the Hub does for
LFS files: the `resolve` URL answers 302 with the file's metadata in X-Linked-Etag/X-Linked-Size/
X-Repo-Commit and a Location on a second origin (the "CDN"), which serves the bytes. Errors carry
the Hub's X-Error-Code header, which is how the client tells a missing repo from a missing file.
Every request is logged so tests can count what was downloaded.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def shard_bytes(tokens: list[int]) -> bytes:
    """A shard in the modded-nanogpt format, written independently of sweepctl.pod.data."""
    header = struct.pack("<3i", 20240520, 1, len(tokens)) + b"\0" * (256 * 4 - 12)
    return header + struct.pack(f"<{len(tokens)}H", *tokens)


class FakeHub:
    """`repos` maps a dataset repo id to its files (name -> bytes); `ghosts` are names the listing
    shows but the resolve route does not have (a repo that changed between the two calls)."""

    def __init__(self, repos: dict[str, dict[str, bytes]], ghosts: tuple[str, ...] = ()):
        self.repos = repos
        self.ghosts = ghosts
        self.log: list[tuple[str, str, str]] = []  # (origin "hub"/"cdn", method, path)
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []

    # -- lifecycle --
    def start(self) -> FakeHub:
        self.hub = self._serve("hub")
        self.cdn = self._serve("cdn")
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self.cdn.server_address[1]}"

    # -- what tests assert on --
    def downloaded(self) -> list[str]:
        """File names whose bytes were sent (GET on the CDN), in order."""
        by_sha = {hashlib.sha256(data).hexdigest(): name
                  for files in self.repos.values() for name, data in files.items()}
        with self._lock:
            return [by_sha[path.rsplit("/", 1)[1]] for origin, method, path in self.log
                    if origin == "cdn" and method == "GET"]

    def requests(self) -> int:
        with self._lock:
            return len(self.log)

    # -- serving --
    def _serve(self, origin: str) -> ThreadingHTTPServer:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the client expects; every reply has a length

            def do_HEAD(self) -> None:
                hub._handle(self, origin, body=False)

            def do_GET(self) -> None:
                hub._handle(self, origin, body=True)

            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        # A short poll interval makes shutdown() (once per test) take milliseconds, not half a second.
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), name=f"fake-hub-{origin}", daemon=True)
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)
        return server

    def _handle(self, req: BaseHTTPRequestHandler, origin: str, *, body: bool) -> None:
        path = unquote(urlsplit(req.path).path)
        with self._lock:
            self.log.append((origin, req.command, path))
        if origin == "cdn":
            return self._blob(req, path, body)
        parts = path.strip("/").split("/")
        # /api/datasets/{ns}/{name}[/revision/{rev}]
        if parts[:2] == ["api", "datasets"] and len(parts) in (4, 6):
            return self._info(req, "/".join(parts[2:4]), parts[5] if len(parts) == 6 else "main", body)
        # /datasets/{ns}/{name}/resolve/{rev}/{filename}
        if parts[0] == "datasets" and len(parts) >= 6 and parts[3] == "resolve":
            return self._resolve(req, "/".join(parts[1:3]), parts[4], "/".join(parts[5:]), body)
        return self._reply(req, 404, b"", body)

    def _check(self, req: BaseHTTPRequestHandler, repo: str, rev: str, body: bool) -> dict[str, bytes] | None:
        if repo not in self.repos:
            # The Hub answers 401 for a missing repo when not logged in (it cannot tell it from private).
            self._reply(req, 401, b"", body, {"X-Error-Code": "RepoNotFound",
                                              "X-Error-Message": "Repository not found"})
            return None
        if rev not in ("main", COMMIT):
            self._reply(req, 404, b"", body, {"X-Error-Code": "RevisionNotFound",
                                              "X-Error-Message": "Invalid rev id"})
            return None
        return self.repos[repo]

    def _info(self, req: BaseHTTPRequestHandler, repo: str, rev: str, body: bool) -> None:
        files = self._check(req, repo, rev, body)
        if files is None:
            return
        info = {"id": repo, "sha": COMMIT, "private": False, "siblings": [{"rfilename": n} for n in sorted({*files, *self.ghosts})]}
        self._reply(req, 200, json.dumps(info).encode(), body, {"Content-Type": "application/json"})

    def _resolve(self, req: BaseHTTPRequestHandler, repo: str, rev: str, name: str, body: bool) -> None:
        files = self._check(req, repo, rev, body)
        if files is None:
            return
        if name not in files:
            return self._reply(req, 404, b"", body, {"X-Error-Code": "EntryNotFound",
                                                     "X-Error-Message": "Entry not found", "X-Repo-Commit": COMMIT})
        data = files[name]
        sha = hashlib.sha256(data).hexdigest()
        self._reply(req, 302, b"", body, {
            "Location": f"{self.cdn_url}/blobs/{sha}",
            "X-Repo-Commit": COMMIT,
            "X-Linked-Etag": f'"{sha}"',
            "X-Linked-Size": str(len(data)),
            "ETag": f'"{hashlib.sha1(data).hexdigest()}"',  # the LFS pointer's git oid, like the Hub
        })

    def _blob(self, req: BaseHTTPRequestHandler, path: str, body: bool) -> None:
        sha = path.rsplit("/", 1)[-1]
        for files in self.repos.values():
            for data in files.values():
                if hashlib.sha256(data).hexdigest() == sha:
                    return self._reply(req, 200, data, body, {"ETag": f'"{sha}"',
                                                              "Content-Type": "application/octet-stream"})
        self._reply(req, 404, b"", body)

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, status: int, data: bytes, body: bool,
               headers: dict[str, str] | None = None) -> None:
        req.send_response(status)
        for key, value in (headers or {}).items():
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if body:
            req.wfile.write(data)
