"""The NCCL preflight's expected bus-bandwidth floor for a GPU kind and replica shape."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import yaml


@dataclass(frozen=True)
class NcclFloor:
    floor_gbps: float
    min_message: str
    link: str
    source: str


@functools.lru_cache(maxsize=1)
def _floors() -> dict:
    return yaml.safe_load(resources.files(__package__).joinpath("data", "nccl_floors.yaml").read_text("utf-8"))


def nccl_floor(gpu_id: str, nodes_per_replica: int, infiniband: bool) -> NcclFloor:
    data = _floors()
    if nodes_per_replica > 1:
        link = "infiniband" if infiniband else "socket"
        entry = data["inter_node"][link]
    else:
        link, entry = next((name, e) for name, e in data["intra_node"].items() if gpu_id in e["gpus"])
    return NcclFloor(floor_gbps=float(entry["floor_gbps"]), min_message=data["min_message"], link=link,
                     source=" ".join(entry["source"].split()))
