"""The GPU test doubles (tests/doubles/) against the real captures in tests/fixtures/gpu/h200-x1/."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qwen35_prov.catalog import load_catalog
from qwen35_prov.cluster import parse_cluster
from qwen35_prov.sandbox.nodes import doubles_config

ROOT = Path(__file__).resolve().parent
DOUBLES = ROOT / "doubles"
FIXTURES = ROOT / "fixtures"
CAPTURE = FIXTURES / "gpu" / "h200-x1"
LABEL_LINE = re.compile(r"^\s*(# |<!-- )TEST DOUBLE.*$\n?", re.M)


def run(tool: str, *args: str, config: dict | None = None, tmp_path: Path | None = None, check: bool = True):
    env = dict(os.environ, QWEN35_TEST_DOUBLE_FIXTURES=str(FIXTURES))
    if config is None:
        env["QWEN35_TEST_DOUBLE_CONFIG"] = "/nonexistent/gpus.json"
    else:
        path = tmp_path / "gpus.json"
        path.write_text(json.dumps(config))
        env["QWEN35_TEST_DOUBLE_CONFIG"] = str(path)
    proc = subprocess.run([sys.executable, str(DOUBLES / tool), *args], env=env, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def without_label(text: str) -> str:
    return LABEL_LINE.sub("", text).rstrip("\n") + "\n"


def cluster_config(spec: str) -> dict:
    return doubles_config(parse_cluster(spec, load_catalog()))


# ------------------------------------------------------------------------------------------ nvidia-smi

@pytest.mark.parametrize("args, fixture", [
    ((), "nvidia-smi.txt"),
    (("-q",), "nvidia-smi-q.txt"),
    (("-q", "-x"), "nvidia-smi-q.xml"),
    (("topo", "-m"), "topo.txt"),
])
def test_nvidia_smi_without_config_replays_the_capture(args, fixture):
    out = run("nvidia-smi", *args).stdout
    assert "TEST DOUBLE" in out  # labelled as a stand-in
    assert without_label(out) == (CAPTURE / fixture).read_text().rstrip("\n") + "\n"


def test_nvidia_smi_reports_the_driver_loaded_at_boot_like_a_kernel_module(tmp_path, monkeypatch):
    """After the stand-in packages are installed, the first call latches the installed module's version; another
    version installed later shows only after a "reboot" (the latch lives in /run, emptied at boot)."""
    markers, latch = tmp_path / "standins", tmp_path / "run" / "nvidia-loaded-driver"
    monkeypatch.setenv("QWEN35_TEST_DOUBLE_STANDIN_MARKERS", str(markers))
    monkeypatch.setenv("QWEN35_TEST_DOUBLE_LOADED_DRIVER", str(latch))

    def driver():
        return run("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader").stdout.strip()

    assert driver() == "580.159.04" and not latch.exists()          # no stand-in packages: the capture
    markers.mkdir()
    (markers / "nvidia-kernel-open-dkms").write_text("nvidia-kernel-open-dkms 580.173.02-1\n")
    assert driver() == "580.173.02"
    (markers / "nvidia-kernel-open-dkms").write_text("nvidia-kernel-open-dkms 580.180.01-1\n")   # installed, not loaded
    assert driver() == "580.173.02"
    assert "DRIVER version      : 580.173.02" in run("nvidia-smi", "--version").stdout
    latch.unlink()                                                    # a reboot
    assert driver() == "580.180.01"


def test_nvidia_smi_query_reproduces_the_captured_csv():
    fields = ("index,name,uuid,pci.bus_id,memory.total,driver_version,compute_cap,persistence_mode,"
              "mig.mode.current,ecc.mode.current")
    out = run("nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits").stdout
    assert out == (CAPTURE / "query-gpu.csv").read_text()


def test_nvidia_smi_h100x16_node_reports_eight_h100s_in_csv(tmp_path):
    cfg = cluster_config("h100x16")
    assert (cfg["count"], cfg["name"], cfg["memory_mib"]) == (8, "NVIDIA H100 80GB HBM3", 81559)
    out = run("nvidia-smi", "--query-gpu=index,name,memory.total,pci.bus_id,uuid", "--format=csv",
              config=cfg, tmp_path=tmp_path).stdout.splitlines()
    assert out[0] == "index, name, memory.total [MiB], pci.bus_id, uuid"
    rows = [line.split(", ") for line in out[1:]]
    assert [r[0] for r in rows] == [str(i) for i in range(8)]
    assert {r[1] for r in rows} == {"NVIDIA H100 80GB HBM3"}
    assert {r[2] for r in rows} == {"81559 MiB"}
    assert len({r[3] for r in rows}) == 8 and len({r[4] for r in rows}) == 8


def test_nvidia_smi_units_and_header_options(tmp_path):
    cfg = cluster_config("h200x8")
    plain = run("nvidia-smi", "--query-gpu=memory.total,power.limit,temperature.gpu", "--format=csv,noheader,nounits",
                config=cfg, tmp_path=tmp_path).stdout.splitlines()
    assert plain == ["143771, 700.00, 38"] * 8
    units = run("nvidia-smi", "--query-gpu=memory.total,power.limit", "--format=csv,noheader",
                config=cfg, tmp_path=tmp_path).stdout.splitlines()
    assert units[0] == "143771 MiB, 700.00 W"


def test_nvidia_smi_xml_and_text_carry_every_gpu(tmp_path):
    cfg = cluster_config("h100x16")
    xml = run("nvidia-smi", "-q", "-x", config=cfg, tmp_path=tmp_path).stdout
    root = ET.fromstring(re.sub(r"<!DOCTYPE[^>]*>", "", xml))
    gpus = root.findall("gpu")
    assert root.findtext("attached_gpus") == "8" and len(gpus) == 8
    assert {g.findtext("product_name") for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    assert {g.findtext("fb_memory_usage/total") for g in gpus} == {"81559 MiB"}
    assert [g.findtext("minor_number") for g in gpus] == [str(i) for i in range(8)]
    assert len({g.get("id") for g in gpus}) == 8
    assert [g.get("id") for g in gpus] == [g.findtext("pci/pci_bus_id") for g in gpus]
    text = run("nvidia-smi", "-q", config=cfg, tmp_path=tmp_path).stdout
    assert re.search(r"^Attached GPUs\s+: 8$", text, re.M)
    assert len(re.findall(r"Product Name\s+: NVIDIA H100 80GB HBM3$", text, re.M)) == 8
    table = run("nvidia-smi", config=cfg, tmp_path=tmp_path).stdout
    assert len(re.findall(r"NVIDIA H100 80GB HBM3\s+On\s+\|", table)) == 8
    assert table.count("|        0MiB / 81559MiB |") == 8  # same column widths as the captured table


def test_nvidia_smi_topo_and_list(tmp_path):
    cfg = cluster_config("h100x16")
    topo = run("nvidia-smi", "topo", "-m", config=cfg, tmp_path=tmp_path).stdout.splitlines()
    rows = [line.split("\t") for line in topo if line.startswith("GPU")]
    assert len(rows) == 8
    for i, row in enumerate(rows):
        assert row[1 + i] == " X " and row.count("NV18") == 7
    listing = run("nvidia-smi", "-L", config=cfg, tmp_path=tmp_path).stdout.splitlines()
    assert len(listing) == 8 and listing[3].startswith("GPU 3: NVIDIA H100 80GB HBM3 (UUID: GPU-")


def test_nvidia_smi_selects_and_rejects(tmp_path):
    cfg = cluster_config("h100x16")
    one = run("nvidia-smi", "-i", "3", "--query-gpu=index", "--format=csv,noheader", config=cfg, tmp_path=tmp_path)
    assert one.stdout == "3\n"
    bad_field = run("nvidia-smi", "--query-gpu=index,bogus", "--format=csv", config=cfg, tmp_path=tmp_path,
                    check=False)
    assert bad_field.returncode == 2 and 'Field "bogus" is not a valid field to query.' in bad_field.stdout
    bad_index = run("nvidia-smi", "-i", "8", "-L", config=cfg, tmp_path=tmp_path, check=False)
    assert bad_index.returncode == 6
    unknown = run("nvidia-smi", "nvlink", "-s", config=cfg, tmp_path=tmp_path, check=False)
    assert unknown.returncode == 2 and "TEST DOUBLE" in unknown.stderr
    amd = run("nvidia-smi", "-L", config=cluster_config("mi300xx8"), tmp_path=tmp_path, check=False)
    assert amd.returncode == 9 and "not NVIDIA" in amd.stderr


# ------------------------------------------------------------------------------------------ amd-smi / rocm-smi

@pytest.mark.parametrize("gpu", [g.id for g in load_catalog().gpus.values() if g.vendor == "amd"])
def test_amd_smi_static_list_metric_follow_the_catalog(gpu, tmp_path):
    spec = f"{gpu}x16"
    cfg = cluster_config(spec)
    catalog_gpu = load_catalog().gpus[gpu]
    static = json.loads(run("amd-smi", "static", "--json", config=cfg, tmp_path=tmp_path).stdout)["gpu_data"]
    assert [g["gpu"] for g in static] == list(range(8))
    assert {g["asic"]["market_name"] for g in static} == {catalog_gpu.name}
    assert {g["vram"]["size"]["value"] for g in static} == {catalog_gpu.memory_mib}
    assert {g["vram"]["size"]["unit"] for g in static} == {"MB"}
    assert len({g["bus"]["bdf"] for g in static}) == 8
    listed = json.loads(run("amd-smi", "list", "--json", config=cfg, tmp_path=tmp_path).stdout)["gpu_data"]
    assert [g["bdf"] for g in listed] == [g["bus"]["bdf"] for g in static]
    metric = json.loads(run("amd-smi", "metric", "--json", "-g", "2", config=cfg, tmp_path=tmp_path).stdout)["gpu_data"]
    assert [m["gpu"] for m in metric] == [2]
    assert metric[0]["mem_usage"]["total_vram"] == {"value": catalog_gpu.memory_mib, "unit": "MB"}
    rocm = json.loads(run("rocm-smi", "--showproductname", "--showmeminfo", "vram", "--showdriverversion", "--json",
                          config=cfg, tmp_path=tmp_path).stdout)
    assert rocm["system"]["Driver version"]
    cards = {k: v for k, v in rocm.items() if k.startswith("card")}
    assert len(cards) == 8
    assert {c["Card Series"] for c in cards.values()} == {catalog_gpu.name}
    assert {int(c["VRAM Total Memory (B)"]) for c in cards.values()} == {catalog_gpu.memory_mib * 2**20}


def test_amd_smi_sections_wrapper_and_errors(tmp_path):
    cfg = {**cluster_config("mi300xx8"), "amd_smi_json": "list"}  # the ROCm 6.x top-level list
    doc = json.loads(run("amd-smi", "static", "--asic", "--vram", "--json", config=cfg, tmp_path=tmp_path).stdout)
    assert isinstance(doc, list) and len(doc) == 8
    assert set(doc[0]) == {"gpu", "asic", "vram"}
    nvidia = run("amd-smi", "list", "--json", config=cluster_config("h100x8"), tmp_path=tmp_path, check=False)
    assert nvidia.returncode == 9 and "not AMD" in nvidia.stderr
    text = run("amd-smi", "static", config=cfg, tmp_path=tmp_path, check=False)
    assert text.returncode == 2 and "TEST DOUBLE" in text.stderr
    assert "TEST DOUBLE" in run("amd-smi", "version", config=cfg, tmp_path=tmp_path).stdout


def test_doubles_say_what_they_are():
    for tool in ("nvidia-smi", "amd-smi", "rocm-smi"):
        head = (DOUBLES / tool).read_text().splitlines()[1]
        assert head.startswith("# TEST DOUBLE -- NOT"), tool
