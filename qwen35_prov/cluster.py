"""Cluster specs: `<gpu>x<count>` (h100x16, mi355xx4) and how the GPUs split into nodes."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .catalog import Catalog, Gpu
from .errors import UserError

MAX_GPUS_PER_NODE = 8
_SPEC = re.compile(r"^(?P<gpu>[a-z0-9]+?)x(?P<count>\d+)$")


@dataclass(frozen=True)
class ClusterSpec:
    gpu: Gpu
    gpu_count: int
    gpus_per_node: int

    @property
    def name(self) -> str:
        return f"{self.gpu.id}x{self.gpu_count}"

    @property
    def node_count(self) -> int:
        return self.gpu_count // self.gpus_per_node


def parse_cluster(spec: str, catalog: Catalog, gpus_per_node: int | None = None) -> ClusterSpec:
    text = spec.strip().lower()
    match = _SPEC.match(text)
    # "mi355xx4": the GPU id itself ends in x, so prefer the longest known id before the count.
    gpu_id, count_text = None, None
    for known in sorted(catalog.gpus, key=len, reverse=True):
        if text.startswith(known + "x") and text[len(known) + 1:].isdigit():
            gpu_id, count_text = known, text[len(known) + 1:]
            break
        # "mi300x8": an id that ends in x may share its x with the separator
        if known.endswith("x") and text.startswith(known) and text[len(known):].isdigit():
            gpu_id, count_text = known, text[len(known):]
            break
    if gpu_id is None:
        if match and match.group("gpu") not in catalog.gpus:
            raise UserError(
                f"cluster {spec!r}: unknown GPU kind {match.group('gpu')!r}; known: {', '.join(catalog.gpus)}")
        raise UserError(
            f"cluster {spec!r} is not of the form <gpu>x<count> (for example h100x16, h200x8, mi355xx4); "
            f"GPU kinds: {', '.join(catalog.gpus)}")
    count = int(count_text)
    if count < 1:
        raise UserError(f"cluster {spec!r}: the GPU count must be at least 1")
    gpu = catalog.gpus[gpu_id]
    if gpus_per_node is None:
        gpus_per_node = min(gpu.gpus_per_node, count)
    if not 1 <= gpus_per_node <= MAX_GPUS_PER_NODE:
        raise UserError(f"--gpus-per-node {gpus_per_node}: allowed 1 to {MAX_GPUS_PER_NODE}")
    if count % gpus_per_node:
        raise UserError(
            f"cluster {spec!r}: {count} GPUs is not a multiple of {gpus_per_node} GPUs per node; "
            f"use a count that is, or set --gpus-per-node")
    return ClusterSpec(gpu=gpu, gpu_count=count, gpus_per_node=gpus_per_node)
