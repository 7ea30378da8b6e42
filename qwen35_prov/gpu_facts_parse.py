"""Pure parsers of what hosts report: GPU CLIs of both vendors, /etc/os-release, df, `ip -j addr`, sysfs PCI.

No I/O here: every function takes the command's text output. Formats:
- `nvidia-smi --query-gpu=<NVIDIA_QUERY_FIELDS> --format=csv,noheader,nounits` (one line per GPU) and
  `nvidia-smi -q -x` (XML, nvsmi_device_v13.dtd), as captured on a real H200 (fixtures/gpu/h200-x1).
- `amd-smi static --asic --bus --vram --driver --json`: a list of per-GPU objects, or (amd-smi of ROCm 7.x)
  `{"gpu_data": [...]}`; `vram.size` is `{"value": N, "unit": "MB"}` (older releases: "N MB").
- `amd-smi list --json`: per GPU `gpu`, `bdf`, `uuid`.
- `rocm-smi --showproductname --showmeminfo vram --showdriverversion --json`: `{"card0": {...}, "system": {...}}`.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

# The probe's and validate.yml's query; the CSV capture in fixtures/gpu/h200-x1/query-gpu.csv has these columns.
NVIDIA_QUERY_FIELDS = (
    "index", "name", "uuid", "pci.bus_id", "memory.total", "driver_version", "compute_cap",
    "persistence_mode", "mig.mode.current", "ecc.mode.current",
)
NVIDIA_QUERY = f"--query-gpu={','.join(NVIDIA_QUERY_FIELDS)} --format=csv,noheader,nounits"
NVIDIA_PCI_VENDOR = "0x10de"
AMD_PCI_VENDOR = "0x1002"


class ParseError(ValueError):
    """Output that does not have the documented shape."""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_mib: int | None
    uuid: str | None = None
    pci_bus_id: str | None = None
    driver_version: str | None = None
    compute_cap: str | None = None
    persistence_mode: str | None = None
    mig_mode: str | None = None
    ecc_mode: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Interface:
    name: str
    state: str
    mtu: int | None
    addresses: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "mtu": self.mtu, "addresses": list(self.addresses)}


def _na(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value in ("", "N/A", "[N/A]", "[Not Supported]", "Not Supported") else value


def _int_or_none(value: str | None) -> int | None:
    value = _na(value)
    if value is None:
        return None
    match = re.match(r"^(\d+)", value)
    return int(match.group(1)) if match else None


# --- NVIDIA ---------------------------------------------------------------------------------------------

def parse_nvidia_query_csv(text: str, fields: Iterable[str] = NVIDIA_QUERY_FIELDS) -> list[GpuInfo]:
    """`nvidia-smi --query-gpu=... --format=csv,noheader,nounits`: one line per GPU, ", " between columns."""
    fields = tuple(fields)
    gpus = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split(",")]
        if len(cols) != len(fields):
            raise ParseError(f"nvidia-smi line {number}: expected {len(fields)} columns "
                             f"({', '.join(fields)}), got {len(cols)}: {line!r}")
        row = dict(zip(fields, cols))
        try:
            index = int(row.get("index", len(gpus)))
        except ValueError:
            raise ParseError(f"nvidia-smi line {number}: index {row.get('index')!r} is not a number") from None
        memory = _int_or_none(row.get("memory.total"))
        if "memory.total" in row and memory is None and _na(row["memory.total"]) is not None:
            raise ParseError(f"nvidia-smi line {number}: memory.total {row['memory.total']!r} is not MiB "
                             f"(query with nounits)")
        gpus.append(GpuInfo(
            index=index, name=row.get("name", ""), memory_mib=memory, uuid=_na(row.get("uuid")),
            pci_bus_id=_na(row.get("pci.bus_id")), driver_version=_na(row.get("driver_version")),
            compute_cap=_na(row.get("compute_cap")), persistence_mode=_na(row.get("persistence_mode")),
            mig_mode=_na(row.get("mig.mode.current")), ecc_mode=_na(row.get("ecc.mode.current")),
        ))
    return gpus


def parse_nvidia_smi_xml(text: str) -> tuple[list[GpuInfo], dict[str, str | None]]:
    """`nvidia-smi -q -x`: the GPUs, and {driver_version, cuda_version} of the log."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ParseError(f"nvidia-smi -q -x: not XML: {exc}") from None
    if root.tag != "nvidia_smi_log":
        raise ParseError(f"nvidia-smi -q -x: root element is <{root.tag}>, expected <nvidia_smi_log>")
    driver = _na(root.findtext("driver_version"))
    gpus = []
    for i, gpu in enumerate(root.findall("gpu")):
        gpus.append(GpuInfo(
            index=_int_or_none(gpu.findtext("minor_number")) if gpu.findtext("minor_number") else i,
            name=(gpu.findtext("product_name") or "").strip(),
            memory_mib=_int_or_none(gpu.findtext("fb_memory_usage/total")),
            uuid=_na(gpu.findtext("uuid")),
            pci_bus_id=_na(gpu.findtext("pci/pci_bus_id")) or _na(gpu.get("id")),
            driver_version=driver,
            compute_cap=None,
            persistence_mode=_na(gpu.findtext("persistence_mode")),
            mig_mode=_na(gpu.findtext("mig_mode/current_mig")),
            ecc_mode=_na(gpu.findtext("ecc_mode/current_ecc")),
        ))
    return gpus, {"driver_version": driver, "cuda_version": _na(root.findtext("cuda_version"))}


# --- AMD ------------------------------------------------------------------------------------------------

def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"{what}: not JSON: {exc}") from None


def _amd_entries(doc: Any, what: str) -> list[Mapping[str, Any]]:
    if isinstance(doc, dict) and isinstance(doc.get("gpu_data"), list):
        doc = doc["gpu_data"]
    elif isinstance(doc, dict) and "gpu" in doc:
        doc = [doc]  # one GPU selected
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise ParseError(f"{what}: expected a list of GPU objects or {{\"gpu_data\": [...]}}")
    return doc


def _mib(value: Any) -> int | None:
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


def parse_amd_smi_static_json(text: str) -> list[GpuInfo]:
    """`amd-smi static --asic --bus --vram --driver --json`."""
    gpus = []
    for i, entry in enumerate(_amd_entries(_json(text, "amd-smi static"), "amd-smi static")):
        asic = entry.get("asic") if isinstance(entry.get("asic"), dict) else {}
        vram = entry.get("vram") if isinstance(entry.get("vram"), dict) else {}
        bus = entry.get("bus") if isinstance(entry.get("bus"), dict) else {}
        driver = entry.get("driver") if isinstance(entry.get("driver"), dict) else {}
        name = asic.get("market_name")
        if not isinstance(name, str) or not name.strip():
            raise ParseError(f"amd-smi static: GPU {entry.get('gpu', i)} has no asic.market_name (pass --asic)")
        index = entry.get("gpu", i)
        gpus.append(GpuInfo(
            index=index if isinstance(index, int) else i,
            name=name.strip(),
            memory_mib=_mib(vram.get("size")),
            uuid=None,
            pci_bus_id=_na(str(bus.get("bdf"))) if bus.get("bdf") else None,
            driver_version=_na(str(driver.get("version") or driver.get("driver_version") or "")),
            compute_cap=_na(str(asic.get("target_graphics_version") or "")),
        ))
    return gpus


def parse_amd_smi_list_json(text: str) -> list[dict[str, Any]]:
    """`amd-smi list --json`: [{gpu, bdf, uuid}, ...]."""
    result = []
    for i, entry in enumerate(_amd_entries(_json(text, "amd-smi list"), "amd-smi list")):
        result.append({"index": entry.get("gpu", i), "bdf": entry.get("bdf"), "uuid": entry.get("uuid")})
    return result


def merge_amd_list(gpus: list[GpuInfo], listed: list[dict[str, Any]]) -> list[GpuInfo]:
    """Add the UUIDs of `amd-smi list` to the GPUs of `amd-smi static` (matched by index)."""
    by_index = {e["index"]: e for e in listed}
    out = []
    for g in gpus:
        extra = by_index.get(g.index, {})
        out.append(GpuInfo(**{**g.as_dict(), "uuid": g.uuid or extra.get("uuid"),
                              "pci_bus_id": g.pci_bus_id or extra.get("bdf")}))
    return out


def parse_rocm_smi_json(text: str) -> tuple[list[GpuInfo], str | None]:
    """`rocm-smi --showproductname --showmeminfo vram --showdriverversion --json`: GPUs and the driver version."""
    doc = _json(text, "rocm-smi")
    if not isinstance(doc, dict):
        raise ParseError("rocm-smi: expected a JSON object keyed by card")
    driver = None
    system = doc.get("system")
    if isinstance(system, dict):
        driver = _na(next((str(v) for k, v in system.items() if k.lower() == "driver version"), None))
    gpus = []
    cards = sorted((k for k in doc if re.match(r"^card\d+$", k)), key=lambda k: int(k[4:]))
    for card in cards:
        raw = {k.lower(): v for k, v in doc[card].items()} if isinstance(doc[card], dict) else {}
        name = raw.get("card series") or raw.get("card model") or ""
        vram = raw.get("vram total memory (b)")
        memory = None
        if vram is not None and str(vram).strip().isdigit():
            memory = int(vram) // 2**20
        gpus.append(GpuInfo(index=int(card[4:]), name=str(name).strip(), memory_mib=memory,
                            uuid=_na(str(raw.get("unique id", "")) or None), driver_version=driver,
                            compute_cap=_na(str(raw.get("gfx version", "")) or None)))
    if not cards:
        raise ParseError("rocm-smi: no card0.. entries (is the amdgpu driver loaded?)")
    return gpus, driver


# --- the rest of the host -------------------------------------------------------------------------------

def parse_os_release(text: str) -> dict[str, str]:
    """/etc/os-release: KEY=value lines, values optionally quoted."""
    result = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        result[key.strip()] = value
    return result


def parse_df_avail(text: str) -> int:
    """`df -B1 --output=avail <dir>`: the header line, then the free bytes."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    if len(lines) < 2 or not lines[-1].split()[0].isdigit():
        raise ParseError(f"df: expected a header and a number of bytes, got {text!r}")
    return int(lines[-1].split()[0])


def parse_ip_addr_json(text: str) -> list[Interface]:
    """`ip -j addr`: interfaces with their state, MTU and addresses (address/prefix)."""
    doc = _json(text, "ip -j addr")
    if not isinstance(doc, list):
        raise ParseError("ip -j addr: expected a JSON list of interfaces")
    result = []
    for link in doc:
        if not isinstance(link, dict) or "ifname" not in link:
            continue
        addrs = tuple(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                      if isinstance(a, dict) and "local" in a and "prefixlen" in a)
        result.append(Interface(name=link["ifname"], state=str(link.get("operstate", "UNKNOWN")),
                                mtu=link.get("mtu"), addresses=addrs))
    return result


def parse_pci_devices(text: str) -> list[dict[str, str]]:
    """Lines `SLOT VENDOR DEVICE CLASS` (from /sys/bus/pci/devices/*/{vendor,device,class})."""
    result = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:
            result.append({"slot": parts[0], "vendor": parts[1].lower(), "device": parts[2].lower(),
                           "class": parts[3].lower()})
    return result


def count_pci_gpus(devices: list[dict[str, str]], vendor: str) -> int:
    """GPUs of a vendor on the PCI bus: display (0x03xxxx) or processing-accelerator (0x12xxxx) class."""
    pci_vendor = {"nvidia": NVIDIA_PCI_VENDOR, "amd": AMD_PCI_VENDOR}[vendor]
    return sum(1 for d in devices if d["vendor"] == pci_vendor and d["class"][:4] in ("0x03", "0x12"))


def match_gpu_kind(name: str, gpus: Mapping[str, Any]) -> str | None:
    """The catalog GPU kind a reported product name belongs to ("NVIDIA H100 80GB HBM3" -> h100)."""
    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    found = [kind for kind in gpus if kind in words]
    if not found:  # "MI300X-O" style names
        found = [kind for kind in gpus if re.search(rf"(?<![a-z0-9]){re.escape(kind)}(?![0-9])", name.lower())]
    return found[0] if len(found) == 1 else None
