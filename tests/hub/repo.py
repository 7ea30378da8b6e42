"""Generated model repositories for the local test hub (TEST DOUBLE of the Hugging Face hub's storage).

A hub root holds content-addressed blobs and, per repository, one JSON listing per commit plus its refs:

  ROOT/blobs/<sha256>                          file contents
  ROOT/repos/<org>/<name>/commits/<commit>.json  {"files": [{"path", "size", "sha256", "blob_id", "lfs"}], ...}
  ROOT/repos/<org>/<name>/refs.json            {"main": "<commit>", ...}

`generate_repo` writes a small but real checkpoint layout: safetensors shards (valid headers, BF16 tensors
of random bytes), the `model.safetensors.index.json` that maps every tensor to its shard, `config.json`,
`generation_config.json`, tokenizer files, README.md and .gitattributes. LFS-tracked files (shards,
tokenizer.json) are listed with their LFS sha256 as the real hub does; the others with their git blob id.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import random
import struct
from dataclasses import dataclass
from pathlib import Path

LFS_PATTERNS = ("*.safetensors", "*.bin", "tokenizer.json")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def is_lfs(path: str) -> bool:
    return any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], pat) for pat in LFS_PATTERNS)


@dataclass
class HubFile:
    path: str
    size: int
    sha256: str
    blob_id: str
    lfs: bool

    def to_dict(self) -> dict:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "blob_id": self.blob_id,
                "lfs": self.lfs}


class HubStore:
    """Read/write access to a hub root (used by the generator, the server and the tests)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def repo_path(self, repo: str) -> Path:
        return self.root / "repos" / repo

    def put_blob(self, data: bytes) -> tuple[str, Path]:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha, path

    def add_file(self, path: str, data: bytes) -> HubFile:
        sha, _ = self.put_blob(data)
        lfs = is_lfs(path)
        blob_id = git_blob_id(lfs_pointer(sha, len(data)) if lfs else data)
        return HubFile(path=path, size=len(data), sha256=sha, blob_id=blob_id, lfs=lfs)

    def commit(self, repo: str, files: list[HubFile], branch: str = "main", salt: str = "") -> str:
        listing = sorted(files, key=lambda f: f.path)
        commit = hashlib.sha1(json.dumps([f.to_dict() for f in listing] + [salt], sort_keys=True).encode()).hexdigest()
        d = self.repo_path(repo)
        (d / "commits").mkdir(parents=True, exist_ok=True)
        (d / "commits" / f"{commit}.json").write_text(json.dumps(
            {"repo": repo, "commit": commit, "files": [f.to_dict() for f in listing]}, indent=1))
        refs = self.refs(repo)
        refs[branch] = commit
        (d / "refs.json").write_text(json.dumps(refs, indent=1))
        return commit

    def refs(self, repo: str) -> dict[str, str]:
        try:
            return json.loads((self.repo_path(repo) / "refs.json").read_text())
        except FileNotFoundError:
            return {}

    def resolve(self, repo: str, revision: str) -> str | None:
        if (self.repo_path(repo) / "commits" / f"{revision}.json").is_file():
            return revision
        return self.refs(repo).get(revision)

    def listing(self, repo: str, commit: str) -> dict[str, HubFile]:
        data = json.loads((self.repo_path(repo) / "commits" / f"{commit}.json").read_text())
        return {f["path"]: HubFile(**f) for f in data["files"]}

    def repo_exists(self, repo: str) -> bool:
        return (self.repo_path(repo) / "refs.json").is_file()


def _safetensors(tensors: dict[str, tuple[list[int], bytes]]) -> bytes:
    """A valid safetensors file: u64 header length, JSON header (dtype, shape, offsets), raw data."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (shape, data) in tensors.items():
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format aligns the data on 8 bytes
    return struct.pack("<Q", len(raw)) + raw + b"".join(d for _, d in tensors.values())


def generate_repo(store: HubStore | Path | str, repo: str = "Qwen/Qwen3.5-Test", *, size_mb: float = 4,
                  shards: int = 4, seed: int = 0, branch: str = "main", salt: str = "") -> str:
    """Write a small checkpoint of about SIZE_MB into the hub root; return its commit id."""
    store = store if isinstance(store, HubStore) else HubStore(store)
    rng = random.Random(f"{repo}:{seed}")
    total = int(size_mb * 1024 * 1024)
    per_shard = max(total // shards, 4096)
    hidden = 256
    files: list[HubFile] = []
    weight_map: dict[str, str] = {}
    total_size = 0
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        tensors: dict[str, tuple[list[int], bytes]] = {}
        remaining = per_shard
        layer = 0
        while remaining > 0:
            rows = max(1, min(remaining // (hidden * 2), 4096))
            name = f"model.layers.{i}.block.{layer}.weight"
            data = rng.randbytes(rows * hidden * 2)
            tensors[name] = ([rows, hidden], data)
            weight_map[name] = shard
            total_size += len(data)
            remaining -= len(data)
            layer += 1
        files.append(store.add_file(shard, _safetensors(tensors)))
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    config = {"architectures": ["Qwen3_5MoeForCausalLM"], "model_type": "qwen3_5_moe", "hidden_size": hidden,
              "num_hidden_layers": shards, "torch_dtype": "bfloat16", "vocab_size": 1024,
              "_comment": "generated test repository (TEST DOUBLE), not a real model"}
    vocab = {f"tok{i}": i for i in range(1024)}
    small = {
        "model.safetensors.index.json": json.dumps(index, indent=2).encode(),
        "config.json": json.dumps(config, indent=2).encode(),
        "generation_config.json": json.dumps({"do_sample": True, "temperature": 0.6, "top_p": 0.95}).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": []}}).encode(),
        "tokenizer_config.json": json.dumps({"tokenizer_class": "Qwen2Tokenizer", "model_max_length": 262144}).encode(),
        "vocab.json": json.dumps(vocab).encode(),
        "merges.txt": b"#version: 0.2\n" + b"".join(b"t o%d\n" % i for i in range(64)),
        "README.md": f"---\nlicense: apache-2.0\n---\n# {repo} (generated test repository {salt})\n".encode(),
        ".gitattributes": b"".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n".encode() for p in LFS_PATTERNS),
    }
    for path, data in small.items():
        files.append(store.add_file(path, data))
    return store.commit(repo, files, branch=branch, salt=salt)
