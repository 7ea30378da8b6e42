"""Filters of the sglang_router role: the replica heads' URLs, from the inventory the planner wrote."""

from __future__ import annotations


def _url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"http://{host}:{port}"


def sglang_router_worker_urls(heads, hostvars) -> list:
    """http://ADDRESS:PORT of every replica head (each head launch of each host of qwen35_heads), by replica."""
    found = []
    for host in heads or []:
        hv = hostvars[host]
        address = str(hv.get("ansible_host") or host)
        for launch in hv.get("qwen35_launches") or []:
            if launch.get("is_head"):
                found.append((int(launch["replica"]), _url(address, int(launch["port"]))))
    replicas = [r for r, _ in found]
    if len(set(replicas)) != len(replicas):
        raise ValueError(f"two heads claim the same replica: {sorted(found)}")
    return [url for _, url in sorted(found)]


class FilterModule:
    def filters(self):
        return {"sglang_router_worker_urls": sglang_router_worker_urls}
