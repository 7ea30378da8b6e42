"""What the user may choose for a plan, with the defaults and limits the cookbook sets."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError

DEFAULT_MODEL = "397b"
DEFAULT_PRECISION = "bf16"
DEFAULT_CONTEXT_LENGTH = 262_144
MIN_CONTEXT_LENGTH = 131_072  # the cookbook: keep at least 128K so thinking has room
MAX_CONTEXT_LENGTH = 262_144  # native context; longer needs rope scaling this toolkit does not configure
MAMBA_CACHE_CHOICES = ("v1", "v2")


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
    host: str = "0.0.0.0"
    watchdog_timeout: int = 1200
    cuda_ipc_transport: bool = False
    weights_dir: str = "/var/lib/qwen35-prov/models"
    revision: str | None = None

    def __post_init__(self) -> None:
        if not MIN_CONTEXT_LENGTH <= self.context_length <= MAX_CONTEXT_LENGTH:
            raise UserError(
                f"--context-length {self.context_length}: allowed {MIN_CONTEXT_LENGTH} to {MAX_CONTEXT_LENGTH} "
                f"(below 128K thinking has no room; above {MAX_CONTEXT_LENGTH} needs rope scaling)")
        if self.mamba_cache is not None and self.mamba_cache not in MAMBA_CACHE_CHOICES:
            raise UserError(f"--mamba-cache {self.mamba_cache!r}: allowed {', '.join(MAMBA_CACHE_CHOICES)}")
        if self.loader_threads < 1:
            raise UserError(f"--loader-threads {self.loader_threads}: must be at least 1")
        for name, port in (("--port", self.port), ("--dist-init-port", self.dist_init_port)):
            if port is not None and not 1 <= port <= 65535:
                raise UserError(f"{name} {port}: allowed 1 to 65535")
        if self.watchdog_timeout < 1:
            raise UserError(f"--watchdog-timeout {self.watchdog_timeout}: must be at least 1 second")
        if not self.weights_dir.startswith("/"):
            raise UserError(f"--weights-dir {self.weights_dir!r}: must be an absolute path")
