"""`down --purge-weights` deletes this model's published snapshot and nothing else: the model_weights role's purge
tasks, run by Ansible against this machine (local connection) on folders made here (the fan-out user is one that
does not exist here, so root's own authorized_keys is never touched). Reproduces issue 16's
`--revision ../../..` purge (which deleted the parent folder with a user's file in it) and its neighbours."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: model_weights
        tasks_from: purge.yml
"""
ORG_REPO = "Qwen/Qwen3.5-0.8B"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def purge(tmp_path: Path, weights: Path, revision: str = COMMIT, repo: str = ORG_REPO) -> subprocess.CompletedProcess:
    (tmp_path / "purge.yml").write_text(PLAYBOOK)
    extra = {"model_weights_dir": str(weights), "model_weights_repo": repo, "model_weights_revision": revision,
             "model_weights_fanout_key_dir": str(tmp_path / "fanout-keys"), "model_weights_fanout_user": "qwen35-no-such-user",
             "ansible_python_interpreter": sys.executable}
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False"}
    return subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), str(tmp_path / "purge.yml"),
                           "-e", json.dumps(extra)], capture_output=True, text=True, env=env, timeout=300)


def snapshot(weights: Path, *, marker: bool = True) -> Path:
    path = weights / ORG_REPO / COMMIT
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if marker:
        (path / ".qwen35-complete.json").write_text("{}")
    return path


@pytest.fixture
def weights(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (tmp_path / "users-file").write_text("keep me")
    return folder


def test_a_published_snapshot_goes_with_its_staging_leftovers_and_the_fanout_keys(tmp_path, weights):
    path = snapshot(weights)
    (weights / ORG_REPO / f".staging-{COMMIT}").mkdir()
    other = weights / ORG_REPO / ("f" * 40)
    other.mkdir()
    (tmp_path / "fanout-keys").mkdir()
    (tmp_path / "fanout-keys" / "id_ed25519").write_text("key")
    r = purge(tmp_path, weights)
    assert r.returncode == 0, r.stdout[-3000:]
    assert not path.exists() and not (weights / ORG_REPO / f".staging-{COMMIT}").exists()
    assert not (tmp_path / "fanout-keys").exists()
    assert other.is_dir() and (tmp_path / "users-file").read_text() == "keep me"   # another commit stays


@pytest.mark.parametrize("revision", ["../../..", "main", COMMIT + "/.."])
def test_a_revision_that_is_not_a_commit_is_refused(tmp_path, weights, revision):
    path = snapshot(weights)
    r = purge(tmp_path, weights, revision=revision)
    assert r.returncode != 0 and "refusing to purge" in r.stdout and "nothing was deleted" in r.stdout
    assert path.is_dir() and (tmp_path / "users-file").exists() and weights.is_dir()


@pytest.mark.parametrize("repo", ["../..", "Qwen/x/y"])
def test_a_repository_that_is_not_org_name_is_refused(tmp_path, weights, repo):
    snapshot(weights)
    r = purge(tmp_path, weights, repo=repo)
    assert r.returncode != 0 and "refusing to purge" in r.stdout
    assert (tmp_path / "users-file").exists() and (weights / ORG_REPO / COMMIT).is_dir()


def test_a_folder_without_the_completion_marker_is_refused(tmp_path, weights):
    path = snapshot(weights, marker=False)
    r = purge(tmp_path, weights)
    assert r.returncode != 0 and "has no completion marker" in r.stdout
    assert (path / "model.safetensors").exists()


def test_a_snapshot_that_links_out_of_the_weights_dir_is_refused(tmp_path, weights):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / ".qwen35-complete.json").write_text("{}")
    (weights / ORG_REPO).mkdir(parents=True)
    (weights / ORG_REPO / COMMIT).symlink_to(outside)
    r = purge(tmp_path, weights)
    assert r.returncode != 0 and "resolves to" in r.stdout and str(outside) in r.stdout
    assert (outside / ".qwen35-complete.json").exists()


def test_a_weights_dir_that_is_a_link_to_a_bigger_disk_is_fine(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "models").symlink_to(disk)
    path = snapshot(tmp_path / "models")
    r = purge(tmp_path, tmp_path / "models")
    assert r.returncode == 0, r.stdout[-3000:]
    assert not path.exists() and disk.is_dir()


def test_nothing_there_is_nothing_to_do(tmp_path, weights):
    r = purge(tmp_path, weights)
    assert r.returncode == 0, r.stdout[-3000:]
