"""Filters of playbooks/status.yml: what `nvidia-smi` / `amd-smi` report of GPU memory, as numbers."""

from __future__ import annotations

import json


def _nvidia(stdout: str) -> list[dict]:
    """`nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv,noheader,nounits` lines."""
    rows = []
    for line in stdout.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            rows.append({"index": int(fields[0]), "used_mib": int(fields[1]), "total_mib": int(fields[2])})
    return rows


def _mib(value) -> int | None:
    """An amd-smi {value, unit} (MB/MiB, GB/GiB, B) in MiB."""
    if not isinstance(value, dict) or not isinstance(value.get("value"), (int, float)):
        return None
    scale = {"B": 1 / 2**20, "KB": 1 / 1024, "KIB": 1 / 1024, "MB": 1, "MIB": 1, "GB": 1024, "GIB": 1024}
    factor = scale.get(str(value.get("unit", "MB")).upper())
    return None if factor is None else int(round(value["value"] * factor))


def _amd(stdout: str) -> list[dict]:
    """`amd-smi metric --mem-usage --json`: a list of GPUs, or {"gpu_data": [...]} (newer releases)."""
    try:
        data = json.loads(stdout)
    except ValueError:
        return []
    gpus = data.get("gpu_data", []) if isinstance(data, dict) else data
    rows = []
    for gpu in gpus if isinstance(gpus, list) else []:
        usage = gpu.get("mem_usage") or {}
        used, total = _mib(usage.get("used_vram")), _mib(usage.get("total_vram"))
        if isinstance(gpu.get("gpu"), int) and used is not None and total is not None:
            rows.append({"index": gpu["gpu"], "used_mib": used, "total_mib": total})
    return rows


def gpu_memory(stdout: str, vendor: str) -> list[dict]:
    """[{index, used_mib, total_mib}] per GPU from the vendor tool's output; [] when it says nothing usable."""
    return sorted((_nvidia if vendor == "nvidia" else _amd)(stdout or ""), key=lambda r: r["index"])


class FilterModule:
    def filters(self):
        return {"qwen35_gpu_memory": gpu_memory}
