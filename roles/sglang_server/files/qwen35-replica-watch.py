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

Only the replica's own watches are listened to. Both sides hold a secret (--secret-file, root only); the key of
replica R is HMAC-SHA256(secret, "qwen35-replica-watch replica R"). The head opens with a random challenge, the
worker answers with its own and a MAC over both, the head proves itself back, and every later line carries a
sequence number and a MAC over the session's challenges: a peer without the key, a replayed or a reordered line
ends its connection and changes nothing. Lines are bounded (512 bytes), so are their rate, the connections and
the time a peer has to prove itself; a malformed line ends that connection, never the watch.
Standard library only; Python 3.8+.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

POLL_SECONDS = 1.0
SLACK_SECONDS = 0.1  # message latency; a real restart (stop + start) takes much longer
MAX_LINE = 512           # bytes; the longest honest line is about 130
MAX_CONNECTIONS = 64     # a replica has at most a few dozen nodes
AUTH_SECONDS = 10.0      # a peer has this long to prove itself
MAX_LINES_PER_SECOND = 50
MAC_HEX = 32             # 128 bits of HMAC-SHA256
INVOCATION = re.compile(r"^[0-9a-f]{32}$")
NONCE = re.compile(r"^[0-9a-f]{32}$")


class ProtocolError(Exception):
    """A peer broke the protocol: its connection ends, the watch goes on."""


def replica_key(secret: bytes, replica: int) -> bytes:
    return hmac.new(secret, f"qwen35-replica-watch replica {replica}".encode(), hashlib.sha256).digest()


def mac(key: bytes, *parts: object) -> str:
    return hmac.new(key, "|".join(str(p) for p in parts).encode(), hashlib.sha256).hexdigest()[:MAC_HEX]


def read_secret(path: str) -> bytes:
    try:
        secret = open(path, "rb").read().strip()
    except OSError as exc:
        raise SystemExit(f"cannot read the watch secret {path}: {exc}")
    if len(secret) < 16:
        raise SystemExit(f"the watch secret {path} is shorter than 16 characters")
    return secret


class LineReader:
    """Whole lines from a socket's bytes, bounded in length and rate."""

    def __init__(self):
        self.buf = b""
        self.window = (0.0, 0)  # (second it counts, lines in it)

    def feed(self, data: bytes) -> list:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        if len(self.buf) > MAX_LINE or any(len(line) > MAX_LINE for line in lines):
            raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
        now = int(time.monotonic())
        count = (self.window[1] if self.window[0] == now else 0) + len(lines)
        self.window = (now, count)
        if count > MAX_LINES_PER_SECOND:
            raise ProtocolError(f"more than {MAX_LINES_PER_SECOND} lines in a second")
        try:
            return [line.decode("ascii").split() for line in lines]
        except UnicodeDecodeError:
            raise ProtocolError("a line that is not ASCII")


class Channel:
    """Both directions of one authenticated session: sequence numbers and MACs."""

    def __init__(self, key: bytes, session: str, mine: str, theirs: str):
        self.key, self.session, self.mine, self.theirs = key, session, mine, theirs
        self.sent = self.received = 0

    def seal(self, payload: str) -> str:
        self.sent += 1
        return f"{payload} {self.sent} {mac(self.key, self.mine, self.session, self.sent, payload)}"

    def open(self, words: list) -> list:
        if len(words) < 3:
            raise ProtocolError("a line without sequence number and MAC")
        payload, seq, tag = " ".join(words[:-2]), words[-2], words[-1]
        if seq != str(self.received + 1):
            raise ProtocolError(f"sequence {seq[:12]!r}, expected {self.received + 1}")
        if not hmac.compare_digest(tag, mac(self.key, self.theirs, self.session, seq, payload)):
            raise ProtocolError("a line whose MAC does not verify")
        self.received += 1
        return words[:-2]


def parse_state(words: list):
    """STATE INV AGE or STATE - - -> (inv, age seconds) or None."""
    if len(words) != 3:
        raise ProtocolError("STATE needs an instance and an age")
    if words[1:] == ["-", "-"]:
        return None
    if not INVOCATION.match(words[1]):
        raise ProtocolError("STATE with a malformed instance id")
    try:
        age = float(words[2])
    except ValueError:
        raise ProtocolError("STATE with an age that is not a number")
    if not math.isfinite(age) or not 0 <= age < 10 * 365 * 86400:
        raise ProtocolError("STATE with an age out of range")
    return words[1], age


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
    def __init__(self, args: argparse.Namespace, units: Units, key: bytes):
        self.args = args
        self.units = units
        self.key = key
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

    def _send(self, conn: socket.socket, payload: str) -> None:
        meta = self.conns.get(conn)
        if meta is None:
            return
        line = meta["channel"].seal(payload) if meta.get("channel") else payload
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
        try:
            conn, peer = listener.accept()
        except OSError:
            return
        if len(self.conns) >= MAX_CONNECTIONS:
            log(f"{peer[0]}: refused, {MAX_CONNECTIONS} connections already open")
            conn.close()
            return
        keepalive(conn)
        conn.setblocking(False)
        nonce = secrets.token_hex(16)
        self.conns[conn] = {"lines": LineReader(), "peer": peer[0], "nonce": nonce, "since": time.monotonic()}
        self.sel.register(conn, selectors.EVENT_READ, "conn")
        self._send(conn, f"CHALLENGE {nonce}")

    def _expire(self) -> None:
        """Peers that did not prove themselves in time are dropped."""
        now = time.monotonic()
        for conn, meta in list(self.conns.items()):
            if meta.get("channel") is None and now - meta["since"] > AUTH_SECONDS:
                log(f"{meta['peer']}: did not authenticate within {AUTH_SECONDS:.0f} s; dropped")
                self._close(conn)

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(4096)
        except OSError:
            data = b""
        if not data:
            return self._close(conn)
        meta = self.conns[conn]
        try:
            for words in meta["lines"].feed(data):
                if conn not in self.conns:
                    return
                if meta.get("channel") is None:
                    self._hello(conn, meta, words)
                else:
                    self._message(conn, meta, meta["channel"].open(words))
        except ProtocolError as exc:
            who = f"rank {meta['rank']}" if meta.get("rank") is not None else meta["peer"]
            log(f"{who}: {exc}; connection closed")
            self._close(conn)

    def _hello(self, conn: socket.socket, meta: dict, words: list) -> None:
        """HELLO REPLICA RANK NONCE MAC: the worker proves it holds the replica's key."""
        if len(words) != 5 or words[0] != "HELLO" or not words[2].isdigit() or not NONCE.match(words[3]):
            raise ProtocolError("expected HELLO REPLICA RANK NONCE MAC")
        replica, rank, theirs, tag = words[1], int(words[2]), words[3], words[4]
        if not hmac.compare_digest(tag, mac(self.key, "hello", meta["nonce"], theirs, replica, rank)):
            raise ProtocolError("HELLO whose MAC does not verify (not this replica's key)")
        if replica != str(self.args.replica) or not 1 <= rank < 4096:
            raise ProtocolError(f"HELLO of replica {replica} rank {rank} at replica {self.args.replica}'s head")
        session = f"{meta['nonce']}:{theirs}"
        for other, m in list(self.conns.items()):
            if other is not conn and m.get("rank") == rank:
                log(f"rank {rank}: a newer authenticated connection replaces the old one")
                self._close(other)
        self._send(conn, f"WELCOME {mac(self.key, 'welcome', session)}")  # the last line without a channel
        meta["channel"] = Channel(self.key, session, mine="head", theirs="worker")
        meta["rank"] = rank
        log(f"rank {rank}: watch connected from {meta['peer']} (authenticated)")

    def _message(self, conn: socket.socket, meta: dict, words: list) -> None:
        if words[:1] == ["STATE"]:
            state = parse_state(words)
            self.on_state(meta["rank"], None if state is None else Instance(state[0], time.monotonic() - state[1]))
        elif words == ["BYE"]:
            self._close(conn)
        else:
            raise ProtocolError(f"unknown message {' '.join(words)[:40]!r}")

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
            self._expire()
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
    def __init__(self, args: argparse.Namespace, units: Units, key: bytes):
        self.args = args
        self.units = units
        self.key = key
        self.sock: socket.socket | None = None
        self.channel: Channel | None = None

    def _connect(self) -> tuple:
        host, port = self.args.head
        warned = 0.0
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=5)
                keepalive(sock)
                channel = self._handshake(sock)
                sock.settimeout(None)
                log(f"connected to the head's watch at {host}:{port} (authenticated)")
                return sock, channel
            except (OSError, ProtocolError) as exc:
                if time.monotonic() - warned > 60:
                    log(f"head's watch at {host}:{port} not reachable yet: {exc}")
                    warned = time.monotonic()
                time.sleep(2)

    def _handshake(self, sock: socket.socket) -> Channel:
        """CHALLENGE from the head, HELLO with our nonce and MAC, WELCOME proving the head holds the key."""
        sock.settimeout(AUTH_SECONDS)
        lines, received = LineReader(), []
        mine = secrets.token_hex(16)
        nonce = None
        while True:
            while not received:
                data = sock.recv(4096)
                if not data:
                    raise ProtocolError("the head closed the connection while authenticating")
                received = lines.feed(data)
            words = received.pop(0)
            if nonce is None:
                if len(words) != 2 or words[0] != "CHALLENGE" or not NONCE.match(words[1]):
                    raise ProtocolError("expected CHALLENGE NONCE")
                nonce = words[1]
                hello = mac(self.key, "hello", nonce, mine, self.args.replica, self.args.rank)
                sock.sendall(f"HELLO {self.args.replica} {self.args.rank} {mine} {hello}\n".encode())
                continue
            session = f"{nonce}:{mine}"
            if len(words) != 2 or words[0] != "WELCOME" or not hmac.compare_digest(
                    words[1], mac(self.key, "welcome", session)):
                raise ProtocolError("the head did not prove it holds this replica's key")
            if received or lines.buf:
                raise ProtocolError("the head sent more than WELCOME before the session")
            return Channel(self.key, session, mine="worker", theirs="head")

    def run(self) -> None:
        log(f"worker watch of replica {self.args.replica} rank {self.args.rank}, server unit {self.args.unit}")
        while True:
            self.sock, self.channel = self._connect()
            try:
                self._session(self.sock, self.channel)
            except ProtocolError as exc:
                log(f"the head's watch broke the protocol ({exc}); reconnecting")
            self.sock.close()
            self.sock = self.channel = None
            time.sleep(1)

    def _send(self, sock: socket.socket, channel: Channel, payload: str) -> bool:
        try:
            sock.sendall((channel.seal(payload) + "\n").encode())
            return True
        except OSError:
            return False

    def _session(self, sock: socket.socket, channel: Channel) -> None:
        reported: object = object()  # nothing reported yet on this connection
        lines = LineReader()
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        while True:
            inst = self.units.current(self.args.unit)
            key = inst.inv if inst else None
            if key != reported:
                line = f"STATE {inst.inv} {time.monotonic() - inst.started:.3f}" if inst else "STATE - -"
                if not self._send(sock, channel, line):
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
            for words in lines.feed(data):
                words = channel.open(words)
                if words[:1] == ["RESTART"] and len(words) == 2:
                    if inst is not None and words[1] == inst.inv:
                        self.units.try_restart(self.args.unit, "the head restarted after this instance started")
                elif words == ["BYE"]:
                    log("the head's watch is stopping; reconnecting")
                    return
                else:
                    raise ProtocolError(f"unknown message {' '.join(words)[:40]!r}")

    def stop(self) -> None:
        if self.sock is not None and self.channel is not None:
            self._send(self.sock, self.channel, "BYE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Keep a multi-node SGLang replica whole (qwen35-prov).")
    parser.add_argument("--unit", required=True, help="this node's server unit, e.g. qwen35-sglang-r0.service")
    parser.add_argument("--replica", type=int, required=True)
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--listen", type=host_port, metavar="HOST:PORT", help="head: where workers' watches connect")
    role.add_argument("--head", type=host_port, metavar="HOST:PORT", help="worker: the head's watch")
    parser.add_argument("--rank", type=int, default=0, help="worker: this node's rank")
    parser.add_argument("--secret-file", required=True,
                        help="root-only file with the secret every watch of the deployment holds")
    parser.add_argument("--state-file", default="", help="head: remember rank instances here (under /run)")
    parser.add_argument("--poll", type=float, default=POLL_SECONDS, help="seconds between unit state reads")
    parser.add_argument("--systemctl", default="systemctl", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    units = Units(args.systemctl)
    key = replica_key(read_secret(args.secret_file), args.replica)
    watch = Head(args, units, key) if args.listen else Worker(args, units, key)

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
