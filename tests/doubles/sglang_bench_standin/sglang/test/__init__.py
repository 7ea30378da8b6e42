"""TEST DOUBLE package for qwen35-prov's sandbox tests (see tests/doubles/sglang_bench_standin/README.md)."""
