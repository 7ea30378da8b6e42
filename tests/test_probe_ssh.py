"""`qwen35-prov fleet probe` against a real OpenSSH server on 127.0.0.1 whose nvidia-smi is the TEST DOUBLE
replaying the real H200 capture (tests/doubles/nvidia-smi)."""

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import sshd_server
from qwen35_prov.fleet import load_fleet
from qwen35_prov.probe import probe_fleet

pytestmark = pytest.mark.skipif(sshd_server.available() is not None, reason=str(sshd_server.available()))
CLI = [sys.executable, "-m", "qwen35_prov"]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = sshd_server.SshServer(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def one_h200(sshd):
    sshd.set_gpus()  # each test starts with the captured single H200
    yield


def write_fleet(path: Path, hosts: list[dict], header: str = "") -> Path:
    path.write_text(header + yaml.safe_dump({"hosts": hosts}, sort_keys=False))
    return path


def probe_cli(*args):
    return subprocess.run([*CLI, "fleet", "probe", *args], capture_output=True, text=True, timeout=120)


def test_probe_matches_a_host_as_declared(sshd, tmp_path):
    fleet = write_fleet(tmp_path / "fleet.yml", [sshd.fleet_host("h200-box", weights_dir=str(tmp_path / "w"))])
    r = probe_cli("--fleet", str(fleet))
    assert r.returncode == 0, r.stdout + r.stderr
    header, row = r.stdout.splitlines()[:2]
    assert header.split()[:4] == ["HOST", "STATUS", "FLEET", "FOUND"]
    assert row.split()[:2] == ["h200-box", "ok"] and "1 x H200" in row and "580.159.04" in row
    assert r.stdout.rstrip().endswith("1 host(s): 1 ok, 0 mismatch, 0 unreachable")


def test_probe_reports_the_difference_and_exits_1(sshd, tmp_path):
    sshd.set_gpus(name="NVIDIA H100 80GB HBM3", memory_mib=81559, count=7)
    fleet = write_fleet(tmp_path / "fleet.yml", [sshd.fleet_host("gpu-02", gpu="h100", gpu_count=8)])
    r = probe_cli("--fleet", str(fleet))
    assert r.returncode == 1
    assert "gpu-02: fleet says 8 x H100, host has 7" in r.stdout.splitlines()
    data = json.loads(probe_cli("--fleet", str(fleet), "--json").stdout)
    [host] = data["hosts"]
    assert host["status"] == "mismatch" and host["problems"] == ["gpu-02: fleet says 8 x H100, host has 7"]
    facts = host["facts"]
    assert facts["gpu"] == "h100" and facts["gpu_count"] == 7 and facts["vendor"] == "nvidia"
    assert [g["memory_mib"] for g in facts["gpus"]] == [81559] * 7
    assert facts["kernel"] and facts["os_id"] and facts["disk_free_bytes"] > 0
    assert "lo" in {i["name"] for i in facts["interfaces"]}
    assert data["summary"] == {"ok": 0, "mismatch": 1, "unreachable": 0}


def test_host_keys_are_checked_against_the_fleets_known_hosts(sshd, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    other = tmp_path / "other_known_hosts"
    key = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    assert key.returncode == 0
    kt, kd = (tmp_path / "k.pub").read_text().split()[:2]
    other.write_text(f"[127.0.0.1]:{sshd.port} {kt} {kd}\n")
    fleet = write_fleet(tmp_path / "fleet.yml", [
        sshd.fleet_host("unknown-key", known_hosts=str(empty)),
        sshd.fleet_host("changed-key", known_hosts=str(other)) | {"address": "localhost"},
    ])
    r = probe_cli("--fleet", str(fleet))
    assert r.returncode == 1
    assert (f"unknown-key: host key of root@127.0.0.1:{sshd.port} is not in {empty}: add it "
            f"(ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}) after checking it, or pass --insecure-host-keys"
            in r.stdout)
    # known_hosts names [127.0.0.1]:port; "localhost" is not listed there -> unknown too, never silently accepted
    assert f"changed-key: host key of root@localhost:{sshd.port} is not in {other}" in r.stdout
    other.write_text(f"[localhost]:{sshd.port} {kt} {kd}\n")
    r = probe_cli("--fleet", str(fleet))
    assert f"changed-key: host key of root@localhost:{sshd.port} does not match {other}" in r.stdout
    insecure = probe_cli("--fleet", str(fleet), "--insecure-host-keys")
    assert insecure.returncode == 0, insecure.stdout
    assert other.read_text() == f"[localhost]:{sshd.port} {kt} {kd}\n" and empty.read_text() == ""  # never saved


def _silent_server():
    """A TCP port that accepts connections and never speaks SSH: a hung host."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    def close():
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()

    return listener.getsockname()[1], close


def test_probing_is_parallel_and_bounded_per_host(sshd, tmp_path):
    hung = [_silent_server() for _ in range(3)]
    closed_port = sshd_server.free_port()
    try:
        hosts = [sshd.fleet_host("good")]
        hosts += [sshd.fleet_host(f"hung-{i}", ssh_port=port) for i, (port, _) in enumerate(hung)]
        hosts.append(sshd.fleet_host("refused", ssh_port=closed_port))
        fleet = load_fleet(write_fleet(tmp_path / "fleet.yml", hosts))
        started = time.monotonic()
        results = probe_fleet(fleet, timeout=3)
        elapsed = time.monotonic() - started
    finally:
        for _, close in hung:
            close()
    by_name = {r.host.name: r for r in results}
    assert [r.host.name for r in results] == [h["name"] for h in hosts]  # fleet order kept
    assert by_name["good"].status == "ok"
    for i, (port, _) in enumerate(hung):
        assert by_name[f"hung-{i}"].status == "unreachable"
        assert by_name[f"hung-{i}"].error == f"no answer from root@127.0.0.1:{port} in time", by_name[f"hung-{i}"].error
    assert by_name["refused"].error.startswith(f"cannot connect to root@127.0.0.1:{closed_port}")
    assert elapsed < 3 * 2, f"three hung hosts took {elapsed:.1f} s: not probed in parallel within the bound"


def test_update_writes_facts_back_keeping_comments(sshd, tmp_path):
    sshd.set_gpus(count=2)
    fleet = write_fleet(tmp_path / "fleet.yml", [sshd.fleet_host("h200-box", gpu_count=1),
                                                 sshd.fleet_host("away", gpu="h100", ssh_port=sshd_server.free_port())],
                        header="# our lab\n")
    r = probe_cli("--fleet", str(fleet), "--update", "--timeout", "5")
    assert r.returncode == 1  # host has 2 GPUs, fleet says 1; `away` is unreachable
    assert "h200-box: fleet says 1 x H200, host has 2" in r.stdout
    assert "facts written to" in r.stderr and "h200-box" in r.stderr
    text = fleet.read_text()
    assert text.startswith("# our lab\n") and "# facts: written by `qwen35-prov fleet probe --update`" in text
    parsed = load_fleet(fleet)
    facts = parsed.host("h200-box").facts
    assert facts["gpu"] == "h200" and facts["gpu_count"] == 2 and facts["gpu_name"] == "NVIDIA H200"
    assert facts["gpu_memory_mib"] == 143771 and facts["driver_version"] == "580.159.04"
    assert parsed.host("away").facts is None  # unreachable: nothing written
    # the inventory now refuses the host whose facts contradict its declaration
    inv = subprocess.run([*CLI, "inventory", "--cluster", "h200x1", "--fleet", str(fleet), "--out",
                          str(tmp_path / "inv"), "--model", "0.8b"], capture_output=True, text=True)
    assert inv.returncode == 2 and "left out because their probe facts disagree: h200-box" in inv.stderr


def test_a_missing_key_file_is_named(sshd, tmp_path):
    fleet = write_fleet(tmp_path / "fleet.yml", [sshd.fleet_host("h200-box", ssh_key=str(tmp_path / "gone"))])
    r = probe_cli("--fleet", str(fleet))
    assert r.returncode == 1
    assert f"h200-box: ssh_key {tmp_path / 'gone'} does not exist: set the right ssh_key for h200-box in the " \
           f"fleet file" in r.stdout


def test_an_amd_host_is_read_with_amd_smi(sshd, tmp_path):
    sshd.set_gpus(vendor="amd", gpu="mi300x", name="AMD Instinct MI300X", memory_mib=196608, count=8)
    fleet = write_fleet(tmp_path / "fleet.yml", [sshd.fleet_host("mi-01", gpu="mi300x", gpu_count=8),
                                                 sshd.fleet_host("said-h100", gpu="h100", gpu_count=8)
                                                 | {"address": "localhost"}])
    r = probe_cli("--fleet", str(fleet), "--json", "--insecure-host-keys")
    data = json.loads(r.stdout)
    mi, h100 = data["hosts"]
    assert mi["status"] == "ok", mi
    assert mi["facts"]["vendor"] == "amd" and mi["facts"]["gpu_tool"] == "amd-smi"
    assert mi["facts"]["gpu"] == "mi300x" and mi["facts"]["gpu_count"] == 8
    assert mi["facts"]["gpus"][0]["uuid"] and mi["facts"]["gpus"][0]["pci_bus_id"]
    assert h100["problems"] == ["said-h100: fleet says 8 x H100 (nvidia), host has 8 amd GPU(s)"]
