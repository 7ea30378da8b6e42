#!/usr/bin/python3
"""qwen35-prov replica group watch: keep a multi-node SGLang replica whole (installed by roles/sglang_server).

A multi-node replica is one process group: when one rank's server dies, the others are left with a broken
communicator (a "half replica") that systemd alone cannot see. One watch runs beside each rank's server unit
(`qwen35-sglang-r<R>-watch.service`). The head's watch listens on a TCP port; every worker's watch connects
to it and reports its server unit's current instance (systemd InvocationID and how long ago its main process
started). The head's watch keeps one rule:

    every worker's server instance must have started after the head's current server instance.

- A worker instance that belonged to the current head instance ends (crash, kill, restart): the head's
  server is restarted (`systemctl try-restart`), which makes every worker instance older than the head's.
- A worker instance older than the head's current instance (the head restarted, or the worker joined an
  old head) is told to restart; that worker's watch runs `systemctl try-restart` on its server.

So a failed rank restarts its whole replica group, the head first, then every worker, and the group settles
once all workers run instances younger than the head's. `try-restart` never starts a unit an administrator
stopped. The head keeps what it knows in /run (a tmpfs: cleared at reboot with the monotonic clock).
Standard library only; Python 3.8+.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

POLL_SECONDS = 1.0
SLACK_SECONDS = 0.1  # message latency; a real restart (stop + start) takes much longer


def log(message: str) -> None:
    print(message, flush=True)


@dataclass
class Instance:
    inv: str
    started: float  # CLOCK_MONOTONIC seconds (systemd's ...Monotonic timestamps use the same clock)


class Units:
    def __init__(self, systemctl: str):
        self.systemctl = systemctl

    def current(self, unit: str) -> Instance | None:
        """The unit's running instance, or None when its main process is not running."""
        try:
            proc = subprocess.run(
                [self.systemctl, "show", unit, "--property=ActiveState", "--property=InvocationID",
                 "--property=ExecMainPID", "--property=ExecMainStartTimestampMonotonic"],
                capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log(f"cannot read {unit}: {exc}")
            return None
        props = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        if props.get("ActiveState") not in ("active", "reloading") or props.get("ExecMainPID", "0") in ("", "0"):
            return None
        inv, started = props.get("InvocationID", ""), props.get("ExecMainStartTimestampMonotonic", "0")
        if not inv or not started.isdigit() or started == "0":
            return None
        return Instance(inv, int(started) / 1e6)

    def try_restart(self, unit: str, why: str) -> None:
        log(f"restarting {unit}: {why}")
        proc = subprocess.run([self.systemctl, "try-restart", "--no-block", unit], capture_output=True, text=True)
        if proc.returncode != 0:
            log(f"systemctl try-restart {unit} failed ({proc.returncode}): {proc.stderr.strip()}")


def keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


# ---------------------------------------------------------------------------------------------- head

class Head:
    def __init__(self, args: argparse.Namespace, units: Units):
        self.args = args
        self.units = units
        self.sel = selectors.DefaultSelector()
        self.conns: dict[socket.socket, dict] = {}
        self.ranks: dict[int, Instance | None] = {}
        self.restarted_for: str | None = None  # head instance whose restart was already asked for
        self.told: dict[int, str] = {}  # rank -> worker instance already told to restart
        self.head: Instance | None = None
        self.state_file = args.state_file
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(open(self.state_file).read())
        except (OSError, ValueError):
            return
        self.ranks = {int(k): (Instance(*v) if v else None) for k, v in data.get("ranks", {}).items()}
        self.restarted_for = data.get("restarted_for")

    def _save(self) -> None:
        if not self.state_file:
            return
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"ranks": {k: ([v.inv, v.started] if v else None) for k, v in self.ranks.items()},
                       "restarted_for": self.restarted_for}, f)
        os.replace(tmp, self.state_file)

    def belongs(self, inst: Instance) -> bool:
        return self.head is not None and inst.started >= self.head.started - SLACK_SECONDS

    def on_state(self, rank: int, new: Instance | None) -> None:
        old = self.ranks.get(rank)
        if old is not None and (new is None or new.inv != old.inv):
            if self.head is not None and self.belongs(old) and self.restarted_for != self.head.inv:
                self.restarted_for = self.head.inv
                self.units.try_restart(self.args.unit, f"rank {rank}'s server instance {old.inv[:8]} ended; "
                                                       f"restarting replica {self.args.replica} as a group")
            elif self.head is None:
                log(f"rank {rank}: instance {old.inv[:8]} ended while the head's server is not running")
            else:
                log(f"rank {rank}: instance {old.inv[:8]} ended (it predates the head's instance; nothing to do)")
        if new is not None and (old is None or new.inv != old.inv):
            log(f"rank {rank}: server instance {new.inv[:8]} running for {time.monotonic() - new.started:.0f} s")
        self.ranks[rank] = new
        self._save()

    def enforce(self) -> None:
        """Workers older than the head's current instance must restart."""
        if self.head is None:
            return
        for conn, meta in list(self.conns.items()):
            rank = meta.get("rank")
            inst = self.ranks.get(rank) if rank is not None else None
            if inst is None or self.belongs(inst) or self.told.get(rank) == inst.inv:
                continue
            self.told[rank] = inst.inv
            log(f"rank {rank}: instance {inst.inv[:8]} started before the head's instance {self.head.inv[:8]}; "
                f"asking it to restart")
            self._send(conn, f"RESTART {inst.inv}")

    def _send(self, conn: socket.socket, line: str) -> None:
        try:
            conn.sendall((line + "\n").encode())
        except OSError:
            self._close(conn)

    def _close(self, conn: socket.socket) -> None:
        meta = self.conns.pop(conn, None)
        if meta is not None:
            self.sel.unregister(conn)
            conn.close()
            if meta.get("rank") is not None:
                log(f"rank {meta['rank']}: watch disconnected")

    def _accept(self, listener: socket.socket) -> None:
        conn, peer = listener.accept()
        keepalive(conn)
        conn.setblocking(False)
        self.conns[conn] = {"buf": b"", "peer": peer[0]}
        self.sel.register(conn, selectors.EVENT_READ, "conn")

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(4096)
        except OSError:
            data = b""
        if not data:
            return self._close(conn)
        meta = self.conns[conn]
        meta["buf"] += data
        while b"\n" in meta["buf"]:
            raw, meta["buf"] = meta["buf"].split(b"\n", 1)
            words = raw.decode(errors="replace").split()
            if words[:1] == ["HELLO"] and len(words) == 3 and words[2].isdigit():
                if words[1] != str(self.args.replica):
                    log(f"{meta['peer']}: watch of replica {words[1]} connected to replica {self.args.replica}'s head")
                    return self._close(conn)
                meta["rank"] = int(words[2])
                log(f"rank {meta['rank']}: watch connected from {meta['peer']}")
            elif words[:1] == ["STATE"] and len(words) == 3 and meta.get("rank") is not None:
                inst = None if words[1] == "-" else Instance(words[1], time.monotonic() - float(words[2]))
                self.on_state(meta["rank"], inst)
            elif words[:1] == ["BYE"]:
                return self._close(conn)

    def run(self) -> None:
        host, port = self.args.listen
        listener = socket.create_server((host, port), reuse_port=False)
        listener.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ, "listener")
        log(f"head watch of replica {self.args.replica} on {host}:{port}, server unit {self.args.unit}")
        while True:
            head = self.units.current(self.args.unit)
            if (head and self.head and head.inv != self.head.inv) or (head and not self.head):
                log(f"head server instance {head.inv[:8]} running")
            self.head = head
            self.enforce()
            for key, _ in self.sel.select(timeout=self.args.poll):
                if key.data == "listener":
                    self._accept(key.fileobj)
                else:
                    self._read(key.fileobj)

    def stop(self) -> None:
        for conn in list(self.conns):
            self._send(conn, "BYE")
            self._close(conn)


# ---------------------------------------------------------------------------------------------- worker

class Worker:
    def __init__(self, args: argparse.Namespace, units: Units):
        self.args = args
        self.units = units
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        host, port = self.args.head
        warned = 0.0
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=5)
                keepalive(sock)
                sock.settimeout(None)
                sock.sendall(f"HELLO {self.args.replica} {self.args.rank}\n".encode())
                log(f"connected to the head's watch at {host}:{port}")
                return sock
            except OSError as exc:
                if time.monotonic() - warned > 60:
                    log(f"head's watch at {host}:{port} not reachable yet: {exc}")
                    warned = time.monotonic()
                time.sleep(2)

    def run(self) -> None:
        log(f"worker watch of replica {self.args.replica} rank {self.args.rank}, server unit {self.args.unit}")
        while True:
            self.sock = self._connect()
            self._session(self.sock)
            self.sock.close()
            self.sock = None
            time.sleep(1)

    def _session(self, sock: socket.socket) -> None:
        reported: object = object()  # nothing reported yet on this connection
        buf = b""
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        while True:
            inst = self.units.current(self.args.unit)
            key = inst.inv if inst else None
            if key != reported:
                line = f"STATE {inst.inv} {time.monotonic() - inst.started:.3f}" if inst else "STATE - -"
                try:
                    sock.sendall((line + "\n").encode())
                except OSError:
                    return
                reported = key
            if not sel.select(timeout=self.args.poll):
                continue
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                log("the head's watch went away; reconnecting")
                return
            buf += data
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                words = raw.decode(errors="replace").split()
                if words[:1] == ["RESTART"] and len(words) == 2:
                    if inst is not None and words[1] == inst.inv:
                        self.units.try_restart(self.args.unit, "the head restarted after this instance started")
                elif words[:1] == ["BYE"]:
                    log("the head's watch is stopping; reconnecting")
                    return

    def stop(self) -> None:
        if self.sock is not None:
            try:
                self.sock.sendall(b"BYE\n")
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Keep a multi-node SGLang replica whole (qwen35-prov).")
    parser.add_argument("--unit", required=True, help="this node's server unit, e.g. qwen35-sglang-r0.service")
    parser.add_argument("--replica", type=int, required=True)
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--listen", type=host_port, metavar="HOST:PORT", help="head: where workers' watches connect")
    role.add_argument("--head", type=host_port, metavar="HOST:PORT", help="worker: the head's watch")
    parser.add_argument("--rank", type=int, default=0, help="worker: this node's rank")
    parser.add_argument("--state-file", default="", help="head: remember rank instances here (under /run)")
    parser.add_argument("--poll", type=float, default=POLL_SECONDS, help="seconds between unit state reads")
    parser.add_argument("--systemctl", default="systemctl", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    units = Units(args.systemctl)
    watch = Head(args, units) if args.listen else Worker(args, units)

    def _stop(*_):
        watch.stop()
        log("stopping")
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    watch.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
