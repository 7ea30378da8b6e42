"""What the user may choose for a plan, with the defaults and limits the cookbook sets."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UserError

DEFAULT_MODEL = "397b"
DEFAULT_PRECISION = "bf16"
DEFAULT_CONTEXT_LENGTH = 262_144
MIN_CONTEXT_LENGTH = 131_072  # the cookbook: keep at least 128K so thinking has room
MAX_CONTEXT_LENGTH = 262_144  # native context; longer needs rope scaling this toolkit does not configure
MAMBA_CACHE_CHOICES = ("v1", "v2")
KV_OFFLOAD_CHOICES = ("disabled", "hicache")
#: The gateway in front of several replicas: its client and metrics ports (the heads use 30000 and up)
ROUTER_PORT, ROUTER_METRICS_PORT = 30080, 29000
#: Where SGLang listens: each node's own (fleet) address, the one its peers and the gateway reach, or every
#: interface
BIND_CHOICES = ("cluster", "all")
#: A hub revision the tool deploys: a full commit (a branch moves; the weights folder is named after it)
COMMIT = re.compile(r"^[0-9a-f]{40}$")
_PATH = re.compile(r"^/[A-Za-z0-9_./+@-]*$")
#: Folders the weights may never be (`down --purge-weights` deletes under the weights folder)
SYSTEM_DIRS = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/opt", "/proc",
                         "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/tmp",
                         "/mnt", "/media"})


def weights_dir_problem(path: str) -> str | None:
    """Why PATH cannot be the weights folder, or None: absolute, a plain character set, no '.' or '..' parts,
    not a system folder."""
    if not path.startswith("/"):
        return "must be an absolute path"
    if not _PATH.match(path):
        return "must be a path of letters, digits and . _ / + @ - only"
    parts = [p for p in path.split("/") if p]
    if "." in parts or ".." in parts:
        return "must not contain '.' or '..' parts"
    if "/" + "/".join(parts) in SYSTEM_DIRS:
        return "is a system folder; use a folder of its own, such as /var/lib/qwen35-prov/models"
    return None


def normal_weights_dir(path: str) -> str:
    return "/" + "/".join(p for p in path.split("/") if p)


@dataclass(frozen=True)
class PlanOptions:
    model: str = DEFAULT_MODEL
    precision: str = DEFAULT_PRECISION
    mtp: bool = True
    reasoning_parser: bool = True
    tool_call_parser: bool = True
    mamba_cache: str | None = None
    context_length: int = DEFAULT_CONTEXT_LENGTH
    loader_threads: int = 64
    port: int = 30000
    dist_init_port: int | None = None
    bind: str = "cluster"
    watchdog_timeout: int = 1200
    cuda_ipc_transport: bool = False
    weights_dir: str = "/var/lib/qwen35-prov/models"
    revision: str | None = None
    api_key: bool = True  # the HTTP API needs the deployment's key (the keys live on the controller, not here)
    kv_offload: str = "disabled"
    router_host: str | None = None   # the node the gateway runs on (several replicas); default the first head

    def __post_init__(self) -> None:
        if not MIN_CONTEXT_LENGTH <= self.context_length <= MAX_CONTEXT_LENGTH:
            raise UserError(
                f"--context-length {self.context_length}: allowed {MIN_CONTEXT_LENGTH} to {MAX_CONTEXT_LENGTH} "
                f"(below 128K thinking has no room; above {MAX_CONTEXT_LENGTH} needs rope scaling)")
        if self.mamba_cache is not None and self.mamba_cache not in MAMBA_CACHE_CHOICES:
            raise UserError(f"--mamba-cache {self.mamba_cache!r}: allowed {', '.join(MAMBA_CACHE_CHOICES)}")
        if self.bind not in BIND_CHOICES:
            raise UserError(f"--bind {self.bind!r}: allowed {', '.join(BIND_CHOICES)}")
        if self.bind == "all" and not self.api_key:
            raise UserError("--bind all with --no-api-key would serve the API to every network without a key: keep "
                            "the key, or listen on the cluster address only (--bind cluster)")
        if self.kv_offload not in KV_OFFLOAD_CHOICES:
            raise UserError(f"--kv-offload {self.kv_offload!r}: allowed {', '.join(KV_OFFLOAD_CHOICES)}")
        if self.loader_threads < 1:
            raise UserError(f"--loader-threads {self.loader_threads}: must be at least 1")
        for name, port in (("--port", self.port), ("--dist-init-port", self.dist_init_port)):
            if port is not None and not 1 <= port <= 65535:
                raise UserError(f"{name} {port}: allowed 1 to 65535")
        if self.watchdog_timeout < 1:
            raise UserError(f"--watchdog-timeout {self.watchdog_timeout}: must be at least 1 second")
        problem = weights_dir_problem(self.weights_dir)
        if problem:
            raise UserError(f"--weights-dir {self.weights_dir!r} {problem}")
        if self.revision is not None and not COMMIT.match(self.revision):
            raise UserError(f"--revision {self.revision!r}: give the full 40-character hex commit of the hub "
                            "revision (a branch or tag moves, and the weights folder is named after the commit)")
