#!/usr/bin/env python3
"""Build signed apt repositories of TEST DOUBLE packages that stand in for the GPU vendors' repositories.

The vendor repositories (NVIDIA's CUDA repository, NVIDIA's libnvidia-container repository, AMD's
repo.radeon.com) cannot be reached from the development and CI machines, and their packages need real GPUs
anyway. This script builds packages with the *real names, versions and dependency relations* (as far as
they are cheap to reproduce) but with no driver inside: each package's postinst writes a marker file under
/var/lib/qwen35-standins/, and the packages that ship a daemon ship a systemd unit that runs a harmless
long-running command. They let the roles' Molecule scenarios exercise repository setup, signature checks,
version pinning, holds, fabric-manager matching, handlers and idempotence for real.

The web root it writes mirrors the vendors' URL layout, so a role's single mirror-base variable is all a
test changes:

    OUT/compute/cuda/repos/{debian12,ubuntu2204,ubuntu2404}/{x86_64,sbsa}/   flat repo (like NVIDIA's)
    OUT/libnvidia-container/stable/deb/{amd64,arm64}/                       flat repo (like nvidia.github.io)
    OUT/libnvidia-container/gpgkey
    OUT/amdgpu/30.30/ubuntu/dists/{jammy,noble}/...                  dists repo (like repo.radeon.com)
    OUT/rocm/rocm.gpg.key

Every repository is signed (InRelease + Release.gpg) with a throw-away key generated for this build; the
public key is written where the role expects the vendor's key (and as OUT/qwen35-standins.pub). The key
is named "TEST ONLY" and is never used outside a test. Nothing here is ever installed by a role.

Usage: build_repo.py --out DIR [--no-sign]
Needs: dpkg-deb, gpg (for signing). Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

MAINTAINER = "qwen35-prov test doubles <test-doubles@invalid>"
MARKER_DIR = "/var/lib/qwen35-standins"

# Versions of the real releases these stand in for.
DRIVER_BRANCH = "580"
DRIVER_VERSION = "580.159.04"      # the version on the project's H200 capture (../shared/fixtures/gpu/h200-x1)
DRIVER_VERSION_NEWER = "580.173.02"  # a later 580 release: present so tests prove the pin holds the older one
TOOLKIT_VERSION = "1.19.1-1"
TOOLKIT_VERSION_OLDER = "1.18.1-1"
AMDGPU_REPO = "30.30"              # repo.radeon.com/amdgpu/30.30 = ROCm 7.2's driver
AMDGPU_BUILD = "30300000-2278356"


@dataclass
class Pkg:
    name: str
    version: str
    description: str
    depends: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    arch: str = "amd64"
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (content, mode)
    service: str | None = None  # unit name whose stand-in daemon runs a harmless long-running command


def _service_unit(pkg: Pkg) -> str:
    return textwrap.dedent(f"""\
        # TEST DOUBLE shipped by the stand-in package {pkg.name} {pkg.version} (qwen35-prov tests/apt_standins).
        # The real unit starts NVIDIA's daemon; this one runs a harmless long-running command.
        [Unit]
        Description=TEST DOUBLE stand-in for {pkg.service} ({pkg.name} {pkg.version})

        [Service]
        Type=simple
        ExecStart=/bin/sleep infinity

        [Install]
        WantedBy=multi-user.target
        """)


def _postinst(pkg: Pkg) -> str:
    return textwrap.dedent(f"""\
        #!/bin/sh
        # TEST DOUBLE: records that the stand-in {pkg.name} was configured; installs no driver.
        set -e
        if [ "$1" = configure ]; then
            mkdir -p {MARKER_DIR}
            echo "{pkg.name} {pkg.version}" > {MARKER_DIR}/{pkg.name}
        fi
        """)


def _postrm(pkg: Pkg) -> str:
    return textwrap.dedent(f"""\
        #!/bin/sh
        set -e
        if [ "$1" = remove ] || [ "$1" = purge ]; then
            rm -f {MARKER_DIR}/{pkg.name}
        fi
        """)


def build_deb(pkg: Pkg, outdir: Path, work: Path) -> Path:
    root = work / f"{pkg.name}_{pkg.version}"
    if root.exists():
        shutil.rmtree(root)
    (root / "DEBIAN").mkdir(parents=True)
    files = dict(pkg.files)
    files[f"/usr/share/doc/{pkg.name}/README.test-double"] = (
        f"{pkg.name} {pkg.version} is a TEST DOUBLE built by qwen35-prov tests/apt_standins/build_repo.py.\n"
        f"It stands in for the vendor package of the same name and contains no driver.\n", 0o644)
    if pkg.service:
        files[f"/lib/systemd/system/{pkg.service}"] = (_service_unit(pkg), 0o644)
    for path, (content, mode) in files.items():
        p = root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
        p.chmod(mode)
    control = [
        f"Package: {pkg.name}",
        f"Version: {pkg.version}",
        f"Architecture: {pkg.arch}",
        f"Maintainer: {MAINTAINER}",
        "Section: non-free/libs",
        "Priority: optional",
    ]
    if pkg.depends:
        control.append("Depends: " + ", ".join(pkg.depends))
    if pkg.provides:
        control.append("Provides: " + ", ".join(pkg.provides))
    control.append(f"Description: TEST DOUBLE standing in for {pkg.description}")
    control.append(" Built by qwen35-prov's tests; contains no driver. Never install outside a test.")
    (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    for script, body in (("postinst", _postinst(pkg)), ("postrm", _postrm(pkg))):
        p = root / "DEBIAN" / script
        p.write_text(body)
        p.chmod(0o755)
    for d in [root, *root.rglob("*")]:
        if d.is_dir():
            d.chmod(0o755)
    outdir.mkdir(parents=True, exist_ok=True)
    deb = outdir / f"{pkg.name}_{pkg.version.split(':')[-1]}_{pkg.arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
                   check=True, stdout=subprocess.DEVNULL)
    return deb


def _hashes(data: bytes) -> dict[str, str]:
    return {"MD5sum": hashlib.md5(data).hexdigest(), "SHA1": hashlib.sha1(data).hexdigest(),
            "SHA256": hashlib.sha256(data).hexdigest()}


def packages_index(debs: list[Path], relative_to: Path) -> str:
    stanzas = []
    for deb in sorted(debs):
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True,
                                 text=True).stdout.rstrip("\n")
        data = deb.read_bytes()
        h = _hashes(data)
        stanzas.append(control + "\n" + "\n".join([
            f"Filename: {deb.relative_to(relative_to).as_posix()}",
            f"Size: {len(data)}",
            f"MD5sum: {h['MD5sum']}",
            f"SHA1: {h['SHA1']}",
            f"SHA256: {h['SHA256']}",
        ]))
    return "\n\n".join(stanzas) + "\n"


def write_index(index_dir: Path, text: str) -> list[Path]:
    index_dir.mkdir(parents=True, exist_ok=True)
    (index_dir / "Packages").write_text(text)
    with gzip.GzipFile(index_dir / "Packages.gz", "wb", mtime=0) as f:
        f.write(text.encode())
    return [index_dir / "Packages", index_dir / "Packages.gz"]


def write_release(release_dir: Path, files: list[Path], fields: dict[str, str]) -> Path:
    lines = [f"{k}: {v}" for k, v in fields.items()]
    lines.append("Date: " + formatdate(time.time(), usegmt=True))
    for algo in ("MD5Sum", "SHA1", "SHA256"):
        lines.append(f"{algo}:")
        for f in files:
            data = f.read_bytes()
            digest = {"MD5Sum": hashlib.md5, "SHA1": hashlib.sha1, "SHA256": hashlib.sha256}[algo](data).hexdigest()
            lines.append(f" {digest} {len(data):>8} {f.relative_to(release_dir).as_posix()}")
    release = release_dir / "Release"
    release.write_text("\n".join(lines) + "\n")
    return release


class Signer:
    """A throw-away GnuPG home with one ed25519 key, named TEST ONLY."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.home = Path(tempfile.mkdtemp(prefix="q35-standins-gpg-"))
        self.home.chmod(0o700)
        self.public_key = b""
        if enabled:
            self._gpg("--quick-gen-key", "qwen35-prov stand-in repositories TEST ONLY <test-doubles@invalid>",
                      "ed25519", "sign", "never")
            self.public_key = self._gpg("--armor", "--export").stdout

    def _gpg(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--yes", "--quiet",
                               "--pinentry-mode", "loopback", "--passphrase", "", *args],
                              check=True, capture_output=True)

    def sign(self, release: Path) -> None:
        if not self.enabled:
            return
        self._gpg("--clearsign", "--digest-algo", "SHA256", "-o", str(release.with_name("InRelease")), str(release))
        self._gpg("-abs", "--digest-algo", "SHA256", "-o", str(release.with_name("Release.gpg")), str(release))

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.home, ignore_errors=True)


# ---------------------------------------------------------------- package sets (real names and versions)

def cuda_debian12(version: str) -> list[Pkg]:
    """NVIDIA's CUDA repository for Debian 12 (debian12/x86_64) uses Debian's package names."""
    v = f"{version}-1"
    b = DRIVER_BRANCH
    return [
        Pkg("nvidia-kernel-open-dkms", v, "NVIDIA's open GPU kernel modules (DKMS source)",
            provides=[f"nvidia-kernel-open-dkms-{version}"]),
        Pkg("libcuda1", v, "NVIDIA's CUDA driver library"),
        Pkg("nvidia-modprobe", v, "NVIDIA's kernel-module loader helper"),
        Pkg("nvidia-smi", v, "NVIDIA's System Management Interface (the stand-in ships no nvidia-smi binary)",
            depends=[f"libcuda1 (= {v})"]),
        Pkg("nvidia-persistenced", v, "NVIDIA's persistence daemon", service="nvidia-persistenced.service"),
        Pkg(f"nvidia-open-{b}", v, f"NVIDIA's driver metapackage for branch {b}, open kernel modules",
            depends=[f"nvidia-kernel-open-dkms (= {v})", f"libcuda1 (= {v})", f"nvidia-smi (= {v})",
                     f"nvidia-persistenced (= {v})", f"nvidia-modprobe (= {v})"]),
        Pkg(f"cuda-drivers-{b}", v, f"NVIDIA's CUDA driver metapackage for branch {b}",
            depends=[f"nvidia-open-{b} (= {v})"]),
        *fabricmanager(version),
    ]


def cuda_ubuntu(version: str) -> list[Pkg]:
    """NVIDIA's CUDA repository for Ubuntu (ubuntu2204/ubuntu2404) uses Ubuntu's branch-suffixed names."""
    v = f"{version}-1ubuntu1"
    b = DRIVER_BRANCH
    return [
        Pkg(f"nvidia-kernel-common-{b}", v, "NVIDIA's shared kernel-module files",
            provides=[f"nvidia-kernel-common-{b}-server-{version}"]),
        Pkg(f"nvidia-dkms-{b}-open", v, "NVIDIA's open GPU kernel modules (DKMS)",
            depends=[f"nvidia-kernel-common-{b} (= {v})"]),
        Pkg(f"libnvidia-compute-{b}", v, "NVIDIA's compute libraries (libcuda)"),
        Pkg(f"nvidia-utils-{b}", v, "NVIDIA's driver utilities (the stand-in ships no nvidia-smi binary)"),
        Pkg(f"nvidia-compute-utils-{b}", v, "NVIDIA's compute utilities (nvidia-persistenced)",
            service="nvidia-persistenced.service"),
        Pkg(f"nvidia-driver-{b}-open", v, f"NVIDIA's driver metapackage for branch {b}, open kernel modules",
            depends=[f"nvidia-dkms-{b}-open (= {v})", f"nvidia-kernel-common-{b} (= {v})",
                     f"libnvidia-compute-{b} (= {v})", f"nvidia-utils-{b} (= {v})",
                     f"nvidia-compute-utils-{b} (= {v})"]),
        Pkg(f"cuda-drivers-{b}", f"{version}-1", f"NVIDIA's CUDA driver metapackage for branch {b}",
            depends=[f"nvidia-driver-{b}-open (= {v})"]),
        *fabricmanager(version),
    ]


def fabricmanager(version: str) -> list[Pkg]:
    """From branch 580 the fabric manager and NSCQ packages lost their branch suffix (they Provide it)."""
    v = f"{version}-1"
    b = DRIVER_BRANCH
    return [
        Pkg("nvidia-fabricmanager", v, "NVIDIA Fabric Manager for NVSwitch systems",
            provides=[f"nvidia-fabricmanager-{b} (= {v})"], service="nvidia-fabricmanager.service"),
        Pkg("libnvidia-nscq", v, "NVIDIA's NVSwitch Configuration and Query library",
            provides=[f"libnvidia-nscq-{b} (= {v})"]),
        # the IMEX service of multi-node NVLink racks (GB200/GB300 NVL72), like the fabric manager unsuffixed
        Pkg("nvidia-imex", v, "NVIDIA's IMEX service for NVLink multi-node systems",
            provides=[f"nvidia-imex-{b} (= {v})"], service="nvidia-imex.service"),
    ]


NVIDIA_CTK_STANDIN = r"""#!/bin/sh
# TEST DOUBLE for nvidia-ctk (qwen35-prov tests/apt_standins). The real tool reads the GPUs through NVML;
# this one answers the few sub-commands the roles use, with a CDI spec naming no real device node.
set -e
case "$1 $2" in
  "--version "*|"-v "*)
    echo "NVIDIA Container Toolkit CLI version @VERSION@ (TEST DOUBLE)"; exit 0 ;;
  "cdi generate")
    out=""
    for a in "$@"; do case "$a" in --output=*) out="${a#--output=}" ;; esac; done
    spec='---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
# TEST DOUBLE: written by the stand-in nvidia-ctk; a real spec lists /dev/nvidia* device nodes
devices:
- name: all
  containerEdits:
    env:
    - NVIDIA_TEST_DOUBLE=1
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
'
    if [ -n "$out" ]; then mkdir -p "$(dirname "$out")"; printf '%s' "$spec" > "$out"; else printf '%s' "$spec"; fi
    exit 0 ;;
  "cdi list")
    if [ -e /etc/cdi/nvidia.yaml ] || [ -e /var/run/cdi/nvidia.yaml ]; then
      echo "INFO[0000] Found 1 CDI devices"; echo "nvidia.com/gpu=all"; fi
    exit 0 ;;
esac
echo "nvidia-ctk TEST DOUBLE: unsupported arguments: $*" >&2
exit 2
"""

NOT_A_RUNTIME = """#!/bin/sh
echo "{name}: TEST DOUBLE from qwen35-prov tests/apt_standins; no GPU container runtime here" >&2
exit 1
"""


def container_toolkit(v: str) -> list[Pkg]:
    """NVIDIA's libnvidia-container repository (stable/deb): the toolkit and its exact-version dependencies."""
    return [
        Pkg("libnvidia-container1", v, "NVIDIA's container runtime library"),
        Pkg("libnvidia-container-tools", v, "NVIDIA's container runtime library tools",
            depends=[f"libnvidia-container1 (>= {v})"],
            files={"/usr/bin/nvidia-container-cli": (NOT_A_RUNTIME.format(name="nvidia-container-cli"), 0o755)}),
        Pkg("nvidia-container-toolkit-base", v, "NVIDIA Container Toolkit base (nvidia-ctk, the runtime)",
            files={"/usr/bin/nvidia-ctk": (NVIDIA_CTK_STANDIN.replace("@VERSION@", v.split("-")[0]), 0o755),
                   "/usr/bin/nvidia-container-runtime":
                       (NOT_A_RUNTIME.format(name="nvidia-container-runtime"), 0o755)}),
        Pkg("nvidia-container-toolkit", v, "NVIDIA Container Toolkit",
            depends=[f"nvidia-container-toolkit-base (= {v})", f"libnvidia-container-tools (>= {v})",
                     "libnvidia-container-tools (<< 2.0.0)"],
            files={"/usr/bin/nvidia-container-runtime-hook":
                       (NOT_A_RUNTIME.format(name="nvidia-container-runtime-hook"), 0o755)}),
    ]


def amdgpu(suffix: str) -> list[Pkg]:
    """AMD's amdgpu repository (repo.radeon.com/amdgpu/30.30/ubuntu): the DKMS driver and its firmware."""
    fw = f"{AMDGPU_REPO}.0.0.{AMDGPU_BUILD}.{suffix}"
    return [
        Pkg("amdgpu-dkms-firmware", fw, "AMD's firmware blobs for the amdgpu DKMS driver", arch="all"),
        Pkg("amdgpu-dkms", f"1:6.16.13.{AMDGPU_BUILD}.{suffix}", "AMD's amdgpu kernel driver (DKMS)",
            arch="all", depends=[f"amdgpu-dkms-firmware (= {fw})"]),
        Pkg("amdgpu-install", fw, "AMD's amdgpu-install repository helper", arch="all"),
    ]


# ---------------------------------------------------------------- repositories

def flat_repo(repo_dir: Path, pkgs: list[Pkg], work: Path, signer: Signer, label: str) -> None:
    debs = [build_deb(p, repo_dir, work) for p in pkgs]
    files = write_index(repo_dir, packages_index(debs, repo_dir))
    release = write_release(repo_dir, files, {"Origin": "qwen35-prov test doubles", "Label": label,
                                              "Architectures": "amd64 all", "Acquire-By-Hash": "no"})
    signer.sign(release)


def dists_repo(repo_root: Path, suite: str, component: str, pkgs: list[Pkg], work: Path, signer: Signer,
               label: str) -> None:
    pool = repo_root / "pool" / component
    debs = [build_deb(p, pool / p.name[0] / p.name, work) for p in pkgs]
    suite_dir = repo_root / "dists" / suite
    files = write_index(suite_dir / component / "binary-amd64", packages_index(debs, repo_root))
    release = write_release(suite_dir, files, {"Origin": "qwen35-prov test doubles", "Label": label,
                                               "Suite": suite, "Codename": suite, "Architectures": "amd64",
                                               "Components": component})
    signer.sign(release)


def build(out: Path, sign: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    signer = Signer(sign)
    work = Path(tempfile.mkdtemp(prefix="q35-standins-build-"))
    try:
        key = signer.public_key
        (out / "README.test-doubles").write_text(
            "TEST DOUBLES: stand-in apt repositories built by qwen35-prov tests/apt_standins/build_repo.py.\n"
            "They mirror the vendors' URL layout; no package here contains a driver.\n")
        cuda = out / "compute" / "cuda" / "repos"
        for distro, pkgset in (("debian12", cuda_debian12), ("ubuntu2204", cuda_ubuntu),
                               ("ubuntu2404", cuda_ubuntu)):
            # sbsa: the arm64 servers' folder (Grace trays of GB200/GB300); its stand-in packages are the same
            # amd64 ones, since the test nodes are x86_64 containers told they are aarch64
            for arch in ("x86_64", "sbsa"):
                repo = cuda / distro / arch
                flat_repo(repo, pkgset(DRIVER_VERSION) + pkgset(DRIVER_VERSION_NEWER), work, signer,
                          f"TEST DOUBLE of NVIDIA CUDA {distro}/{arch}")
                if key:
                    (repo / "qwen35-standins.pub").write_bytes(key)
        nct = out / "libnvidia-container"
        for arch in ("amd64", "arm64"):
            flat_repo(nct / "stable" / "deb" / arch,
                      container_toolkit(TOOLKIT_VERSION) + container_toolkit(TOOLKIT_VERSION_OLDER), work, signer,
                      f"TEST DOUBLE of libnvidia-container ({arch})")
        amd = out / "amdgpu" / AMDGPU_REPO / "ubuntu"
        for suite, suffix in (("jammy", "22.04"), ("noble", "24.04")):
            dists_repo(amd, suite, "main", amdgpu(suffix), work, signer, f"TEST DOUBLE of amdgpu {AMDGPU_REPO}")
        if key:
            (nct / "gpgkey").write_bytes(key)
            (out / "rocm").mkdir(exist_ok=True)
            (out / "rocm" / "rocm.gpg.key").write_bytes(key)
            (out / "qwen35-standins.pub").write_bytes(key)
    finally:
        signer.close()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="web root to write (created; existing files replaced)")
    ap.add_argument("--no-sign", action="store_true", help="write unsigned repositories (serve [trusted=yes])")
    args = ap.parse_args(argv)
    for tool in ("dpkg-deb",) + (() if args.no_sign else ("gpg",)):
        if shutil.which(tool) is None:
            print(f"build_repo.py: {tool} is not installed (apt-get install dpkg{' gnupg' if tool == 'gpg' else ''})",
                  file=sys.stderr)
            return 2
    if args.out.exists():
        shutil.rmtree(args.out)
    build(args.out, sign=not args.no_sign)
    print(f"stand-in repositories written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
