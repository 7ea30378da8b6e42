"""The local hub (TEST DOUBLE) speaks the protocol the real huggingface_hub client uses.

If these fail, the weights tests would be testing against a hub that the client does not recognise.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.hub import HubStore, LocalHub, downloads_by_file, generate_repo

REPO = "Qwen/Qwen3.5-Test"


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    commit = generate_repo(root, REPO, size_mb=2, shards=2)
    return root, commit


def _client(monkeypatch, url):
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    import huggingface_hub
    return huggingface_hub


def test_model_info_with_files_metadata_lists_sizes_blob_ids_and_lfs_sha256(hub_root, monkeypatch):
    root, commit = hub_root
    listing = HubStore(root).listing(REPO, commit)
    with LocalHub(root) as hub:
        hf = _client(monkeypatch, hub.url)
        api = hf.HfApi(endpoint=hub.url)
        info = api.model_info(REPO, revision="main", files_metadata=True)
        plain = api.model_info(REPO, revision=commit)
    assert info.sha == commit
    assert {s.rfilename for s in info.siblings} == set(listing)
    for s in info.siblings:
        f = listing[s.rfilename]
        assert s.blob_id == f.blob_id
        if f.lfs:
            assert s.lfs is not None and s.lfs.sha256 == f.sha256 and s.lfs.size == f.size
        else:
            assert s.lfs is None and s.size == f.size
    assert {s.rfilename for s in info.siblings if s.lfs} == {p for p in listing if p.endswith(".safetensors")} | {"tokenizer.json"}
    # without files_metadata the hub answers names only, like the real one
    assert all(s.size is None and s.lfs is None for s in plain.siblings)


def test_hf_hub_download_and_snapshot_download_fetch_the_generated_bytes(hub_root, monkeypatch, tmp_path):
    root, commit = hub_root
    store = HubStore(root)
    with LocalHub(root, cdn=True) as hub:
        hf = _client(monkeypatch, hub.url)
        one = hf.hf_hub_download(REPO, "config.json", revision=commit, cache_dir=tmp_path / "cache",
                                 endpoint=hub.url)
        snap = hf.snapshot_download(REPO, revision=commit, local_dir=tmp_path / "snap", endpoint=hub.url)
    assert Path(one).read_bytes() == store.blob_path(store.listing(REPO, commit)["config.json"].sha256).read_bytes()
    for path, f in store.listing(REPO, commit).items():
        assert hashlib.sha256((Path(snap) / path).read_bytes()).hexdigest() == f.sha256


def test_resolve_headers_carry_commit_etags_and_sizes_and_never_xet(hub_root, monkeypatch):
    root, commit = hub_root
    listing = HubStore(root).listing(REPO, commit)
    shard = next(f for f in listing.values() if f.lfs)
    with LocalHub(root) as hub:
        hf = _client(monkeypatch, hub.url)
        lfs_meta = hf.get_hf_file_metadata(hf.hf_hub_url(REPO, shard.path, revision="main", endpoint=hub.url))
        txt_meta = hf.get_hf_file_metadata(hf.hf_hub_url(REPO, "config.json", revision=commit, endpoint=hub.url))
        with urllib.request.urlopen(urllib.request.Request(
                f"{hub.url}/{REPO}/resolve/{commit}/{shard.path}", method="HEAD")) as r:
            headers = dict(r.headers)
    assert (lfs_meta.commit_hash, lfs_meta.etag, lfs_meta.size) == (commit, shard.sha256, shard.size)
    assert (txt_meta.etag, txt_meta.size) == (listing["config.json"].blob_id, listing["config.json"].size)
    assert lfs_meta.xet_file_data is None and txt_meta.xet_file_data is None
    assert not [h for h in headers if h.lower().startswith("x-xet")]
    assert headers["X-Linked-Size"] == str(shard.size) and headers["Accept-Ranges"] == "bytes"


def test_range_requests_answer_206_with_content_range(hub_root):
    root, commit = hub_root
    store = HubStore(root)
    shard = next(f for f in store.listing(REPO, commit).values() if f.lfs)
    data = store.blob_path(shard.sha256).read_bytes()
    with LocalHub(root) as hub:
        req = urllib.request.Request(f"{hub.url}/{REPO}/resolve/{commit}/{shard.path}", headers={"Range": "bytes=1000-"})
        with urllib.request.urlopen(req) as r:
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes 1000-{shard.size - 1}/{shard.size}"
            assert r.read() == data[1000:]
        log = hub.requests
    assert log[-1].range_start == 1000 and log[-1].bytes_sent == shard.size - 1000


def test_token_is_required_when_set_and_the_cdn_needs_a_signature_not_the_token(hub_root, monkeypatch):
    root, commit = hub_root
    with LocalHub(root, token="hf_test_double", cdn=True) as hub:
        hf = _client(monkeypatch, hub.url)
        with pytest.raises(hf.errors.HfHubHTTPError):
            hf.HfApi(endpoint=hub.url, token=False).model_info(REPO, revision=commit)
        info = hf.HfApi(endpoint=hub.url, token="hf_test_double").model_info(REPO, revision=commit)
        assert info.sha == commit
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{hub.url.replace('127.0.0.1', 'localhost')}/cdn/{'0' * 64}?exp=9999999999&sig=x")
        assert e.value.code == 403


def test_generated_shards_are_valid_safetensors_and_the_index_maps_every_tensor(hub_root):
    root, commit = hub_root
    store = HubStore(root)
    listing = store.listing(REPO, commit)
    index = json.loads(store.blob_path(listing["model.safetensors.index.json"].sha256).read_bytes())
    seen: dict[str, str] = {}
    data_bytes = 0
    for path, f in listing.items():
        if not path.endswith(".safetensors"):
            continue
        raw = store.blob_path(f.sha256).read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        body = len(raw) - 8 - n
        ends = []
        for name, t in header.items():
            if name == "__metadata__":
                continue
            assert t["dtype"] == "BF16"
            start, end = t["data_offsets"]
            assert end - start == t["shape"][0] * t["shape"][1] * 2
            ends.append(end)
            seen[name] = path
        assert max(ends) == body
        data_bytes += body
    assert seen == index["weight_map"]
    assert index["metadata"]["total_size"] == data_bytes
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        json.loads(store.blob_path(listing[name].sha256).read_bytes())


def test_bandwidth_cap_is_shared_by_all_connections(hub_root, monkeypatch, tmp_path):
    """The cap models a site's uplink: two parallel downloads together get the capped rate, not twice it."""
    root, commit = hub_root
    shards = [f for f in HubStore(root).listing(REPO, commit).values() if f.lfs and f.size > 100_000]
    total = sum(f.size for f in shards)
    mbps = 8.0  # 1 MB/s
    with LocalHub(root, mbps=mbps) as hub:
        hf = _client(monkeypatch, hub.url)
        start = time.monotonic()
        hf.snapshot_download(REPO, revision=commit, local_dir=tmp_path / "s", endpoint=hub.url,
                             allow_patterns=["*.safetensors"], max_workers=4)
        elapsed = time.monotonic() - start
        served = sum(d["bytes"] for d in downloads_by_file(hub.requests).values())
    assert served == total
    assert elapsed >= 0.9 * total / (mbps * 1e6 / 8)
