"""Where a deployment's secrets live on the controller: the folder beside its inventory.

The playbooks make them at first use (playbooks/group_vars/all/secrets.yml, Ansible's password lookup: a 0700
folder, 0600 files); the CLI only points at them.
"""

from __future__ import annotations

from pathlib import Path

API_KEY = "api-key"  # beside admin-api-key and watch-secret, which only the playbooks read


def secrets_dir(inventory: Path) -> Path:
    """The inventory's `qwen35_secrets_dir` ({{ inventory_dir | dirname }}/secrets) as a path."""
    return Path(inventory).resolve().parent / "secrets"


def api_key_file(inventory: Path, keyed: bool) -> Path | None:
    """The file clients read the API key from, or None when the deployment serves without a key."""
    return secrets_dir(inventory) / API_KEY if keyed else None
