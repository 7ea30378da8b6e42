"""The hub commit a deployment serves, decided once: --revision, else the lock in the stored inventory, else the
catalog's pin, else the branch head resolved through the hub's API (huggingface_hub; HF_ENDPOINT and HF_TOKEN
honoured) and recorded in the inventory, where the next `up` finds it as the lock."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .deployment import Deployed
from .errors import UserError
from .options import COMMIT



@dataclass(frozen=True)
class Revision:
    commit: str
    source: str  # given | locked | catalog | resolved

    def describe(self) -> str:
        return {"given": "as --revision says", "locked": "locked by an earlier `up` (--update-revision moves it)",
                "catalog": "the catalog's pin", "resolved": "the branch head, resolved through the hub's API now "
                "and locked in the inventory"}[self.source]


def locked_commit(inventory: Path, repo: str) -> str | None:
    """The commit an earlier `up` recorded for REPO in the stored inventory, if any."""
    try:
        data = Deployed(inventory).weights_vars
    except (OSError, yaml.YAMLError):
        return None
    commit = str(data.get("qwen35_model_revision") or "")
    return commit if data.get("qwen35_model_repo") == repo and COMMIT.match(commit) else None


def resolve_commit(repo: str, branch: str = "main", hub: dict[str, str] | None = None) -> str:
    """REPO's BRANCH as a commit, asked of the hub: HUB's HF_ENDPOINT and HF_TOKEN, else the environment's."""
    hub = {**os.environ, **(hub or {})}
    endpoint = hub.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UserError("resolving the model's revision needs the huggingface_hub package (pip install "
                        "huggingface_hub), or pass --revision <40-hex commit>") from None
    try:
        info = HfApi(endpoint=endpoint).model_info(repo, revision=branch, token=hub.get("HF_TOKEN") or None)
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, refused token: all end in the same advice
        raise UserError(f"cannot resolve {repo}@{branch} to a commit through the hub at {endpoint} "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}): "
                        f"pass --revision <40-hex commit>, or run where the hub (or your mirror, HF_ENDPOINT) is "
                        f"reachable") from None
    if not info.sha or not COMMIT.match(info.sha):
        raise UserError(f"the hub at {endpoint} answered no commit for {repo}@{branch}: pass --revision")
    return info.sha


def choose_revision(repo: str, *, given: str | None, update: bool, catalog_pin: str | None,
                    inventory: Path, hub: dict[str, str] | None = None) -> Revision:
    if given:
        return Revision(given, "given")
    if not update:
        locked = locked_commit(inventory, repo)
        if locked:
            return Revision(locked, "locked")
        if catalog_pin:
            return Revision(catalog_pin, "catalog")
    return Revision(resolve_commit(repo, hub=hub), "resolved")
