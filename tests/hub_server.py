"""A loopback Hugging Face Hub: a real HTTP server speaking the parts of the Hub protocol that
huggingface_hub's ``hf_hub_download`` / ``snapshot_download`` / ``repo_info`` use, serving repos held
in memory, with faults a test can switch on while it runs.

Served (``{prefix}`` is empty for models, ``datasets/`` for datasets):

- ``HEAD``/``GET /{prefix}{repo_id}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag`` (the
  quoted sha256 for LFS-like files, the git blob sha1 otherwise, as the Hub), ``Content-Length``,
  ``Accept-Ranges``; ``Range: bytes=a-b`` answers 206 with ``Content-Range``.
- ``GET /api/{models|datasets}/{repo_id}[/revision/{revision}]``: ``id``, ``sha``, ``siblings``...
- ``GET /api/{models|datasets}/{repo_id}/tree/{revision}[/{path}]`` (``recursive``): files with
  ``oid``/``size``/``lfs``, and folders.
- Errors as the Hub: 404 ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound``
  (with ``X-Repo-Commit``), 401 ``X-Error-Code: GatedRepo`` with an ``X-Error-Message``.

Faults (per repo, optionally per file path and method, for the next ``times`` matching requests or
for ever): ``fail`` answers an HTTP status (500 by default); ``stall`` sleeps before answering
(longer than the client's timeout); ``cut`` sends the headers with the full ``Content-Length`` and
then closes the connection when the body reaches the middle of the *file* (so a ``Range`` resume
from there gets nothing more: the cut is at the same place on every attempt).

Every request is logged (:attr:`HubServer.log`); :meth:`HubServer.count` counts them.

>>> with HubServer() as hub:                                       # doctest: +SKIP
...     sha = hub.add_commit("me/tiny", {"config.json": b"{}"})
...     hub.fail("me/tiny", path="config.json", times=2)
...     # HF_ENDPOINT=hub.url ... hf_hub_download("me/tiny", "config.json")
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".parquet", ".arrow", ".npz", ".msgpack", ".h5")

_RESOLVE = re.compile(r"^/(?P<prefix>datasets/|spaces/)?(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API = re.compile(r"^/api/(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+(?:/[^/]+)?)(?P<rest>/.*)?$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


@dataclass
class Fault:
    kind: str  # "fail" | "stall" | "cut"
    repo_id: str
    repo_type: str = "model"
    path: str | None = None  # None: every request for the repo (API calls included)
    methods: tuple[str, ...] = ("HEAD", "GET")
    times: int | None = None  # None: for ever
    status: int = 500
    seconds: float = 0.0

    def matches(self, method: str, repo_type: str, repo_id: str, path: str | None) -> bool:
        return (
            (self.times is None or self.times > 0)
            and method in self.methods
            and (repo_type, repo_id) == (self.repo_type, self.repo_id)
            and (self.path is None or self.path == path)
        )


@dataclass
class Request:
    method: str
    repo_type: str | None
    repo_id: str | None
    path: str | None  # the file, for /resolve/
    url: str
    range: str | None
    status: int | None = None  # None: no answer (stalled past the client, or cut)
    fault: str | None = None


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    gated: bool = False


class HubServer:
    """The loopback hub. ``start()``/``stop()`` (or ``with``); ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.faults: list[Fault] = []
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ content

    def add_commit(
        self, repo_id: str, files: dict[str, bytes], *, repo_type: str = "model", branch: str = "main"
    ) -> str:
        """Commit ``files`` (the whole tree) on ``branch``; return the new commit's sha."""
        with self._lock:
            repo = self.repos.setdefault((repo_type, repo_id), Repo())
            h = hashlib.sha1(f"{repo_type}/{repo_id}@{len(repo.commits)}".encode())
            for name in sorted(files):
                h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
            sha = h.hexdigest()
            repo.commits[sha] = dict(files)
            repo.refs[branch] = sha
            return sha

    def tag(self, repo_id: str, name: str, sha: str, *, repo_type: str = "model") -> None:
        with self._lock:
            self.repos[(repo_type, repo_id)].refs[name] = sha

    def set_gated(self, repo_id: str, gated: bool = True, *, repo_type: str = "model") -> None:
        with self._lock:
            self.repos.setdefault((repo_type, repo_id), Repo()).gated = gated

    # ------------------------------------------------------------------ faults

    def _add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def fail(self, repo_id: str, path: str | None = None, *, status: int = 500, times: int | None = None,
             methods: tuple[str, ...] = ("HEAD", "GET"), repo_type: str = "model") -> Fault:
        """Answer the next ``times`` matching requests (None: all) with HTTP ``status``."""
        return self._add_fault(Fault("fail", repo_id, repo_type, path, methods, times, status=status))

    def stall(self, repo_id: str, path: str | None = None, *, seconds: float, times: int | None = None,
              methods: tuple[str, ...] = ("HEAD", "GET"), repo_type: str = "model") -> Fault:
        """Sleep ``seconds`` before answering the matching requests (then answer normally, if anyone listens)."""
        return self._add_fault(Fault("stall", repo_id, repo_type, path, methods, times, seconds=seconds))

    def cut(self, repo_id: str, path: str | None = None, *, times: int | None = None,
            repo_type: str = "model") -> Fault:
        """On the matching GETs, send the full Content-Length, then close at the file's midpoint."""
        return self._add_fault(Fault("cut", repo_id, repo_type, path, ("GET",), times))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def _take_fault(self, method: str, repo_type: str, repo_id: str, path: str | None) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.matches(method, repo_type, repo_id, path):
                    if f.times is not None:
                        f.times -= 1
                    return f
        return None

    # ------------------------------------------------------------------ log

    def count(self, method: str | None = None, path: str | None = None, *, repo_id: str | None = None,
              fault: str | None = None) -> int:
        """How many requests matched (each argument None: any)."""
        with self._lock:
            return sum(
                (method is None or r.method == method)
                and (path is None or r.path == path)
                and (repo_id is None or r.repo_id == repo_id)
                and (fault is None or r.fault == fault)
                for r in self.log
            )

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        assert self.port is not None, "the server is not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        self._stopping.clear()
        handler = type("Handler", (_Handler,), {"hub": self})
        # Bind the same port again after a stop(), so a client's HF_ENDPOINT stays valid.
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port or 0), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: later connections to the port are refused. Stalled answers are abandoned."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ lookups (under no lock: dicts are only added to)

    def _repo(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    @staticmethod
    def _commit(repo: Repo, revision: str) -> str | None:
        if revision in repo.commits:
            return revision
        return repo.refs.get(revision)


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the Hub; every answer carries a Content-Length
    server_version = "LoopbackHub/1"

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    # ------------------------------------------------------------------ dispatch

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        route = _RESOLVE.match(split.path)
        if route:
            repo_type = "dataset" if route["prefix"] == "datasets/" else "space" if route["prefix"] else "model"
            repo_id, revision, path = unquote(route["repo"]), unquote(route["rev"]), unquote(route["path"])
            api = None
        elif (api_route := _API.match(split.path)) and method == "GET":
            repo_type = api_route["kind"][:-1]
            repo_id, rest, path = unquote(api_route["repo"]), api_route["rest"] or "", None
            api = (rest, parse_qs(split.query))
            revision = None
        else:
            self.req = Request(method, None, None, None, self.path, self.headers.get("Range"))
            self._record()
            return self._error(404, "NotFound", f"no route for {split.path}")

        self.req = Request(method, repo_type, repo_id, path, self.path, self.headers.get("Range"))
        self._record()
        fault = self.hub._take_fault(method, repo_type, repo_id, path)
        if fault is not None:
            self.req.fault = fault.kind
            if fault.kind == "fail":
                return self._error(fault.status, None, f"injected HTTP {fault.status}")
            if fault.kind == "stall":
                if self.hub._stopping.wait(fault.seconds):
                    self.close_connection = True
                    return
        if api is not None:
            return self._api(repo_type, repo_id, *api)
        return self._resolve(method, repo_type, repo_id, revision, path, cut=fault is not None and fault.kind == "cut")

    def _record(self) -> None:
        with self.hub._lock:
            self.hub.log.append(self.req)

    # ------------------------------------------------------------------ answers

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"", *, head: bool = False) -> None:
        self.req.status = status
        headers = {"Content-Length": str(len(body)), **headers}
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if not head and body:
                self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a stall past its timeout)
            self.close_connection = True

    def _error(self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, headers, json.dumps({"error": message}).encode(), head=self.req.method == "HEAD")

    def _lookup(self, repo_type: str, repo_id: str, revision: str) -> tuple[Repo, str] | None:
        """The repo and the commit ``revision`` names, or None after answering the Hub's error."""
        repo = self.hub._repo(repo_type, repo_id)
        if repo is None or not repo.commits:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo.gated:
            self._error(
                401, "GatedRepo",
                f"Access to {repo_type} {repo_id} is restricted. You must have access to it and be authenticated "
                "to access it. Please log in.",
            )
            return None
        sha = HubServer._commit(repo, revision)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo, sha

    def _resolve(self, method: str, repo_type: str, repo_id: str, revision: str, path: str, *, cut: bool) -> None:
        found = self._lookup(repo_type, repo_id, revision)
        if found is None:
            return
        repo, sha = found
        files = repo.commits[sha]
        if path not in files:
            return self._error(404, "EntryNotFound", f"{path} does not exist on \"{revision}\"", {"X-Repo-Commit": sha})
        data = files[path]
        etag = hashlib.sha256(data).hexdigest() if is_lfs(path) else git_blob_sha1(data)
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        start, end, status = 0, len(data), 200
        rng = self.headers.get("Range")
        if rng and method == "GET":
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not m or (not m[1] and not m[2]):
                return self._error(416, None, f"bad range {rng}", {"Content-Range": f"bytes */{len(data)}"})
            if m[1]:
                start, end = int(m[1]), (int(m[2]) + 1 if m[2] else len(data))
            else:  # suffix: the last N bytes
                start, end = max(0, len(data) - int(m[2])), len(data)
            end = min(end, len(data))
            if start >= len(data) or start >= end:
                return self._error(416, None, "range not satisfiable", {"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        headers["Content-Length"] = str(end - start)
        if method == "HEAD":
            return self._send(status, headers, head=True)
        if cut:
            # Full headers, then the body up to the file's midpoint, then the connection is closed.
            body = data[start:max(start, len(data) // 2)][: end - start]
            self.req.status = None
            self.close_connection = True
            try:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        self._send(status, headers, data[start:end])

    def _api(self, repo_type: str, repo_id: str, rest: str, query: dict[str, list[str]]) -> None:
        m = re.fullmatch(r"(?:/revision/(?P<rev>[^/]+))?", rest)
        if m is not None:  # repo_info
            revision = unquote(m["rev"]) if m["rev"] else "main"
            found = self._lookup(repo_type, repo_id, revision)
            if found is None:
                return
            repo, sha = found
            now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            info = {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "author": repo_id.split("/")[0] if "/" in repo_id else None,
                "sha": sha,
                "lastModified": now,
                "createdAt": now,
                "private": False,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": [{"rfilename": p} for p in sorted(repo.commits[sha])],
            }
            return self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode())
        m = re.fullmatch(r"/tree/(?P<rev>[^/]+)(?P<sub>/.*)?", rest)
        if m is None:
            return self._error(404, "NotFound", f"no API route {rest}")
        found = self._lookup(repo_type, repo_id, unquote(m["rev"]))
        if found is None:
            return
        repo, sha = found
        sub = unquote(m["sub"] or "").strip("/")
        recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
        entries = self._tree(repo.commits[sha], sub, recursive)
        if sub and not entries:
            return self._error(404, "EntryNotFound", f"{sub} does not exist", {"X-Repo-Commit": sha})
        self._send(200, {"Content-Type": "application/json", "X-Repo-Commit": sha}, json.dumps(entries).encode())

    @staticmethod
    def _tree(files: dict[str, bytes], sub: str, recursive: bool) -> list[dict]:
        prefix = f"{sub}/" if sub else ""
        dirs: set[str] = set()
        out = []
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            rel = path[len(prefix):]
            parts = rel.split("/")
            for i in range(1, len(parts) if recursive else min(2, len(parts))):
                dirs.add(prefix + "/".join(parts[:i]))
            if len(parts) > 1 and not recursive:
                continue
            data = files[path]
            entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
            if is_lfs(path):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            out.append(entry)
        out += [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d} for d in sorted(dirs)]
        return out
