"""fleet probe -> inventory -> validate.yml on a sandbox node (a systemd container reached over SSH, whose GPU
tools are the sandbox's TEST DOUBLES replaying the real H200 capture): the session's h200x8 sandbox
(tests/conftest.py), whose node also serves a deployment, so the checks run on a host in use."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "qwen35_prov"]
NAME = "h200x8"  # the session's sandbox (tests/conftest.py)


def cli(*args, **kw):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=900, **kw)


@pytest.fixture(scope="module")
def sandbox_fleet(h200x8_deployed):
    from qwen35_prov.sandbox import sandbox_root

    return sandbox_root() / NAME / "fleet.yml"


def test_probe_inventory_and_validate_on_a_sandbox_node(sandbox_fleet, tmp_path):
    fleet = tmp_path / "fleet.yml"
    fleet.write_text(sandbox_fleet.read_text())  # --update writes into the copy, not the sandbox's file
    probe = cli("fleet", "probe", "--fleet", str(fleet), "--json", "--update")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    [host] = json.loads(probe.stdout)["hosts"]
    assert host["status"] == "ok" and host["facts"]["gpu"] == "h200" and host["facts"]["gpu_count"] == 8
    assert host["facts"]["os_id"] == "debian" and host["facts"]["driver_version"] == "580.159.04"
    node_if = yaml.safe_load(fleet.read_text())["hosts"][0]["network_interface"]
    assert node_if in {i["name"] for i in host["facts"]["interfaces"]}

    inv = tmp_path / "inventory"
    made = cli("inventory", "--cluster", NAME, "--fleet", str(fleet), "--out", str(inv), "--model", "35b",
               "--precision", "fp8")
    assert made.returncode == 0, made.stderr
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv),
                          str(REPO / "playbooks" / "validate.yml")], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "failed=0" in run.stdout and "unreachable=0" in run.stdout


def test_a_users_playbook_runs_the_installed_collections_gpu_facts_on_a_sandbox_node(sandbox_fleet, tmp_path):
    """The wheel installed in a fresh virtual environment; from an empty folder, the user's own inventory and
    playbook with the role qwen35.prov.gpu_facts, against the sandbox node over SSH."""
    from conftest import install_wheel_in_fresh_venv

    _, bindir, env = install_wheel_in_fresh_venv(tmp_path / "install")
    inv = tmp_path / "inventory"
    made = cli("inventory", "--cluster", NAME, "--fleet", str(sandbox_fleet), "--out", str(inv))
    assert made.returncode == 0, made.stderr
    user = tmp_path / "user"
    user.mkdir()
    (user / "site.yml").write_text(
        "- name: Our GPU hosts, checked with the collection's role\n"
        "  hosts: qwen35_nodes\n"
        "  gather_facts: false\n"
        "  roles:\n"
        "    - role: qwen35.prov.gpu_facts\n"
        "      gpu_facts_expected_vendor: nvidia\n"
        "      gpu_facts_expected_name: '{{ want_name }}'\n"
        "      gpu_facts_expected_count: 8\n")

    def play(name):
        return subprocess.run([str(bindir / "ansible-playbook"), "-i", str(inv), "site.yml", "-e", f"want_name='{name}'"],
                              cwd=user, env=env, capture_output=True, text=True, timeout=600)

    good = play("NVIDIA H200")
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-2000:]
    assert "matches the plan (8 x h200 (NVIDIA H200))" in good.stdout
    wrong = play("NVIDIA B200")
    assert wrong.returncode != 0
    assert "GPU model NVIDIA H200 is not the plan's 8 x h200 (NVIDIA B200)" in wrong.stdout
