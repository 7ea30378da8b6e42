"""The filters behind playbooks/validate.yml, called directly on recorded command outputs."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "qwen35_validate", REPO / "plugins" / "filter" / "qwen35_validate.py")
qv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(qv)

H200_CSV = (REPO / "tests" / "fixtures" / "gpu" / "h200-x1" / "query-gpu.csv").read_text()
AMD_JSON = (REPO / "tests" / "fixtures" / "probe" / "amd-smi-static-mi300x.json").read_text()
EXPECT_H200 = {"vendor": "nvidia", "kind": "h200", "count": 1, "memory_mib": 143771, "weights_gb": 70,
               "ports": {30000: "SGLang server of replica 0"}}
DISK_OK = "/var/lib 900000000000 0"


def test_the_filters_are_registered():
    assert set(qv.FilterModule().filters()) == {"qwen35_inventory_errors", "qwen35_host_errors",
                                                "qwen35_gpu_tool_args"}


def test_a_matching_host_has_no_errors():
    assert qv.host_errors("h", {"rc": 0, "stdout": H200_CSV}, DISK_OK, "", EXPECT_H200) == []


def test_a_gb200_tray_is_recognised_by_its_gpus_and_its_grace_cpu():
    """A GB200 tray: nvidia-smi's GPU name (TEST DOUBLE: the H200 capture renamed, four GPUs, GB200 memory) and the
    architecture uname reports; where the GPU kind fixes none, the architecture is not checked."""
    row = H200_CSV.strip().splitlines()[0].replace("NVIDIA H200", "NVIDIA GB200").replace("143771", "177383")
    four = "\n".join(row.replace("0, ", f"{i}, ", 1) for i in range(4)) + "\n"
    tray = {**EXPECT_H200, "kind": "gb200", "count": 4, "memory_mib": 177383, "architecture": "aarch64"}
    assert qv.host_errors("t", {"rc": 0, "stdout": four, "architecture": "aarch64\n"}, DISK_OK, "", tray) == []
    assert qv.host_errors("t", {"rc": 0, "stdout": four, "architecture": "x86_64\n"}, DISK_OK, "", tray) == [
        "t: gb200 hosts have aarch64 CPUs, this host is x86_64"]
    assert qv.host_errors("h", {"rc": 0, "stdout": H200_CSV, "architecture": "aarch64"}, DISK_OK, "",
                          {**EXPECT_H200, "architecture": None}) == []


def test_gpu_kind_count_memory_and_mig():
    eight = {**EXPECT_H200, "count": 8}
    assert qv.host_errors("h", {"rc": 0, "stdout": H200_CSV}, DISK_OK, "", eight) == [
        "h: the plan needs 8 x h200, nvidia-smi shows 1"]
    h100 = {**EXPECT_H200, "kind": "h100", "memory_mib": 81559}
    assert qv.host_errors("h", {"rc": 0, "stdout": H200_CSV}, DISK_OK, "", h100) == [
        "h: the plan needs 1 x h100, nvidia-smi shows 1 x NVIDIA H200"]
    small = H200_CSV.replace("143771", "100000").replace("Enabled, Disabled, Enabled", "Enabled, Enabled, Enabled")
    assert qv.host_errors("h", {"rc": 0, "stdout": small}, DISK_OK, "", EXPECT_H200) == [
        "h: GPU(s) 0 have 100000 MiB, a h200 has 143771 MiB",
        "h: MIG mode is enabled on GPU(s) 0; SGLang needs whole GPUs",
    ]
    assert qv.host_errors("h", {"rc": 0, "stdout": small.replace("100000", "143771")}, DISK_OK, "", EXPECT_H200,
                          {"allow_mig": True}) == []


def test_amd_smi_json():
    expect = {**EXPECT_H200, "vendor": "amd", "kind": "mi300x", "count": 2, "memory_mib": 196608}
    assert qv.host_errors("mi", {"rc": 0, "stdout": AMD_JSON}, DISK_OK, "", expect) == []
    assert qv.host_errors("mi", {"rc": 0, "stdout": AMD_JSON}, DISK_OK, "", {**expect, "count": 8}) == [
        "mi: the plan needs 8 x mi300x, amd-smi shows 2"]
    assert qv.host_errors("mi", {"rc": 0, "stdout": "not json"}, DISK_OK, "", expect)[0].startswith(
        "mi: cannot read the output of amd-smi")


def test_before_the_driver_the_pci_bus_is_counted():
    pci = "0x8086 0x060000\n0x10de 0x030200\n0x10de 0x068000\n"  # one GPU and an NVSwitch bridge
    gpu = {"rc": 127, "stdout": "", "pci": pci}
    assert qv.host_errors("h", gpu, DISK_OK, "", EXPECT_H200) == []
    assert qv.host_errors("h", gpu, DISK_OK, "", {**EXPECT_H200, "count": 8}) == [
        "h: the plan needs 8 x h200, the PCI bus shows 1 nvidia GPU(s) (nvidia-smi not installed yet, so the "
        "kind is not checked)"]


@pytest.mark.parametrize("disk,expected", [
    ("/var/lib 900000000000 0", None),
    ("/var/lib 10000000000 0", "h: 10 GB free under /var/lib, the weights need 77 GB (70 GB x 1.1 margin) and "
                               "0 GB of them are there already"),
    ("/var/lib 10000000000 70000000000", None),  # a re-run: the weights are already there
    ("", "h: cannot read the free disk space under the weights folder: ''"),
])
def test_disk(disk, expected):
    errors = qv.host_errors("h", {"rc": 0, "stdout": H200_CSV}, disk, "", EXPECT_H200)
    assert errors == ([expected] if expected else [])


SS = ("LISTEN 0      4096         0.0.0.0:22        0.0.0.0:*    users:((\"sshd\",pid=10,fd=3))\n"
      "LISTEN 0      128          0.0.0.0:30000     0.0.0.0:*    users:((\"nginx\",pid=11,fd=6))\n"
      "LISTEN 0      128             [::]:20000        [::]:*    users:((\"python3\",pid=12,fd=7))\n"
      "@@cmd 30000 nginx: master process /usr/sbin/nginx\n"
      "@@cmd 20000 python3 -m sglang.launch_server --port 30001\n")


def test_ports():
    expect = {**EXPECT_H200, "ports": {30000: "SGLang server of replica 0", 20000: "dist-init port of replica 0",
                                       30001: "SGLang server of replica 1"}}
    assert qv.host_errors("h", {"rc": 0, "stdout": H200_CSV}, DISK_OK, SS, expect) == [
        "h: port 30000 (SGLang server of replica 0) is in use by 'nginx: master process /usr/sbin/nginx'; "
        "free it or choose another port"]  # 20000 is held by an SGLang server: ours, from an earlier rollout
    proc = ("@@no-ss\n  sl  local_address rem_address   st tx_queue rx_queue\n"
            "   0: 00000000:7530 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n"
            "   1: 0100007F:4E20 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n")
    assert qv.host_errors("h", {"rc": 0, "stdout": H200_CSV}, DISK_OK, proc, expect) == [
        "h: port 30000 (SGLang server of replica 0) is in use; free it or choose another port"]  # 20000: not LISTEN


def test_inventory_errors_without_a_plan():
    groups = {g: ["a"] for g in qv.REQUIRED_GROUPS}
    assert qv.inventory_errors(groups, {"a": {}}) == [
        "qwen35_plan is not set for a (group_vars/qwen35_nodes/plan.yml is missing)"]
    assert qv.inventory_errors({}, {}) == [
        *[f"inventory group {g} is missing (regenerate the inventory with qwen35-prov inventory)"
          for g in qv.REQUIRED_GROUPS],
        "inventory group qwen35_nodes has no hosts"]
