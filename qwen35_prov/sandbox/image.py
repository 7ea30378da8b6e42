"""The sandbox node image: Debian bookworm from debootstrap, imported into podman without any registry.

The image is tagged `localhost/qwen35-node:<recipe hash>` (and `:latest`), so it is rebuilt only when the
recipe below changes. The mirror comes from the machine's own apt sources and is not part of the recipe.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..errors import UserError
from .podman import REPO_ROOT, exists, podman, podman_env, require_podman

IMAGE_REPO = "localhost/qwen35-node"
SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = (
    # what a systemd "host" reachable over SSH needs
    "systemd", "systemd-sysv", "dbus", "python3", "iproute2", "sudo", "openssh-server", "procps",
    # what the roles need cheaply (apt over https, signed repositories, file sync, Ansible's apt module)
    "ca-certificates", "curl", "gnupg", "rsync", "python3-apt",
)
#: Image config applied by `podman import --change`.
CHANGES = ('CMD ["/sbin/init"]', "STOPSIGNAL SIGRTMIN+3")

#: Each node makes its own SSH host keys on first boot (the image carries none).
HOSTKEYS_UNIT = """\
[Unit]
Description=Generate this node's SSH host keys (qwen35-prov sandbox image)
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""
SSH_DROPIN = """\
[Unit]
Wants=qwen35-ssh-hostkeys.service
After=qwen35-ssh-hostkeys.service
"""

#: Run inside the fresh rootfs (chroot) after debootstrap.
POST_SCRIPT = """\
set -eu
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
ln -s /etc/machine-id /var/lib/dbus/machine-id
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d /etc/systemd/system/multi-user.target.wants
ln -sf /etc/systemd/system/qwen35-ssh-hostkeys.service \
  /etc/systemd/system/multi-user.target.wants/qwen35-ssh-hostkeys.service
mkdir -p /root/.ssh && chmod 700 /root/.ssh
# units that make no sense in a container
for unit in systemd-timesyncd.service getty@tty1.service apt-daily.timer apt-daily-upgrade.timer; do
  ln -sf /dev/null /etc/systemd/system/$unit
done
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/*.log /tmp/* /var/tmp/*
"""

Progress = Callable[[str], None]


def recipe() -> dict:
    return {"suite": SUITE, "variant": VARIANT, "packages": list(PACKAGES), "changes": list(CHANGES),
            "hostkeys_unit": HOSTKEYS_UNIT, "ssh_dropin": SSH_DROPIN, "post": POST_SCRIPT}


def recipe_hash() -> str:
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def image_ref() -> str:
    """The node image the current recipe builds: localhost/qwen35-node:<hash>."""
    return f"{IMAGE_REPO}:{recipe_hash()}"


DEFAULT_MIRROR = "http://deb.debian.org/debian"


def _os_id(os_release: Path = Path("/etc/os-release")) -> str:
    try:
        m = re.search(r'^ID="?([^"\n]+)"?', os_release.read_text(), re.M)
    except OSError:
        return ""
    return m.group(1) if m else ""


def apt_mirror(sources_dir: Path = Path("/etc/apt"), os_id: str | None = None) -> str:
    """The Debian mirror to debootstrap from: $QWEN35_DEBIAN_MIRROR, else this Debian machine's own apt mirror
    (deb822 `URIs:` first, then one-line sources.list), else deb.debian.org (e.g. on Ubuntu, whose mirrors
    carry no bookworm)."""
    override = os.environ.get("QWEN35_DEBIAN_MIRROR")
    if override:
        return override
    if (os_id if os_id is not None else _os_id()) != "debian":
        return DEFAULT_MIRROR
    candidates = sorted((sources_dir / "sources.list.d").glob("*.sources")) if (sources_dir / "sources.list.d").is_dir() else []
    for path in candidates:
        for stanza in path.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and not (suites and "security" in suites.group(1)) and "security" not in uris.group(1):
                return uris.group(1)
    lists = [sources_dir / "sources.list"]
    if (sources_dir / "sources.list.d").is_dir():
        lists += sorted((sources_dir / "sources.list.d").glob("*.list"))
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and "security" not in m.group(1) and "security" not in m.group(2):
                return m.group(1)
    return DEFAULT_MIRROR


def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def ensure_image(progress: Progress = print, *, force: bool = False) -> str:
    """Build the node image unless the current recipe's image exists; return its reference."""
    require_podman()
    ref = image_ref()
    if exists("image", ref) and not force:
        return ref
    with _lock(REPO_ROOT / ".sandbox" / ".image.lock"):
        if exists("image", ref) and not force:  # another process built it while we waited
            return ref
        _build(ref, progress)
    return ref


def _run(argv: list[str], what: str, *, timeout: float = 900) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"{what} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise UserError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")


def _remove_stale(current: str, progress: Progress) -> None:
    """Untag node images of older recipes (<repo>:<12 hex>) that no container uses; other tags stay."""
    listed = podman(["images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO], check=False).stdout.split()
    for ref in listed:
        tag = ref.rsplit(":", 1)[-1]
        if ref != current and re.fullmatch(r"[0-9a-f]{12}", tag):
            if podman(["rmi", ref], check=False).returncode == 0:
                progress(f"  removed the node image of an older recipe: {ref}")


def _build(ref: str, progress: Progress) -> None:
    if shutil.which("debootstrap") is None:
        raise UserError("debootstrap is not installed; run scripts/setup")
    mirror = apt_mirror()
    workdir = Path(tempfile.mkdtemp(prefix="qwen35-node-", dir="/var/tmp"))
    rootfs = workdir / "rootfs"
    try:
        started = time.monotonic()
        progress(f"building node image {ref}: debootstrap {SUITE} from {mirror} (about 70 s)")
        _run(["debootstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), mirror],
             "debootstrap")
        progress(f"  debootstrap done in {time.monotonic() - started:.0f} s; configuring the root file system")
        (rootfs / "etc/systemd/system/qwen35-ssh-hostkeys.service").write_text(HOSTKEYS_UNIT)
        (rootfs / "etc/systemd/system/ssh.service.d").mkdir(parents=True, exist_ok=True)
        (rootfs / "etc/systemd/system/ssh.service.d/qwen35-hostkeys.conf").write_text(SSH_DROPIN)
        _run(["chroot", str(rootfs), "/bin/sh", "-c", POST_SCRIPT], "configuring the node root file system")
        progress("  importing into podman")
        changes = [arg for change in (*CHANGES, f"LABEL qwen35.recipe={ref.rsplit(':', 1)[1]}")
                   for arg in ("--change", change)]
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(["podman", "import", *changes, "-", ref], stdin=tar.stdout, env=podman_env(),
                                      capture_output=True, text=True, timeout=600)
        finally:
            tar.stdout.close()
            tar_status = tar.wait()
        if tar_status != 0 or imported.returncode != 0:
            raise UserError(f"importing the node image failed: {imported.stderr.strip() or f'tar exit {tar_status}'}")
        podman(["tag", ref, f"{IMAGE_REPO}:latest"])
        progress(f"  node image {ref} ready in {time.monotonic() - started:.0f} s")
        _remove_stale(ref, progress)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
