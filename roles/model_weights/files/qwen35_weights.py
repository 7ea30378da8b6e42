#!/usr/bin/env python3
"""qwen35-weights: fetch a Hugging Face model snapshot pinned to a commit, verified, resumable, atomic.

Runs on the nodes (shipped by the Ansible role `model_weights`); the `qwen35_prov` package imports this
same file for its tests, so there is one implementation. Depends on the standard library only, plus the
real `huggingface_hub` client for the two commands that talk to the hub (`manifest`, `fetch`): `status`,
`space`, `pull` and `link` work with the system python3.

Layout under ROOT (the weights dir):
  ROOT/<org>/<name>/<commit>/                 published snapshot; complete iff it holds MARKER
  ROOT/<org>/<name>/.staging-<commit>/        work in progress, never read by a server
      .incomplete/<path>                      bytes of a file being downloaded (resumed with an HTTP Range)
      .qwen35-progress.jsonl                  files already verified (stat + digest), so a resume re-hashes nothing
  ROOT/<org>/<name>/<branch or tag>  ->  <commit>   symlink, only for an unpinned revision allowed on purpose
  ROOT/<org>/<name>/.lock-<commit>            flock held while one process works on that commit

The marker (MARKER, JSON) lists every file with its size, sha256, git blob id, and its mtime/inode when it was
verified: a re-run `stat`s each file and trusts the marker when nothing changed (seconds for 800 GB), and
re-hashes, then fetches again, only the files whose stat changed (or every file with --verify full).

Exit codes: 0 ok, 1 failure (download, verification), 2 usage or refused input (unpinned revision,
bad manifest), 3 not enough disk space, 4 another process holds the lock.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import urlparse

MARKER = ".qwen35-complete.json"
PROGRESS = ".qwen35-progress.jsonl"
HEARTBEAT = ".qwen35-heartbeat"
INCOMPLETE = ".incomplete"
MANIFEST_FORMAT = "qwen35-weights-manifest/1"
MARKER_FORMAT = "qwen35-weights-marker/1"
DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK = 8 * 1024 * 1024
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
#: Files this tool writes itself: never part of a snapshot's content, never copied between nodes.
OWN_FILES = (MARKER, PROGRESS, INCOMPLETE, HEARTBEAT)

EXIT_FAILED, EXIT_USAGE, EXIT_DISK, EXIT_LOCKED = 1, 2, 3, 4


# --------------------------------------------------------------------------------------------- errors

class WeightsError(Exception):
    """A failure with a message that says what was wrong and how to fix it."""

    exit_code = EXIT_FAILED


class UsageError(WeightsError):
    exit_code = EXIT_USAGE


class DiskSpaceError(WeightsError):
    exit_code = EXIT_DISK


class LockedError(WeightsError):
    exit_code = EXIT_LOCKED


class VerificationError(WeightsError):
    pass


# ----------------------------------------------------------------------------------------- manifest

@dataclass(frozen=True)
class FileSpec:
    """One file of the hub repository at a commit, as the hub describes it."""

    path: str
    size: int
    blob_id: str | None = None     # git object id (sha1 of the blob, or of the LFS pointer for LFS files)
    sha256: str | None = None      # the LFS oid; for non-LFS files filled in by the node that verified it
    lfs: bool = False


@dataclass
class Manifest:
    """What a complete snapshot holds: the hub's own metadata for every file at one commit."""

    repo: str
    revision: str                  # what was asked for (a commit, or a branch/tag allowed on purpose)
    commit: str                    # the commit it resolved to
    files: list[FileSpec]
    endpoint: str | None = None
    excluded: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, "repo": self.repo, "revision": self.revision, "commit": self.commit,
                "endpoint": self.endpoint, "excluded": list(self.excluded), "total_bytes": self.total_bytes,
                "files": [asdict(f) for f in self.files]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        if not isinstance(data, dict) or data.get("format") not in (MANIFEST_FORMAT, MARKER_FORMAT):
            raise UsageError(f"not a qwen35-weights manifest (format {data.get('format') if isinstance(data, dict) else type(data).__name__!r})")
        try:
            files = [FileSpec(path=f["path"], size=int(f["size"]), blob_id=f.get("blob_id"),
                              sha256=f.get("sha256"), lfs=bool(f.get("lfs"))) for f in data["files"]]
            m = cls(repo=data["repo"], revision=data.get("revision") or data["commit"], commit=data["commit"],
                    files=files, endpoint=data.get("endpoint"), excluded=list(data.get("excluded") or []))
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"manifest is malformed: {e!r}") from None
        validate_manifest(m)
        return m


def validate_repo_id(repo: str) -> str:
    parts = repo.split("/")
    if len(parts) != 2 or not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", p) for p in parts) \
            or any(p in (".", "..") for p in parts):
        raise UsageError(f"repository {repo!r}: expected ORG/NAME (letters, digits, '.', '_', '-')")
    return repo


def safe_relpath(path: str) -> str:
    """A repository path that stays inside the snapshot: relative, no '..', not one of our own files."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")) \
            or "\x00" in path or "\\" in path:
        raise UsageError(f"refusing repository path {path!r}: not a plain relative path")
    if p.parts[0] in OWN_FILES or p.parts[0].startswith(".staging-"):
        raise UsageError(f"refusing repository path {path!r}: clashes with a file of this tool")
    return path


def validate_manifest(m: Manifest) -> None:
    validate_repo_id(m.repo)
    if not COMMIT_RE.match(m.commit):
        raise UsageError(f"manifest commit {m.commit!r} is not a 40-hex commit id")
    seen: set[str] = set()
    for f in m.files:
        safe_relpath(f.path)
        if f.path in seen:
            raise UsageError(f"manifest lists {f.path!r} twice")
        seen.add(f.path)
        if f.size < 0:
            raise UsageError(f"manifest size of {f.path!r} is negative")
        if f.sha256 is None and f.blob_id is None:
            raise UsageError(f"manifest has no digest for {f.path!r} (neither LFS sha256 nor git blob id)")
    if not m.files:
        raise UsageError(f"{m.repo}@{m.commit}: the repository lists no files")


def is_commit(revision: str | None) -> bool:
    return bool(revision) and COMMIT_RE.match(revision) is not None


def check_revision(revision: str | None, allow_unpinned: bool) -> str:
    rev = revision or "main"
    if not is_commit(rev) and not allow_unpinned:
        raise UsageError(
            f"revision {rev!r} is not a commit id: a branch or tag moves, so nodes could end up with different "
            "weights. Pin the 40-hex commit (qwen35_model_revision / --revision), or allow it on purpose "
            "(model_weights_allow_unpinned: true / --allow-unpinned): it is then resolved once and every node "
            "gets that commit")
    return rev


# ---------------------------------------------------------------------------------------- hub access

def _hub_env(endpoint: str | None) -> str:
    """Settings for huggingface_hub, set before it is imported (it reads them at import time)."""
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    os.environ["HF_ENDPOINT"] = endpoint
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # Plain HTTP(S) with Range requests: resumable across restarts and verified here. Xet storage goes
    # through its own reconstruction cache, which this tool cannot resume or account for.
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
    return endpoint


def hub_manifest(repo: str, revision: str | None, *, endpoint: str | None = None, token: str | None = None,
                 allow_unpinned: bool = False, exclude: Sequence[str] = ()) -> Manifest:
    """Ask the hub (one `model_info(files_metadata=True)` call) what the repository holds at REVISION."""
    validate_repo_id(repo)
    rev = check_revision(revision, allow_unpinned)
    endpoint = _hub_env(endpoint)
    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint, token=token or None).model_info(repo, revision=rev, files_metadata=True)
    commit = info.sha
    if not is_commit(commit):
        raise WeightsError(f"the hub answered {repo}@{rev} without a commit id (sha={commit!r})")
    if is_commit(rev) and commit != rev:
        raise WeightsError(f"asked the hub for commit {rev} and it answered {commit}")
    files = []
    for s in info.siblings or []:
        if any(fnmatch.fnmatch(s.rfilename, pat) for pat in exclude):
            continue
        if s.lfs is not None:
            files.append(FileSpec(path=s.rfilename, size=int(s.lfs.size), blob_id=s.blob_id,
                                  sha256=s.lfs.sha256.lower(), lfs=True))
        else:
            if s.size is None or s.blob_id is None:
                raise WeightsError(f"the hub gave no size/blob id for {s.rfilename!r}: files_metadata unsupported?")
            files.append(FileSpec(path=s.rfilename, size=int(s.size), blob_id=s.blob_id, sha256=None, lfs=False))
    m = Manifest(repo=repo, revision=rev, commit=commit, files=sorted(files, key=lambda f: f.path),
                 endpoint=endpoint, excluded=list(exclude))
    validate_manifest(m)
    return m


def _origin(url: str) -> tuple[str, str, int]:
    u = urlparse(url)
    return u.scheme, (u.hostname or "").lower(), u.port or {"http": 80, "https": 443}.get(u.scheme, 0)


# --------------------------------------------------------------------------------------------- hashing

class Digest:
    """sha256 and git blob sha1 of one file, computed in one pass."""

    def __init__(self, size: int, git: bool = True) -> None:
        self.sha256 = hashlib.sha256()
        self.git = hashlib.sha1(b"blob %d\x00" % size) if git else None

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        if self.git is not None:
            self.git.update(data)

    def result(self) -> tuple[str, str | None]:
        return self.sha256.hexdigest(), (self.git.hexdigest() if self.git is not None else None)


def hash_file(path: Path, size: int | None = None, git: bool = True, limit: int | None = None) -> tuple[str, str | None]:
    """(sha256, git blob id) of a file; LIMIT hashes only the first LIMIT bytes (sha256 only)."""
    size = path.stat().st_size if size is None else size
    d = Digest(size, git=git and limit is None)
    remaining = limit
    with open(path, "rb") as f:
        while True:
            n = CHUNK if remaining is None else min(CHUNK, remaining)
            if n == 0:
                break
            chunk = f.read(n)
            if not chunk:
                break
            d.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return d.result()


def digest_matches(spec: FileSpec, sha256: str, blob_id: str | None) -> bool:
    if spec.sha256 is not None:
        return sha256 == spec.sha256
    return blob_id is not None and blob_id == spec.blob_id


# ------------------------------------------------------------------------------------------ counters

@dataclass
class Counters:
    """What a run did, for logs and for tests that check the fast path by counting, not timing."""

    files_stat_trusted: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0
    files_downloaded: int = 0
    bytes_downloaded: int = 0
    bytes_resumed: int = 0
    files_refetched: int = 0          # files that were present but failed verification
    digest_retries: int = 0           # downloads whose digest did not match and were fetched again
    files_streamed: int = 0           # files copied from a peer that was still downloading (pull --follow)
    lock = threading.Lock()

    def add(self, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def to_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "lock"}


Log = Callable[[str], None]


def _stderr_log(msg: str) -> None:
    print(f"qwen35-weights: {msg}", file=sys.stderr, flush=True)


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


# ------------------------------------------------------------------------------------ paths and locks

def repo_dir(root: Path, repo: str) -> Path:
    return Path(root) / validate_repo_id(repo)


def snapshot_dir(root: Path, repo: str, commit: str) -> Path:
    return repo_dir(root, repo) / commit


def staging_dir(root: Path, repo: str, commit: str) -> Path:
    return repo_dir(root, repo) / f".staging-{commit}"


@contextlib.contextmanager
def commit_lock(root: Path, repo: str, commit: str, timeout: float = 0) -> Iterator[None]:
    d = repo_dir(root, repo)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f".lock-{commit}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise LockedError(f"{repo}@{commit} is being worked on by another process (pid {holder}); "
                                      "wait for it, or stop it and run again (the work resumes)") from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------- marker checks

@dataclass
class SnapshotStatus:
    complete: bool
    path: str
    commit: str | None
    reason: str
    bad_files: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stat_entry(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "size": st.st_size}


def _entry_matches_stat(entry: dict[str, Any], path: Path) -> bool:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    import stat as _stat
    return (_stat.S_ISREG(st.st_mode) and st.st_size == entry.get("size")
            and st.st_mtime_ns == entry.get("mtime_ns") and st.st_ino == entry.get("ino"))


def read_marker(snapdir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((snapdir / MARKER).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == MARKER_FORMAT else None


def check_snapshot(snapdir: Path, *, full: bool = False, expect: Manifest | None = None,
                   counters: Counters | None = None, workers: int = 4, hash_suspects: bool = True) -> SnapshotStatus:
    """Is SNAPDIR a complete snapshot? Fast: stat every file against the marker. Full: re-hash every file.

    A file whose stat changed since it was verified is re-hashed (HASH_SUSPECTS), or reported as bad
    straight away (fetch and pull re-hash it themselves, in staging)."""
    counters = counters or Counters()
    snapdir = Path(snapdir)
    marker = read_marker(snapdir)
    if marker is None:
        reason = "absent" if not snapdir.exists() else "no valid completion marker"
        return SnapshotStatus(False, str(snapdir), None, reason, counters=counters.to_dict())
    commit = marker.get("commit")
    if snapdir.resolve().name != commit:
        return SnapshotStatus(False, str(snapdir), commit, f"marker is for commit {commit}, directory is "
                              f"{snapdir.resolve().name}", counters=counters.to_dict())
    try:
        listed = Manifest.from_dict(marker)
    except WeightsError as e:
        return SnapshotStatus(False, str(snapdir), commit, f"marker unreadable: {e}", counters=counters.to_dict())
    if expect is not None and not _marker_matches(listed, expect):
        return SnapshotStatus(False, str(snapdir), commit, "marker does not match the expected manifest",
                              counters=counters.to_dict())
    entries = {e["path"]: e for e in marker["files"]}
    suspects = []
    for f in listed.files:
        if not full and _entry_matches_stat(entries[f.path], snapdir / f.path):
            counters.add(files_stat_trusted=1)
        else:
            suspects.append(f)
    bad: list[str] = []
    if not hash_suspects and not full:
        bad = [f.path for f in suspects]
        suspects = []

    def rehash(f: FileSpec) -> str | None:
        p = snapdir / f.path
        if not p.is_file() or p.stat().st_size != f.size:
            return f.path
        sha, blob = hash_file(p, f.size, git=not f.lfs)
        counters.add(files_hashed=1, bytes_hashed=f.size)
        return None if sha == f.sha256 else f.path

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for result in pool.map(rehash, suspects):
            if result is not None:
                bad.append(result)
    if bad:
        return SnapshotStatus(False, str(snapdir), commit, f"{len(bad)} file(s) changed or corrupt", sorted(bad),
                              counters=counters.to_dict())
    return SnapshotStatus(True, str(snapdir), commit, "verified (sha256)" if suspects else "marker and stat match",
                          counters=counters.to_dict())


def _marker_matches(listed: Manifest, expect: Manifest) -> bool:
    """Same commit, same files, same sizes and digests (sha256 where EXPECT has one, else git blob id)."""
    if listed.commit != expect.commit or {f.path for f in listed.files} != {f.path for f in expect.files}:
        return False
    have = {f.path: f for f in listed.files}
    for f in expect.files:
        h = have[f.path]
        if h.size != f.size or not digest_matches(f, h.sha256 or "", h.blob_id):
            return False
    return True


def snapshot_status(root: Path, repo: str, revision: str, *, full: bool = False) -> SnapshotStatus:
    """Status of ROOT/REPO/REVISION (REVISION may be a commit, or the name of a link made for a branch)."""
    path = repo_dir(root, repo) / revision
    return check_snapshot(path, full=full)


# --------------------------------------------------------------------------------------- disk space

def space_needed(manifest: Manifest, root: Path) -> int:
    """Bytes still to write for MANIFEST under ROOT: what is neither published, verified, nor partly there."""
    final = snapshot_dir(root, manifest.repo, manifest.commit)
    stage = staging_dir(root, manifest.repo, manifest.commit)
    need = 0
    for f in manifest.files:
        have = 0
        for candidate in (final / f.path, stage / f.path, stage / INCOMPLETE / f.path):
            try:
                have = max(have, min(candidate.stat().st_size, f.size))
            except (FileNotFoundError, NotADirectoryError):
                pass
        need += f.size - have
    return need


def check_space(manifest: Manifest, root: Path, reserve_bytes: int) -> dict[str, int]:
    """Refuse (DiskSpaceError) before any byte is fetched when ROOT's filesystem cannot hold the rest."""
    root = Path(root)
    probe = root
    while not probe.exists():
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    need = space_needed(manifest, root)
    report = {"need_bytes": need, "free_bytes": usage.free, "reserve_bytes": reserve_bytes,
              "total_bytes": manifest.total_bytes}
    if need > 0 and need + reserve_bytes > usage.free:
        raise DiskSpaceError(
            f"not enough disk space under {root} for {manifest.repo}@{manifest.commit[:12]}: "
            f"{need / 1e9:.2f} GB still to fetch + {reserve_bytes / 1e9:.2f} GB reserve, "
            f"only {usage.free / 1e9:.2f} GB free on that filesystem. Free space, point the weights dir "
            "at a bigger disk, or lower the reserve")
    return report


# ----------------------------------------------------------------------------- staging and publishing

class _Journal:
    """Append-only record of the files verified in a staging dir (one JSON object a line)."""

    def __init__(self, stage: Path) -> None:
        self.path = stage / PROGRESS
        self.lock = threading.Lock()

    def read(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return out
        for line in lines:
            try:
                e = json.loads(line)
                out[e["path"]] = e
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a torn last line after a crash
        return out

    def add(self, entry: dict[str, Any]) -> None:
        with self.lock, open(self.path, "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _record(spec: FileSpec, path: Path, sha256: str, blob_id: str | None) -> dict[str, Any]:
    st = path.stat()
    return {"path": spec.path, "size": st.st_size, "sha256": sha256, "blob_id": blob_id or spec.blob_id,
            "lfs": spec.lfs, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def _adopt_published(final: Path, stage: Path, log: Log, distrust: set[str]) -> None:
    """Move an existing but not (or no longer) complete snapshot back to staging, keeping what is trusted.

    The rename is atomic: from that instant nobody sees FINAL as a complete snapshot. Entries of its old
    marker seed the journal, so files whose stat did not change are not re-hashed.
    """
    marker = read_marker(final)
    if stage.exists():
        # Both exist (an earlier run died between steps): keep staging, move over what it lacks.
        for src in sorted(final.rglob("*")):
            rel = src.relative_to(final)
            if src.is_file() and not src.is_symlink() and rel.parts[0] not in OWN_FILES:
                dst = stage / rel
                if not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(src, dst)
        shutil.rmtree(final)
    else:
        os.rename(final, stage)
    if marker is not None:
        journal = _Journal(stage)
        for e in marker.get("files", []):
            if e["path"] not in distrust and _entry_matches_stat(e, stage / e["path"]):
                journal.add(e)
    (stage / MARKER).unlink(missing_ok=True)
    log(f"{final.name[:12]}: snapshot was not complete any more; repairing it in {stage.name}")


def _prepare_stage(manifest: Manifest, root: Path, log: Log, distrust: Iterable[str] = ()) -> Path:
    final = snapshot_dir(root, manifest.repo, manifest.commit)
    stage = staging_dir(root, manifest.repo, manifest.commit)
    if final.is_symlink():
        raise WeightsError(f"{final} is a symlink; expected a snapshot directory (remove it)")
    if final.exists():
        _adopt_published(final, stage, log, set(distrust))
    stage.mkdir(parents=True, exist_ok=True)
    (stage / INCOMPLETE).mkdir(exist_ok=True)
    return stage


def _trusted_files(manifest: Manifest, stage: Path, counters: Counters, full: bool, workers: int,
                   log: Log) -> set[str]:
    """Files of STAGE already verified: journal + unchanged stat, or (no record / --verify full) re-hashed."""
    journal = _Journal(stage)
    records = journal.read()
    trusted: set[str] = set()
    to_hash: list[FileSpec] = []
    for f in manifest.files:
        p = stage / f.path
        rec = records.get(f.path)
        if rec is not None and not full and _entry_matches_stat(rec, p) and digest_matches(f, rec["sha256"], rec.get("blob_id")):
            counters.add(files_stat_trusted=1)
            trusted.add(f.path)
        elif p.is_file() and p.stat().st_size >= f.size:
            to_hash.append(f)
        # shorter: a copy that was cut off (rsync --append-verify resumes it); fetch resumes from .incomplete/

    def check(f: FileSpec) -> tuple[FileSpec, bool]:
        p = stage / f.path
        if p.stat().st_size != f.size:
            return f, False
        sha, blob = hash_file(p, f.size, git=not f.lfs)
        counters.add(files_hashed=1, bytes_hashed=f.size)
        ok = digest_matches(f, sha, blob)
        if ok:
            journal.add(_record(f, p, sha, blob))
        return f, ok

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for f, ok in pool.map(check, to_hash):
            if ok:
                trusted.add(f.path)
            else:
                log(f"{f.path}: present but does not match the hub's size/sha256; fetching it again")
                counters.add(files_refetched=1)
                (stage / f.path).unlink()
    return trusted


def _publish(manifest: Manifest, root: Path, stage: Path, log: Log) -> Path:
    """Write the marker into STAGE (every file verified), then rename STAGE to the commit's directory."""
    final = snapshot_dir(root, manifest.repo, manifest.commit)
    records = _Journal(stage).read()
    files = []
    for f in manifest.files:
        rec = records.get(f.path)
        p = stage / f.path
        if rec is None or not _entry_matches_stat(rec, p) or not digest_matches(f, rec["sha256"], rec.get("blob_id")):
            raise VerificationError(f"{f.path}: not verified, refusing to publish {manifest.commit}")
        files.append({**asdict(f), "sha256": rec["sha256"], "blob_id": rec.get("blob_id") or f.blob_id,
                      "mtime_ns": rec["mtime_ns"], "ino": rec["ino"]})
    extra = sorted(str(p.relative_to(stage)) for p in stage.rglob("*")
                   if (p.is_file() or p.is_symlink()) and p.relative_to(stage).parts[0] not in OWN_FILES
                   and str(p.relative_to(stage)) not in records)
    for rel in extra:  # leftovers (a file the repo no longer has, a stray partial): not part of the snapshot
        (stage / rel).unlink()
    shutil.rmtree(stage / INCOMPLETE, ignore_errors=True)
    marker = {**manifest.to_dict(), "format": MARKER_FORMAT, "files": files,
              "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "verified_by": "sha256"}
    _write_json_atomic(stage / MARKER, marker)
    (stage / PROGRESS).unlink(missing_ok=True)
    for d in sorted({p.parent for p in stage.rglob("*")} | {stage}, key=lambda p: len(p.parts), reverse=True):
        os.chmod(d, 0o755)
        _fsync_dir(d)
    os.rename(stage, final)
    _fsync_dir(final.parent)
    log(f"published {final} ({len(files)} files, {_mib(manifest.total_bytes)})")
    return final


def make_link(root: Path, repo: str, name: str, commit: str) -> bool:
    """Point ROOT/REPO/NAME (a branch or tag name) at COMMIT, atomically. Returns True when it changed."""
    if is_commit(name):
        return False
    if "/" in name or name in (".", "..") or name.startswith("."):
        raise UsageError(f"link name {name!r}: a plain branch or tag name is needed")
    link = repo_dir(root, repo) / name
    if link.is_symlink() and os.readlink(link) == commit:
        return False
    if link.exists() and not link.is_symlink():
        raise WeightsError(f"{link} exists and is not a symlink; remove it to let it point at {commit}")
    tmp = link.with_name(f".{name}.link-tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(commit, tmp)
    os.replace(tmp, link)
    _fsync_dir(link.parent)
    return True


# ------------------------------------------------------------------------------------ hub download

class _HashingWriter:
    """File wrapper given to huggingface_hub's `http_get`: hashes what is written, follows rewinds."""

    def __init__(self, f: Any, digest: Digest, path: Path, size: int, git: bool) -> None:
        self.f, self.digest, self.path, self.size, self.git = f, digest, path, size, git

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.f.tell()

    def seek(self, *args: Any) -> int:
        return self.f.seek(*args)

    def truncate(self, *args: Any) -> int:
        # The server ignored our Range and sent the whole file: http_get rewinds; start the digest over.
        out = self.f.truncate(*args)
        self.f.flush()
        self.digest = Digest(self.size, git=self.git)
        pos = self.f.tell()
        if pos:
            with open(self.path, "rb") as r:
                remaining = pos
                while remaining:
                    chunk = r.read(min(CHUNK, remaining))
                    if not chunk:
                        break
                    self.digest.update(chunk)
                    remaining -= len(chunk)
        return out

    def flush(self) -> None:
        self.f.flush()


@dataclass
class HubSession:
    repo: str
    commit: str
    endpoint: str
    token: str | None


def _download_file(hub: HubSession, spec: FileSpec, stage: Path, counters: Counters, log: Log,
                   attempts: int = 3) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    final = stage / spec.path
    part = stage / INCOMPLETE / spec.path
    part.parent.mkdir(parents=True, exist_ok=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    url = hf_hub_url(hub.repo, spec.path, revision=hub.commit, endpoint=hub.endpoint)
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            meta = get_hf_file_metadata(url, token=hub.token or None, endpoint=hub.endpoint, retry_on_errors=True)
            expected_etag = spec.sha256 if spec.lfs else spec.blob_id
            if meta.commit_hash != hub.commit:
                raise VerificationError(f"{spec.path}: the hub served commit {meta.commit_hash}, expected {hub.commit}")
            if expected_etag and meta.etag and meta.etag != expected_etag:
                raise VerificationError(f"{spec.path}: the hub's etag {meta.etag} differs from its listing {expected_etag}")
            if meta.size is not None and meta.size != spec.size:
                raise VerificationError(f"{spec.path}: the hub's size {meta.size} differs from its listing {spec.size}")
            headers = build_hf_headers(token=hub.token or None)
            headers["Accept-Encoding"] = "identity"
            if _origin(meta.location) != _origin(url):
                headers.pop("authorization", None)   # a CDN's signed URL: the token stays with the hub
            resume = part.stat().st_size if part.exists() else 0
            fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
            with os.fdopen(fd, "r+b") as f:
                if resume > spec.size:
                    resume = 0
                f.truncate(resume)
                digest = Digest(spec.size, git=not spec.lfs)
                if resume:
                    f.seek(0)
                    left = resume
                    while left:
                        chunk = f.read(min(CHUNK, left))
                        digest.update(chunk)
                        left -= len(chunk)
                f.seek(resume)
                writer = _HashingWriter(f, digest, part, spec.size, git=not spec.lfs)
                started = time.monotonic()
                http_get(meta.location, writer, resume_size=resume, headers=headers, expected_size=spec.size,
                         displayed_filename=spec.path)
                f.flush()
                os.fsync(f.fileno())
                digest = writer.digest
            elapsed = max(time.monotonic() - started, 1e-6)
            got = spec.size - resume
            counters.add(bytes_downloaded=got, bytes_resumed=resume)
            sha, blob = digest.result()
            if not digest_matches(spec, sha, blob):
                part.unlink(missing_ok=True)
                counters.add(digest_retries=1)
                raise VerificationError(f"{spec.path}: downloaded bytes do not match the hub's "
                                        f"{'sha256' if spec.sha256 else 'git blob id'}; fetching it again")
            os.replace(part, final)
            _Journal(stage).add(_record(spec, final, sha, blob))
            counters.add(files_downloaded=1)
            how = f", resumed at {_mib(resume)}" if resume else ""
            log(f"fetched {spec.path} ({_mib(spec.size)}, {_mib(int(got / elapsed))}/s{how})")
            return
        except (LockedError, DiskSpaceError):
            raise
        except Exception as e:  # noqa: BLE001 - every failure of one attempt is retried, then reported
            last_error = e
            if attempt < attempts:
                log(f"{spec.path}: attempt {attempt}/{attempts} failed ({_describe(e)}); retrying")
                time.sleep(min(2 ** attempt, 10))
    raise WeightsError(f"{spec.path}: download failed after {attempts} attempts: {_describe(last_error)}")


def _describe(e: BaseException | None) -> str:
    if e is None:
        return "unknown error"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@dataclass
class Result:
    status: str                   # present | fetched | repaired | pulled
    path: str
    repo: str
    revision: str
    commit: str
    files: int
    total_bytes: int
    counters: dict[str, int]
    link: str | None = None
    link_changed: bool = False
    space: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finish_link(result: Result, root: Path, link_name: str | None) -> Result:
    if link_name and not is_commit(link_name):
        result.link_changed = make_link(root, result.repo, link_name, result.commit)
        result.link = str(repo_dir(root, result.repo) / link_name)
    return result


def fetch(repo: str, revision: str | None, root: Path | str, *, endpoint: str | None = None,
          token: str | None = None, manifest: Manifest | None = None, workers: int = 8, verify: str = "fast",
          reserve_bytes: int = 0, allow_unpinned: bool = False, exclude: Sequence[str] = (),
          link_name: str | None = None, attempts: int = 3, lock_timeout: float = 0,
          log: Log = _stderr_log) -> Result:
    """Make ROOT/REPO/<commit> a complete, verified snapshot of REPO at REVISION, downloading what is missing.

    A pinned commit whose snapshot is complete is recognised without any hub request and without hashing
    (verify="fast"; "full" re-hashes every file). Otherwise the hub's listing (sizes, LFS sha256, git blob
    ids) is fetched once, the disk space checked, the missing files downloaded in parallel into the staging
    dir (resuming partial files with Range requests), every file verified, the marker written and the
    staging dir renamed into place.
    """
    root = Path(root)
    counters = Counters()
    full = verify == "full"
    rev = check_revision(revision if manifest is None else manifest.revision, allow_unpinned)
    if manifest is not None and manifest.repo != repo:
        raise UsageError(f"manifest is for {manifest.repo}, not {repo}")
    if manifest is None and not is_commit(rev):
        # a branch or tag (allowed on purpose): resolve it now, once; everything below uses the commit
        manifest = hub_manifest(repo, rev, endpoint=endpoint, token=token, allow_unpinned=True, exclude=exclude)
    commit = manifest.commit if manifest is not None else rev
    link_name = link_name if link_name is not None else (None if is_commit(rev) else rev)
    with commit_lock(root, repo, commit, timeout=lock_timeout):
        final = snapshot_dir(root, repo, commit)
        # A pinned commit that is complete here needs no hub request at all.
        st = check_snapshot(final, full=full, expect=manifest, counters=counters, workers=workers,
                            hash_suspects=False)
        if st.complete:
            return _finish_link(Result("present", str(final), repo, rev, commit, len(read_marker(final)["files"]),
                                       _marker_total(final), counters.to_dict()), root, link_name)
        if manifest is None:
            manifest = hub_manifest(repo, rev, endpoint=endpoint, token=token, allow_unpinned=allow_unpinned,
                                    exclude=exclude)
        endpoint = _hub_env(endpoint or manifest.endpoint)
        repaired = final.exists()
        space = check_space(manifest, root, reserve_bytes)
        stage = _prepare_stage(manifest, root, log, distrust=st.bad_files)
        trusted = _trusted_files(manifest, stage, counters, False, workers, log)
        todo = sorted((f for f in manifest.files if f.path not in trusted), key=lambda f: -f.size)
        if todo:
            log(f"{repo}@{manifest.commit[:12]}: fetching {len(todo)} of {len(manifest.files)} files "
                f"({_mib(sum(f.size for f in todo))}) from {endpoint} with {workers} workers")
        hub = HubSession(repo=repo, commit=manifest.commit, endpoint=endpoint, token=token)
        errors: list[str] = []
        with _Heartbeat(stage), ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo) or 1))) as pool:
            futures = {pool.submit(_download_file, hub, f, stage, counters, log, attempts): f for f in todo}
            for fut in as_completed(futures):
                try:
                    fut.result()
                except WeightsError as e:
                    errors.append(str(e))
        if errors:
            raise WeightsError(f"{len(errors)} file(s) failed, the staging dir {stage} keeps what arrived and a "
                               f"re-run resumes: " + "; ".join(errors[:5]))
        path = _publish(manifest, root, stage, log)
        status = "repaired" if repaired else "fetched"
        return _finish_link(Result(status, str(path), repo, rev, manifest.commit, len(manifest.files),
                                   manifest.total_bytes, counters.to_dict(), space=space), root, link_name)


def _marker_total(snapdir: Path) -> int:
    m = read_marker(snapdir) or {}
    return sum(int(f["size"]) for f in m.get("files", []))


# ------------------------------------------------------------------------------- progress

def _job_finished(job_file: Path | None) -> bool:
    """Whether the Ansible async job whose results file this is has ended (async_status's own reading: the
    file says "started" until the job writes its result over it)."""
    if job_file is None:
        return False
    try:
        data = json.loads(job_file.read_text())
    except FileNotFoundError:
        return True           # no record of it: nothing runs that could still write
    except (OSError, ValueError):
        return False          # being written
    return not isinstance(data, dict) or "started" not in data or bool(data.get("finished"))


def progress(root: Path | str, repo: str, commit: str, total_bytes: int, job_file: Path | str | None = None) -> dict[str, Any]:
    """How far the download or copy of REPO@COMMIT into ROOT has come: the bytes on disk in its staging dir
    (partial files included) against the listing's total; all of it once the snapshot is published."""
    root = Path(root)
    published = read_marker(snapshot_dir(root, repo, commit)) is not None
    done = 0
    stage = staging_dir(root, repo, commit)
    if published:
        done = total_bytes
    elif stage.is_dir():
        for path in stage.rglob("*"):
            if path.name in (MARKER, PROGRESS, HEARTBEAT) or path.is_symlink() or not path.is_file():
                continue
            try:
                done += path.stat().st_size
            except OSError:
                pass          # renamed or removed while we looked
    return {"done_bytes": min(done, total_bytes), "total_bytes": total_bytes, "published": published,
            "finished": _job_finished(Path(job_file).expanduser() if job_file else None)}


# ------------------------------------------------------------------------------- copy from a peer

class _Heartbeat:
    """While a fetch or pull works on a staging dir, a counter in HEARTBEAT changes every few seconds: hosts
    copying from this one (pull --follow) read it to tell a slow source from a dead one."""

    def __init__(self, stage: Path, every: float = 2.0) -> None:
        self.path = stage / HEARTBEAT
        self.every = every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="qwen35-heartbeat", daemon=True)

    def _run(self) -> None:
        n = 0
        while True:
            n += 1
            try:
                tmp = self.path.with_name(self.path.name + ".tmp")
                tmp.write_text(f"{os.getpid()} {n}\n")
                os.replace(tmp, self.path)
            except OSError:
                pass
            if self.stop.wait(self.every):
                return

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()
        self.path.unlink(missing_ok=True)


def _split_source(source: str, commit: str) -> tuple[str, str]:
    """The source's published snapshot and its staging dir, as rsync sources ending in '/'."""
    base = source.rstrip("/")
    parent, _, name = base.rpartition("/")
    if name != commit or not parent:
        raise UsageError(f"--source {source!r} must end with /<org>/<name>/{commit}/")
    return base + "/", f"{parent}/.staging-{commit}/"


def _rsync(argv_base: list[str], src: str, dest: str, files: list[str] | None = None,
           listing: Path | None = None) -> subprocess.CompletedProcess:
    argv = list(argv_base)
    if files is not None and listing is not None:
        listing.write_text("".join(f + "\n" for f in files))
        argv += ["--files-from", str(listing)]
    argv += [src, dest]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# Copies from a peer's staging dir race with the peer itself: it publishes its snapshot (renaming that dir) or
# repairs a file whenever it is ready, and rsync then fails in ways that differ between versions (3, 23, 24; or 12
# when the remote sender or rrsync gives up on the vanished dir). Those copies are best effort: the loop looks
# again and the copy from the published snapshot is the one that must succeed. Only this many failures in a row
# are put down to that race.
MAX_STAGING_COPY_FAILURES = 5


def pull(manifest: Manifest, root: Path | str, source: str, *, rsh: str | None = None, verify: str = "fast",
         reserve_bytes: int = 0, workers: int = 8, link_name: str | None = None, lock_timeout: float = 0,
         follow: bool = False, poll: float = 2.0, stall_timeout: float = 300.0, rsync: str = "rsync",
         log: Log = _stderr_log) -> Result:
    """Copy a snapshot from a peer (rsync source `host:ORG/NAME/COMMIT/` or a local `/.../ORG/NAME/COMMIT/`), check
    every file against MANIFEST (the hub's listing, or a node's marker) and publish it here. The hub is not
    contacted. Interrupted copies resume (rsync --append-verify into the staging dir).

    FOLLOW: the peer may still be downloading (or copying) itself. Copy each file as soon as the peer has verified
    it (its progress journal), so the copy runs alongside the peer's download and ends shortly after it; fail when
    the peer shows no sign of life (its heartbeat) for STALL_TIMEOUT seconds."""
    root = Path(root)
    counters = Counters()
    full = verify == "full"
    link_name = link_name if link_name is not None else (None if is_commit(manifest.revision) else manifest.revision)
    src_final, src_stage = _split_source(source, manifest.commit)
    base = [rsync, "--recursive", "--times", "--append-verify", "--no-owner", "--no-group", "--chmod=D755,F644"]
    if rsh:  # no --protect-args: rrsync refuses it
        base += ["--rsh", rsh]
    with commit_lock(root, manifest.repo, manifest.commit, timeout=lock_timeout):
        final = snapshot_dir(root, manifest.repo, manifest.commit)
        st = check_snapshot(final, full=full, expect=manifest, counters=counters, workers=workers,
                            hash_suspects=False)
        if st.complete:
            return _finish_link(Result("present", str(final), manifest.repo, manifest.revision, manifest.commit,
                                       len(manifest.files), manifest.total_bytes, counters.to_dict()), root, link_name)
        space = check_space(manifest, root, reserve_bytes)
        stage = _prepare_stage(manifest, root, log, distrust=st.bad_files)
        trusted = _trusted_files(manifest, stage, counters, False, workers, log)
        work = stage / INCOMPLETE
        by_path = {f.path: f for f in manifest.files}
        journal = _Journal(stage)
        started = time.monotonic()

        small = [rsync] + (["--rsh", rsh] if rsh else [])
        failures: dict[str, int] = {}
        staging_failures = 0
        running: dict[str, tuple[Digest, int]] = {}   # digest of each partial copy's prefix, as it grows

        def advance(f: FileSpec) -> tuple[Digest, int] | None:
            """Hash the bytes appended to the partial copy of F since the last look (--follow)."""
            p = work / f.path
            try:
                size = p.stat().st_size
            except FileNotFoundError:
                running.pop(f.path, None)
                return None
            d, off = running.get(f.path, (None, 0))
            if d is None or size < off:
                d, off = Digest(f.size, git=not f.lfs), 0
            if size > off:
                with open(p, "rb") as fh:
                    fh.seek(off)
                    left = size - off
                    while left:
                        chunk = fh.read(min(CHUNK, left))
                        if not chunk:
                            break
                        d.update(chunk)
                        off += len(chunk)
                        left -= len(chunk)
            running[f.path] = (d, off)
            return d, off

        work.mkdir(parents=True, exist_ok=True)

        def copy_and_check(src: str, paths: list[str], strict: bool) -> None:
            # into .incomplete/ (where a partial copy of the file may already be), verified, then moved into place
            nonlocal staging_failures
            todo = [by_path[p] for p in paths]
            before = sum((work / f.path).stat().st_size for f in todo if (work / f.path).exists())
            proc = _rsync(base, src, str(work) + "/", [f.path for f in todo], work / ".qwen35-files-from")
            staging_failures = staging_failures + 1 if proc.returncode != 0 else 0
            if proc.returncode != 0 and (strict or staging_failures >= MAX_STAGING_COPY_FAILURES):
                tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
                raise WeightsError(f"rsync from {source} failed (exit {proc.returncode}): {tail}; "
                                   f"the staging dir {stage} keeps what arrived and a re-run resumes")
            counters.add(bytes_downloaded=max(0, sum(f.size for f in todo) - before), bytes_resumed=before)

            def check(f: FileSpec) -> tuple[FileSpec, str]:
                p = work / f.path
                if not p.is_file() or p.stat().st_size < f.size:
                    return f, "short"
                if p.stat().st_size == f.size:
                    ok = False
                    if follow and f.path in running:
                        # hashed as it arrived; a copy that rsync had to send again is hashed whole below
                        state = advance(f)
                        if state is not None and state[1] == f.size:
                            sha, blob = state[0].result()
                            ok = digest_matches(f, sha, blob)
                    if not ok:
                        sha, blob = hash_file(p, f.size, git=not f.lfs)
                        ok = digest_matches(f, sha, blob)
                    running.pop(f.path, None)
                    counters.add(files_hashed=1, bytes_hashed=f.size)
                    if ok:
                        with open(p, "rb") as fh:
                            os.fsync(fh.fileno())       # on disk before any marker says so
                        dest = stage / f.path
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(p, dest)
                        journal.add(_record(f, dest, sha, blob))
                        return f, "ok"
                p.unlink()
                return f, "bad"

            problems = []
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                for f, state in pool.map(check, todo):
                    if state == "ok":
                        trusted.add(f.path)
                        counters.add(files_downloaded=1, files_streamed=int(src == src_stage))
                        continue
                    failures[f.path] = failures.get(f.path, 0) + (state == "bad")
                    if strict or failures[f.path] >= 3:
                        problems.append(f"{f.path} ({'does not match the manifest' if state == 'bad' else 'incomplete'})")
            if problems:
                raise VerificationError(f"{len(problems)} file(s) copied from {source} failed (removed; a re-run "
                                        f"copies them again): {', '.join(problems[:5])}")

        log(f"{manifest.repo}@{manifest.commit[:12]}: copying {len(manifest.files) - len(trusted)} files "
            f"({_mib(sum(f.size for f in manifest.files if f.path not in trusted))}) from {source}"
            + (" as it arrives there" if follow else ""))
        with _Heartbeat(stage):
            if not follow:
                missing = [f.path for f in manifest.files if f.path not in trusted]
                if missing:
                    copy_and_check(src_final, missing, strict=True)
            else:
                last_beat, last_change = None, time.monotonic()
                while True:
                    if _rsync(small, src_final + MARKER, str(work / ".qwen35-source-marker.json")).returncode == 0:
                        missing = [f.path for f in manifest.files if f.path not in trusted]
                        if missing:   # the peer is complete: whatever is left, from its snapshot
                            copy_and_check(src_final, missing, strict=True)
                        break
                    ready: list[str] = []
                    if _rsync(small, src_stage + PROGRESS, str(work / ".qwen35-source-progress.jsonl")).returncode == 0:
                        for line in (work / ".qwen35-source-progress.jsonl").read_text().splitlines():
                            try:
                                ready.append(json.loads(line)["path"])
                            except (json.JSONDecodeError, KeyError, TypeError):
                                continue
                    beat = None
                    if _rsync(small, src_stage + HEARTBEAT, str(work / ".qwen35-source-heartbeat")).returncode == 0:
                        beat = (work / ".qwen35-source-heartbeat").read_text()
                    if beat is not None and beat != last_beat:
                        last_beat, last_change = beat, time.monotonic()
                    elif time.monotonic() - last_change > stall_timeout:
                        raise WeightsError(f"{source}: no published snapshot and no sign of a download or copy "
                                           f"there for {stall_timeout:.0f} s (did it stop?); a re-run resumes")
                    new = [p for p in dict.fromkeys(ready) if p in by_path and p not in trusted]
                    if new:
                        copy_and_check(src_stage, new, strict=False)
                    # the bytes of files the source is still receiving (appended in order): copied as they
                    # come, so a file is nearly all here when the source has verified it
                    exclude = work / ".qwen35-exclude"
                    exclude.write_text("".join(f"/{p}\n" for p in sorted(trusted | set(new))) + "/.qwen35-*\n")
                    partial = _rsync(base + ["--exclude-from", str(exclude)], src_stage + INCOMPLETE + "/",
                                     str(work) + "/")
                    for f in manifest.files:
                        if f.path not in trusted:
                            advance(f)
                    if not new:
                        time.sleep(poll if partial.returncode != 0 else poll / 2)
        log(f"copied in {time.monotonic() - started:.1f} s")
        path = _publish(manifest, root, stage, log)
        return _finish_link(Result("pulled", str(path), manifest.repo, manifest.revision, manifest.commit,
                                   len(manifest.files), manifest.total_bytes, counters.to_dict(), space=space),
                            root, link_name)


def fanout_keys(key_dir: Path | str, comment: str, host_key: str = "/etc/ssh/ssh_host_ed25519_key.pub",
                rrsync: str | None = None, user: str = "root") -> dict[str, Any]:
    """This host's fan-out key pair (made once) and SSH host key, for the other hosts' authorized_keys and
    known_hosts; and whether rrsync (which limits those keys to read-only rsync) is installed."""
    d = Path(key_dir)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    key = d / "id_ed25519"
    created = False
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                       check=True, stdin=subprocess.DEVNULL, capture_output=True)
        created = True
    host = Path(host_key).read_text().split()
    import pwd
    try:
        home = pwd.getpwnam(user).pw_dir
    except KeyError:
        raise UsageError(f"user {user!r} (model_weights_fanout_user) does not exist on this host") from None
    return {"public_key": (d / "id_ed25519.pub").read_text().strip(), "host_key": f"{host[0]} {host[1]}",
            "created": created, "rrsync": bool(rrsync) and os.access(rrsync, os.X_OK), "home": home}


def fanout_sources(hosts: Sequence[str]) -> dict[str, str]:
    """Where each host copies from, hosts[0] being the stager: host i copies from host i - 2**floor(log2 i)
    (1 and 2 from 0, 3 from 1, 4 from 0, 5 from 1, ...): a binomial tree. Copied in rounds, 2**k hosts would
    hold the snapshot after round k; with `pull --follow` every host copies at the same time, each file as soon
    as its source has verified it, so the whole tree finishes shortly after the stager's download. Depth and
    the most copies one host serves are both ceil(log2 N)."""
    return {hosts[i]: hosts[i - (1 << (i.bit_length() - 1))] for i in range(1, len(hosts))}


def fanout_rounds(hosts: Sequence[str]) -> list[list[tuple[str, str]]]:
    """The same tree as rounds: in round k (1-based) host i, 2**(k-1) <= i < 2**k, copies from host
    i - 2**(k-1). After round k, 2**k hosts hold the snapshot; N hosts need ceil(log2 N) rounds."""
    sources = fanout_sources(hosts)
    rounds: list[list[tuple[str, str]]] = []
    for i, h in enumerate(hosts[1:], start=1):
        k = i.bit_length()
        while len(rounds) < k:
            rounds.append([])
        rounds[k - 1].append((h, sources[h]))
    return rounds


# ------------------------------------------------------------------------------------------ command line

def _read_stdin_json() -> dict[str, Any]:
    raw = sys.stdin.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UsageError(f"--stdin-json: stdin is not JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(data, dict):
        raise UsageError("--stdin-json: expected a JSON object with keys 'token' and/or 'manifest'")
    return data


def _inputs(args: argparse.Namespace) -> tuple[str | None, Manifest | None]:
    """The token and manifest: from stdin (JSON) so that neither shows in the process arguments."""
    data = _read_stdin_json() if getattr(args, "stdin_json", False) else {}
    token = data.get("token") or None
    if token is None and getattr(args, "token_file", None):
        token = Path(args.token_file).read_text().strip() or None
    if token is None:
        token = os.environ.get("HF_TOKEN") or None
    manifest = None
    if data.get("manifest"):
        manifest = Manifest.from_dict(data["manifest"])
    elif getattr(args, "manifest", None):
        manifest = Manifest.from_dict(json.loads(Path(args.manifest).read_text()))
    return token, manifest


def _gb(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GB") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return int(value * 1e9)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qwen35-weights", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser, root: bool = True) -> None:
        if root:
            sp.add_argument("--root", required=True, help="the weights dir")
        sp.add_argument("--stdin-json", action="store_true",
                        help="read {'token': ..., 'manifest': ...} from stdin (keeps the token out of argv)")

    s = sub.add_parser("status", help="is ROOT/REPO/REVISION a complete snapshot? (JSON; no hub access)")
    s.add_argument("--root", required=True)
    s.add_argument("--repo", required=True)
    s.add_argument("--revision", required=True)
    s.add_argument("--verify", choices=("fast", "full"), default="fast")

    s = sub.add_parser("manifest", help="ask the hub for the listing of REPO@REVISION (JSON)")
    common(s, root=False)
    s.add_argument("--repo", required=True)
    s.add_argument("--revision", default=None)
    s.add_argument("--endpoint", default=None, help="hub URL (default: $HF_ENDPOINT or huggingface.co)")
    s.add_argument("--token-file", default=None)
    s.add_argument("--allow-unpinned", action="store_true")
    s.add_argument("--exclude", action="append", default=[], help="glob of repository files to leave out")

    s = sub.add_parser("space", help="refuse (exit 3) when ROOT cannot hold what the manifest still needs")
    common(s)
    s.add_argument("--manifest", default=None, help="manifest file (or give it on stdin with --stdin-json)")
    s.add_argument("--reserve-gb", type=_gb, default=0)

    s = sub.add_parser("fetch", help="download REPO@REVISION from the hub into ROOT, verified and atomic")
    common(s)
    s.add_argument("--repo", required=True)
    s.add_argument("--revision", default=None)
    s.add_argument("--manifest", default=None, help="use this listing instead of asking the hub for it")
    s.add_argument("--endpoint", default=None)
    s.add_argument("--token-file", default=None)
    s.add_argument("--workers", type=int, default=8)
    s.add_argument("--attempts", type=int, default=3)
    s.add_argument("--verify", choices=("fast", "full"), default="fast")
    s.add_argument("--reserve-gb", type=_gb, default=0)
    s.add_argument("--allow-unpinned", action="store_true")
    s.add_argument("--exclude", action="append", default=[])
    s.add_argument("--lock-timeout", type=float, default=0)
    s.add_argument("--link-name", default=None, help="branch/tag name to link to the commit (default: the revision)")

    s = sub.add_parser("pull", help="copy a verified snapshot from a peer with rsync, verify, publish")
    common(s)
    s.add_argument("--manifest", default=None)
    s.add_argument("--source", required=True, help="rsync source of the snapshot: HOST:PATH/ or /local/path/")
    s.add_argument("--rsh", default=None, help="rsync --rsh command (ssh options for the cluster network)")
    s.add_argument("--follow", action="store_true",
                   help="the source may still be downloading: copy each file as soon as it has verified it")
    s.add_argument("--poll", type=float, default=2.0, help="seconds between looks at the source (--follow)")
    s.add_argument("--stall-timeout", type=float, default=300.0,
                   help="fail when the source shows no sign of life for this long (--follow)")
    s.add_argument("--workers", type=int, default=8)
    s.add_argument("--verify", choices=("fast", "full"), default="fast")
    s.add_argument("--reserve-gb", type=_gb, default=0)
    s.add_argument("--lock-timeout", type=float, default=0)
    s.add_argument("--link-name", default=None, help="branch/tag name to link to the commit (default: the revision)")

    s = sub.add_parser("progress", help="bytes of REPO@COMMIT on disk against TOTAL, and whether the Ansible "
                                        "async job (its results file) that fetches or pulls it has ended (JSON)")
    s.add_argument("--root", required=True)
    s.add_argument("--repo", required=True)
    s.add_argument("--commit", required=True)
    s.add_argument("--total-bytes", type=int, required=True)
    s.add_argument("--job-file", default=None, help="the async job's results file (Ansible's results_file; ~ is "
                   "the user's home)")

    s = sub.add_parser("link", help="point ROOT/REPO/NAME (a branch or tag) at a commit's snapshot")
    s.add_argument("--root", required=True)
    s.add_argument("--repo", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--commit", required=True)

    s = sub.add_parser("keys", help="make this host's fan-out key pair once; print it with the SSH host key (JSON)")
    s.add_argument("--dir", required=True)
    s.add_argument("--comment", required=True)
    s.add_argument("--host-key", default="/etc/ssh/ssh_host_ed25519_key.pub")
    s.add_argument("--rrsync", default=None, help="report whether this rrsync is installed")
    s.add_argument("--user", default="root", help="the user whose home the other hosts' keys go to")

    s = sub.add_parser("rounds", help="print where each host copies from, and as rounds (the first host is the stager)")
    s.add_argument("hosts", nargs="+")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out: Any
        if args.cmd == "status":
            validate_repo_id(args.repo)
            out = snapshot_status(Path(args.root), args.repo, args.revision, full=args.verify == "full").to_dict()
        elif args.cmd == "manifest":
            token, _ = _inputs(args)
            out = hub_manifest(args.repo, args.revision, endpoint=args.endpoint, token=token,
                               allow_unpinned=args.allow_unpinned, exclude=args.exclude).to_dict()
        elif args.cmd == "space":
            _, manifest = _inputs(args)
            if manifest is None:
                raise UsageError("space needs a manifest (--manifest FILE or --stdin-json)")
            out = check_space(manifest, Path(args.root), args.reserve_gb)
        elif args.cmd == "fetch":
            token, manifest = _inputs(args)
            out = fetch(args.repo, args.revision, args.root, endpoint=args.endpoint, token=token, manifest=manifest,
                        workers=args.workers, verify=args.verify, reserve_bytes=args.reserve_gb,
                        allow_unpinned=args.allow_unpinned, exclude=args.exclude, attempts=args.attempts,
                        lock_timeout=args.lock_timeout, link_name=args.link_name).to_dict()
        elif args.cmd == "pull":
            _, manifest = _inputs(args)
            if manifest is None:
                raise UsageError("pull needs a manifest (--manifest FILE or --stdin-json)")
            out = pull(manifest, args.root, args.source, rsh=args.rsh, verify=args.verify,
                       reserve_bytes=args.reserve_gb, workers=args.workers, lock_timeout=args.lock_timeout,
                       link_name=args.link_name, follow=args.follow, poll=args.poll,
                       stall_timeout=args.stall_timeout).to_dict()
        elif args.cmd == "progress":
            validate_repo_id(args.repo)
            if not is_commit(args.commit):
                raise UsageError(f"--commit {args.commit!r}: expected a 40-hex commit")
            out = progress(args.root, args.repo, args.commit, args.total_bytes, args.job_file)
        elif args.cmd == "link":
            changed = make_link(Path(args.root), args.repo, args.name, args.commit)
            out = {"link": str(repo_dir(Path(args.root), args.repo) / args.name), "commit": args.commit,
                   "changed": changed}
        elif args.cmd == "keys":
            out = fanout_keys(args.dir, args.comment, args.host_key, args.rrsync, args.user)
        elif args.cmd == "rounds":
            out = {"sources": fanout_sources(args.hosts),
                   "rounds": [[{"dest": d, "source": s} for d, s in r] for r in fanout_rounds(args.hosts)]}
        else:  # pragma: no cover - argparse rejects it first
            raise UsageError(f"unknown command {args.cmd}")
    except WeightsError as e:
        _stderr_log(f"error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        _stderr_log("interrupted; a re-run resumes")
        return 130
    except Exception as e:  # noqa: BLE001 - one line for the operator, never a traceback with secrets in locals
        _stderr_log(f"error: {_describe(e)}")
        return EXIT_FAILED
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
