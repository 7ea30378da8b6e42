"""Build the stand-in inference engine image (a TEST DOUBLE) and save it as a tarball `docker load` accepts.

No registry: the base is the sandbox node image (`qwen35_prov.sandbox.image.ensure_image()`, built with
debootstrap + podman import), `podman build` keeps only Python from it, and `podman save --format
docker-archive` writes `.cache/sglang-standin/sglang-standin-<hash>.tar`. The hash covers the base image,
the Containerfile, the stand-in's code and SGLang's argument contract (dumped from the real SGLang 0.5.23
parser at build time), so a rebuild happens only when one of them changes.

Usage: python tests/doubles/sglang_standin/build.py [--base IMAGE] [--variant next|broken] [--json]
Prints the image reference, its ID (`sha256:...`, what `docker images --no-trunc` shows after a load) and
the tarball path. Podman runs with CONTAINERS_CONF=<repo>/scripts/podman/containers.conf.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CACHE = REPO / ".cache" / "sglang-standin"
IMAGE_REPO = "localhost/sglang-standin"
CONTAINERS_CONF = REPO / "scripts" / "podman" / "containers.conf"


def _log(message: str) -> None:
    print(f"sglang-standin build: {message}", file=sys.stderr, flush=True)


def _podman(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTAINERS_CONF=str(CONTAINERS_CONF))
    return subprocess.run(["podman", *args], env=env, text=True, capture_output=True, **kwargs)


def _check(proc: subprocess.CompletedProcess, what: str) -> str:
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"sglang-standin build: {what} failed (exit {proc.returncode}): " + " | ".join(tail))
    return proc.stdout


_VERSION_PROBE = "import importlib.metadata as m; print(m.version('sglang'))"


def sglang_python() -> tuple[str, str]:
    """A Python with the real SGLang installed (this one, or the repository's .venv) and SGLang's version."""
    for candidate in (sys.executable, str(REPO / ".venv" / "bin" / "python")):
        probe = subprocess.run([candidate, "-c", _VERSION_PROBE], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip():
            return candidate, probe.stdout.strip()
    raise SystemExit("sglang-standin build: SGLang 0.5.23's parser is not importable; run scripts/test once "
                     "(it installs sglang --no-deps into .venv) or pip install the contract requirements")


def stage_package(dest: Path) -> Path:
    """Copy the stand-in's `sglang` package to DEST and write server_args.json from the real parser."""
    pkg = dest / "sglang"
    shutil.copytree(HERE / "sglang", pkg, ignore=shutil.ignore_patterns("__pycache__", "server_args.json"))
    proc = subprocess.run([sglang_python()[0], str(HERE / "dump_server_args.py"), str(pkg / "server_args.json")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"sglang-standin build: dumping SGLang's arguments failed: {proc.stderr.strip()}")
    return pkg


def base_image(explicit: str | None) -> str:
    if explicit:
        return explicit
    sys.path.insert(0, str(REPO))
    from qwen35_prov.sandbox.image import ensure_image  # the sandbox's node image (debootstrap + import)

    return ensure_image(progress=_log)


def _sources() -> list[Path]:
    """Everything the image is made from (the parser dump is determined by SGLang's version and its script)."""
    files = [p for p in (HERE / "sglang").rglob("*.py")]
    return sorted(files + [HERE / "Containerfile", HERE / "assemble-rootfs.sh", HERE / "dump_server_args.py"])


def _digest(paths: list[Path], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for path in paths:
        h.update(str(path.relative_to(HERE)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def build(base: str | None = None, *, force: bool = False) -> dict:
    base_ref = base_image(base)
    base_id = _check(_podman(["image", "inspect", "--format", "{{.Id}}", base_ref]), "inspecting the base").strip()
    CACHE.mkdir(parents=True, exist_ok=True)
    tag = _digest(_sources(), f"{base_id} sglang=={sglang_python()[1]}")
    ref = f"{IMAGE_REPO}:{tag}"
    tarball = CACHE / f"sglang-standin-{tag}.tar"
    meta_path = CACHE / f"sglang-standin-{tag}.json"
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.is_file() and meta_path.is_file() and not force:
            return json.loads(meta_path.read_text())
        with tempfile.TemporaryDirectory(prefix="sglang-standin-", dir="/var/tmp") as tmp:
            ctx = Path(tmp)
            stage_package(ctx)
            shutil.copy(HERE / "Containerfile", ctx / "Containerfile")
            shutil.copy(HERE / "assemble-rootfs.sh", ctx / "assemble-rootfs.sh")
            _log(f"building {ref} from {base_ref}")
            _check(_podman(["build", "--pull=never", "--layers=false", "--build-arg", f"BASE={base_ref}",
                            "-t", ref, "-f", str(ctx / "Containerfile"), str(ctx)], timeout=900), "podman build")
        image_id = _check(_podman(["image", "inspect", "--format", "{{.Id}}", ref]), "inspecting the image").strip()
        partial = tarball.with_suffix(".tar.part")
        partial.unlink(missing_ok=True)
        _check(_podman(["save", "--format", "docker-archive", "-o", str(partial), ref], timeout=600), "podman save")
        partial.rename(tarball)
        meta = {"ref": ref, "id": f"sha256:{image_id}", "tarball": str(tarball), "base": base_ref,
                "sglang_version": sglang_python()[1], "size_bytes": tarball.stat().st_size, "test_double": True}
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        # keep only the current build (and the variants derived from it)
        for old in CACHE.glob("sglang-standin-*.tar"):
            if not old.name.startswith(f"sglang-standin-{tag}"):
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
        listed = _podman(["images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO]).stdout.split()
        for other in (r for r in listed if not r.startswith(ref)):
            _podman(["rmi", other])
        _log(f"saved {tarball} ({meta['size_bytes'] // 1_000_000} MB)")
        return meta


# Variants for upgrade tests (TEST DOUBLES): the stand-in with one more layer, so a different image ID and tag.
#   next:   serves like the stand-in (a "new release" that works)
#   broken: never reports healthy (SGLANG_STANDIN_REFUSE_HEALTH=1), for the rollback path
VARIANTS = {
    "next": ['LABEL qwen35.standin-variant="next"'],
    "broken": ['LABEL qwen35.standin-variant="broken"', "ENV SGLANG_STANDIN_REFUSE_HEALTH=1"],
}


def build_variant(variant: str, base: str | None = None, *, force: bool = False) -> dict:
    """<ref>-<variant> derived from the current stand-in, saved as its own docker-archive tarball."""
    meta = build(base)
    ref, tarball = f"{meta['ref']}-{variant}", Path(meta["tarball"]).with_suffix("").as_posix() + f"-{variant}.tar"
    tarball = Path(tarball)
    meta_path = tarball.with_suffix(".json")
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.is_file() and meta_path.is_file() and not force:
            return json.loads(meta_path.read_text())
        if _podman(["image", "exists", meta["ref"]]).returncode != 0:
            _check(_podman(["load", "--input", meta["tarball"]], timeout=600), "loading the stand-in")
        with tempfile.TemporaryDirectory(prefix="sglang-standin-variant-", dir="/var/tmp") as tmp:
            containerfile = Path(tmp) / "Containerfile"
            containerfile.write_text("\n".join([f"FROM {meta['ref']}", *VARIANTS[variant]]) + "\n")
            _log(f"building the {variant} variant {ref}")
            _check(_podman(["build", "--pull=never", "-t", ref, "-f", str(containerfile), tmp], timeout=300),
                   "podman build (variant)")
        image_id = _check(_podman(["image", "inspect", "--format", "{{.Id}}", ref]), "inspecting the variant").strip()
        partial = tarball.with_suffix(".tar.part")
        partial.unlink(missing_ok=True)
        _check(_podman(["save", "--format", "docker-archive", "-o", str(partial), ref], timeout=600), "podman save")
        partial.rename(tarball)
        out = {**meta, "ref": ref, "id": f"sha256:{image_id}", "tarball": str(tarball), "variant": variant,
               "size_bytes": tarball.stat().st_size}
        meta_path.write_text(json.dumps(out, indent=2) + "\n")
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="base image (default: the sandbox node image, built if missing)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the tarball is current")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--variant", choices=sorted(VARIANTS),
                        help="build <ref>-VARIANT from the stand-in (upgrade tests): next serves, broken never gets healthy")
    args = parser.parse_args(argv)
    meta = build_variant(args.variant, args.base, force=args.force) if args.variant else build(args.base, force=args.force)
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        print(f"{meta['ref']} {meta['id']} {meta['tarball']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
