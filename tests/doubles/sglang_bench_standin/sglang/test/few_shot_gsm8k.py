"""TEST DOUBLE of `python3 -m sglang.test.few_shot_gsm8k` (SGLang 0.5.23) for qwen35-prov's sandbox tests.

Checks the server like the real script (RuntimeEndpoint reads /get_model_info first), then prints the captured
GSM8K output (Accuracy / Invalid / Latency / Output throughput).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

CAPTURES = Path(__file__).resolve().parent.parent / "_captures"
KNOBS = Path("/etc/qwen35-bench-standin.json")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--num-shots", type=int, default=5)
    p.add_argument("--data-path", type=str)
    p.add_argument("--num-questions", type=int, default=200)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--parallel", type=int, default=128)
    p.add_argument("--host", type=str, default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--temperature", type=float, default=0.0)
    args = p.parse_args(argv)
    print("[sglang few_shot_gsm8k TEST DOUBLE] replaying a captured run", flush=True)
    knobs = json.loads(KNOBS.read_text()) if KNOBS.exists() else {}
    if knobs.get("fail"):
        raise RuntimeError(knobs["fail"])
    if args.data_path and not Path(args.data_path).is_file():
        raise FileNotFoundError(args.data_path)
    RuntimeEndpoint(f"http://{args.host}:{args.port}")  # reads /get_model_info, as the real script's backend does
    text = (CAPTURES / "gsm8k.log").read_text()
    if "accuracy" in knobs:
        text = re.sub(r"^Accuracy: [0-9.]+", f"Accuracy: {knobs['accuracy']:.3f}", text, flags=re.M)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
