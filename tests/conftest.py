"""Sandbox clusters shared by the end-to-end tests of one pytest session, one per kind.

Creating a sandbox and rolling a deployment out on it take minutes, so the modules that need the same kind of
cluster share one (session-scoped fixtures), each test resetting what it must find fresh:
  h100x16_sandbox   the 2-node sandbox `h100x16` (tests/test_sandbox.py, then tests/test_rollout_sandbox.py
                    rolls it out; test_sandbox.py's last test destroys it)
  h200x8_deployed   the 1-node sandbox `h200x8` rolled out with `up --sandbox` (397b, one replica of TP 8: the
                    hardware of the published reference results): tests/test_bench_sandbox.py,
                    tests/test_probe_sandbox.py and the single-node checks of tests/test_rollout_sandbox.py; then
                    tests/test_upgrade_sandbox.py rolls it out again with 122b (two replicas and the router) and
                    upgrades its image, so it comes last
scripts/test runs the single-node clusters' tests (h200x8: bench, probe, the single-node check, upgrade; then
mi300x8) and the rest in two pytest processes side by side; each makes only the clusters its own tests ask for.
GPUs, vendor repositories, the hub and the inference engine are the sandbox's TEST DOUBLES (README).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwen35_prov import collection

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "qwen35_prov"]

# Every ansible-playbook a test starts finds this checkout as the collection qwen35.prov (its roles' filters and
# the gpu_facts module are addressed as qwen35.prov.NAME), as the CLI's runner and Molecule do.
os.environ["ANSIBLE_COLLECTIONS_PATH"] = collection.ansible_env()["ANSIBLE_COLLECTIONS_PATH"]
# Tests that load a plugin file by path (the gpu_facts module, the filters) import the collection's module_utils
# as Ansible's loader would: ansible_collections.qwen35.prov.plugins.module_utils.NAME.
sys.path.insert(0, str(collection.search_path()))


def install_wheel_in_fresh_venv(work: Path) -> tuple[Path, Path, dict[str, str]]:
    """Build this checkout's wheel and install it, with its dependencies from the package index, into a fresh
    virtual environment under WORK: (the wheel, the venv's bin folder, an environment without this checkout,
    the session's collection path or its virtual environment in it)."""
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(REPO)], check=True, capture_output=True, text=True)
    [wheel] = wheels.glob("qwen35_prov-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # PYTHONPATH (a worktree's run) would show pip this checkout's metadata as installed already
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONPATH", "VIRTUAL_ENV", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_ROLES_PATH")}
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True, text=True,
                          env=clean)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wheel, venv / "bin", {**clean, "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1"}


def run_cli(env: dict[str, str], *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


def standin_image(variant: str) -> dict[str, str]:
    """A variant of the stand-in engine image (TEST DOUBLE; tests/doubles/sglang_standin/build.py --variant
    next|broken): its reference, image ID and docker-archive tarball. `next` serves, `broken` never reports
    healthy."""
    out = subprocess.run([sys.executable, str(REPO / "tests/doubles/sglang_standin/build.py"), "--variant", variant,
                          "--json"], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def up_json(env: dict[str, str], cluster: str, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    r = run_cli(env, "up", "--cluster", cluster, "--sandbox", "--json", *extra)
    assert r.stdout, r.stderr[-3000:]
    return r, json.loads(r.stdout)


@pytest.fixture(scope="session")
def sandbox_env(tmp_path_factory) -> dict[str, str]:
    """The environment of every CLI call on the shared clusters: one state folder for the session."""
    return {**os.environ, "QWEN35_STATE_DIR": str(tmp_path_factory.mktemp("qwen35-state"))}


@pytest.fixture(scope="session")
def h100x16_sandbox():
    """`sandbox create --cluster h100x16 --json` on a fresh sandbox; destroyed at the end of the session."""
    from qwen35_prov.sandbox import destroy

    destroy("h100x16")
    created = run_cli(dict(os.environ), "sandbox", "create", "--cluster", "h100x16", "--json", timeout=900)
    if created.returncode != 0:
        destroy("h100x16")
        pytest.fail(f"sandbox create failed: {created.stderr[-3000:]}")
    try:
        yield json.loads(created.stdout)
    finally:
        destroy("h100x16")


@pytest.fixture(scope="session")
def h200x8_deployed(sandbox_env):
    """(up's result, its JSON summary, the inventory) of the rollout on the 1-node sandbox h200x8."""
    from qwen35_prov.sandbox import destroy

    destroy("h200x8")
    r, summary = up_json(sandbox_env, "h200x8")
    try:
        assert r.returncode == 0, summary.get("failures") or r.stderr[-3000:]
        yield r, summary, Path(summary["inventory"])
    finally:
        run_cli(sandbox_env, "down", "--cluster", "h200x8")
        destroy("h200x8")
