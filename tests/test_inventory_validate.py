"""playbooks/validate.yml with ansible-playbook: the inventory's invariants on generated and tampered
inventories, and the host checks over SSH against a real sshd whose nvidia-smi is the TEST DOUBLE."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import sshd_server
from qwen35_prov.inventory import write_inventory
from qwen35_prov.options import PlanOptions

REPO = Path(__file__).resolve().parent.parent
PLAYBOOK = REPO / "playbooks" / "validate.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
EXAMPLES = REPO / "inventories" / "examples"
GOLDEN = REPO / "tests" / "golden"


def playbook(inventory: Path, *args: str, playbook_path: Path = PLAYBOOK) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_RETRY_FILES_ENABLED": "0",
           "ANSIBLE_LOCALHOST_WARNING": "0"}
    # the test host is this machine: use its system Python, not whatever interpreter discovery finds first
    interpreter = ["-e", "ansible_python_interpreter=/usr/bin/python3"] if Path("/usr/bin/python3").exists() else []
    return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook_path), *interpreter, *args],
                          capture_output=True, text=True, env=env, timeout=300)


def failure_lines(output: str, headline: str) -> list[str]:
    """The '  - ...' lines of the one failure message that starts with `headline`."""
    start = output.index(headline)
    lines = []
    for line in output[start:].splitlines()[1:]:
        if not line.startswith("  - "):
            break
        lines.append(line[4:])
    return lines


def test_invariants_hold_for_every_generated_inventory(tmp_path):
    """One run over a folder of all example and golden inventories would mix them; check each, inventory only."""
    for inv in [EXAMPLES / n / "inventory" for n in ("h100x16", "h200x8", "mi300x8")] + [GOLDEN / "h100x32",
                                                                                     GOLDEN / "h200x8-35b-fp8"]:
        r = playbook(inv, "--tags", "validate_inventory")
        assert r.returncode == 0, f"{inv}:\n{r.stdout}\n{r.stderr}"
        assert "ok=1" in r.stdout and "failed=0" in r.stdout


def test_broken_inventory_rules_are_reported_together_before_any_host(tmp_path):
    inv = tmp_path / "inv"
    shutil.copytree(GOLDEN / "h100x32", inv)
    b = yaml.safe_load((inv / "host_vars" / "h100-b.yml").read_text())
    b["qwen35_node_rank"] = 0
    b["qwen35_launches"][0]["node_rank"] = 0  # two rank-0 nodes in replica 0
    (inv / "host_vars" / "h100-b.yml").write_text(yaml.safe_dump(b))
    d = yaml.safe_load((inv / "host_vars" / "h100-d.yml").read_text())
    d["qwen35_launches"][0]["argv"] = []  # no command
    d["qwen35_gpu_count"] = 4
    (inv / "host_vars" / "h100-d.yml").write_text(yaml.safe_dump(d))
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())
    del hosts["all"]["children"]["qwen35_workers"]
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    r = playbook(inv)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert failure_lines(out, "The inventory breaks 9 rule(s):") == [
        "inventory group qwen35_workers is missing (regenerate the inventory with qwen35-prov inventory)",
        "h100-b: launch 0: argv says --node-rank 1, the launch has node_rank 0",
        "h100-b runs no replica head but is not in group qwen35_workers",
        "h100-d: qwen35_gpu_count is 4, the plan has 8 GPUs per node",
        "h100-d: launch 0 has no argv (a list of strings)",
        "h100-d: launch 0 uses GPU(s) 4, 5, 6, 7, the host has GPUs 0-3",
        "h100-d runs no replica head but is not in group qwen35_workers",
        "replica 0: node ranks are [0, 0], expected 0-1 once each (h100-a=0, h100-b=0)",
        "nodes x GPUs per node = 28, but TP x replicas + idle = 16 x 2 + 0 = 32",
    ]
    assert "Validate the hosts against the plan" not in r.stdout  # stopped before touching any host


@pytest.mark.parametrize("name", ["bench.yml", "router.yml", "upgrade.yml"])
def test_every_playbook_that_starts_with_the_inventory_check_stops_on_a_broken_inventory(tmp_path, name):
    """They import the one inventory play (validate-inventory.yml) instead of carrying a copy of it."""
    inv = tmp_path / "inv"
    shutil.copytree(GOLDEN / "h100x32", inv)
    b = yaml.safe_load((inv / "host_vars" / "h100-b.yml").read_text())
    b["qwen35_launches"][0]["argv"] = []
    (inv / "host_vars" / "h100-b.yml").write_text(yaml.safe_dump(b))
    r = playbook(inv, playbook_path=REPO / "playbooks" / name)
    assert r.returncode != 0
    assert failure_lines(r.stdout + r.stderr, "The inventory breaks 1 rule(s):") == [
        "h100-b: launch 0 has no argv (a list of strings)"]
    assert "PLAY [Validate the inventory]" in r.stdout and r.stdout.count("PLAY [") == 1  # nothing after it ran
    text = (REPO / "playbooks" / name).read_text()
    assert "import_playbook: validate-inventory.yml" in text and "qwen35_inventory_errors" not in text


# --- on a real host over SSH ---------------------------------------------------------------------------

pytest_ssh = pytest.mark.skipif(sshd_server.available() is not None, reason=str(sshd_server.available()))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if sshd_server.available():
        pytest.skip(sshd_server.available())
    server = sshd_server.SshServer(tmp_path_factory.mktemp("sshd-validate")).start()
    yield server
    server.stop()


def _inventory(sshd, tmp_path, gpu_count=1, gpu="h200", **plan) -> tuple[Path, int]:
    port, dist = sshd_server.free_port(), sshd_server.free_port()
    weights = tmp_path / "weights"
    fleet = tmp_path / "fleet.yml"
    fleet.write_text(yaml.safe_dump({"hosts": [sshd.fleet_host("h200-box", gpu=gpu, gpu_count=gpu_count,
                                                                network_interface="lo",
                                                                weights_dir=str(weights))]}))
    options = PlanOptions(model="0.8b", port=port, dist_init_port=dist, **plan)
    inv = write_inventory(f"{gpu}x{gpu_count}", fleet, tmp_path / "inv", options, weights_dir_given=False)
    return inv, port


@pytest_ssh
def test_hosts_that_match_the_plan_pass(sshd, tmp_path):
    sshd.set_gpus()  # the captured single H200
    inv, _ = _inventory(sshd, tmp_path)
    r = playbook(inv)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "h200-box                   : ok=6" in r.stdout and "unreachable=0" in r.stdout


@pytest_ssh
def test_every_host_problem_is_reported_once(sshd, tmp_path):
    sshd.set_gpus(count=1)
    inv, port = _inventory(sshd, tmp_path, gpu_count=2)  # the plan needs 2 x H200, the host shows 1
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("0.0.0.0", port))
    busy.listen(1)
    try:
        r = playbook(inv, "-e", "qwen35_validate_disk_margin=100000")
    finally:
        busy.close()
    assert r.returncode != 0
    out = r.stdout + r.stderr
    lines = failure_lines(out, "problem(s) on the hosts:")
    assert "3 problem(s) on the hosts:" in out
    assert lines[0] == "h200-box: the plan needs 2 x h200, nvidia-smi shows 1"
    assert lines[1].startswith("h200-box: ") and " GB free under " in lines[1]
    assert "the weights need 160000 GB (1.6 GB x 100000 margin)" in lines[1]
    assert lines[2].startswith(f"h200-box: port {port} (SGLang server of replica 0) is in use by ")
    assert sys.executable.split("/")[-1] in lines[2] or "python" in lines[2]  # who holds it: this test
    assert len(lines) == 3


@pytest_ssh
def test_a_port_held_by_our_own_server_is_not_a_conflict(sshd, tmp_path):
    sshd.set_gpus()
    inv, port = _inventory(sshd, tmp_path)
    # a process whose command line says sglang (as our earlier rollout's server would) holds the port
    holder = subprocess.Popen([sys.executable, "-c", "import socket,sys,time; s=socket.socket(); "
                               "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                               "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(1); print('up', flush=True); "
                               "time.sleep(120)", str(port), "sglang.launch_server"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "up"
        r = playbook(inv)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 0, r.stdout + r.stderr


@pytest_ssh
def test_without_a_gpu_tool_the_pci_bus_is_counted(sshd, tmp_path):
    sshd.set_gpus()
    inv, _ = _inventory(sshd, tmp_path)
    # this machine's PCI bus has no NVIDIA GPU and its PATH lookup of a missing tool fails the same way
    r = playbook(inv, "-e", "qwen35_validate_nvidia_smi=/nonexistent/nvidia-smi")
    assert r.returncode != 0
    lines = failure_lines(r.stdout + r.stderr, "problem(s) on the hosts:")
    assert lines == ["h200-box: the plan needs 1 x h200, the PCI bus shows 0 nvidia GPU(s) "
                     "(nvidia-smi not installed yet, so the kind is not checked)"]
    strict = playbook(inv, "-e", "qwen35_validate_nvidia_smi=/nonexistent/nvidia-smi",
                      "-e", "qwen35_validate_require_gpu_tool=true")
    assert failure_lines(strict.stdout + strict.stderr, "problem(s) on the hosts:") == [
        "h200-box: nvidia-smi is not installed or failed (rc 127); the GPU driver is missing"]


@pytest_ssh
def test_an_amd_host_is_checked_with_amd_smi(sshd, tmp_path):
    sshd.set_gpus(vendor="amd", gpu="mi300x", name="AMD Instinct MI300X", memory_mib=196608, count=1)
    inv, _ = _inventory(sshd, tmp_path, gpu="mi300x")  # spec mi300xx1: one MI300X
    r = playbook(inv)
    assert r.returncode == 0, r.stdout + r.stderr
    sshd.set_gpus(vendor="amd", gpu="mi325x", name="AMD Instinct MI325X", memory_mib=262144, count=1)
    r = playbook(inv)
    assert failure_lines(r.stdout + r.stderr, "problem(s) on the hosts:") == [
        "h200-box: the plan needs 1 x mi300x, amd-smi shows 1 x AMD Instinct MI325X"]
