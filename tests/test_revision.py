"""Which hub commit `up` deploys (qwen35_prov/revision.py): --revision, else the lock an earlier `up` recorded in
the inventory, else the catalog's pin, else the branch head resolved through the hub's API with the real
huggingface_hub client against the local hub (TEST DOUBLE, tests/hub); offline without a lock, a clear refusal
before any host is touched. The sandbox tests see `up` resolve, record and then reuse the lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qwen35_prov.errors import UserError
from qwen35_prov.deployment import WEIGHTS_VARS
from qwen35_prov.revision import choose_revision, locked_commit, resolve_commit
from tests.hub import LocalHub, generate_repo

REPO = Path(__file__).resolve().parents[1]
MODEL = "Qwen/Qwen3.5-397B-A17B"
OTHER = "f" * 40


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return root, generate_repo(root, MODEL, size_mb=0.1, shards=1)


def lock(inventory: Path, repo: str, commit: str) -> None:
    (inventory / WEIGHTS_VARS).parent.mkdir(parents=True, exist_ok=True)
    (inventory / WEIGHTS_VARS).write_text(yaml.safe_dump({"qwen35_model_repo": repo, "qwen35_model_revision": commit}))


def test_the_branch_head_is_resolved_through_the_hubs_api(hub_root, monkeypatch, tmp_path):
    root, commit = hub_root
    with LocalHub(root) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert resolve_commit(MODEL) == commit
        chosen = choose_revision(MODEL, given=None, update=False, catalog_pin=None, inventory=tmp_path)
        asked = [r.path for r in hub.requests]
    assert (chosen.commit, chosen.source) == (commit, "resolved")
    assert f"/api/models/{MODEL}/revision/main" in asked
    assert not [p for p in asked if "/resolve/" in p or "/tree/" in p]       # the commit only, no file


def test_a_lock_is_reused_without_asking_the_hub_until_update_moves_it(hub_root, monkeypatch, tmp_path):
    root, commit = hub_root
    lock(tmp_path, MODEL, OTHER)
    with LocalHub(root) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert choose_revision(MODEL, given=None, update=False, catalog_pin="e" * 40, inventory=tmp_path).source == "locked"
        assert hub.requests == []
        moved = choose_revision(MODEL, given=None, update=True, catalog_pin=None, inventory=tmp_path)
    assert (moved.commit, moved.source) == (commit, "resolved")
    given = choose_revision(MODEL, given="d" * 40, update=True, catalog_pin=None, inventory=tmp_path)
    assert (given.commit, given.source) == ("d" * 40, "given")


def test_a_lock_for_another_repository_or_a_branch_name_is_no_lock(tmp_path):
    lock(tmp_path, "Qwen/Qwen3.5-397B-A17B-FP8", OTHER)
    assert locked_commit(tmp_path, MODEL) is None
    lock(tmp_path, MODEL, "main")
    assert locked_commit(tmp_path, MODEL) is None
    assert choose_revision(MODEL, given=None, update=False, catalog_pin="c" * 40, inventory=tmp_path).source == "catalog"


def test_offline_without_a_lock_is_refused_with_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")      # nothing listens on the discard port
    with pytest.raises(UserError, match=r"cannot resolve Qwen/Qwen3\.5-397B-A17B@main .* pass --revision"):
        choose_revision(MODEL, given=None, update=False, catalog_pin=None, inventory=tmp_path)


def test_up_offline_without_a_revision_stops_before_any_host_is_touched(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "QWEN35_STATE_DIR": str(tmp_path / "state"),
           "HF_ENDPOINT": "http://127.0.0.1:9"}
    r = subprocess.run([sys.executable, "-m", "qwen35_prov", "up", "--cluster", "h100x16", "--fleet",
                        str(REPO / "inventories/examples/h100x16/fleet.yml")],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 2 and "pass --revision" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "state").exists()
