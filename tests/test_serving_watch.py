"""The replica group watch (roles/sglang_server/files/qwen35-replica-watch.py) against a systemctl TEST DOUBLE.

A head watch and a worker watch run here as processes; units are files the double reads and writes
(tests/serving/systemctl_double.py). Checks the watch's one rule: every worker instance must be younger than
the head's instance, so a lost worker restarts the head, then every worker, and the group settles without loops.
The real thing (systemd, docker, the stand-in engine on two nodes) is in roles/sglang_server/molecule/default.
"""

from __future__ import annotations

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

    def start(self, *args: str) -> None:
        env = {"SYSTEMCTL_DOUBLE_DIR": str(self.dir), "PATH": "/usr/bin:/bin"}
        self.proc = subprocess.Popen(
            [sys.executable, str(WATCH), "--unit", "server.service", "--replica", "0", "--poll", "0.2",
             "--systemctl", str(DOUBLE), *args],
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
