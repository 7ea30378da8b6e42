"""The stand-in apt repositories (tests/apt_standins/build_repo.py): names, versions, relations, signatures."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "tests" / "apt_standins" / "build_repo.py"

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None or shutil.which("gpg") is None,
                                reason="needs dpkg-deb and gpg")


def _stanzas(path: Path) -> list[dict[str, str]]:
    out = []
    for block in path.read_text().strip().split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line.startswith(" ") and key:
                fields[key] += "\n" + line.strip()
            else:
                key, _, value = line.partition(": ")
                fields[key] = value
        out.append(fields)
    return out


@pytest.fixture(scope="module")
def web_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("standins") / "root"
    subprocess.run([sys.executable, str(BUILD), "--out", str(out)], check=True, capture_output=True)
    return out


def test_cuda_debian12_has_the_pinned_and_a_newer_version(web_root):
    pkgs = _stanzas(web_root / "compute/cuda/repos/debian12/x86_64/Packages")
    versions = {(p["Package"], p["Version"]) for p in pkgs}
    for name in ("nvidia-open-580", "nvidia-kernel-open-dkms", "libcuda1", "nvidia-persistenced",
                 "nvidia-fabricmanager", "libnvidia-nscq", "cuda-drivers-580"):
        assert (name, "580.159.04-1") in versions
        assert (name, "580.173.02-1") in versions
    meta = next(p for p in pkgs if p["Package"] == "nvidia-open-580" and p["Version"] == "580.159.04-1")
    assert "nvidia-kernel-open-dkms (= 580.159.04-1)" in meta["Depends"]
    fm = next(p for p in pkgs if p["Package"] == "nvidia-fabricmanager" and p["Version"] == "580.159.04-1")
    assert fm["Provides"] == "nvidia-fabricmanager-580 (= 580.159.04-1)"
    assert all(p["Description"].startswith("TEST DOUBLE") for p in pkgs)


def test_cuda_ubuntu_uses_branch_suffixed_names(web_root):
    pkgs = _stanzas(web_root / "compute/cuda/repos/ubuntu2404/x86_64/Packages")
    versions = {(p["Package"], p["Version"]) for p in pkgs}
    assert ("nvidia-driver-580-open", "580.159.04-1ubuntu1") in versions
    assert ("nvidia-dkms-580-open", "580.159.04-1ubuntu1") in versions
    assert ("nvidia-fabricmanager", "580.159.04-1") in versions


def test_index_matches_the_files_and_the_release(web_root):
    repo = web_root / "compute/cuda/repos/debian12/x86_64"
    for p in _stanzas(repo / "Packages"):
        deb = repo / p["Filename"]
        assert deb.stat().st_size == int(p["Size"])
    assert gzip.decompress((repo / "Packages.gz").read_bytes()) == (repo / "Packages").read_bytes()
    release = (repo / "Release").read_text()
    import hashlib
    assert hashlib.sha256((repo / "Packages").read_bytes()).hexdigest() in release


def test_packages_ship_units_and_markers(web_root):
    deb = next((web_root / "compute/cuda/repos/debian12/x86_64").glob("nvidia-fabricmanager_580.159.04-1_*.deb"))
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], check=True, capture_output=True, text=True).stdout
    assert "./lib/systemd/system/nvidia-fabricmanager.service" in listing
    postinst = subprocess.run(["dpkg-deb", "-I", str(deb), "postinst"], check=True, capture_output=True,
                              text=True).stdout
    assert "/var/lib/qwen35-standins/nvidia-fabricmanager" in postinst


@pytest.mark.parametrize("release", [
    "compute/cuda/repos/debian12/x86_64/Release",
    "libnvidia-container/stable/deb/amd64/Release",
    "amdgpu/30.30/ubuntu/dists/noble/Release",
])
def test_every_repository_is_signed_by_the_published_key(web_root, tmp_path, release):
    rel = web_root / release
    keyring = tmp_path / "keyring.gpg"
    subprocess.run(["gpg", "--batch", "--yes", "--dearmor", "-o", str(keyring), str(web_root / "qwen35-standins.pub")],
                   check=True, capture_output=True)
    # the way apt checks it: gpgv against the keyring, for the inline and the detached signature
    subprocess.run(["gpgv", "--keyring", str(keyring), str(rel.with_name("InRelease"))], check=True, capture_output=True)
    subprocess.run(["gpgv", "--keyring", str(keyring), str(rel.with_name("Release.gpg")), str(rel)], check=True,
                   capture_output=True)


def test_toolkit_and_amdgpu_versions(web_root):
    tk = {(p["Package"], p["Version"]) for p in _stanzas(web_root / "libnvidia-container/stable/deb/amd64/Packages")}
    assert ("nvidia-container-toolkit", "1.19.1-1") in tk and ("nvidia-container-toolkit", "1.18.1-1") in tk
    amd = _stanzas(web_root / "amdgpu/30.30/ubuntu/dists/jammy/main/binary-amd64/Packages")
    dkms = next(p for p in amd if p["Package"] == "amdgpu-dkms")
    assert dkms["Version"] == "1:6.16.13.30300000-2278356.22.04"
    assert dkms["Depends"] == "amdgpu-dkms-firmware (= 30.30.0.0.30300000-2278356.22.04)"
