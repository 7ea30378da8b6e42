"""The node-side weights downloader, for the tests: they import the very file the role ships.

The code lives in `roles/model_weights/files/qwen35_weights.py`, a standalone script (standard library +
huggingface_hub) that the `model_weights` role copies to every node. This module loads that same file so the
tests use exactly what the nodes run (the toolkit itself never imports it; it lived in the package before):

    import weights_script as weights
    weights.fetch(repo, revision, root, endpoint=..., token=...)      # hub -> ROOT/<repo>/<commit>, verified
    weights.pull(manifest, root, source)                              # peer -> here (rsync), verified
    weights.check_snapshot(path, full=False)                          # marker fast path / full re-hash
    weights.fanout_sources(hosts)                                     # who copies from whom (binomial tree)
    weights.SCRIPT                                                    # the file the role ships
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

#: The node-side script, shipped by roles/model_weights.
SCRIPT = Path(__file__).resolve().parents[1] / "roles" / "model_weights" / "files" / "qwen35_weights.py"
_NAME = "qwen35_weights"


def _load() -> ModuleType:
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    if not SCRIPT.is_file():
        raise ImportError(f"{SCRIPT} is missing: the tests need the repository checkout (roles/)")
    spec = importlib.util.spec_from_file_location(_NAME, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_NAME]
        raise
    return module


_impl = _load()

# The public API, re-exported.
MARKER = _impl.MARKER
PROGRESS = _impl.PROGRESS
INCOMPLETE = _impl.INCOMPLETE
FileSpec = _impl.FileSpec
Manifest = _impl.Manifest
Result = _impl.Result
SnapshotStatus = _impl.SnapshotStatus
Counters = _impl.Counters
WeightsError = _impl.WeightsError
UsageError = _impl.UsageError
DiskSpaceError = _impl.DiskSpaceError
LockedError = _impl.LockedError
VerificationError = _impl.VerificationError
fetch = _impl.fetch
pull = _impl.pull
hub_manifest = _impl.hub_manifest
check_snapshot = _impl.check_snapshot
snapshot_status = _impl.snapshot_status
check_space = _impl.check_space
space_needed = _impl.space_needed
snapshot_dir = _impl.snapshot_dir
staging_dir = _impl.staging_dir
make_link = _impl.make_link
fanout_rounds = _impl.fanout_rounds
fanout_sources = _impl.fanout_sources
HEARTBEAT = _impl.HEARTBEAT
check_revision = _impl.check_revision
is_commit = _impl.is_commit
hash_file = _impl.hash_file
read_marker = _impl.read_marker
progress = _impl.progress
main = _impl.main

__all__ = [
    "SCRIPT", "MARKER", "PROGRESS", "INCOMPLETE", "FileSpec", "Manifest", "Result", "SnapshotStatus", "Counters",
    "WeightsError", "UsageError", "DiskSpaceError", "LockedError", "VerificationError", "fetch", "pull",
    "hub_manifest", "check_snapshot", "snapshot_status", "check_space", "space_needed", "snapshot_dir",
    "staging_dir", "make_link", "fanout_rounds", "fanout_sources", "HEARTBEAT", "check_revision", "is_commit", "hash_file", "read_marker", "progress",
    "main",
]
