"""The node-side weights downloader (roles/model_weights/files/qwen35_weights.py) against the local hub.

The hub is a TEST DOUBLE (tests/hub) that the real huggingface_hub client talks to; everything else is the
code the nodes run. Fast paths are shown with the downloader's counters and the hub's request log, not timers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sshd_server
import weights_script as weights
from tests.hub import HubStore, LocalHub, downloads_by_file, generate_repo, max_concurrent_downloads

REPO = "Qwen/Qwen3.5-Test"
SCRIPT = str(weights.SCRIPT)
TOKEN = "hf_q35w_TEST_DOUBLE_token_3b1f"


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    commit = generate_repo(root, REPO, size_mb=4, shards=4)
    big = generate_repo(root, "Qwen/Qwen3.5-Big", size_mb=48, shards=2)  # 24 MB shards
    return root, commit, big


@pytest.fixture(autouse=True)
def _hf_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")


def quiet(_msg: str) -> None:
    pass


def listing(root, repo, commit):
    return HubStore(root).listing(repo, commit)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def run_cli(*args, stdin: str | None = None, env: dict | None = None, timeout: float = 120):
    return subprocess.run([sys.executable, SCRIPT, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# ------------------------------------------------------------------------------------------ download

def test_fetch_publishes_a_verified_snapshot_and_reads_each_file_once(hub_root, tmp_path):
    root, commit, _ = hub_root
    dest = tmp_path / "models"
    with LocalHub(root, cdn=True) as hub:
        result = weights.fetch(REPO, commit, dest, endpoint=hub.url, workers=4, log=quiet)
        reqs = hub.requests
    files = listing(root, REPO, commit)
    snap = dest / REPO / commit
    assert result.status == "fetched" and Path(result.path) == snap
    assert result.counters["files_downloaded"] == len(files)
    assert result.counters["bytes_downloaded"] == sum(f.size for f in files.values())
    for path, f in files.items():
        assert sha256(snap / path) == f.sha256
    marker = json.loads((snap / weights.MARKER).read_text())
    assert marker["commit"] == commit and marker["repo"] == REPO
    assert {e["path"]: (e["size"], e["sha256"]) for e in marker["files"]} == \
        {p: (f.size, f.sha256) for p, f in files.items()}
    assert all({"mtime_ns", "ino"} <= set(e) for e in marker["files"])
    # each file downloaded exactly once; one listing call; nothing left in staging
    assert {p: d["gets"] for p, d in downloads_by_file(reqs).items()} == {p: 1 for p in files}
    assert sum(1 for r in reqs if r.kind == "api" and "/revision/" in r.path) == 1
    assert sorted(p.name for p in (dest / REPO).iterdir() if not p.name.startswith(".lock-")) == [commit]


def test_workers_download_files_in_parallel(hub_root, tmp_path):
    root, commit, _ = hub_root
    with LocalHub(root, mbps=24) as hub:  # slow enough for the shards' downloads to overlap
        weights.fetch(REPO, commit, tmp_path / "m", endpoint=hub.url, workers=4, log=quiet)
        parallel = max_concurrent_downloads(hub.requests)
    with LocalHub(root, mbps=24) as hub:
        weights.fetch(REPO, commit, tmp_path / "m1", endpoint=hub.url, workers=1, log=quiet)
        serial = max_concurrent_downloads(hub.requests)
    assert parallel >= 3
    assert serial == 1


def test_rerun_on_a_complete_pinned_snapshot_is_stat_only_and_never_asks_the_hub(hub_root, tmp_path):
    root, commit, _ = hub_root
    dest = tmp_path / "models"
    with LocalHub(root) as hub:
        weights.fetch(REPO, commit, dest, endpoint=hub.url, log=quiet)
        hub.clear()
        again = weights.fetch(REPO, commit, dest, endpoint=hub.url, log=quiet)
        assert hub.requests == []
    n = len(listing(root, REPO, commit))
    assert again.status == "present"
    assert again.counters["files_stat_trusted"] == n
    assert again.counters["files_hashed"] == 0 and again.counters["bytes_hashed"] == 0
    assert again.counters["bytes_downloaded"] == 0
    full = weights.check_snapshot(dest / REPO / commit, full=True)
    assert full.complete and full.counters["files_hashed"] == n


def test_a_branch_is_refused_unless_allowed_then_resolved_once_and_linked(hub_root, tmp_path):
    root, commit, _ = hub_root
    dest = tmp_path / "models"
    with LocalHub(root) as hub:
        with pytest.raises(weights.UsageError, match="not a commit id"):
            weights.fetch(REPO, "main", dest, endpoint=hub.url, log=quiet)
        assert hub.requests == []  # refused before asking anything
        r = weights.fetch(REPO, "main", dest, endpoint=hub.url, allow_unpinned=True, log=quiet)
    assert r.commit == commit and r.revision == "main"
    link = dest / REPO / "main"
    assert link.is_symlink() and os.readlink(link) == commit
    assert weights.snapshot_status(dest, REPO, "main").complete
    cli = run_cli("status", "--root", str(dest), "--repo", REPO, "--revision", "main")
    assert json.loads(cli.stdout)["complete"] is True


# --------------------------------------------------------------------------- interruption and resume

def test_killed_mid_file_resumes_with_a_range_request_and_is_never_published_partial(hub_root, tmp_path):
    root, _, big = hub_root
    dest = tmp_path / "models"
    log_path = tmp_path / "hub.jsonl"
    shards = sorted((f for f in listing(root, "Qwen/Qwen3.5-Big", big).values() if f.lfs and f.size > 1e6),
                    key=lambda f: f.path)
    # huggingface_hub writes in 10 MiB pieces: wait for one, kill, and the rest must come by a Range request
    with LocalHub(root, mbps=64, log_path=log_path) as hub:  # 8 MB/s shared: each 24 MB shard takes ~6 s
        proc = subprocess.Popen([sys.executable, SCRIPT, "fetch", "--root", str(dest), "--repo", "Qwen/Qwen3.5-Big",
                                 "--revision", big, "--endpoint", hub.url, "--workers", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        part_dir = weights.staging_dir(dest, "Qwen/Qwen3.5-Big", big) / weights.INCOMPLETE
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = [p for p in part_dir.glob("*.safetensors") if p.stat().st_size >= 10 << 20] if part_dir.exists() else []
            if parts:
                break
            time.sleep(0.05)
        assert parts, "the download never got going"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # killed: the commit's directory does not exist, status says so; the partial bytes are in staging
        assert not (dest / "Qwen/Qwen3.5-Big" / big).exists()
        assert weights.snapshot_status(dest, "Qwen/Qwen3.5-Big", big).complete is False
        partial = {p.name: p.stat().st_size for p in part_dir.glob("*.safetensors")}
        assert any(0 < n < shards[0].size for n in partial.values())
        first_run = len(hub.requests)
        hub.set_rate(None)
        result = weights.fetch("Qwen/Qwen3.5-Big", big, dest, endpoint=hub.url, log=quiet)
        second = hub.requests[first_run:]
    assert result.status == "fetched"
    assert result.counters["bytes_resumed"] == sum(partial.values())
    resumed = [r for r in second if r.kind == "resolve" and r.method == "GET" and r.range_start]
    assert {r.file: r.range_start for r in resumed} == {n: s for n, s in partial.items() if s > 0}
    for r in resumed:  # the second run fetched only what was missing
        assert r.bytes_sent == next(f.size for f in shards if f.path == r.file) - r.range_start
    for f in listing(root, "Qwen/Qwen3.5-Big", big).values():
        assert sha256(dest / "Qwen/Qwen3.5-Big" / big / f.path) == f.sha256


# ------------------------------------------------------------------------------------------ corruption

def test_a_flipped_byte_in_a_published_snapshot_is_detected_and_only_that_file_fetched_again(hub_root, tmp_path):
    root, commit, _ = hub_root
    dest = tmp_path / "models"
    files = listing(root, REPO, commit)
    victim = sorted(p for p, f in files.items() if f.lfs and f.size > 100_000)[1]
    with LocalHub(root) as hub:
        weights.fetch(REPO, commit, dest, endpoint=hub.url, log=quiet)
        flip_byte(dest / REPO / commit / victim, 4096)
        st = weights.check_snapshot(dest / REPO / commit)
        assert not st.complete and st.bad_files == [victim]
        hub.clear()
        r = weights.fetch(REPO, commit, dest, endpoint=hub.url, log=quiet)
        fetched = downloads_by_file(hub.requests)
    assert r.status == "repaired"
    assert set(fetched) == {victim} and fetched[victim]["bytes"] == files[victim].size
    assert r.counters["files_refetched"] == 1
    assert r.counters["files_hashed"] == 1          # only the file whose stat changed was re-hashed
    assert r.counters["files_stat_trusted"] >= len(files) - 1
    assert sha256(dest / REPO / commit / victim) == files[victim].sha256
    assert weights.check_snapshot(dest / REPO / commit, full=True).complete


def test_silent_corruption_with_mtime_kept_needs_verify_full(hub_root, tmp_path):
    root, commit, _ = hub_root
    dest = tmp_path / "models"
    files = listing(root, REPO, commit)
    victim = sorted(p for p, f in files.items() if f.lfs and f.size > 100_000)[0]
    with LocalHub(root) as hub:
        weights.fetch(REPO, commit, dest, endpoint=hub.url, log=quiet)
        path = dest / REPO / commit / victim
        st = path.stat()
        flip_byte(path, 123)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # bit rot: same size, inode and mtime
        fast = weights.fetch(REPO, commit, dest, endpoint=hub.url, log=quiet)
        assert fast.status == "present"   # what the fast path trades: it trusts unchanged stat
        full = weights.fetch(REPO, commit, dest, endpoint=hub.url, verify="full", log=quiet)
    assert full.status == "repaired" and full.counters["files_refetched"] == 1
    assert sha256(path) == files[victim].sha256


def test_bytes_corrupted_in_transit_fail_the_digest_and_are_fetched_again(hub_root, tmp_path):
    root, commit, _ = hub_root
    files = listing(root, REPO, commit)
    victim = sorted(p for p, f in files.items() if f.lfs and f.size > 100_000)[0]
    with LocalHub(root) as hub:
        hub.corrupt_next(files[victim].sha256, offset=777)
        r = weights.fetch(REPO, commit, tmp_path / "m", endpoint=hub.url, log=quiet)
        fetched = downloads_by_file(hub.requests)
    assert r.status == "fetched" and r.counters["digest_retries"] == 1
    assert fetched[victim]["gets"] == 2
    assert sha256(tmp_path / "m" / REPO / commit / victim) == files[victim].sha256


# ---------------------------------------------------------------------------------------- disk space

def test_not_enough_disk_space_is_refused_before_any_byte_is_fetched(hub_root, tmp_path, monkeypatch):
    root, commit, _ = hub_root
    impl = sys.modules["qwen35_weights"]
    real = impl.shutil.disk_usage

    def small_disk(path):  # TEST DOUBLE of a nearly full filesystem
        u = real(path)
        return type(u)(u.total, u.total - 1_000_000, 1_000_000)

    with LocalHub(root) as hub:
        monkeypatch.setattr(impl.shutil, "disk_usage", small_disk)
        with pytest.raises(weights.DiskSpaceError, match="not enough disk space"):
            weights.fetch(REPO, commit, tmp_path / "m", endpoint=hub.url, log=quiet)
        assert [r for r in hub.requests if r.kind in ("resolve", "cdn")] == []
    assert not weights.staging_dir(tmp_path / "m", REPO, commit).exists()


def test_cli_refuses_with_exit_3_when_the_reserve_cannot_be_kept(hub_root, tmp_path):
    root, commit, _ = hub_root
    with LocalHub(root) as hub:
        r = run_cli("fetch", "--root", str(tmp_path / "m"), "--repo", REPO, "--revision", commit,
                    "--endpoint", hub.url, "--reserve-gb", "1000000")
        assert [x for x in hub.requests if x.kind in ("resolve", "cdn")] == []
    assert r.returncode == 3, r.stderr
    assert "not enough disk space" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------- token

def test_token_goes_to_the_hub_only_never_to_argv_logs_files_or_the_cdn(hub_root, tmp_path):
    root, commit, _ = hub_root
    dest = tmp_path / "models"
    with LocalHub(root, token=TOKEN, cdn=True, mbps=40) as hub:
        proc = subprocess.Popen([sys.executable, SCRIPT, "fetch", "--root", str(dest), "--repo", REPO, "--revision",
                                 commit, "--endpoint", hub.url, "--stdin-json"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdin.write(json.dumps({"token": TOKEN}))
        proc.stdin.close()
        argvs = []
        while proc.poll() is None:
            try:
                argvs.append(Path(f"/proc/{proc.pid}/cmdline").read_bytes())
            except FileNotFoundError:
                break
            time.sleep(0.02)
        out, err = proc.stdout.read(), proc.stderr.read()
        reqs = hub.requests
    assert proc.returncode == 0, err
    assert argvs and all(TOKEN.encode() not in a for a in argvs)
    assert TOKEN not in out and TOKEN not in err
    hub_side = [r for r in reqs if r.kind in ("api", "resolve") and r.status < 400]
    assert hub_side and all(r.authorized for r in hub_side)
    cdn = [r for r in reqs if r.kind == "cdn"]
    assert cdn and not any(r.authorized for r in cdn)
    for p in dest.rglob("*"):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p


def test_a_wrong_token_fails_in_one_line_without_the_token(hub_root, tmp_path):
    root, commit, _ = hub_root
    wrong = "hf_wrong_TEST_DOUBLE_value_91c2"
    with LocalHub(root, token=TOKEN) as hub:
        r = run_cli("fetch", "--root", str(tmp_path / "m"), "--repo", REPO, "--revision", commit,
                    "--endpoint", hub.url, env={"HF_TOKEN": wrong})
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and wrong not in r.stderr + r.stdout
    assert "401" in r.stderr or "Repository Not Found" in r.stderr or "RepoNotFound" in r.stderr, r.stderr


# --------------------------------------------------------------------------------------- peer copy

def test_pull_copies_a_peer_snapshot_verifies_it_and_never_asks_the_hub(hub_root, tmp_path):
    root, commit, _ = hub_root
    with LocalHub(root) as hub:
        weights.fetch(REPO, commit, tmp_path / "a", endpoint=hub.url, log=quiet)
        hub.clear()
        manifest = weights.Manifest.from_dict(weights.read_marker(tmp_path / "a" / REPO / commit))
        r = weights.pull(manifest, tmp_path / "b", str(tmp_path / "a" / REPO / commit), log=quiet)
        assert hub.requests == []
    n = len(listing(root, REPO, commit))
    assert r.status == "pulled" and r.counters["files_downloaded"] == n and r.counters["files_hashed"] == n
    st = weights.check_snapshot(tmp_path / "b" / REPO / commit, full=True)
    assert st.complete
    again = weights.pull(manifest, tmp_path / "b", str(tmp_path / "a" / REPO / commit), log=quiet)
    assert again.status == "present" and again.counters["files_hashed"] == 0


def test_pull_refuses_to_publish_bytes_that_differ_from_the_manifest(hub_root, tmp_path):
    root, commit, _ = hub_root
    with LocalHub(root) as hub:
        weights.fetch(REPO, commit, tmp_path / "a", endpoint=hub.url, log=quiet)
    src = tmp_path / "a" / REPO / commit
    manifest = weights.Manifest.from_dict(weights.read_marker(src))
    victim = next(f.path for f in manifest.files if f.lfs and f.size > 100_000)
    flip_byte(src / victim, 10)
    with pytest.raises(weights.VerificationError, match=victim):
        weights.pull(manifest, tmp_path / "b", str(src), log=quiet)
    assert not (tmp_path / "b" / REPO / commit).exists()
    # the good files stay verified in staging; once the source is repaired only the bad one is copied
    flip_byte(src / victim, 10)
    r = weights.pull(manifest, tmp_path / "b", str(src), log=quiet)
    assert r.status == "pulled" and r.counters["files_downloaded"] == 1


def test_pull_resumes_a_partial_copy(hub_root, tmp_path):
    root, _, big = hub_root
    repo = "Qwen/Qwen3.5-Big"
    with LocalHub(root) as hub:
        weights.fetch(repo, big, tmp_path / "a", endpoint=hub.url, log=quiet)
    src = tmp_path / "a" / repo / big
    manifest = weights.Manifest.from_dict(weights.read_marker(src))
    shard = next(f for f in manifest.files if f.lfs and f.size > 1e6)
    partial = weights.staging_dir(tmp_path / "b", repo, big) / weights.INCOMPLETE / shard.path
    partial.parent.mkdir(parents=True)
    partial.write_bytes((src / shard.path).read_bytes()[: shard.size // 2])   # a copy cut off half way
    r = weights.pull(manifest, tmp_path / "b", str(src), log=quiet)
    assert r.status == "pulled" and r.counters["bytes_resumed"] == shard.size // 2
    assert weights.check_snapshot(tmp_path / "b" / repo / big, full=True).complete


def test_pull_cli_takes_the_manifest_on_stdin(hub_root, tmp_path):
    root, commit, _ = hub_root
    with LocalHub(root) as hub:
        weights.fetch(REPO, commit, tmp_path / "a", endpoint=hub.url, log=quiet)
    marker = weights.read_marker(tmp_path / "a" / REPO / commit)
    r = run_cli("pull", "--root", str(tmp_path / "b"), "--source", str(tmp_path / "a" / REPO / commit) + "/",
                "--stdin-json", stdin=json.dumps({"manifest": marker}))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "pulled" and out["commit"] == commit


# ---------------------------------------------------------------------------------- schedule, safety

def test_pull_follow_copies_while_the_peer_still_downloads_and_ends_right_after_it(hub_root, tmp_path):
    root, _, big = hub_root
    repo = "Qwen/Qwen3.5-Big"
    with LocalHub(root, mbps=48) as hub:  # 6 MB/s: the stager's download takes ~8 s
        manifest = weights.hub_manifest(repo, big, endpoint=hub.url)   # the hub's listing: no sha256 for small files
        hub.clear()
        stager = subprocess.Popen([sys.executable, SCRIPT, "fetch", "--root", str(tmp_path / "a"), "--repo", repo,
                                   "--revision", big, "--endpoint", hub.url, "--workers", "1"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        r = weights.pull(manifest, tmp_path / "b", str(tmp_path / "a" / repo / big), follow=True, poll=0.2,
                         stall_timeout=60, log=quiet)
        stager_rc = stager.wait(timeout=60)
        stager_done = time.time()
        reqs = hub.requests
    assert stager_rc == 0
    assert r.status == "pulled"
    assert r.counters["files_streamed"] >= 1          # copied from the stager's staging dir, before it published
    assert r.counters["files_downloaded"] == len(manifest.files)
    assert weights.check_snapshot(tmp_path / "b" / repo / big, full=True).complete
    assert set(downloads_by_file(reqs)) == {f.path for f in manifest.files}   # the hub served the stager only
    assert all(d["gets"] == 1 for d in downloads_by_file(reqs).values())
    assert time.time() - stager_done < 20


def test_pull_follow_gives_up_on_a_source_that_shows_no_life(hub_root, tmp_path):
    root, commit, _ = hub_root
    with LocalHub(root) as hub:
        manifest = weights.hub_manifest(REPO, commit, endpoint=hub.url)
    (tmp_path / "a" / REPO / f".staging-{commit}").mkdir(parents=True)   # a download that died: no heartbeat
    with pytest.raises(weights.WeightsError, match="no sign of a download or copy"):
        weights.pull(manifest, tmp_path / "b", str(tmp_path / "a" / REPO / commit), follow=True, poll=0.1,
                     stall_timeout=1.5, log=quiet)
    assert not (tmp_path / "b" / REPO / commit).exists()


def _as_still_downloading(root: Path, repo: str, commit: str) -> dict:
    """Turn a published snapshot back into what its downloader shows mid-way: every file verified in the staging
    dir's journal, a heartbeat, no marker. Returns the marker, for publishing it again."""
    final, stage = root / repo / commit, weights.staging_dir(root, repo, commit)
    marker = weights.read_marker(final)
    (final / weights.MARKER).unlink()
    final.rename(stage)
    (stage / weights.PROGRESS).write_text("".join(json.dumps({"path": e["path"]}) + "\n" for e in marker["files"]))
    (stage / weights.HEARTBEAT).write_text("1")
    return marker


@pytest.mark.skipif(sshd_server.available() is not None, reason=str(sshd_server.available()))
def test_pull_follow_over_ssh_survives_the_peer_publishing_between_two_looks(hub_root, tmp_path, monkeypatch):
    """The staged fan-out as the role runs it (real sshd, the key limited to `rrsync -ro`): the peer publishes its
    snapshot (its staging dir is renamed) right after the follower read its journal. The copy from the vanished
    staging dir fails on the sender, which the follower's rsync reports as exit 12; the follower must look again
    and copy from the published snapshot, not give up."""
    if not shutil.which("rrsync"):
        pytest.skip("rrsync (rsync 3.2.4+) is not installed")
    root, commit, _ = hub_root
    with LocalHub(root) as hub:
        weights.fetch(REPO, commit, tmp_path / "a", endpoint=hub.url, log=quiet)
    marker = _as_still_downloading(tmp_path / "a", REPO, commit)
    server = sshd_server.SshServer(tmp_path / "sshd", forced_command=f"{shutil.which('rrsync')} -ro {tmp_path / 'a'}")
    server.start()
    rsh = (f"ssh -i {server.client_key} -p {server.port} -o BatchMode=yes -o StrictHostKeyChecking=yes "
           f"-o UserKnownHostsFile={server.known_hosts}")
    script = sys.modules["qwen35_weights"]
    real_rsync, calls = script._rsync, []

    def rsync_then_publish(argv, src, dest, *a, **kw):
        proc = real_rsync(argv, src, dest, *a, **kw)
        calls.append((src, proc.returncode, proc.stderr))
        if src.endswith(weights.PROGRESS) and (tmp_path / "a" / REPO / f".staging-{commit}").exists():
            stage = weights.staging_dir(tmp_path / "a", REPO, commit)
            for name in (weights.PROGRESS, weights.HEARTBEAT):
                (stage / name).unlink()
            stage.rename(tmp_path / "a" / REPO / commit)
            (tmp_path / "a" / REPO / commit / weights.MARKER).write_text(json.dumps(marker))
        return proc

    monkeypatch.setattr(script, "_rsync", rsync_then_publish)
    try:
        r = weights.pull(weights.Manifest.from_dict(marker), tmp_path / "b", f"root@127.0.0.1:{REPO}/{commit}/",
                         rsh=rsh, follow=True, poll=0.1, stall_timeout=30, log=quiet)
    finally:
        server.stop()
    moved = [c for c in calls if f".staging-{commit}/" in c[0] and c[1] != 0]
    assert moved and moved[0][1] == 12          # the failure seen on the sandbox (the remote side gave up)
    assert r.status == "pulled" and r.counters["files_downloaded"] == len(marker["files"])
    assert weights.check_snapshot(tmp_path / "b" / REPO / commit, full=True).complete


def test_pull_follow_gives_up_when_copies_from_a_live_peer_keep_failing(hub_root, tmp_path):
    root, commit, _ = hub_root
    with LocalHub(root) as hub:
        weights.fetch(REPO, commit, tmp_path / "a", endpoint=hub.url, log=quiet)
    marker = _as_still_downloading(tmp_path / "a", REPO, commit)
    (weights.staging_dir(tmp_path / "a", REPO, commit) / "config.json").unlink()   # listed as verified, not there
    with pytest.raises(weights.WeightsError, match=r"failed \(exit 23\)"):
        weights.pull(weights.Manifest.from_dict(marker), tmp_path / "b", str(tmp_path / "a" / REPO / commit),
                     follow=True, poll=0.05, stall_timeout=60, log=quiet)
    assert not (tmp_path / "b" / REPO / commit).exists()


@pytest.mark.parametrize("n", range(1, 18))
def test_fanout_tree_sources_come_first_and_no_host_serves_more_than_log2_n(n):
    hosts = [f"h{i}" for i in range(n)]
    sources = weights.fanout_sources(hosts)
    assert set(sources) == set(hosts[1:])
    depth = {hosts[0]: 0}
    for h in hosts[1:]:
        assert hosts.index(sources[h]) < hosts.index(h)
        depth[h] = depth[sources[h]] + 1
    bound = (n - 1).bit_length()
    assert max(depth.values()) <= bound
    assert all(list(sources.values()).count(h) <= bound for h in hosts)


@pytest.mark.parametrize("n", range(1, 10))
def test_fanout_rounds_double_the_holders_each_round(n):
    hosts = [f"h{i}" for i in range(n)]
    rounds = weights.fanout_rounds(hosts)
    assert len(rounds) == (n - 1).bit_length()
    have = {"h0"}
    for k, r in enumerate(rounds, start=1):
        dests = [d for d, _ in r]
        assert all(s in have for _, s in r) and not (set(dests) & have)
        assert len({s for _, s in r}) == len(r)   # each holder serves at most one copy per round
        have |= set(dests)
        assert len(have) == min(2 ** k, n)
    assert have == set(hosts)


def test_a_manifest_with_a_path_outside_the_snapshot_is_refused():
    bad = {"format": "qwen35-weights-manifest/1", "repo": REPO, "revision": "a" * 40, "commit": "a" * 40,
           "files": [{"path": "../../etc/cron.d/x", "size": 1, "sha256": "0" * 64}]}
    with pytest.raises(weights.UsageError, match="plain relative path"):
        weights.Manifest.from_dict(bad)


def test_a_second_process_on_the_same_commit_is_refused_while_the_first_holds_the_lock(hub_root, tmp_path):
    root, commit, _ = hub_root
    impl = sys.modules["qwen35_weights"]
    with impl.commit_lock(tmp_path / "m", REPO, commit):
        r = run_cli("fetch", "--root", str(tmp_path / "m"), "--repo", REPO, "--revision", commit,
                    "--endpoint", "http://127.0.0.1:9")
    assert r.returncode == 4 and "another process" in r.stderr
