"""End to end: a real 2-node sandbox (h100x16) of systemd containers, reached over SSH, driven by Ansible.

The sandbox `h100x16` is the session's (tests/conftest.py): tests/test_rollout_sandbox.py rolls it out first, these
tests check the sandbox itself, and the last one destroys it. The other sandboxes made here have names unique to
this test run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qwen35_prov.errors import UserError
from qwen35_prov.fleet import load_fleet
from qwen35_prov.sandbox import nodes
from qwen35_prov.sandbox.podman import LABEL, podman, podman_json

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman (scripts/setup)"),
]

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
NAME = "h100x16"                        # the session's sandbox (tests/conftest.py)
OTHER = f"pyt{os.getpid() % 100000}"    # prefix of the sandboxes this module makes for itself


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "qwen35_prov", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=900)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc


def ssh(folder: Path, address: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(nodes.ssh_argv(folder, address, *command), capture_output=True, text=True, timeout=60)


def leftovers(name: str) -> dict:
    """Everything podman or the file system still holds for sandbox NAME."""
    return {
        "containers": [c["Names"] for c in podman_json(["ps", "-a", "--filter", f"label={LABEL}={name}", "--format", "json"])]
        + [c["Names"] for c in podman_json(["ps", "-a", "--filter", f"name=^q35-{name}-", "--format", "json"])],
        "networks": [n["name"] for n in podman_json(["network", "ls", "--format", "json"])
                     if n["name"] == f"q35-{name}" or (n.get("labels") or {}).get(LABEL) == name],
        "volumes": [v["Name"] for v in podman_json(["volume", "ls", "--format", "json"])
                    if v["Name"].startswith(f"q35-{name}-") or (v.get("Labels") or {}).get(LABEL) == name],
        "files": [str(p) for p in [nodes.sandbox_root() / name] if p.exists()],
    }


NOTHING = {"containers": [], "networks": [], "volumes": [], "files": []}


@pytest.fixture(scope="module")
def sandbox(h100x16_sandbox):
    return h100x16_sandbox


def test_create_starts_two_nodes_and_writes_the_fleet(sandbox):
    assert sandbox["created"] is True and sandbox["name"] == NAME and sandbox["cluster"] == "h100x16"
    assert [n["name"] for n in sandbox["nodes"]] == [f"q35-{NAME}-node0", f"q35-{NAME}-node1"]
    fleet = yaml.safe_load(Path(sandbox["fleet"]).read_text())
    folder = Path(sandbox["dir"])
    validated = load_fleet(sandbox["fleet"])  # the fleet file passes the product's own fleet validation
    assert [(h.name, h.gpu, h.gpu_count, h.network_interface) for h in validated.hosts] == \
        [(n["name"], "h100", 8, "eth0") for n in sandbox["nodes"]]
    assert fleet["defaults"]["ssh_user"] == "root"
    assert fleet["defaults"]["ssh_key"] == str(folder / "id_ed25519")
    assert fleet["defaults"]["known_hosts"] == str(folder / "known_hosts")
    assert fleet["clusters"] == {NAME: {"hosts": [n["name"] for n in sandbox["nodes"]]}}
    # the stand-in services' settings (TEST DOUBLES), on the network's gateway at fixed ports, handed over as data
    gateway = podman_json(["network", "inspect", f"q35-{NAME}"])[0]["subnets"][0]["gateway"]
    assert validated.standins == fleet["standins"]
    assert fleet["standins"]["model_weights_hf_endpoint"] == f"http://{gateway}:8766"
    assert fleet["standins"]["nvidia_driver_mirror"] == f"http://{gateway}:8765/compute/cuda/repos"
    assert fleet["standins"]["qwen35_image"].startswith("localhost/") and fleet["standins"]["qwen35_preflight_nccl"] is False
    for host, node in zip(fleet["hosts"], sandbox["nodes"]):
        inspected = podman_json(["inspect", "--type", "container", node["name"]])[0]
        ip = inspected["NetworkSettings"]["Networks"][f"q35-{NAME}"]["IPAddress"]
        assert (host["name"], host["address"], host["gpu"], host["gpu_count"]) == (node["name"], ip, "h100", 8)
        assert host["network_interface"] == node["interface"] == "eth0"
        assert inspected["State"]["Running"] and inspected["HostConfig"]["Privileged"] is True
        assert inspected["Config"]["Hostname"] == node["name"]
        mounts = {m["Destination"]: m for m in inspected["Mounts"]}
        assert mounts["/var/lib/docker"]["Name"] == f"{node['name']}-docker"


def test_create_again_changes_nothing(sandbox):
    before = {n["name"]: podman_json(["inspect", "--type", "container", n["name"]])[0]["State"]["StartedAt"]
              for n in sandbox["nodes"]}
    fleet = Path(sandbox["fleet"])
    mtime, text = fleet.stat().st_mtime_ns, fleet.read_text()
    again = json.loads(cli("sandbox", "create", "--cluster", "h100x16", "--json").stdout)
    assert again["created"] is False and again["fleet"] == sandbox["fleet"]
    assert [(n["name"], n["address"]) for n in again["nodes"]] == [(n["name"], n["address"]) for n in sandbox["nodes"]]
    after = {n: podman_json(["inspect", "--type", "container", n])[0]["State"]["StartedAt"] for n in before}
    assert after == before
    assert fleet.stat().st_mtime_ns == mtime and fleet.read_text() == text
    other = cli("sandbox", "create", "--cluster", "h200x8", "--name", NAME, check=False)
    assert other.returncode == 2 and f"exists for cluster h100x16, not h200x8" in other.stderr


def test_host_reaches_both_nodes_over_ssh_with_strict_host_keys(sandbox):
    folder = Path(sandbox["dir"])
    assert len((folder / "known_hosts").read_text().splitlines()) == 2
    machine_ids = set()
    for node in sandbox["nodes"]:
        proc = ssh(folder, node["address"], "hostname; cat /etc/machine-id; systemctl is-system-running")
        assert proc.returncode == 0, proc.stderr
        hostname, machine_id, state = proc.stdout.split()
        assert hostname == node["name"] and state in ("running", "degraded")
        assert len(machine_id) == 32
        machine_ids.add(machine_id)
    assert len(machine_ids) == 2


def test_an_unknown_host_key_is_refused(sandbox, tmp_path):
    folder = Path(sandbox["dir"])
    (tmp_path / "id_ed25519").write_bytes((folder / "id_ed25519").read_bytes())
    (tmp_path / "id_ed25519").chmod(0o600)
    (tmp_path / "known_hosts").write_text("")  # the key is right, the host is unknown: StrictHostKeyChecking refuses
    proc = ssh(tmp_path, sandbox["nodes"][0]["address"], "true")
    assert proc.returncode == 255 and "Host key verification failed" in proc.stderr


def test_node_to_node_ssh(sandbox):
    folder = Path(sandbox["dir"])
    node0, node1 = sandbox["nodes"]
    for target in (node1["name"], node1["address"]):
        proc = ssh(folder, node0["address"], "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                   f"root@{target}", "hostname")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == node1["name"]


def test_a_node_comes_back_from_a_reboot_with_its_address_keys_and_disk_and_a_fresh_run(sandbox):
    folder = Path(sandbox["dir"])
    node = sandbox["nodes"][1]
    before = ssh(folder, node["address"], "ps -o lstart= -p 1; touch /run/before-reboot /var/tmp/before-reboot")
    assert before.returncode == 0, before.stderr
    ssh(folder, node["address"], "systemctl reboot")
    deadline, after = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        after = ssh(folder, node["address"], "ps -o lstart= -p 1; ls /run/before-reboot /var/tmp/before-reboot 2>&1; "
                                             "systemctl is-system-running --wait")
        if after.returncode in (0, 1) and after.stdout.splitlines()[:1] != before.stdout.splitlines()[:1]:
            break
        time.sleep(2)
    assert after is not None and after.stdout.splitlines()[0] != before.stdout.splitlines()[0], after
    assert "/var/tmp/before-reboot" in after.stdout and "No such file" in after.stdout   # disk kept, /run fresh
    assert after.stdout.split()[-1] in ("running", "degraded")


def test_stand_in_nvidia_smi_reports_eight_h100s(sandbox):
    folder = Path(sandbox["dir"])
    for node in sandbox["nodes"]:
        proc = ssh(folder, node["address"], "nvidia-smi", "--query-gpu=index,name,memory.total",
                   "--format=csv,noheader,nounits")
        assert proc.returncode == 0, proc.stderr
        rows = [line.split(", ") for line in proc.stdout.splitlines()]
        assert rows == [[str(i), "NVIDIA H100 80GB HBM3", "81559"] for i in range(8)]
        header = ssh(folder, node["address"], "head", "-3", "/usr/local/bin/nvidia-smi").stdout
        assert "TEST DOUBLE" in header
        absent = ssh(folder, node["address"], "command -v amd-smi || echo none").stdout.strip()
        assert absent == "none"  # only the cluster's vendor's stand-in


def test_trivial_playbook_runs_against_the_fleet(sandbox, tmp_path):
    fleet = yaml.safe_load(Path(sandbox["fleet"]).read_text())
    d = fleet["defaults"]
    hosts = {
        h["name"]: {
            "ansible_host": h["address"], "ansible_user": d["ssh_user"], "ansible_port": d["ssh_port"],
            "ansible_ssh_private_key_file": d["ssh_key"],
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={d['known_hosts']} -o StrictHostKeyChecking=yes",
            "expected_gpu_count": h["gpu_count"],
        } for h in fleet["hosts"]
    }
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"))
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory),
                           str(REPO / "tests" / "playbooks" / "ping.yml")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for name in hosts:
        assert f"{name}" in proc.stdout
    recap = [line for line in proc.stdout.splitlines() if " : ok=" in line]
    assert len(recap) == 2 and all("failed=0" in line and "unreachable=0" in line for line in recap)


def test_status_lists_the_sandbox(sandbox):
    listed = {sb["name"]: sb for sb in json.loads(cli("sandbox", "status", "--json").stdout)}
    mine = listed[NAME]
    assert mine["cluster"] == "h100x16" and mine["fleet"] == sandbox["fleet"]
    assert [(n["name"], n["state"], n["address"]) for n in mine["nodes"]] == \
        [(n["name"], "running", n["address"]) for n in sandbox["nodes"]]
    text = cli("sandbox", "status").stdout
    assert f"q35-{NAME}-node1" in text and "running" in text


def test_a_second_cluster_coexists_and_goes_away_alone(sandbox):
    other = f"{OTHER}b"
    try:
        data = json.loads(cli("sandbox", "create", "--cluster", "mi300xx8", "--name", other, "--json").stdout)
        assert [n["name"] for n in data["nodes"]] == [f"q35-{other}-node0"]
        folder = Path(data["dir"])
        amd = ssh(folder, data["nodes"][0]["address"], "amd-smi", "static", "--asic", "--json")
        assert amd.returncode == 0, amd.stderr
        assert len(json.loads(amd.stdout)["gpu_data"]) == 8
        assert data["nodes"][0]["address"] not in {n["address"] for n in sandbox["nodes"]}
    finally:
        cli("sandbox", "destroy", "--cluster", other)
    assert leftovers(other) == NOTHING
    folder = Path(sandbox["dir"])
    assert ssh(folder, sandbox["nodes"][1]["address"], "true").returncode == 0  # the first one is untouched


def test_a_failed_create_leaves_nothing_behind(monkeypatch):
    name = f"{OTHER}f"

    def broken(spec):
        raise UserError("simulated failure while installing the test doubles")

    monkeypatch.setattr(nodes, "_doubles_entries", broken)
    with pytest.raises(UserError, match="simulated failure"):
        nodes.create_sandbox("h100x8", name=name)
    assert leftovers(name) == NOTHING


def test_destroy_leaves_nothing_behind(sandbox):
    proc = cli("sandbox", "destroy", "--cluster", NAME)
    assert f"sandbox {NAME}: destroyed" in proc.stdout
    assert leftovers(NAME) == NOTHING
    again = cli("sandbox", "destroy", "--cluster", NAME)
    assert f"sandbox {NAME}: nothing to destroy" in again.stdout
