"""qwen35-prov installed as a user installs it: the wheel built from this checkout, put into a fresh virtual
environment (its dependencies from the package index, as pip or pipx would), and run from an empty folder that
is not the checkout. The wheel carries the Ansible collection qwen35.prov (ansible_collections/qwen35/prov)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import install_wheel_in_fresh_venv

REPO = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes: SSH is refused at once


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("packaging")
    wheel, bindir, _ = install_wheel_in_fresh_venv(work)
    home = work / "empty"
    home.mkdir()
    # nothing of the checkout or of the test session's environment may help the installed tool
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           "QWEN35_STATE_DIR": str(home / "state")}
    return wheel, bindir, home, env


def run(bindir: Path, home: Path, env: dict, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = argv[0] if "/" in argv[0] else str(bindir / argv[0])
    return subprocess.run([exe, *argv[1:]], cwd=home, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_carries_the_collection_without_its_tests(installed):
    wheel, *_ = installed
    names = zipfile.ZipFile(wheel).namelist()
    prefix = "ansible_collections/qwen35/prov/"
    for needed in ("galaxy.yml", "meta/runtime.yml", "playbooks/up.yml", "plugins/modules/gpu_facts.py",
                   "plugins/filter/sglang_server.py", "plugins/module_utils/gpu_parse.py",
                   "roles/sglang_server/tasks/main.yml",
                   "roles/gpu_facts/meta/argument_specs.yml", "roles/model_weights/files/qwen35_weights.py",
                   "group_vars/all/site.yml", "LICENSE"):
        assert prefix + needed in names, needed
    assert not [n for n in names if "/molecule/" in n or n.startswith(prefix + "tests/") or "__pycache__" in n]
    # nothing left over from an earlier build (pip builds in the checkout, and build/lib stays)
    stale = [n for n in names if n.startswith(prefix) and not (REPO / n[len(prefix):]).is_file()]
    assert not stale, stale
    assert "qwen35_prov/data/recipes.yaml" in names


def test_plan_inventory_and_up_run_from_an_empty_folder(installed):
    _, bindir, home, env = installed
    plan = run(bindir, home, env, "qwen35-prov", "plan", "--cluster", "h100x16", "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["tp_size"] == 16

    port = _closed_port()
    (home / "fleet.yml").write_text(
        "defaults: {ssh_user: root, ssh_port: %d}\n"
        "hosts:\n"
        "  - {name: gpu-01, address: 127.0.0.1, gpu: h100, gpu_count: 8}\n"
        "  - {name: gpu-02, address: 127.0.0.2, gpu: h100, gpu_count: 8}\n" % port)
    inv = run(bindir, home, env, "qwen35-prov", "inventory", "--cluster", "h100x16", "--fleet", "fleet.yml",
              "--out", "inv")
    assert inv.returncode == 0, inv.stderr
    assert (home / "inv" / "host_vars" / "gpu-01.yml").is_file()
    # the check it suggests names the installed collection's playbook
    assert "ansible-playbook -i inv qwen35.prov.validate" in inv.stdout

    up = run(bindir, home, env, "qwen35-prov", "up", "--cluster", "h100x16", "--fleet", "fleet.yml",
             "--revision", "0" * 40, "--check", "--json")
    assert up.returncode != 0
    report = json.loads(up.stdout)
    # the playbooks were found and ran: the inventory's own checks passed on the controller, and the only
    # failures are the two hosts nobody answers for
    assert "could not be found" not in up.stdout + up.stderr
    assert report["hosts"]["localhost"]["failed"] == 0 and report["hosts"]["localhost"]["ok"] >= 1, report
    assert {f["host"] for f in report["failures"]} == {"gpu-01", "gpu-02"}, report["failures"]
    assert all("unreachable" in f["message"].lower() or "connect" in f["message"].lower()
               for f in report["failures"]), report["failures"]


def test_ansible_finds_the_roles_and_a_users_playbook_uses_them(installed):
    _, bindir, home, env = installed
    doc = run(bindir, home, env, "ansible-doc", "-t", "role", "-l", "qwen35.prov")
    assert doc.returncode == 0, doc.stderr
    roles = {line.rstrip(":") for line in doc.stdout.splitlines() if line.startswith("qwen35.prov.")}
    assert roles == {f"qwen35.prov.{r.name}" for r in (REPO / "roles").iterdir() if r.is_dir()}

    (home / "site.yml").write_text(
        "- name: Our own play with the collection's GPU facts\n"
        "  hosts: gpu\n"
        "  gather_facts: false\n"
        "  roles:\n"
        "    - role: qwen35.prov.gpu_facts\n"
        "      gpu_facts_expected_vendor: nvidia\n"
        "      gpu_facts_expected_name: NVIDIA H200\n"
        "      gpu_facts_expected_count: 8\n"
        "  tasks:\n"
        "    - name: The module on its own\n"
        "      qwen35.prov.gpu_facts:\n")
    (home / "hosts.ini").write_text("[gpu]\ngpu-01 ansible_host=127.0.0.1\n")
    syntax = run(bindir, home, env, "ansible-playbook", "-i", "hosts.ini", "site.yml", "--syntax-check")
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    assert "playbook: site.yml" in syntax.stdout


def test_ansible_galaxy_builds_the_collection_from_the_checkout(tmp_path):
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    r = subprocess.run([str(galaxy), "collection", "build", str(REPO), "--output-path", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    [tarball] = tmp_path.glob("qwen35-prov-*.tar.gz")
    names = tarfile.open(tarball).getnames()
    assert {"MANIFEST.json", "galaxy.yml", "meta/runtime.yml", "playbooks/up.yml", "plugins/modules/gpu_facts.py",
            "roles/sglang_router/tasks/main.yml", "group_vars/all/site.yml"} - set(names) == {"galaxy.yml"}
    assert not [n for n in names if n.split("/")[0] in ("tests", "qwen35_prov", "scripts", ".venv", ".cache", "build")
                or "/molecule" in n]
