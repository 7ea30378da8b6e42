"""Parsers of what hosts report, against real captures (H200) and the documented AMD formats."""

from pathlib import Path

import pytest

from qwen35_prov.catalog import load_catalog
from qwen35_prov.fleet import Host
from qwen35_prov.gpu_facts_parse import (
    NVIDIA_QUERY_FIELDS, ParseError, count_pci_gpus, match_gpu_kind, merge_amd_list, parse_amd_smi_list_json,
    parse_amd_smi_static_json, parse_df_avail, parse_ip_addr_json, parse_nvidia_query_csv, parse_nvidia_smi_xml,
    parse_os_release, parse_pci_devices, parse_rocm_smi_json,
)
from qwen35_prov.probe import compare, fleet_facts, parse_probe_output, probe_script, split_sections

FIXTURES = Path(__file__).parent / "fixtures"
H200 = FIXTURES / "gpu" / "h200-x1"
PROBE = FIXTURES / "probe"
CATALOG = load_catalog()


def test_query_csv_capture_of_a_real_h200():
    [gpu] = parse_nvidia_query_csv((H200 / "query-gpu.csv").read_text())
    assert gpu.index == 0 and gpu.name == "NVIDIA H200"
    assert gpu.uuid == "GPU-00000000-0000-4000-8000-000000000001"
    assert gpu.pci_bus_id == "00000000:00:06.0"
    assert gpu.memory_mib == 143771 == CATALOG.gpus["h200"].memory_mib
    assert gpu.driver_version == "580.159.04" and gpu.compute_cap == "9.0"
    assert (gpu.persistence_mode, gpu.mig_mode, gpu.ecc_mode) == ("Enabled", "Disabled", "Enabled")


def test_query_csv_columns_agree_with_the_xml_of_the_same_gpu():
    [csv_gpu] = parse_nvidia_query_csv((H200 / "query-gpu.csv").read_text())
    [xml_gpu], log = parse_nvidia_smi_xml((H200 / "nvidia-smi-q.xml").read_text())
    assert log == {"driver_version": "580.159.04", "cuda_version": "13.0"}
    for name in ("name", "uuid", "pci_bus_id", "memory_mib", "driver_version", "persistence_mode", "mig_mode",
                 "ecc_mode"):
        assert getattr(csv_gpu, name) == getattr(xml_gpu, name), name


def test_query_csv_refuses_other_columns_and_garbled_memory():
    with pytest.raises(ParseError, match="expected 10 columns"):
        parse_nvidia_query_csv("NVIDIA H200, 143771\n")
    with_unit = (H200 / "query-gpu.csv").read_text().replace("143771", "143771 MiB")
    assert parse_nvidia_query_csv(with_unit)[0].memory_mib == 143771  # csv without nounits still reads
    garbled = (H200 / "query-gpu.csv").read_text().replace("143771", "lots")
    with pytest.raises(ParseError, match="not MiB"):
        parse_nvidia_query_csv(garbled)
    assert parse_nvidia_query_csv("NVIDIA H200, 143771 MiB\n", ["name", "memory.total"])[0].memory_mib == 143771
    assert len(NVIDIA_QUERY_FIELDS) == len((H200 / "query-gpu.csv").read_text().split(","))


def test_xml_refuses_other_documents():
    with pytest.raises(ParseError, match="not XML"):
        parse_nvidia_smi_xml("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver")
    with pytest.raises(ParseError, match="nvidia_smi_log"):
        parse_nvidia_smi_xml("<other/>")


def test_probe_output_captured_on_a_two_gpu_h200_server():
    facts = parse_probe_output((PROBE / "h200-x2-probe-output.txt").read_text())
    assert facts.vendor == "nvidia" and facts.gpu_tool == "nvidia-smi"
    assert [g.index for g in facts.gpus] == [0, 1] and facts.gpu_count == 2
    assert facts.gpu_kind(CATALOG) == "h200"
    assert facts.driver_version == "580.159.04"
    assert (facts.os_id, facts.os_version, facts.os_name) == ("ubuntu", "24.04", "Ubuntu 24.04.3 LTS")
    assert facts.kernel == "6.18.44-fc-v657-gpu"
    assert facts.weights_dir_checked == "/var/lib" and facts.disk_free_bytes == 137421393920
    assert facts.pci_gpu_count == {"nvidia": 2}  # the same two H200 on the bus (10de:2335, class 0302)
    assert facts.interfaces == [] and facts.ib_hcas == []  # that host has no `ip` command: section exit 127
    host = Host(name="h200-box", address="10.0.0.5", gpu="h200", gpu_count=2)
    assert compare(host, facts, CATALOG) == []
    eight = Host(name="h200-box", address="10.0.0.5", gpu="h200", gpu_count=8)
    assert compare(eight, facts, CATALOG) == ["h200-box: fleet says 8 x H200, host has 2"]
    h100 = Host(name="gpu-02", address="10.0.0.5", gpu="h100", gpu_count=8)
    assert compare(h100, facts, CATALOG) == ["gpu-02: fleet says 8 x H100, host has 2 x NVIDIA H200"]
    recorded = fleet_facts(facts, CATALOG)
    assert recorded["gpu"] == "h200" and recorded["gpu_count"] == 2 and recorded["gpu_name"] == "NVIDIA H200"
    assert recorded["weights_dir_free_gb"] == 137.4 and recorded["mig_enabled"] is False


def gb200_tray_output(architecture="aarch64"):
    """A GB200 NVL72 compute tray's probe output: a TEST DOUBLE made from the real H200 capture, its GPUs renamed
    and multiplied to the tray's four and its architecture set (no GB200 capture exists here)."""
    memory = CATALOG.gpu("gb200").memory_mib
    text = ((PROBE / "h200-x2-probe-output.txt").read_text().replace("NVIDIA H200", "NVIDIA GB200")
            .replace(", 143771, 580.159.04, 9.0,", f", {memory}, 580.159.04, 10.0,"))
    begin, end = "@@qwen35-probe begin nvidia-smi\n", "\n@@qwen35-probe end nvidia-smi"
    head, rest = text.split(begin)
    rows, tail = rest.split(end, 1)
    first = rows.strip().splitlines()[0]
    four = "\n".join(first.replace("0, ", f"{i}, ", 1) for i in range(4))
    return (head + begin + four + "\n" + end + tail
            + f"@@qwen35-probe begin architecture\n{architecture}\n\n@@qwen35-probe end architecture 0\n")


def test_a_gb200_tray_is_recognised_by_its_gpus_and_grace_cpu():
    facts = parse_probe_output(gb200_tray_output())
    assert facts.gpu_kind(CATALOG) == "gb200" and facts.gpu_count == 4 and facts.architecture == "aarch64"
    tray = Host(name="tray-01", address="10.20.0.11", gpu="gb200", gpu_count=4)
    assert compare(tray, facts, CATALOG) == []
    assert fleet_facts(facts, CATALOG)["architecture"] == "aarch64"
    x86 = parse_probe_output(gb200_tray_output("x86_64"))
    assert compare(tray, x86, CATALOG) == ["tray-01: a GB200 host has aarch64 CPUs, this host is x86_64"]


def test_probe_script_sections_round_trip_through_sh(tmp_path):
    """The script runs under sh here (no GPU tools): every section ends with its exit status."""
    import subprocess

    out = subprocess.run(["sh", "-c", probe_script(str(tmp_path / "models" / "x"))], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    sections = split_sections(out.stdout)
    assert sections["nvidia-smi"][0] == 127 and sections["amd-smi-static"][0] == 127
    assert sections["kernel"][0] == 0 and sections["kernel"][1].strip()
    assert sections["architecture"] == (0, __import__("platform").machine())
    facts = parse_probe_output(out.stdout)
    assert facts.weights_dir_checked == str(tmp_path)  # the nearest folder that exists
    assert facts.disk_free_bytes and facts.disk_free_bytes > 0
    assert "lo" in {i.name for i in facts.interfaces}
    host = Host(name="devvm", address="127.0.0.1", gpu="h100", gpu_count=8)
    [problem] = compare(host, facts, CATALOG)
    assert problem.startswith("devvm: fleet says 8 x H100, host has no GPU")


def test_a_failing_section_becomes_a_warning_not_a_crash():
    text = ("@@qwen35-probe begin nvidia-smi\n0, NVIDIA H200\n\n@@qwen35-probe end nvidia-smi 0\n"
            "@@qwen35-probe begin kernel\n6.8.0\n\n@@qwen35-probe end kernel 0\n")
    facts = parse_probe_output(text)
    assert facts.kernel == "6.8.0" and facts.gpus == []
    assert any("expected 10 columns" in w for w in facts.warnings)


def test_amd_smi_static_rocm7_shape():
    gpus = parse_amd_smi_static_json((PROBE / "amd-smi-static-mi300x.json").read_text())
    assert [(g.index, g.name, g.memory_mib, g.pci_bus_id, g.driver_version, g.compute_cap) for g in gpus] == [
        (0, "AMD Instinct MI300X", 196592, "0000:05:00.0", "6.12.12", "gfx942"),
        (1, "AMD Instinct MI300X", 196592, "0000:15:00.0", "6.12.12", "gfx942"),
    ]
    listed = parse_amd_smi_list_json((PROBE / "amd-smi-list-mi300x.json").read_text())
    merged = merge_amd_list(gpus, listed)
    assert merged[1].uuid == "3dff74a1-0000-1000-8000-000000000002"
    assert match_gpu_kind(gpus[0].name, CATALOG.gpus) == "mi300x"
    # 196592 MiB is within 5 % of the catalog's 192 GiB: not reported as small memory
    host = Host(name="mi-01", address="10.0.0.9", gpu="mi300x", gpu_count=2)
    from qwen35_prov.probe import HostFacts

    facts = HostFacts(vendor="amd", gpu_tool="amd-smi", gpus=merged)
    assert compare(host, facts, CATALOG) == []


def test_amd_smi_static_legacy_list_shape():
    [gpu] = parse_amd_smi_static_json((PROBE / "amd-smi-static-legacy.json").read_text())
    assert (gpu.name, gpu.memory_mib, gpu.driver_version) == ("AMD Instinct MI300X OAM", 196592, "6.7.0")
    assert match_gpu_kind(gpu.name, CATALOG.gpus) == "mi300x"


def test_amd_smi_refuses_output_without_names():
    with pytest.raises(ParseError, match="market_name"):
        parse_amd_smi_static_json('[{"gpu": 0, "vram": {"size": {"value": 1, "unit": "MB"}}}]')
    with pytest.raises(ParseError, match="not JSON"):
        parse_amd_smi_static_json("AMDSMI_STATUS_DRIVER_NOT_LOADED")


def test_rocm_smi_json():
    gpus, driver = parse_rocm_smi_json((PROBE / "rocm-smi-mi300x.json").read_text())
    assert driver == "6.12.12"
    assert [(g.index, g.name, g.memory_mib) for g in gpus] == [
        (0, "AMD Instinct MI300X OAM", 196592), (1, "AMD Instinct MI300X OAM", 196592)]


def test_amd_probe_sections_pick_amd_smi():
    static = (PROBE / "amd-smi-static-mi300x.json").read_text()
    listed = (PROBE / "amd-smi-list-mi300x.json").read_text()
    text = (f"@@qwen35-probe begin nvidia-smi\n\n@@qwen35-probe end nvidia-smi 127\n"
            f"@@qwen35-probe begin amd-smi-static\n{static}\n\n@@qwen35-probe end amd-smi-static 0\n"
            f"@@qwen35-probe begin amd-smi-list\n{listed}\n\n@@qwen35-probe end amd-smi-list 0\n")
    facts = parse_probe_output(text)
    assert facts.vendor == "amd" and facts.gpu_tool == "amd-smi" and facts.gpu_count == 2
    assert facts.driver_version == "6.12.12" and facts.gpus[0].uuid.startswith("3dff74a1")
    host = Host(name="mi-01", address="10.0.0.9", gpu="h100", gpu_count=8)
    assert compare(host, facts, CATALOG) == ["mi-01: fleet says 8 x H100 (nvidia), host has 2 amd GPU(s)"]


def test_os_release_from_the_h200_capture():
    system = (H200 / "system.txt").read_text()
    block = system.split("+ cat /etc/os-release\n", 1)[1].split("+ uname", 1)[0]
    osr = parse_os_release(block)
    assert osr["PRETTY_NAME"] == "Ubuntu 24.04.3 LTS" and osr["ID"] == "ubuntu" and osr["VERSION_ID"] == "24.04"
    assert osr["VERSION_CODENAME"] == "noble"


def test_df_avail():
    assert parse_df_avail("      Avail\n82090332160\n") == 82090332160
    with pytest.raises(ParseError):
        parse_df_avail("df: /nope: No such file or directory\n")


def test_ip_json_capture():
    interfaces = parse_ip_addr_json((PROBE / "ip-addr-devvm.json").read_text())
    by_name = {i.name: i for i in interfaces}
    assert by_name["lo"].addresses[0] == "127.0.0.1/8"
    assert by_name["eth0"].state == "UP" and by_name["eth0"].mtu == 1400
    host = Host(name="vm", address="192.0.2.2", gpu="h200", gpu_count=1, network_interface="ib0",
                ib_hcas=("mlx5_0",))
    from qwen35_prov.probe import HostFacts

    facts = HostFacts(vendor="nvidia", gpu_tool="nvidia-smi",
                      gpus=parse_nvidia_query_csv((H200 / "query-gpu.csv").read_text()), interfaces=interfaces)
    problems = compare(host, facts, CATALOG)
    assert problems[0].startswith("vm: fleet says network_interface ib0, host has ")
    assert "eth0" in problems[0] and "lo" in problems[0]
    assert problems[1] == "vm: fleet says ib_hcas mlx5_0, host has none"


def test_mig_enabled_and_small_memory_are_reported():
    line = (H200 / "query-gpu.csv").read_text().strip()
    mig = line.replace("Enabled, Disabled, Enabled", "Enabled, Enabled, Enabled").replace("143771", "71000")
    from qwen35_prov.probe import HostFacts

    facts = HostFacts(vendor="nvidia", gpu_tool="nvidia-smi", gpus=parse_nvidia_query_csv(mig))
    host = Host(name="h", address="a", gpu="h200", gpu_count=1)
    assert compare(host, facts, CATALOG) == [
        "h: MIG mode is enabled on GPU(s) 0; SGLang needs whole GPUs (nvidia-smi -mig 0)",
        "h: GPU(s) 0 report 71000 MiB, a h200 has 143771 MiB",
    ]


def test_pci_count_before_the_driver_is_installed():
    devices = parse_pci_devices((PROBE / "h200-x2-probe-output.txt").read_text().split(
        "begin pci\n", 1)[1].split("@@qwen35-probe end pci", 1)[0])
    assert count_pci_gpus(devices, "nvidia") == 2 and count_pci_gpus(devices, "amd") == 0
    text = ("@@qwen35-probe begin pci\n0000:18:00.0 0x10de 0x2330 0x030200\n0000:2a:00.0 0x10de 0x2330 0x030200\n"
            "0000:05:00.0 0x10de 0x22a3 0x068000\n\n@@qwen35-probe end pci 0\n")
    facts = parse_probe_output(text)  # the NVSwitch (class 0x0680) is not a GPU
    assert facts.gpu_tool == "pci" and facts.gpu_count == 2
    host = Host(name="new", address="a", gpu="h100", gpu_count=8)
    assert compare(host, facts, CATALOG) == [
        "new: fleet says 8 x H100, host has 2 (counted on the PCI bus; no nvidia GPU tool installed)"]


@pytest.mark.parametrize("name,kind", [
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H100 NVL", "h100"), ("NVIDIA H200", "h200"),
    ("NVIDIA H200 NVL", "h200"), ("NVIDIA B200", "b200"), ("AMD Instinct MI300X OAM", "mi300x"),
    ("AMD Instinct MI325X", "mi325x"), ("AMD Instinct MI355X", "mi355x"), ("NVIDIA GB200", "gb200"),
    ("NVIDIA GB300", "gb300"), ("NVIDIA A100-SXM4-80GB", None),
    ("NVIDIA GeForce RTX 4090", None),
])
def test_gpu_names_to_catalog_kinds(name, kind):
    assert match_gpu_kind(name, CATALOG.gpus) == kind


def test_the_weights_filesystem_is_compared_with_the_fleets_weights_storage():
    text = "".join(f"@@qwen35-probe begin {name}\n{out}\n@@qwen35-probe end {name} 0\n" for name, out in (
        ("weights-dir", "/data\nAvail\n1000000000000"), ("weights-fs", "nfs")))
    facts = parse_probe_output(text)
    assert facts.weights_filesystem == "nfs" and fleet_facts(facts, CATALOG)["weights_filesystem"] == "nfs"
    local = Host(name="gpu-01", address="10.0.0.1", gpu="h100", gpu_count=8)
    assert ("gpu-01: fleet says weights_storage local, /data is on nfs (a network filesystem); "
            "set weights_storage: network") in compare(local, facts, CATALOG)
    network = Host(name="gpu-01", address="10.0.0.1", gpu="h100", gpu_count=8, weights_storage="network")
    assert not [p for p in compare(network, facts, CATALOG) if "weights_storage" in p]
    facts.weights_filesystem = "ext2/ext3"
    assert "/data is on ext2/ext3 (a local filesystem); set weights_storage: local" in " ".join(
        compare(network, facts, CATALOG))
    facts.weights_filesystem = "fuseblk"   # unknown: not judged
    assert not [p for p in compare(network, facts, CATALOG) if "weights_storage" in p]
