"""The node images of the Molecule scenarios (test code, never used by a role or by the sandbox).

Both derive from the sandbox node image (debootstrap, qwen35_prov.sandbox.image) and add only what every
scenario's prepare would otherwise do again in each node:
  localhost/qwen35-molecule-node:<hash>     root's authorized_keys holds the Molecule key (.cache/molecule/
                                            id_ed25519, made here once per machine), so the scenarios reach their
                                            nodes over SSH with pipelining from the first task (connect-ssh.yml),
                                            as a deployment does, instead of through `podman exec`;
  localhost/qwen35-molecule-docker:<hash>   the same with Debian's docker.io installed, for the scenarios whose
                                            prepare needs Docker (roles/container_runtime still runs there and
                                            configures it; its own scenario starts from the image without it).
<hash> covers the base image's ID, the public key and the recipe; an image is built only when that changes, and
images of older hashes are removed.

Usage: python tests/molecule/node_images.py [--base IMAGE]
Prints shell assignments for scripts/test-roles: QWEN35_MOLECULE_IMAGE, QWEN35_MOLECULE_DOCKER_IMAGE and
QWEN35_MOLECULE_KEY.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "molecule"
KEY = CACHE / "id_ed25519"
RECIPES = {
    "qwen35-molecule-node": """\
FROM {base}
COPY authorized_keys /root/.ssh/authorized_keys
RUN chmod 700 /root/.ssh && chmod 600 /root/.ssh/authorized_keys
LABEL qwen35.test-image="Molecule scenarios: the sandbox node image with the Molecule key authorized"
""",
    # roles/container_runtime with container_runtime_source: distribution installs docker.io; the package lists
    # stay, as on a host where apt has run (roles trust apt's cache age: lists removed would look fresh and empty)
    "qwen35-molecule-docker": """\
FROM {base}
COPY authorized_keys /root/.ssh/authorized_keys
RUN chmod 700 /root/.ssh && chmod 600 /root/.ssh/authorized_keys \\
 && apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io \\
 && apt-get clean
LABEL qwen35.test-image="Molecule scenarios: the sandbox node image with the Molecule key and Docker"
""",
}


def _podman(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTAINERS_CONF=str(REPO / "scripts" / "podman" / "containers.conf"))
    return subprocess.run(["podman", *args], env=env, text=True, capture_output=True, **kwargs)


def _key() -> str:
    if not KEY.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qwen35-molecule (test only)",
                        "-f", str(KEY)], check=True)
    return KEY.with_suffix(".pub").read_text()


def ensure(repo: str, base: str, pubkey: str) -> str:
    base_id = _podman(["image", "inspect", "--format", "{{.Id}}", base], check=True).stdout.strip()
    text = RECIPES[repo].format(base=base)
    ref = f"localhost/{repo}:{hashlib.sha256((base_id + pubkey + text).encode()).hexdigest()[:12]}"
    if _podman(["image", "exists", ref]).returncode == 0:
        return ref
    print(f"molecule node image: building {ref} from {base}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix=f"{repo}-", dir="/var/tmp") as tmp:
        (Path(tmp) / "Containerfile").write_text(text)
        (Path(tmp) / "authorized_keys").write_text(pubkey)
        built = _podman(["build", "--pull=never", "-t", ref, tmp], timeout=900)
    if built.returncode != 0:
        raise SystemExit(f"molecule node image: podman build of {ref} failed: {built.stderr.strip()[-2000:]}")
    _podman(["tag", ref, f"localhost/{repo}:latest"], check=True)   # for a scenario run by hand
    for old in _podman(["images", "--format", "{{.Repository}}:{{.Tag}}", f"localhost/{repo}"]).stdout.split():
        if old not in (ref, f"localhost/{repo}:latest"):
            _podman(["rmi", old])
    return ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="the sandbox node image (default: build or reuse the current one)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from qwen35_prov.sandbox.image import ensure_image

    base = args.base or ensure_image(progress=lambda m: print(m, file=sys.stderr))
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pubkey = _key()
        node = ensure("qwen35-molecule-node", base, pubkey)
        docker = ensure("qwen35-molecule-docker", base, pubkey)
    for name, value in (("QWEN35_MOLECULE_IMAGE", node), ("QWEN35_MOLECULE_DOCKER_IMAGE", docker),
                        ("QWEN35_MOLECULE_KEY", str(KEY))):
        print(f"{name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
