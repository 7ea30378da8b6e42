"""Pure parsers of what hosts report, for `fleet probe`: GPU CLIs of both vendors, /etc/os-release, df,
`ip -j addr`, sysfs PCI.

No I/O here: every function takes the command's text output. The GPU tools (nvidia-smi CSV and XML, amd-smi,
rocm-smi; their formats are listed there) are read by the collection's one parser,
plugins/module_utils/gpu_parse.py, which the gpu_facts module and validate.yml use too; this module turns its
dicts into GpuInfo.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from .collection import module_utils

_gpu_parse = module_utils("gpu_parse")
NVIDIA_QUERY_FIELDS = _gpu_parse.NVIDIA_QUERY_FIELDS
NVIDIA_QUERY = " ".join(_gpu_parse.NVIDIA_QUERY_ARGS)
AMD_SMI_STATIC = " ".join(_gpu_parse.AMD_SMI_STATIC_ARGS)
AMD_SMI_LIST = " ".join(_gpu_parse.AMD_SMI_LIST_ARGS)
ROCM_SMI = " ".join(_gpu_parse.ROCM_SMI_ARGS)
ParseError = _gpu_parse.ParseError
NVIDIA_PCI_VENDOR = "0x10de"
AMD_PCI_VENDOR = "0x1002"


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


# --- GPUs (the collection's parser) ---------------------------------------------------------------------

def _info(gpu: Mapping[str, Any]) -> GpuInfo:
    return GpuInfo(**{name: gpu.get(name) for name in GpuInfo.__dataclass_fields__})


def parse_nvidia_query_csv(text: str, fields: Iterable[str] = NVIDIA_QUERY_FIELDS) -> list[GpuInfo]:
    """`nvidia-smi --query-gpu=... --format=csv,noheader,nounits`: one line per GPU, ", " between columns."""
    return [_info(g) for g in _gpu_parse.parse_nvidia_query_csv(text, tuple(fields))["gpus"]]


def parse_nvidia_smi_xml(text: str) -> tuple[list[GpuInfo], dict[str, str | None]]:
    """`nvidia-smi -q -x`: the GPUs, and {driver_version, cuda_version} of the log."""
    parsed = _gpu_parse.parse_nvidia_smi_xml(text)
    return [_info(g) for g in parsed["gpus"]], {"driver_version": parsed["driver_version"],
                                                "cuda_version": parsed["cuda_version"]}


def parse_amd_smi_static_json(text: str) -> list[GpuInfo]:
    """`amd-smi static --asic --bus --vram --driver --json`."""
    return [_info(g) for g in _gpu_parse.parse_amd_smi_static(text)["gpus"]]


def parse_amd_smi_list_json(text: str) -> list[dict[str, Any]]:
    """`amd-smi list --json`: [{index, bdf, uuid}, ...]."""
    return _gpu_parse.parse_amd_smi_list(text)


def merge_amd_list(gpus: list[GpuInfo], listed: list[dict[str, Any]]) -> list[GpuInfo]:
    """Add the UUIDs of `amd-smi list` to the GPUs of `amd-smi static` (matched by index)."""
    return [_info(g) for g in _gpu_parse.merge_amd_list([g.as_dict() for g in gpus], listed)]


def parse_rocm_smi_json(text: str) -> tuple[list[GpuInfo], str | None]:
    """`rocm-smi --showproductname --showmeminfo vram --showdriverversion --json`: GPUs and the driver version."""
    parsed = _gpu_parse.parse_rocm_smi_json(text)
    return [_info(g) for g in parsed["gpus"]], parsed["driver_version"]


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"{what}: not JSON: {exc}") from None


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
