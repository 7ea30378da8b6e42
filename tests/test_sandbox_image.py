"""The sandbox's pure parts: the mirror it debootstraps from, the image recipe hash, names, the fleet document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qwen35_prov.catalog import load_catalog
from qwen35_prov.cluster import parse_cluster
from qwen35_prov.errors import UserError
from qwen35_prov.sandbox import image, nodes

REPO = Path(__file__).resolve().parents[1]


def test_mirror_from_deb822_sources_skips_security(tmp_path, monkeypatch):
    monkeypatch.delenv("QWEN35_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n")
    assert image.apt_mirror(tmp_path, os_id="debian") == "http://mirror.example/debian"


def test_mirror_from_one_line_sources_list(tmp_path, monkeypatch):
    monkeypatch.delenv("QWEN35_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb http://security.debian.org/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://ftp.example.org/debian bookworm main\n")
    assert image.apt_mirror(tmp_path, os_id="debian") == "http://ftp.example.org/debian"


def test_mirror_defaults_and_override(tmp_path, monkeypatch):
    monkeypatch.delenv("QWEN35_DEBIAN_MIRROR", raising=False)
    assert image.apt_mirror(tmp_path, os_id="debian") == image.DEFAULT_MIRROR  # no sources at all
    (tmp_path / "sources.list").write_text("deb http://archive.ubuntu.com/ubuntu noble main\n")
    assert image.apt_mirror(tmp_path, os_id="ubuntu") == image.DEFAULT_MIRROR  # Ubuntu mirrors carry no bookworm
    monkeypatch.setenv("QWEN35_DEBIAN_MIRROR", "http://local.example/debian")
    assert image.apt_mirror(tmp_path, os_id="ubuntu") == "http://local.example/debian"


def test_image_tag_follows_the_recipe(monkeypatch):
    ref = image.image_ref()
    assert ref == f"localhost/qwen35-node:{image.recipe_hash()}" and len(image.recipe_hash()) == 12
    assert image.image_ref() == ref  # stable
    monkeypatch.setattr(image, "PACKAGES", image.PACKAGES + ("vim-tiny",))
    assert image.image_ref() != ref
    needed = {"systemd", "systemd-sysv", "python3", "dbus", "iproute2", "sudo", "openssh-server",
              "ca-certificates", "curl", "gnupg", "rsync", "python3-apt"}
    assert needed <= set(image.recipe()["packages"])


@pytest.mark.parametrize("name", ["h100x16", "inv-1", "a"])
def test_sandbox_names_accepted(name):
    assert nodes.check_name(name) == name
    assert nodes.node_name(name, 1) == f"q35-{name}-node1" and nodes.network_name(name) == f"q35-{name}"


@pytest.mark.parametrize("name", ["", "-x", "A", "x_y", "x" * 41, "a/b"])
def test_sandbox_names_rejected(name):
    with pytest.raises(UserError):
        nodes.check_name(name)


def test_fleet_document_follows_the_architecture_contract(tmp_path):
    spec = parse_cluster("h100x16", load_catalog())
    ns = [nodes.Node(name=nodes.node_name("h100x16", i), state="running", address=f"10.89.0.{i + 2}",
                     interface="eth0") for i in range(spec.node_count)]
    doc = nodes._fleet_doc("h100x16", spec, tmp_path, ns)
    assert doc["defaults"] == {"ssh_user": "root", "ssh_port": 22, "ssh_key": str(tmp_path / "id_ed25519"),
                               "known_hosts": str(tmp_path / "known_hosts")}
    assert [h["name"] for h in doc["hosts"]] == ["q35-h100x16-node0", "q35-h100x16-node1"]
    assert all(h["gpu"] == "h100" and h["gpu_count"] == 8 and h["network_interface"] == "eth0" for h in doc["hosts"])
    assert doc["clusters"] == {"h100x16": {"hosts": ["q35-h100x16-node0", "q35-h100x16-node1"]}}
    yaml.safe_load(yaml.safe_dump(doc))  # plain YAML types only


def test_write_atomic_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "fleet.yml"
    nodes._write_atomic(target, "a: 1\n")
    nodes._write_atomic(target, "a: 2\n")
    assert target.read_text() == "a: 2\n" and [p.name for p in tmp_path.iterdir()] == ["fleet.yml"]


def test_keypair_is_openssh_ed25519(tmp_path):
    line = nodes._write_keypair(tmp_path, "qwen35-sandbox-test")
    assert line.startswith("ssh-ed25519 ") and line.endswith(" qwen35-sandbox-test\n")
    assert (tmp_path / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "id_ed25519").read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    proc = subprocess.run(["ssh-keygen", "-y", "-f", str(tmp_path / "id_ed25519")], capture_output=True, text=True)
    if proc.returncode == 0:  # ssh-keygen derives the same public key
        assert proc.stdout.split()[:2] == line.split()[:2]


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "qwen35_prov", *args], capture_output=True, text=True, env=env,
                          cwd=REPO)


def test_cli_without_podman_says_run_setup(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    for args in (("sandbox", "status"), ("sandbox", "create", "--cluster", "h100x16"),
                 ("sandbox", "destroy", "--all")):
        proc = _cli(*args, env=env)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == "qwen35-prov: error: podman is not installed; run scripts/setup\n"


def test_cli_rejects_bad_input_in_one_line():
    bad = _cli("sandbox", "create", "--cluster", "h100x15")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1 and "multiple of" in bad.stderr
    name = _cli("sandbox", "create", "--cluster", "h100x16", "--name", "Bad_Name")
    assert name.returncode == 2 and "sandbox name 'Bad_Name'" in name.stderr
    neither = _cli("sandbox", "destroy")
    assert neither.returncode == 2 and "--cluster NAME or --all" in neither.stderr
