"""The replica group watch (roles/sglang_server/files/qwen35-replica-watch.py) against a systemctl TEST DOUBLE.

A head watch and a worker watch run here as processes; units are files the double reads and writes
(tests/serving/systemctl_double.py). Checks the watch's one rule: every worker instance must be younger than
the head's instance, so a lost worker restarts the head, then every worker, and the group settles without loops.
The real thing (systemd, docker, the stand-in engine on two nodes) is in roles/sglang_server/molecule/default.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WATCH = REPO / "roles" / "sglang_server" / "files" / "qwen35-replica-watch.py"
DOUBLE = REPO / "tests" / "serving" / "systemctl_double.py"
SECRET = "s3cret-of-this-deployment-0123456789"


def load_watch():
    if "qwen35_replica_watch" not in sys.modules:
        spec = importlib.util.spec_from_file_location("qwen35_replica_watch", WATCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["qwen35_replica_watch"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One node's units (as the double's state files) and its watch process."""

    def __init__(self, root: Path, name: str):
        self.dir = root / name
        self.dir.mkdir()
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "watch.log"

    def unit(self, active: bool = True, started_ago: float = 0.0) -> str:
        inv = uuid.uuid4().hex
        (self.dir / "server.service.json").write_text(
            json.dumps({"active": active, "inv": inv, "start": time.monotonic() - started_ago}))
        return inv

    def inv(self) -> str:
        return json.loads((self.dir / "server.service.json").read_text())["inv"]

    def calls(self) -> list[str]:
        path = self.dir / "calls.log"
        return path.read_text().splitlines() if path.exists() else []

    def start(self, *args: str, secret: str = SECRET) -> None:
        env = {"SYSTEMCTL_DOUBLE_DIR": str(self.dir), "PATH": "/usr/bin:/bin"}
        secret_file = self.dir / "watch.key"
        secret_file.write_text(secret + "\n")
        self.proc = subprocess.Popen(
            [sys.executable, str(WATCH), "--unit", "server.service", "--replica", "0", "--poll", "0.2",
             "--systemctl", str(DOUBLE), "--secret-file", str(secret_file), *args],
            env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def until(predicate, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pair(tmp_path):
    head, worker = Node(tmp_path, "head"), Node(tmp_path, "worker")
    head.unit(started_ago=30)
    worker.unit(started_ago=20)  # joined after the head started, as ExecStartPre makes it
    port = free_port()
    head.start("--listen", f"127.0.0.1:{port}", "--state-file", str(tmp_path / "head-state.json"))
    worker.start("--head", f"127.0.0.1:{port}", "--rank", "1")
    until(lambda: "rank 1: server instance" in head.output(), what="the worker's first report")
    head.port = port
    yield head, worker
    worker.stop()
    head.stop()


def test_a_steady_group_is_left_alone(pair):
    head, worker = pair
    time.sleep(1.5)
    assert head.calls() == [] and worker.calls() == []


def test_a_lost_worker_restarts_the_head_then_the_worker_and_settles(pair):
    head, worker = pair
    worker.unit()  # the worker's engine died and systemd started a new instance
    until(lambda: head.calls() == ["try-restart server.service"], what="the head's restart")
    # the head's new instance is younger than the worker's: the worker is told to restart once
    until(lambda: worker.calls() == ["try-restart server.service"], what="the worker's restart")
    time.sleep(1.5)
    assert head.calls() == ["try-restart server.service"]
    assert worker.calls() == ["try-restart server.service"]
    assert "restarting replica 0 as a group" in head.output()


def test_a_head_restarted_by_systemd_restarts_the_workers_only(pair):
    head, worker = pair
    head.unit()  # the head crashed and systemd restarted it
    until(lambda: worker.calls() == ["try-restart server.service"], what="the worker's restart")
    time.sleep(1.5)
    assert head.calls() == []  # the worker's old instance predates the head's: no loop
    assert "predates the head's instance" in head.output()


def test_a_worker_that_reconnects_with_the_same_instance_changes_nothing(pair, tmp_path):
    head, worker = pair
    worker.stop()  # the watch restarts (say, the role updated it); the server keeps running
    port = int(next(a for a in head.proc.args if a.startswith("127.0.0.1:")).split(":")[1])
    worker.start("--head", f"127.0.0.1:{port}", "--rank", "1")
    until(lambda: head.output().count("watch connected") >= 2, what="the reconnection")
    time.sleep(1.5)
    assert head.calls() == [] and worker.calls() == []


def test_stopping_a_worker_replica_does_not_bounce_the_head(pair):
    head, worker = pair
    worker.stop()              # the target stops the watch first (it is ordered after the server)...
    worker.unit(active=False)  # ...then the server
    time.sleep(1.5)
    assert head.calls() == []
    assert "rank 1: watch disconnected" in head.output()


def test_a_worker_server_stopped_under_a_running_watch_restarts_the_head(pair):
    head, worker = pair
    worker.unit(active=False)  # the engine exits with the watch still running: the head lost a rank
    until(lambda: head.calls() == ["try-restart server.service"], what="the head's restart")
    time.sleep(1.0)
    assert worker.calls() == []  # try-restart never starts a unit that is not running


# --- peers that are not the replica's own watches (the network is not trusted) -----------------------------

class Peer:
    """A TCP client of the head's watch, speaking the protocol by hand (an attacker, or an honest peer)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def line(self) -> str:
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def closed_by_head(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(4096):
                    return True
        except (ConnectionError, OSError):
            return True

    def authenticate(self, rank: int, secret: str = SECRET):
        """The honest handshake; returns the session's Channel (worker side)."""
        watch = load_watch()
        key = watch.replica_key(secret.encode(), 0)
        nonce = self.line().split()[1]
        mine = "ab" * 16
        self.send(f"HELLO 0 {rank} {mine} {watch.mac(key, 'hello', nonce, mine, 0, rank)}")
        assert self.line().startswith("WELCOME ")
        return watch.Channel(key, f"{nonce}:{mine}", mine="worker", theirs="head")


def test_unauthenticated_lines_restart_nothing_and_the_watch_keeps_running(pair):
    head, worker = pair
    forged = Peer(head.port)
    assert forged.line().startswith("CHALLENGE ")
    forged.send("HELLO 0 1")                   # the old protocol's three lines
    forged.send("STATE x 0.5")
    forged.send("STATE - -")
    assert forged.closed_by_head()
    time.sleep(1.0)
    assert head.calls() == [] and worker.calls() == []
    assert head.proc.poll() is None
    assert "expected HELLO REPLICA RANK NONCE MAC" in head.output()


def test_a_peer_with_another_key_is_refused(pair):
    head, worker = pair
    peer = Peer(head.port)
    with pytest.raises((ConnectionError, AssertionError, OSError)):
        peer.authenticate(rank=1, secret="not-the-deployment-secret-xyz")
    time.sleep(1.0)
    assert head.calls() == [] and worker.calls() == []
    assert "MAC does not verify" in head.output()


def test_a_long_line_without_newline_is_cut_off(pair):
    head, worker = pair
    peer = Peer(head.port)
    peer.line()
    try:
        for _ in range(200):                   # 800 KiB; the head stops reading after 512 bytes
            peer.sock.sendall(b"x" * 4096)
    except OSError:
        pass                                   # the head closed the connection while we were still sending
    assert peer.closed_by_head()
    assert "a line longer than 512 bytes" in head.output()
    assert head.proc.poll() is None


def test_malformed_and_replayed_lines_end_only_that_connection(pair):
    head, worker = pair
    peer = Peer(head.port)
    channel = peer.authenticate(rank=2)
    peer.send(channel.seal("STATE " + "c" * 32 + " notanumber"))
    assert peer.closed_by_head()
    assert "an age that is not a number" in head.output()

    peer = Peer(head.port)
    channel = peer.authenticate(rank=2)
    line = channel.seal("STATE - -")
    peer.send(line)
    peer.send(line)                            # the same line again: its sequence number is stale
    assert peer.closed_by_head()
    assert "expected 2" in head.output()
    time.sleep(1.0)
    assert head.proc.poll() is None and worker.proc.poll() is None
    assert head.calls() == [] and worker.calls() == []


def test_too_many_connections_are_refused_and_unauthenticated_ones_time_out(pair):
    head, worker = pair
    watch = load_watch()
    peers = [Peer(head.port) for _ in range(watch.MAX_CONNECTIONS + 3)]
    until(lambda: "connections already open" in head.output(), what="the refusal")
    until(lambda: f"did not authenticate within {watch.AUTH_SECONDS:.0f} s" in head.output(),
          timeout=watch.AUTH_SECONDS + 10, what="the timeout")
    for p in peers:
        p.sock.close()
    assert head.calls() == [] and worker.calls() == []
    assert head.proc.poll() is None
