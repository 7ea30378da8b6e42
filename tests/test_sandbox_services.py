"""The sandbox's stand-in services end with their sandbox: a service left running would hold its fixed port on
the network's gateway against the next sandbox that gets the same address (found with the local hub, whose
SIGTERM went unseen while its main thread waited)."""

import sys
import time

from qwen35_prov.sandbox import services


def _start(tmp_path, name, argv):
    pid = services._start_detached(argv, tmp_path / f"{name}.log", tmp_path / f"{name}.pid")
    return pid, tmp_path / f"{name}.pid"

def test_the_local_hub_ends_on_sigterm(tmp_path):
    ready = tmp_path / "ready.json"
    pid, pid_file = _start(tmp_path, "hub", [sys.executable, "-m", "tests.hub", "serve", "--root", str(tmp_path),
                                            "--host", "127.0.0.1", "--port", "0", "--ready-file", str(ready)])
    deadline = time.monotonic() + 20
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists() and services._alive(pid)
    started = time.monotonic()
    assert services._stop(pid_file, grace=10) is True
    assert time.monotonic() - started < 5          # it ended on SIGTERM, not on the SIGKILL after the grace
    assert not services._alive(pid) and not pid_file.exists()

def test_a_service_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    pid, pid_file = _start(tmp_path, "stubborn", [sys.executable, "-c", "import signal, time; "
                                                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
    time.sleep(0.5)
    assert services._stop(pid_file, grace=1) is True
    assert not services._alive(pid)
    assert services._stop(pid_file) is False        # nothing left to stop
