"""What `upgrade` pinned in an inventory (group_vars/qwen35_nodes/zz-upgrade.yml): read, applied, written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

OVERRIDE = Path("group_vars") / "qwen35_nodes" / "zz-upgrade.yml"
# what an upgrade may pin in the inventory (and what wins over the sandbox's own image variables)
OVERRIDE_KEYS = ("qwen35_image", "sglang_image_digest", "sglang_image_archive",
                 "nvidia_driver_version", "nvidia_driver_branch")


def read_overrides(inventory: Path) -> dict[str, Any]:
    """What earlier upgrades pinned in this inventory ({} when none)."""
    path = inventory / OVERRIDE
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {k: v for k, v in data.items() if k in OVERRIDE_KEYS}


def apply_overrides(extravars: dict[str, Any], inventory: Path) -> dict[str, Any]:
    """Let an upgrade's pins win over extra variables (the sandbox passes its stand-in image as extra vars):
    a pinned image brings its own digest and tarball, or none."""
    pins = read_overrides(inventory)
    if "qwen35_image" in pins and "qwen35_image" in extravars:
        extravars.update({"sglang_image_digest": "", "sglang_image_archive": ""})
    extravars.update(pins)
    return extravars


def write_overrides(inventory: Path, values: dict[str, Any]) -> Path:
    """Pin VALUES in the inventory's override file; a value of None or "" removes that key."""
    path = inventory / OVERRIDE
    data = {**read_overrides(inventory), **values}
    data = {k: v for k, v in data.items() if v not in (None, "")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("---\n# Written by `qwen35-prov upgrade` after every replica (or host) took it; wins over server.yml /\n"
                   "# drivers.yml (loaded after them). Delete this file to go back to what the plan pins.\n"
                   + yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path
