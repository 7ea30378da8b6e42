"""A local Hugging Face hub (TEST DOUBLE) that the real `huggingface_hub` client talks to via HF_ENDPOINT.

Why not an existing package: olah (the one PyPI package that serves local repositories to the client) lists
siblings without sizes or LFS sha256 even with `?blobs=true`, reads whole LFS files into memory, has no Range
support and nothing to throttle or count requests; see docs/weights.md.

Endpoints (the ones huggingface_hub 2.x uses to download a model):
  GET  /api/models/{org}/{name}[/revision/{rev}][?blobs=true]  model_info; siblings with size, blobId and
                                                               lfs {sha256, size, pointerSize} when blobs=true
  HEAD /{org}/{name}/resolve/{rev}/{path}                      X-Repo-Commit, ETag (git blob id, or the LFS
  GET  /{org}/{name}/resolve/{rev}/{path}                      sha256 in X-Linked-Etag), X-Linked-Size,
                                                               Content-Length, Accept-Ranges; Range -> 206
  GET  /cdn/{sha256}?exp=..&sig=..                             LFS bytes behind a signed redirect (only with
                                                               cdn_url set: a second origin, like the real CDN)
Never any X-Xet-* header: the client must not try Xet storage.

Options: a bandwidth cap shared by all connections (the site's uplink), a token the hub requires, and a
request log (in memory and JSON lines) that the tests and the Molecule verify step read to prove the hub
was read once per cluster.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

from .repo import HubStore, lfs_pointer

CHUNK = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_API = re.compile(r"^/api/models/([^/]+/[^/]+?)(?:/revision/([^/]+))?/?$")
_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_CDN = re.compile(r"^/cdn/([0-9a-f]{64})$")


class Throttle:
    """One token bucket for every connection: B megabits per second in total, like a shared uplink."""

    def __init__(self, mbps: float | None) -> None:
        self.rate = mbps * 1e6 / 8 if mbps else None   # bytes per second
        self.lock = threading.Lock()
        self.next_free = time.monotonic()

    def take(self, nbytes: int) -> None:
        if not self.rate:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + nbytes / self.rate
            wait = self.next_free - now
        if wait > 0:
            time.sleep(wait)


@dataclass
class Request:
    method: str
    path: str
    status: int
    client: str
    kind: str                          # api | resolve | cdn | other
    repo: str | None = None
    file: str | None = None
    range_start: int | None = None
    bytes_sent: int = 0
    complete: bool = True              # the whole response body was written
    authorized: bool = False           # an Authorization header came with the request
    started: float = field(default_factory=time.time)
    ended: float = 0.0


class HubState:
    """Configuration and bookkeeping shared by the handler threads."""

    def __init__(self, root: Path, *, mbps: float | None = None, token: str | None = None,
                 cdn_url: str | None = None, log_path: Path | None = None) -> None:
        self.store = HubStore(root)
        self.throttle = Throttle(mbps)
        self.token = token
        self.cdn_url = cdn_url.rstrip("/") if cdn_url else None
        self.secret = hashlib.sha256(f"{root}:{time.time()}".encode()).digest()
        self.log_path = Path(log_path) if log_path else None
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        # requests being answered: a client may hold a whole answer before its handler has recorded it
        self.in_flight = 0
        self.settled = threading.Condition(self.lock)
        self.corrupt_once: dict[str, int] = {}   # sha256 -> byte offset flipped in the next response

    def begin(self) -> None:
        with self.lock:
            self.in_flight += 1

    def record(self, req: Request) -> None:
        req.ended = time.time()
        with self.lock:
            self.requests.append(req)
            if self.log_path is not None:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(asdict(req), sort_keys=True) + "\n")
            self.in_flight -= 1
            self.settled.notify_all()

    def sign(self, sha256: str, expires: int) -> str:
        return hmac.new(self.secret, f"{sha256}:{expires}".encode(), "sha256").hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "qwen35-test-hub/1"
    state: HubState  # set on the subclass made per server

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet; the request log is the record
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    # ------------------------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        self.state.begin()   # ended by state.record() below, whatever happens
        url = urlparse(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        auth = self.headers.get("Authorization")
        req = Request(method=method, path=self.path, status=0, client=self.client_address[0], kind="other",
                      authorized=auth is not None)
        try:
            if (m := _CDN.match(url.path)) is not None:
                req.kind = "cdn"
                self._cdn(method, m.group(1), query, req)
                return
            if self.state.token is not None and auth != f"Bearer {self.state.token}":
                req.kind = "api" if path.startswith("/api/") else "resolve"
                self._error(req, 401, "RepoNotFound", "Invalid credentials in Authorization header")
                return
            if (m := _TREE.match(path)) is not None and method == "GET":
                req.kind, req.repo = "api", m.group(1)
                self._tree(m.group(1), m.group(2), (m.group(3) or "").strip("/"), query, req)
            elif (m := _API.match(path)) is not None and method == "GET":
                req.kind, req.repo = "api", m.group(1)
                self._model_info(m.group(1), m.group(2) or "main", query, req)
            elif (m := _RESOLVE.match(path)) is not None:
                req.kind, req.repo, req.file = "resolve", m.group(1), m.group(3)
                self._resolve(method, m.group(1), m.group(2), m.group(3), req)
            else:
                self._error(req, 404, None, "not found")
        except (BrokenPipeError, ConnectionResetError):
            req.complete = False
            self.close_connection = True
        finally:
            self.state.record(req)

    def _error(self, req: Request, status: int, code: str | None, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        req.status = status
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, req: Request, data: Any) -> None:
        body = json.dumps(data).encode()
        req.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        req.bytes_sent = len(body)

    def _model_info(self, repo: str, revision: str, query: dict, req: Request) -> None:
        store = self.state.store
        if not store.repo_exists(repo):
            self._error(req, 404, "RepoNotFound", f"Repository {repo} not found")
            return
        commit = store.resolve(repo, revision)
        if commit is None:
            self._error(req, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for f in store.listing(repo, commit).values():
            s: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                s["size"] = f.size
                s["blobId"] = f.blob_id
                if f.lfs:
                    s["lfs"] = {"sha256": f.sha256, "size": f.size,
                                "pointerSize": len(lfs_pointer(f.sha256, f.size))}
            siblings.append(s)
        org = repo.split("/")[0]
        self._json(req, {"_id": hashlib.sha1(repo.encode()).hexdigest()[:24], "id": repo, "modelId": repo,
                         "author": org, "sha": commit, "lastModified": "2026-01-01T00:00:00.000Z",
                         "createdAt": "2026-01-01T00:00:00.000Z", "private": False, "gated": False,
                         "disabled": False, "downloads": 0, "likes": 0, "tags": ["safetensors", "test-double"],
                         "library_name": "transformers", "siblings": siblings})

    def _tree(self, repo: str, revision: str, prefix: str, query: dict, req: Request) -> None:
        """list_repo_tree (snapshot_download lists files this way): one page, files and directories."""
        store = self.state.store
        if not store.repo_exists(repo):
            self._error(req, 404, "RepoNotFound", f"Repository {repo} not found")
            return
        commit = store.resolve(repo, revision)
        if commit is None:
            self._error(req, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries: dict[str, dict[str, Any]] = {}
        base = prefix + "/" if prefix else ""
        for f in store.listing(repo, commit).values():
            if not f.path.startswith(base):
                continue
            rest = f.path[len(base):]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                if i > 1 and not recursive:
                    break
                d = base + "/".join(parts[:i])
                entries.setdefault(d, {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(),
                                       "size": 0, "path": d})
            if len(parts) > 1 and not recursive:
                continue
            e: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
            if f.lfs:
                e["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(lfs_pointer(f.sha256, f.size))}
            entries[f.path] = e
        self._json(req, [entries[k] for k in sorted(entries)])

    def _resolve(self, method: str, repo: str, revision: str, path: str, req: Request) -> None:
        store = self.state.store
        if not store.repo_exists(repo):
            self._error(req, 404, "RepoNotFound", f"Repository {repo} not found")
            return
        commit = store.resolve(repo, revision)
        if commit is None:
            self._error(req, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        f = store.listing(repo, commit).get(path)
        if f is None:
            self.send_response(404)
            req.status = 404
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        common = {"X-Repo-Commit": commit}
        if f.lfs:
            common.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
        if f.lfs and self.state.cdn_url:
            expires = int(time.time()) + 3600
            location = (f"{self.state.cdn_url}/cdn/{f.sha256}?exp={expires}"
                        f"&sig={self.state.sign(f.sha256, expires)}&name={quote(path, safe='')}")
            req.status = 302
            self.send_response(302)
            for k, v in common.items():
                self.send_header(k, v)
            self.send_header("ETag", f'"{f.blob_id}"')
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = f.sha256 if f.lfs else f.blob_id
        self._send_blob(method, f.sha256, f.size, etag, common, req)

    def _cdn(self, method: str, sha256: str, query: dict, req: Request) -> None:
        try:
            expires = int(query["exp"][0])
            sig = query["sig"][0]
        except (KeyError, ValueError, IndexError):
            self._error(req, 403, None, "unsigned CDN request")
            return
        if not hmac.compare_digest(sig, self.state.sign(sha256, expires)) or expires < time.time():
            self._error(req, 403, None, "bad or expired signature")
            return
        path = self.state.store.blob_path(sha256)
        if not path.is_file():
            self._error(req, 404, None, "no such blob")
            return
        req.file = query.get("name", [None])[0]
        self._send_blob(method, sha256, path.stat().st_size, sha256, {}, req)

    def _send_blob(self, method: str, sha256: str, size: int, etag: str, headers: dict[str, str],
                   req: Request) -> None:
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng:
            m = _RANGE.match(rng.strip())
            if m is None or (not m.group(1) and not m.group(2)):
                self._error(req, 416, None, f"unsupported range {rng!r}")
                return
            if m.group(1):
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else size - 1
            else:  # suffix range: the last N bytes
                start = max(0, size - int(m.group(2)))
            end = min(end, size - 1)
            if start > end or start >= size:
                self._error(req, 416, None, f"range {rng!r} outside 0-{size - 1}")
                return
            status = 206
            req.range_start = start
        length = end - start + 1 if size else 0
        req.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if method == "HEAD" or length == 0:
            return
        req.complete = False
        flip = self.state.corrupt_once.pop(sha256, None)
        with open(self.state.store.blob_path(sha256), "rb") as fh:
            fh.seek(start)
            pos, left = start, length
            while left:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    break
                if flip is not None and pos <= flip < pos + len(chunk):
                    b = bytearray(chunk)
                    b[flip - pos] ^= 0xFF
                    chunk = bytes(b)
                self.state.throttle.take(len(chunk))
                self.wfile.write(chunk)
                req.bytes_sent += len(chunk)
                pos += len(chunk)
                left -= len(chunk)
        req.complete = left == 0


class LocalHub:
    """Run the hub on HOST:PORT in a background thread: `with LocalHub(root) as hub: hub.url ...`."""

    def __init__(self, root: Path | str, *, host: str = "127.0.0.1", port: int = 0, mbps: float | None = None,
                 token: str | None = None, cdn: bool = False, log_path: Path | str | None = None) -> None:
        self.state = HubState(Path(root), mbps=mbps, token=token, log_path=Path(log_path) if log_path else None)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        if cdn:
            # A second origin for the same server (the "CDN"): the client must drop the token there.
            cdn_host = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
            self.state.cdn_url = f"http://{cdn_host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="qwen35-test-hub", daemon=True)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        return f"http://{host}:{self.port}"

    @property
    def requests(self) -> list[Request]:
        """The requests answered so far, once those being answered are recorded (5 s at most)."""
        with self.state.settled:
            self.state.settled.wait_for(lambda: self.state.in_flight == 0, timeout=5)
            return list(self.state.requests)

    def clear(self) -> None:
        with self.state.lock:
            self.state.requests.clear()

    def set_rate(self, mbps: float | None) -> None:
        self.state.throttle = Throttle(mbps)

    def corrupt_next(self, sha256: str, offset: int = 0) -> None:
        """Flip one byte at OFFSET in the next response carrying blob SHA256 (a transfer gone bad)."""
        self.state.corrupt_once[sha256] = offset

    def start(self) -> "LocalHub":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ------------------------------------------------------------------------------------- log queries

def load_log(path: Path | str) -> list[dict[str, Any]]:
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def max_concurrent_downloads(requests: list[Any]) -> int:
    """The most file downloads (GETs that sent bytes) that were in flight at the same time."""
    events = []
    for r in requests:
        r = r if isinstance(r, dict) else asdict(r)
        if r["method"] == "GET" and r["kind"] in ("resolve", "cdn") and r["bytes_sent"] > 0:
            events += [(r["started"], 1), (r["ended"], -1)]
    best = cur = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        cur += delta
        best = max(best, cur)
    return best


def downloads_by_file(requests: list[Any]) -> dict[str, dict[str, int]]:
    """Per repository file: GETs that carried bytes, and bytes sent (resolve and CDN requests together)."""
    out: dict[str, dict[str, int]] = {}
    for r in requests:
        r = r if isinstance(r, dict) else asdict(r)
        if r["method"] != "GET" or r["kind"] not in ("resolve", "cdn") or r["status"] not in (200, 206):
            continue
        name = r["file"]
        if r["kind"] == "cdn" and name is None:
            continue
        d = out.setdefault(name, {"gets": 0, "bytes": 0, "complete_gets": 0})
        d["gets"] += 1
        d["bytes"] += r["bytes_sent"]
        d["complete_gets"] += 1 if r["complete"] else 0
    return out
