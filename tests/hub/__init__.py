"""Local Hugging Face hub for the weights tests (TEST DOUBLE): generated repositories and an HTTP server that
the real huggingface_hub client talks to through HF_ENDPOINT. Never installed by a role."""

from .repo import HubFile, HubStore, generate_repo, git_blob_id
from .server import LocalHub, Request, downloads_by_file, load_log, max_concurrent_downloads

__all__ = ["HubFile", "HubStore", "generate_repo", "git_blob_id", "LocalHub", "Request", "downloads_by_file",
           "load_log", "max_concurrent_downloads"]
