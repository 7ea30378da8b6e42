"""Run podman with the project's containers.conf (never the host-wide one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError

#: The repository checkout this package runs from (editable install): scripts/, tests/doubles/, .sandbox/.
REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO_ROOT / "scripts" / "podman" / "containers.conf"
#: Every podman object the sandbox makes carries this label; its value is the sandbox name.
LABEL = "qwen35.sandbox"
PREFIX = "q35-"


class PodmanError(UserError):
    """A podman command failed; the message carries its stderr."""


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    if CONTAINERS_CONF.is_file():
        env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    elif "CONTAINERS_CONF" not in env:
        raise UserError(f"{CONTAINERS_CONF} is missing: the sandbox needs the repository checkout")
    return env


def require_podman() -> str:
    path = shutil.which("podman")
    if path is None:
        raise UserError("podman is not installed; run scripts/setup")
    return path


def podman(args: Sequence[str], *, check: bool = True, input: str | bytes | None = None,
           timeout: float | None = 300) -> subprocess.CompletedProcess:
    """Run `podman ARGS`; return the completed process (text output). Raise PodmanError when check fails."""
    require_podman()
    text = not isinstance(input, bytes)
    try:
        proc = subprocess.run(["podman", *args], env=podman_env(), input=input, capture_output=True,
                              text=text, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PodmanError(f"podman {' '.join(args[:3])} did not finish within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        err = proc.stderr if text else proc.stderr.decode(errors="replace")
        last = (err.strip().splitlines() or ["(no message)"])[-1]
        raise PodmanError(f"podman {' '.join(args[:3])} failed (exit {proc.returncode}): {last}")
    return proc


def podman_json(args: Sequence[str]) -> Any:
    out = podman(args).stdout.strip()
    return json.loads(out) if out else []


def exists(kind: str, name: str) -> bool:
    """kind: container, network, volume, image."""
    sub = {"container": ["container", "exists"], "network": ["network", "exists"],
           "volume": ["volume", "exists"], "image": ["image", "exists"]}[kind]
    return podman([*sub, name], check=False).returncode == 0


def exec_in(container: str, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float | None = 120) -> subprocess.CompletedProcess:
    flags = ["-i"] if input is not None else []
    return podman(["exec", *flags, container, *argv], input=input, check=check, timeout=timeout)
