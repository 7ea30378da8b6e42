# -*- coding: utf-8 -*-
"""The one reader of what the GPU vendors' tools print, shared by every consumer:

- the qwen35.prov.gpu_facts module (on the host; Ansible ships this file with it),
- the validate.yml filters (qwen35.prov.qwen35_host_errors, on the controller),
- `qwen35-prov fleet probe` (qwen35_prov.gpu_facts_parse, over paramiko).

Standard library only, no I/O: every function takes a tool's text output and returns plain data, or raises
ParseError saying what was not of the documented shape. Formats:
- `nvidia-smi --query-gpu=<NVIDIA_QUERY_FIELDS> --format=csv,noheader,nounits`: one line per GPU (the capture
  tests/fixtures/gpu/h200-x1/query-gpu.csv has exactly these columns);
- `nvidia-smi -q -x`: XML (nvsmi_device_v13.dtd), as captured on a real H200 (tests/fixtures/gpu/h200-x1);
- `amd-smi static --asic --bus --vram --driver --json`: a list of per-GPU objects, or (ROCm 7.x)
  `{"gpu_data": [...]}`; `vram.size` is `{"value": N, "unit": "MB"}` (older releases: "N MB");
- `amd-smi list --json`: per GPU `gpu`, `bdf`, `uuid`;
- `rocm-smi --showproductname --showmeminfo vram --showdriverversion --json`: `{"card0": {...}, "system": {...}}`.

Every GPU is a dict with the keys of GPU_KEYS (None where the tool does not say).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

NVIDIA_QUERY_FIELDS = (
    "index", "name", "uuid", "pci.bus_id", "memory.total", "driver_version", "compute_cap",
    "persistence_mode", "mig.mode.current", "ecc.mode.current",
)
NVIDIA_QUERY_ARGS = ("--query-gpu=" + ",".join(NVIDIA_QUERY_FIELDS), "--format=csv,noheader,nounits")
AMD_SMI_STATIC_ARGS = ("static", "--asic", "--bus", "--vram", "--driver", "--json")
AMD_SMI_LIST_ARGS = ("list", "--json")
ROCM_SMI_ARGS = ("--showproductname", "--showmeminfo", "vram", "--showdriverversion", "--json")
GPU_KEYS = ("index", "name", "memory_mib", "uuid", "pci_bus_id", "driver_version", "compute_cap",
            "persistence_mode", "mig_mode", "ecc_mode", "fabric_state", "architecture")


class ParseError(ValueError):
    """Output that does not have the documented shape."""


def _gpu(**values):
    gpu = dict.fromkeys(GPU_KEYS)
    gpu.update(values)
    return gpu


def _na(value):
    if value is None:
        return None
    value = str(value).strip()
    return None if value in ("", "N/A", "[N/A]", "[Not Supported]", "Not Supported") else value


def _leading_int(value):
    """'143771 MiB' -> 143771; None when it does not start with a number."""
    value = _na(value)
    match = re.match(r"^(\d+)", value) if value is not None else None
    return int(match.group(1)) if match else None


# --- NVIDIA ---------------------------------------------------------------------------------------------

def parse_nvidia_query_csv(text, fields=NVIDIA_QUERY_FIELDS):
    """`nvidia-smi --query-gpu=FIELDS --format=csv,noheader,nounits`: {driver_version, cuda_version, gpus}."""
    fields = tuple(fields)
    gpus = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split(",")]
        if len(cols) != len(fields):
            raise ParseError("nvidia-smi line %d: expected %d columns (%s), got %d: %r"
                             % (number, len(fields), ", ".join(fields), len(cols), line))
        row = dict(zip(fields, cols))
        try:
            index = int(row.get("index", len(gpus)))
        except ValueError:
            raise ParseError("nvidia-smi line %d: index %r is not a number" % (number, row.get("index"))) from None
        memory = _leading_int(row.get("memory.total"))
        if "memory.total" in row and memory is None and _na(row["memory.total"]) is not None:
            raise ParseError("nvidia-smi line %d: memory.total %r is not MiB (query with nounits)"
                             % (number, row["memory.total"]))
        gpus.append(_gpu(
            index=index, name=row.get("name", ""), memory_mib=memory, uuid=_na(row.get("uuid")),
            pci_bus_id=_na(row.get("pci.bus_id")), driver_version=_na(row.get("driver_version")),
            compute_cap=_na(row.get("compute_cap")), persistence_mode=_na(row.get("persistence_mode")),
            mig_mode=_na(row.get("mig.mode.current")), ecc_mode=_na(row.get("ecc.mode.current"))))
    driver = next((g["driver_version"] for g in gpus if g["driver_version"]), None)
    return {"driver_version": driver, "cuda_version": None, "gpus": gpus}


def parse_nvidia_smi_xml(text):
    """`nvidia-smi -q -x`: {driver_version, cuda_version, gpus}."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ParseError("nvidia-smi -q -x: not XML: %s" % exc) from None
    if root.tag != "nvidia_smi_log":
        raise ParseError("nvidia-smi -q -x: root element is <%s>, expected <nvidia_smi_log>" % root.tag)
    driver = _na(root.findtext("driver_version"))
    gpus = []
    for i, gpu in enumerate(root.findall("gpu")):
        gpus.append(_gpu(
            index=i,  # nvidia-smi's own order (--query-gpu's index); minor_number, the /dev/nvidiaN number, may differ
            name=(gpu.findtext("product_name") or "").strip(),
            memory_mib=_leading_int(gpu.findtext("fb_memory_usage/total")),
            uuid=_na(gpu.findtext("uuid")),
            pci_bus_id=_na(gpu.findtext("pci/pci_bus_id")) or _na(gpu.get("id")),
            driver_version=driver,
            persistence_mode=_na(gpu.findtext("persistence_mode")),
            mig_mode=_na(gpu.findtext("mig_mode/current_mig")),
            ecc_mode=_na(gpu.findtext("ecc_mode/current_ecc")),
            fabric_state=_na(gpu.findtext("fabric/state")),
            architecture=_na(gpu.findtext("product_architecture"))))
    return {"driver_version": driver, "cuda_version": _na(root.findtext("cuda_version")), "gpus": gpus}


# --- AMD ------------------------------------------------------------------------------------------------

def _json(text, what):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ParseError("%s: not JSON: %s" % (what, exc)) from None


def _amd_entries(doc, what):
    if isinstance(doc, dict) and isinstance(doc.get("gpu_data"), list):
        doc = doc["gpu_data"]
    elif isinstance(doc, dict) and "gpu" in doc:
        doc = [doc]  # one GPU selected
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise ParseError('%s: expected a list of GPU objects or {"gpu_data": [...]}' % what)
    return doc


def _mib(value):
    """amd-smi sizes: {"value": N, "unit": "MB"}, "N MB", or N (MB); amd-smi's MB are MiB."""
    unit = "MB"
    if isinstance(value, dict):
        value, unit = value.get("value"), str(value.get("unit") or "MB")
    if isinstance(value, str):
        match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$", value)
        if not match:
            return None
        value, unit = float(match.group(1)), match.group(2) or unit
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    factor = {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "MIB": 1, "GB": 1024, "GIB": 1024}.get(unit.upper())
    return None if factor is None else int(round(value * factor))


def _mapping(entry, key):
    value = entry.get(key)
    return value if isinstance(value, dict) else {}


def parse_amd_smi_static(text):
    """`amd-smi static --asic --bus --vram --driver --json`: {driver_version, cuda_version (None), gpus}."""
    gpus = []
    for i, entry in enumerate(_amd_entries(_json(text, "amd-smi static"), "amd-smi static")):
        asic, vram, bus, driver = (_mapping(entry, k) for k in ("asic", "vram", "bus", "driver"))
        name = asic.get("market_name")
        if not isinstance(name, str) or not name.strip():
            raise ParseError("amd-smi static: GPU %s has no asic.market_name (pass --asic)" % entry.get("gpu", i))
        index = entry.get("gpu", i)
        gfx = _na(asic.get("target_graphics_version"))
        gpus.append(_gpu(
            index=index if isinstance(index, int) else i, name=name.strip(), memory_mib=_mib(vram.get("size")),
            pci_bus_id=_na(bus.get("bdf")), driver_version=_na(driver.get("version") or driver.get("driver_version")),
            compute_cap=gfx, architecture=gfx))
    driver = next((g["driver_version"] for g in gpus if g["driver_version"]), None)
    return {"driver_version": driver, "cuda_version": None, "gpus": gpus}


def parse_amd_smi_list(text):
    """`amd-smi list --json`: [{index, bdf, uuid}, ...]."""
    return [{"index": entry.get("gpu", i), "bdf": entry.get("bdf"), "uuid": entry.get("uuid")}
            for i, entry in enumerate(_amd_entries(_json(text, "amd-smi list"), "amd-smi list"))]


def merge_amd_list(gpus, listed):
    """The GPUs of amd-smi static with the UUIDs and bus ids of amd-smi list (matched by index)."""
    by_index = {e["index"]: e for e in listed}
    merged = []
    for gpu in gpus:
        extra = by_index.get(gpu["index"], {})
        merged.append(dict(gpu, uuid=gpu["uuid"] or extra.get("uuid"), pci_bus_id=gpu["pci_bus_id"] or extra.get("bdf")))
    return merged


def parse_rocm_smi_json(text):
    """`rocm-smi --showproductname --showmeminfo vram --showdriverversion --json`: {driver_version, gpus}."""
    doc = _json(text, "rocm-smi")
    if not isinstance(doc, dict):
        raise ParseError("rocm-smi: expected a JSON object keyed by card")
    driver = None
    system = doc.get("system")
    if isinstance(system, dict):
        driver = _na(next((str(v) for k, v in system.items() if k.lower() == "driver version"), None))
    cards = sorted((k for k in doc if re.match(r"^card\d+$", k)), key=lambda k: int(k[4:]))
    if not cards:
        raise ParseError("rocm-smi: no card0.. entries (is the amdgpu driver loaded?)")
    gpus = []
    for card in cards:
        raw = {k.lower(): v for k, v in doc[card].items()} if isinstance(doc[card], dict) else {}
        vram = raw.get("vram total memory (b)")
        memory = int(vram) // 2**20 if vram is not None and str(vram).strip().isdigit() else None
        gfx = _na(raw.get("gfx version"))
        gpus.append(_gpu(index=int(card[4:]), name=str(raw.get("card series") or raw.get("card model") or "").strip(),
                         memory_mib=memory, uuid=_na(raw.get("unique id")), driver_version=driver,
                         compute_cap=gfx, architecture=gfx))
    return {"driver_version": driver, "cuda_version": None, "gpus": gpus}
