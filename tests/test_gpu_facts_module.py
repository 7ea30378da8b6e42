"""Parsers of the gpu_facts Ansible module (plugins/modules/gpu_facts.py) against real captures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from qwen35_prov import gpu_facts_parse

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "gpu" / "h200-x1"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_facts_module", ROOT / "plugins/modules/gpu_facts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gf = _load()
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures/gpu/h200-x1 not present")


@needs_fixtures
def test_nvidia_smi_xml_h200():
    parsed = gf.parse_nvidia_smi_xml((FIXTURES / "nvidia-smi-q.xml").read_text())
    assert parsed["driver_version"] == "580.159.04"
    assert parsed["cuda_version"] == "13.0"
    assert len(parsed["gpus"]) == 1
    g = parsed["gpus"][0]
    assert g["name"] == "NVIDIA H200"
    assert g["memory_mib"] == 143771
    assert g["persistence_mode"] == "Enabled"
    assert g["mig_mode"] == "Disabled"
    assert g["fabric_state"] is None  # "N/A" on this single-GPU machine without NVSwitch
    assert g["pci_bus_id"] == "00000000:00:06.0"


@needs_fixtures
def test_summary_of_h200_capture():
    parsed = gf.parse_nvidia_smi_xml((FIXTURES / "nvidia-smi-q.xml").read_text())
    facts = gf.summarize("nvidia", "nvidia-smi", parsed["gpus"], parsed["driver_version"], {})
    assert facts["count"] == 1
    assert facts["model"] == "NVIDIA H200"
    assert facts["driver_branch"] == 580
    assert facts["mig_enabled"] is False
    assert facts["persistence_enabled"] is True


@needs_fixtures
def test_proc_driver_version_open_module():
    text = (FIXTURES / "system.txt").read_text()
    version, flavor = gf.parse_proc_driver_version(text)
    assert (version, flavor) == ("580.159.04", "open")


def test_proc_driver_version_proprietary():
    text = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.172.08  Tue Jul  8 17:40:04 UTC 2025\n"
            "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    assert gf.parse_proc_driver_version(text) == ("570.172.08", "proprietary")
    assert gf.parse_proc_driver_version("") == (None, None)


@needs_fixtures
def test_query_csv_fallback_matches_xml():
    # the capture was made with the module's own query (NVIDIA_QUERY_ARGS: the one field list)
    parsed = gf.parse_nvidia_query_csv((FIXTURES / "query-gpu.csv").read_text())
    [g] = parsed["gpus"]
    [xml_gpu] = gf.parse_nvidia_smi_xml((FIXTURES / "nvidia-smi-q.xml").read_text())["gpus"]
    assert parsed["driver_version"] == "580.159.04"
    assert (g["name"], g["memory_mib"], g["persistence_mode"], g["mig_mode"]) == \
        ("NVIDIA H200", 143771, "Enabled", "Disabled")
    assert {k: g[k] for k in ("index", "name", "memory_mib", "uuid", "pci_bus_id", "driver_version")} == \
        {k: xml_gpu[k] for k in ("index", "name", "memory_mib", "uuid", "pci_bus_id", "driver_version")}


def test_mig_enabled_is_reported():
    gpus = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "mig_mode": "Enabled",
             "persistence_mode": "Enabled"},
            {"index": 1, "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "mig_mode": "Disabled",
             "persistence_mode": "Disabled"}]
    facts = gf.summarize("nvidia", "nvidia-smi", gpus, "570.172.08", {})
    assert facts["mig_enabled"] is True
    assert facts["persistence_enabled"] is False
    assert facts["driver_branch"] == 570


def test_amd_smi_static_json_both_shapes():
    one = {"gpu": 0, "asic": {"market_name": "AMD Instinct MI300X", "target_graphics_version": "gfx942"},
           "vram": {"type": "HBM", "size": {"value": 196592, "unit": "MB"}},
           "driver": {"name": "amdgpu", "version": "6.16.13"}, "bus": {"bdf": "0000:05:00.0"}}
    for text in (json.dumps([one]), json.dumps({"gpu_data": [one]})):
        parsed = gf.parse_amd_smi_static(text)
        g = parsed["gpus"][0]
        assert parsed["driver_version"] == "6.16.13"
        assert (g["name"], g["memory_mib"], g["pci_bus_id"]) == ("AMD Instinct MI300X", 196592, "0000:05:00.0")
    old = dict(one, vram={"size": "196592 MB"})
    assert gf.parse_amd_smi_static(json.dumps([old]))["gpus"][0]["memory_mib"] == 196592


def test_rocm_smi_json():
    text = json.dumps({"card0": {"Card Series": "AMD Instinct MI300X OAM", "VRAM Total Memory (B)": "206141652992"},
                       "card1": {"Card Series": "AMD Instinct MI300X OAM", "VRAM Total Memory (B)": "206141652992"},
                       "system": {"Driver version": "6.16.13"}})
    parsed = gf.parse_rocm_smi_json(text)
    assert [g["index"] for g in parsed["gpus"]] == [0, 1]
    assert parsed["gpus"][0]["memory_mib"] == 196592


def test_pci_scan_counts_gpus_and_nvswitches(tmp_path):
    def dev(name, vendor, cls):
        d = tmp_path / name
        d.mkdir()
        (d / "vendor").write_text(vendor + "\n")
        (d / "class").write_text(cls + "\n")
    for i in range(8):
        dev(f"0000:{i:02x}:00.0", "0x10de", "0x030200")   # H100 SXM: 3D controller
    for i in range(4):
        dev(f"0000:a{i}:00.0", "0x10de", "0x068000")      # NVSwitch: bridge, other
    dev("0000:c0:00.0", "0x15b3", "0x020700")             # ConnectX (InfiniBand): not a GPU
    dev("0000:d0:00.0", "0x1002", "0x120000")             # an AMD Instinct (processing accelerator)
    assert gf.scan_pci(str(tmp_path)) == {"nvidia_gpus": 8, "amd_gpus": 1, "nvswitches": 4}


def test_infiniband_scan(tmp_path):
    port = tmp_path / "mlx5_0" / "ports" / "1"
    port.mkdir(parents=True)
    (port / "state").write_text("4: ACTIVE\n")
    (port / "link_layer").write_text("InfiniBand\n")
    (port / "rate").write_text("400 Gb/sec (4X NDR)\n")
    devs = gf.scan_infiniband(str(tmp_path))
    assert devs == [{"name": "mlx5_0", "ports": [{"port": 1, "state": "4: ACTIVE", "link_layer": "InfiniBand",
                                                  "rate": "400 Gb/sec (4X NDR)"}]}]


def test_secure_boot(tmp_path):
    assert gf.parse_mokutil("SecureBoot enabled\n") == "enabled"
    assert gf.parse_mokutil("SecureBoot disabled\nPlatform is in Setup Mode\n") == "disabled"
    assert gf.parse_mokutil("EFI variables are not supported on this system\n") == "not-efi"
    assert gf.secure_boot_from_efivars(str(tmp_path / "absent")) == "not-efi"
    (tmp_path / "efivars").mkdir()
    (tmp_path / "efivars" / gf.SECURE_BOOT_EFIVAR).write_bytes(b"\x06\x00\x00\x00\x01")
    assert gf.secure_boot_from_efivars(str(tmp_path)) == "enabled"
    (tmp_path / "efivars" / gf.SECURE_BOOT_EFIVAR).write_bytes(b"\x06\x00\x00\x00\x00")
    assert gf.secure_boot_from_efivars(str(tmp_path)) == "disabled"


def test_fabric_manager_belongs_where_the_switches_are():
    on_fabric = [{"fabric_state": "Completed"}, {"fabric_state": "Completed"}]
    # the project's 2 x H200 VM: GPUs on a fabric the host manages, no NVSwitch on the guest's PCI bus
    assert gf.nvswitch_facts(0, on_fabric) == {"nvswitch_count": 0, "nvswitch_present": False,
                                               "nvswitch_fabric": True, "fabric_state": "Completed"}
    # an HGX board on bare metal: the switches are on this OS's bus
    assert gf.nvswitch_facts(4, on_fabric)["nvswitch_present"] is True
    # a PCIe card: no fabric, no switch
    assert gf.nvswitch_facts(0, [{"fabric_state": None}]) == {"nvswitch_count": 0, "nvswitch_present": False,
                                                              "nvswitch_fabric": False, "fabric_state": None}


def test_the_module_validate_and_the_probe_read_gpus_with_one_parser_and_one_field_list():
    """plugins/module_utils/gpu_parse.py is the only reader of the GPU tools' output."""
    spec = importlib.util.spec_from_file_location("qwen35_validate", ROOT / "plugins/filter/qwen35_validate.py")
    qv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(qv)
    shared = ROOT / "plugins" / "module_utils" / "gpu_parse.py"
    assert gf.parse_nvidia_query_csv is qv.parse_nvidia_query_csv
    assert gf.parse_amd_smi_static is qv.parse_amd_smi_static
    assert Path(gf.parse_nvidia_query_csv.__code__.co_filename).resolve() == shared.resolve()
    assert Path(gpu_facts_parse._gpu_parse.__file__).resolve() == shared.resolve()
    query = " ".join(gf.NVIDIA_QUERY_ARGS)
    assert qv.gpu_tool_args("nvidia") == query == gpu_facts_parse.NVIDIA_QUERY
    assert qv.gpu_tool_args("amd") == gpu_facts_parse.AMD_SMI_STATIC


@needs_fixtures
def test_a_gpus_index_is_its_place_in_nvidia_smis_order_not_its_device_minor_number():
    xml = (FIXTURES / "nvidia-smi-q.xml").read_text().replace("<minor_number>0</minor_number>",
                                                               "<minor_number>5</minor_number>")
    assert [g["index"] for g in gf.parse_nvidia_smi_xml(xml)["gpus"]] == [0]
