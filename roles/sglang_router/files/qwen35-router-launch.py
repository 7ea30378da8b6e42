#!/usr/bin/python3
"""qwen35-router-launch: start the SGLang Model Gateway (smg, or sglang-router up to 0.3.2) with its keys read from a file
(installed by roles/sglang_router; run with the gateway's virtual environment's Python).

  qwen35-router-launch --keys-file FILE [launch_router options...]

FILE is JSON {"api_key": ..., "admin_api_key": ...}, readable only by the gateway's user. The keys become
launch_router's --api-key (clients must send it; it is also what the gateway sends to the workers) and
--control-plane-api-keys (the admin key: /workers and the other control-plane endpoints), inside this process:
they never appear in a command line, a unit file or `ps` (the gateway renames its process smg::router, or
sglang::router).
"""

from __future__ import annotations

import json
import sys


def key_args(keys: dict) -> list:
    args = []
    if keys.get("api_key"):
        args += ["--api-key", keys["api_key"]]
    if keys.get("admin_api_key"):
        args += ["--control-plane-api-keys", f"qwen35-admin:qwen35-prov:admin:{keys['admin_api_key']}"]
    return args


def main(argv: list) -> int:
    if argv[:1] != ["--keys-file"] or len(argv) < 2:
        print("usage: qwen35-router-launch --keys-file FILE [launch_router options...]", file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            keys = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"qwen35-router-launch: cannot read the keys file {argv[1]}: {exc}", file=sys.stderr)
        return 1
    try:
        from smg.launch_router import launch_router, parse_router_args
    except ImportError:   # the package's name up to 0.3.2
        from sglang_router.launch_router import launch_router, parse_router_args

    launch_router(parse_router_args(argv[2:] + key_args(keys)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
