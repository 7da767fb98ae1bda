"""A local stand-in for the Hugging Face hub's HTTP API, for tests that never reach the internet.

It answers the calls `huggingface_hub` (and llama.cpp) make, with the hub's headers:
- `GET /api/models/{repo}` (and `/revision/{rev}`), `?blobs=true`: the repo's `sha` and
  `siblings` with `size`, `blobId` and `lfs: {sha256, size, pointerSize}`;
- `GET /api/models/{repo}/refs`: the `main` branch's `targetCommit` (llama.cpp asks);
- `GET /api/models/{repo}/tree/{rev}`: the file list with `oid` and `lfs.oid`;
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: 302 to the CDN with `X-Repo-Commit`,
  `X-Linked-Etag` (the sha256), `X-Linked-Size`, `ETag`;
- `GET /cdn/{sha256}`: the bytes, with `Content-Length`, `Accept-Ranges` and `Range` (206).
Errors as the hub words them: an unknown repo is 401 with `X-Error-Code: RepoNotFound`; a gated
repo without the right token is 401 with `X-Error-Code: GatedRepo`.

Faults for tests: `drop_once[path] = n` cuts the first download of a file after n bytes,
`drop_every[path] = n` every download of it (a hub that dies mid-file, run after run);
`corrupt.add(path)` serves bytes that do not match the sha256 announced.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class RepoFiles:
    files: dict[str, bytes]
    token: str | None = None  # a gated repo: this token has access
    commit: str = ""


@dataclass
class HubStandin:
    repos: dict[str, RepoFiles] = field(default_factory=dict)
    drop_once: dict[str, int] = field(default_factory=dict)
    drop_every: dict[str, int] = field(default_factory=dict)  # a server that dies mid-file
    corrupt: set[str] = field(default_factory=set)
    log: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, Range
    _server: ThreadingHTTPServer | None = None
    port: int = 0

    def add(self, repo: str, files: dict[str, bytes | Path], token: str | None = None) -> None:
        data = {k: v.read_bytes() if isinstance(v, Path) else v for k, v in files.items()}
        commit = hashlib.sha1((repo + "".join(sorted(data))).encode()).hexdigest()
        self.repos[repo] = RepoFiles(data, token, commit)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> HubStandin:
        hub = self

        class Handler(_Handler):
            standin = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ranges(self, path: str) -> list[str]:
        """The Range headers the CDN got for a file (empty string: none)."""
        sha = self.sha_of(path)
        return [r for m, p, r in self.log if m == "GET" and p == f"/cdn/{sha}"]

    def sha_of(self, path: str) -> str:
        for repo in self.repos.values():
            if path in repo.files:
                return _sha(repo.files[path])
        raise KeyError(path)


class _Handler(BaseHTTPRequestHandler):
    standin: HubStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.standin.log.append((self.command, path, self.headers.get("Range", "")))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path):
            return self._info(m.group(1))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/refs", path):
            return self._refs(m.group(1))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/[^/]+(?:/.*)?", path):
            return self._tree(m.group(1))
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(m.group(1), m.group(3))
        if m := re.fullmatch(r"/cdn/([0-9a-f]{64})", path):
            return self._bytes(m.group(1), head)
        self._json(404, {"error": "not found"})

    def _repo(self, name: str) -> RepoFiles | None:
        repo = self.standin.repos.get(name)
        if repo is None:
            self._json(
                401,
                {"error": "Repository not found"},
                {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            )
        return repo

    def _info(self, name: str) -> None:
        repo = self._repo(name)
        if repo is None:
            return
        siblings = []
        for path, data in repo.files.items():
            sha = _sha(data)
            siblings.append(
                {
                    "rfilename": path,
                    "size": len(data),
                    "blobId": _git_oid(data),
                    "lfs": {"sha256": sha, "size": len(data), "pointerSize": 134},
                }
            )
        self._json(
            200,
            {
                "_id": name,
                "id": name,
                "modelId": name,
                "sha": repo.commit,
                "private": False,
                "gated": "auto" if repo.token else False,
                "disabled": False,
                "tags": ["gguf"],
                "siblings": siblings,
            },
        )

    def _refs(self, name: str) -> None:
        repo = self._repo(name)
        if repo is not None:
            main = {"name": "main", "ref": "refs/heads/main", "targetCommit": repo.commit}
            self._json(200, {"branches": [main], "converts": [], "tags": []})

    def _tree(self, name: str) -> None:
        repo = self._repo(name)
        if repo is None:
            return
        self._json(
            200,
            [
                {
                    "type": "file",
                    "oid": _git_oid(d),
                    "size": len(d),
                    "path": p,
                    "lfs": {
                        "oid": _sha(d),
                        "size": len(d),
                        "pointerSize": 134,
                    },
                }
                for p, d in repo.files.items()
            ],
        )

    def _resolve(self, name: str, path: str) -> None:
        repo = self._repo(name)
        if repo is None:
            return
        if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
            msg = f"Access to model {name} is restricted. You must have access to it."
            self._json(401, {"error": msg}, {"X-Error-Code": "GatedRepo", "X-Error-Message": msg})
            return
        data = repo.files.get(path)
        if data is None:
            self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            return
        sha = _sha(data)
        self.send_response(302)
        for k, v in {
            "Location": f"{self.standin.url}/cdn/{sha}",
            "X-Repo-Commit": repo.commit,
            "X-Linked-Etag": f'"{sha}"',
            "X-Linked-Size": str(len(data)),
            "ETag": f'"{_git_oid(data)}"',
            "Content-Length": "0",
        }.items():
            self.send_header(k, v)
        self.end_headers()

    def _bytes(self, sha: str, head: bool) -> None:
        found = [
            (p, d)
            for r in self.standin.repos.values()
            for p, d in r.files.items()
            if _sha(d) == sha
        ]
        if not found:
            self._json(404, {"error": "not found"})
            return
        path, data = found[0]
        if path in self.standin.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
            start = int(m.group(1))
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{sha}"')
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        cut = self.standin.drop_once.pop(path, None) or self.standin.drop_every.get(path)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)


@functools.lru_cache(maxsize=64)
def _git_oid(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@functools.lru_cache(maxsize=64)
def _sha(data: bytes) -> str:
    """A file's sha256, worked out once (a bytes object keeps its own hash for the cache)."""
    return hashlib.sha256(data).hexdigest()


def tiny_standin(folder: Path) -> Iterator[HubStandin]:
    """A running stand-in serving `test/tiny-GGUF` (a tiny llama in Q4_K_M and Q8_0), for a
    module's fixture."""
    from tests.gguf_factory import FAMILIES, build_gguf

    model = build_gguf(folder / "tiny.gguf", FAMILIES["llama3"]).read_bytes()
    standin = HubStandin()
    standin.add("test/tiny-GGUF", {"tiny-Q4_K_M.gguf": model, "tiny-Q8_0.gguf": model + b"8"})
    yield standin.start()
    standin.stop()


def use_standin(monkeypatch: Any, hub: HubStandin, home: Path) -> None:
    """The real client pointed at the stand-in, with empty caches under `home`."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr("endmark.hub.download.RETRY_PAUSE", 0.0)
    monkeypatch.setenv("LLAMA_CACHE", str(home / "llama"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # set, so that it is put back (--offline sets it)
    for name in ("HF_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
