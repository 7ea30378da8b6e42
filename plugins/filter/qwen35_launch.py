"""Filters the playbooks use on a launch of the launch contract (docs/architecture.md)."""

from __future__ import annotations

_EVERY_INTERFACE = ("0.0.0.0", "::")


def qwen35_launch_url(launch) -> str:
    """http://HOST:PORT where a client on the node itself reaches the launch's HTTP server: the address it
    listens on, or 127.0.0.1 when it listens on every interface (IPv6 literals bracketed)."""
    host = str(launch["host"])
    host = "127.0.0.1" if host in _EVERY_INTERFACE else host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{int(launch['port'])}"


class FilterModule:
    def filters(self):
        return {"qwen35_launch_url": qwen35_launch_url}
