#!/usr/bin/python3
"""qwen35-router-ctl: keep the SGLang Model Gateway's worker list equal to the deployment's replica heads
(installed by roles/sglang_router; standard library only, Python 3.8+).

Why: the gateway drops a worker it cannot reach when it starts (a replica still loading its weights, a node
rebooting) and never retries it; a worker that fails its health checks later stays registered and returns once
healthy. So `watch` (the qwen35-router-watch service) adds every configured worker the gateway does not list,
every few seconds, keeps drained workers out, and removes any worker that is not configured (one somebody
added through the control plane: the gateway would send clients' prompts to it).

The control plane takes the admin key: read from the gateway's keys file (--keys-file, JSON with admin_api_key
and api_key; root or the gateway's user only) and sent as a bearer token, never put on a command line.

Commands (the configuration is /etc/qwen35-prov/router.json: {"router": URL, "workers": [URL, ...]}):
  status                 the gateway's workers as JSON: url, healthy, registered, drained
  reconcile              add missing workers, remove drained and foreign ones; prints what it did; exit 0
  watch [--interval S]   reconcile forever
  drain URL [--wait S]   stop routing to a worker (for a rolling upgrade): remembered until undrain; returns
                         once the gateway no longer lists it
  undrain URL [--wait S] route to it again; returns once the gateway lists it healthy (exit 1 after S seconds)
Drained workers are listed in /var/lib/qwen35-prov/router-drained.json.

The gateway's control plane may work in the background (smg answers 202 and registers or removes the worker a
moment later; 409 while a change of that worker is pending): every command asks once and then looks until the
gateway shows the result, never sending the same change twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CONFIG = Path("/etc/qwen35-prov/router.json")
KEYS = Path("/etc/qwen35-prov/router-keys.json")
DRAINED = Path("/var/lib/qwen35-prov/router-drained.json")
AUTH: dict = {}  # the keys file's content, once read


def log(message: str) -> None:
    print(f"qwen35-router-ctl: {message}", flush=True)


def load_config(path: Path) -> dict:
    data = json.loads(path.read_text())
    if not isinstance(data.get("router"), str) or not isinstance(data.get("workers"), list):
        raise SystemExit(f"{path}: needs 'router' (URL) and 'workers' (list of URLs)")
    return data


def drained(path: Path) -> list:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return []


def save_drained(path: Path, urls: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(set(urls)), indent=1) + "\n")
    tmp.replace(path)


def load_keys(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}  # a gateway without keys
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: needs a JSON object with api_key and admin_api_key")
    return data


def call(method: str, url: str, body: dict | None = None, timeout: float = 10) -> dict:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if AUTH.get("admin_api_key"):
        headers["Authorization"] = f"Bearer {AUTH['admin_api_key']}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw.strip() else {}


def registered(router: str) -> dict:
    """url -> worker record, as GET /workers lists them."""
    return {w["url"].rstrip("/"): w for w in call("GET", f"{router}/workers").get("workers", [])}


def remove(router: str, worker: dict) -> None:
    try:
        call("DELETE", f"{router}/workers/{worker['id']}")
    except urllib.error.HTTPError as exc:
        if exc.code not in (404, 409):   # gone already, or its removal is pending
            raise


def add(router: str, url: str) -> bool:
    """Ask the gateway to register URL; False when a change of that worker is still pending (409)."""
    body = {"url": url}
    if AUTH.get("api_key"):
        body["api_key"] = AUTH["api_key"]  # what the gateway sends to this worker itself
    try:
        call("POST", f"{router}/workers", body)
    except urllib.error.HTTPError as exc:
        if exc.code == 409:
            return False
        raise
    return True


def reconcile(cfg: dict, drained_urls: list, only: str | None = None) -> list:
    """Add missing workers, remove drained and foreign ones (ONLY: just that worker); the actions taken."""
    router = cfg["router"].rstrip("/")
    have = registered(router)
    actions = []
    planned = {url.rstrip("/") for url in cfg["workers"]}
    for url, worker in have.items():
        if only is None and url not in planned:
            remove(router, worker)
            actions.append(f"removed {url}: not a replica head of this deployment")
    for url in cfg["workers"]:
        url = url.rstrip("/")
        if only is not None and url != only:
            continue
        if url in drained_urls:
            if url in have:
                remove(router, have[url])
                actions.append(f"removed drained {url}")
        elif url not in have and add(router, url):
            actions.append(f"added {url}")
    return actions


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="qwen35-router-ctl", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--drained-file", type=Path, default=DRAINED)
    p.add_argument("--keys-file", type=Path, default=KEYS, help="the gateway's keys (JSON; admin_api_key, api_key)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status")
    sub.add_parser("reconcile")
    w = sub.add_parser("watch")
    w.add_argument("--interval", type=float, default=10.0)
    d = sub.add_parser("drain")
    d.add_argument("url")
    d.add_argument("--wait", type=float, default=30.0, help="seconds to wait until the gateway no longer lists it")
    u = sub.add_parser("undrain")
    u.add_argument("url")
    u.add_argument("--wait", type=float, default=120.0, help="seconds to wait until the gateway lists it healthy")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    AUTH.update(load_keys(args.keys_file))
    router = cfg["router"].rstrip("/")

    if args.cmd == "status":
        have, out = registered(router), []
        gone = drained(args.drained_file)
        for url in cfg["workers"]:
            w = have.get(url.rstrip("/"))
            out.append({"url": url, "registered": w is not None, "healthy": bool(w and w.get("is_healthy")),
                        "drained": url.rstrip("/") in gone})
        print(json.dumps({"router": router, "workers": out}, indent=2))
        return 0
    if args.cmd == "reconcile":
        for action in reconcile(cfg, drained(args.drained_file)):
            log(action)
        return 0
    if args.cmd == "watch":
        log(f"watching {router}: {len(cfg['workers'])} worker(s), every {args.interval:g} s")
        while True:
            try:
                for action in reconcile(cfg, drained(args.drained_file)):
                    log(action)
            except (OSError, ValueError, KeyError) as exc:   # the gateway restarting: try again next round
                log(f"gateway not answering ({exc}); next try in {args.interval:g} s")
            time.sleep(args.interval)

    url = args.url.rstrip("/")
    if url not in [w.rstrip("/") for w in cfg["workers"]]:
        raise SystemExit(f"{url} is not a worker of {args.config} ({', '.join(cfg['workers'])})")
    urls = drained(args.drained_file)
    # drain and undrain touch their worker only (the watch keeps the others); the gateway may answer 404 for a
    # worker the watch re-registered a moment ago (a new id): look again
    deadline = time.monotonic() + args.wait
    if args.cmd == "drain":
        save_drained(args.drained_file, urls + [url])
        asked: set = set()   # worker ids whose removal was asked (a re-registration gets a new id)
        while True:
            worker = registered(router).get(url)
            if worker is None:
                break
            if worker["id"] not in asked:
                remove(router, worker)
                asked.add(worker["id"])
                log(f"removing {url}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} is still listed by the gateway after {args.wait:g} s")
            time.sleep(0.5)
        log(f"drained {url}")
        return 0
    save_drained(args.drained_file, [u for u in urls if u != url])
    asked_add = False
    while True:
        worker = registered(router).get(url)
        if worker is not None and worker.get("is_healthy"):
            break
        if worker is None and not asked_add:
            asked_add = add(router, url)
            if asked_add:
                log(f"adding {url}")
        if time.monotonic() > deadline:
            print(f"qwen35-router-ctl: {url} is not listed healthy by the gateway after {args.wait:g} s "
                  f"({'listed, unhealthy' if worker else 'not listed'}); the watch keeps adding it", file=sys.stderr)
            return 1
        time.sleep(0.5)
    log(f"undrained {url}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except urllib.error.URLError as exc:
        raise SystemExit(f"qwen35-router-ctl: the gateway does not answer: {exc}") from None
