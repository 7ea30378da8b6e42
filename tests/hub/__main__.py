"""Command line of the local test hub (TEST DOUBLE).

  python -m tests.hub generate --root DIR [--repo ORG/NAME] [--size-mb S] [--shards N] [--branch B] [--salt X]
      prints the commit id
  python -m tests.hub serve --root DIR [--host H] [--port P] [--mbps B] [--token-file F] [--cdn]
                            [--log FILE] [--ready-file FILE] [--lifetime SECONDS]
      serves until SIGTERM; writes {"url", "port", "pid"} to the ready file once listening
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .repo import generate_repo
from .server import LocalHub


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.hub")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--root", required=True)
    g.add_argument("--repo", default="Qwen/Qwen3.5-Test")
    g.add_argument("--size-mb", type=float, default=4)
    g.add_argument("--shards", type=int, default=4)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--branch", default="main")
    g.add_argument("--salt", default="")
    s = sub.add_parser("serve")
    s.add_argument("--root", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--mbps", type=float, default=None, help="total bandwidth cap in megabits per second")
    s.add_argument("--token-file", default=None, help="require this token (read from a file, never argv)")
    s.add_argument("--cdn", action="store_true", help="redirect LFS files to a second origin, like the real hub")
    s.add_argument("--log", default=None, help="append one JSON line per request to this file")
    s.add_argument("--ready-file", default=None)
    s.add_argument("--lifetime", type=float, default=None,
                   help="exit after this many seconds even if nobody stops it (a crashed test leaks nothing)")
    args = p.parse_args(argv)

    if args.cmd == "generate":
        print(generate_repo(Path(args.root), args.repo, size_mb=args.size_mb, shards=args.shards, seed=args.seed,
                            branch=args.branch, salt=args.salt))
        return 0

    token = Path(args.token_file).read_text().strip() if args.token_file else None
    hub = LocalHub(args.root, host=args.host, port=args.port, mbps=args.mbps, token=token, cdn=args.cdn,
                   log_path=args.log)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    hub.start()
    if args.ready_file:
        tmp = Path(args.ready_file + ".tmp")
        tmp.write_text(json.dumps({"url": hub.url, "port": hub.port, "pid": os.getpid()}))
        os.replace(tmp, args.ready_file)
    print(f"test hub serving {args.root} on {hub.url}", file=sys.stderr, flush=True)
    # wait in short steps: a signal the kernel hands to the server's thread runs its Python handler only when the
    # main thread runs again, and a main thread blocked in one long wait would never see SIGTERM
    deadline = None if args.lifetime is None else time.monotonic() + args.lifetime
    while not stop.wait(timeout=0.5):
        if deadline is not None and time.monotonic() > deadline:
            break
    hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
