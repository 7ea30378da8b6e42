"""qwen35-prov: provision GPU servers to serve Qwen3.5 with SGLang."""

__version__ = "0.1.0"
