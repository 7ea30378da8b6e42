"""TEST DOUBLE of `python3 -m sglang.bench_serving` (SGLang 0.5.23) for qwen35-prov's sandbox tests.

Replays a captured real run (see ../README.md): checks the server like the real client, prints the captured
"Serving Benchmark Result" block, appends the captured JSONL record (with this run's arguments) to --output-file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.request
from pathlib import Path

CAPTURES = Path(__file__).resolve().parent / "_captures"
KNOBS = Path("/etc/qwen35-bench-standin.json")
BLOCK_LABELS = {"output_throughput": "Output token throughput (tok/s):", "total_throughput": "Total token throughput (tok/s):",
                "median_tpot_ms": "Median TPOT (ms):", "accept_length": "Accept length:"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Benchmark the online serving throughput. (TEST DOUBLE)")
    p.add_argument("--backend", default="sglang")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int)
    p.add_argument("--dataset-name", default="sharegpt")
    p.add_argument("--dataset-path", default="")
    p.add_argument("--random-input-len", type=int, default=1024)
    p.add_argument("--random-output-len", type=int, default=1024)
    p.add_argument("--random-range-ratio", type=float, default=0.0)
    p.add_argument("--num-prompts", type=int, default=1000)
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument("--output-file")
    args = p.parse_args(argv)
    print("[sglang bench_serving TEST DOUBLE] replaying a captured run", flush=True)
    print(f"benchmark_args={args}", flush=True)
    knobs = json.loads(KNOBS.read_text()) if KNOBS.exists() else {}
    if knobs.get("fail"):
        raise RuntimeError(knobs["fail"])
    if args.dataset_path and not Path(args.dataset_path).is_file():
        raise FileNotFoundError(args.dataset_path)
    base = f"http://{args.host}:{args.port}"
    key = os.environ.get("OPENAI_API_KEY")  # as the real script sends it
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{base}/v1/models", headers=headers), timeout=10) as r:
            model = json.loads(r.read())["data"][0]["id"]
        with urllib.request.urlopen(urllib.request.Request(f"{base}/server_info", headers=headers), timeout=10) as r:
            server_info = json.loads(r.read())
    except OSError as exc:
        print(f"Server at {base}/v1/models is not ready. Exiting. ({exc})")
        return 1
    print(f"model={model}")
    name = "latency" if args.max_concurrency == 1 else "throughput"
    text = (CAPTURES / f"{name}.log").read_text()
    record = json.loads((CAPTURES / f"{name}.jsonl").read_text().splitlines()[-1])
    for key, factor in knobs.get("scale", {}).items():
        record[key] = round(record[key] * factor, 2)
        label = re.escape(BLOCK_LABELS[key])
        text = re.sub(rf"^({label}\s+)([0-9.]+)", lambda m: f"{m.group(1)}{record[key]:.2f}", text, flags=re.M)
    record.update(backend=args.backend, dataset_name=args.dataset_name, random_input_len=args.random_input_len,
                  random_output_len=args.random_output_len, random_range_ratio=args.random_range_ratio,
                  max_concurrency=args.max_concurrency, server_info=server_info)
    print("\n" + text, end="")
    if args.output_file:
        with open(args.output_file, "a") as f:
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
