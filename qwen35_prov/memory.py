"""Per-GPU memory arithmetic: weights share, KV cache and recurrent state, headroom."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .catalog import Gpu

GB = 1e9
# Under this much room for KV cache and recurrent state per GPU, a layout counts as tight.
TIGHT_FRACTION_OF_GPU = 0.10


@dataclass(frozen=True)
class MemoryFit:
    gpu_memory_gb: float
    weights_gb: float
    weights_per_gpu_gb: float
    mem_fraction_static: float
    mem_fraction_assumed: bool
    static_pool_gb: float
    kv_and_state_gb: float
    headroom_gb: float
    fits: bool
    tight: bool

    def explain(self) -> str:
        assumed = " (SGLang's own choice; assumed)" if self.mem_fraction_assumed else ""
        verdict = "fits" if self.fits else "does NOT fit"
        if self.fits and self.tight:
            verdict = "fits, tight"
        return (
            f"per GPU: {self.gpu_memory_gb:.1f} GB; weights {self.weights_gb:g} GB / TP = "
            f"{self.weights_per_gpu_gb:.1f} GB; --mem-fraction-static {self.mem_fraction_static:g}{assumed} "
            f"reserves {self.static_pool_gb:.1f} GB, leaving {self.kv_and_state_gb:.1f} GB for KV cache and "
            f"recurrent state and {self.headroom_gb:.1f} GB headroom for activations, CUDA graphs and "
            f"communication buffers: {verdict}"
        )

    def as_dict(self) -> dict:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(self).items()}


def memory_fit(gpu: Gpu, weights_gb: float, tp: int, mem_fraction: float | None, assumed_fraction: float) -> MemoryFit:
    gpu_gb = gpu.memory_bytes / GB
    fraction = mem_fraction if mem_fraction is not None else assumed_fraction
    per_gpu = weights_gb / tp
    pool = fraction * gpu_gb
    kv = pool - per_gpu
    return MemoryFit(
        gpu_memory_gb=gpu_gb,
        weights_gb=weights_gb,
        weights_per_gpu_gb=per_gpu,
        mem_fraction_static=fraction,
        mem_fraction_assumed=mem_fraction is None,
        static_pool_gb=pool,
        kv_and_state_gb=kv,
        headroom_gb=gpu_gb - pool,
        fits=kv > 0,
        tight=kv < TIGHT_FRACTION_OF_GPU * gpu_gb,
    )
