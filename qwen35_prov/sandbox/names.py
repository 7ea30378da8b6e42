"""What sandboxes are called and where they keep their files (shared by the nodes and the stand-in services)."""

from __future__ import annotations

import os
from pathlib import Path

from .podman import PREFIX, REPO_ROOT


def sandbox_root() -> Path:
    """Where sandboxes keep their keys and fleet files (QWEN35_SANDBOX_DIR overrides <repo>/.sandbox)."""
    return Path(os.environ.get("QWEN35_SANDBOX_DIR") or REPO_ROOT / ".sandbox")


def network_name(name: str) -> str:
    return f"{PREFIX}{name}"


def node_name(name: str, index: int) -> str:
    return f"{PREFIX}{name}-node{index}"
