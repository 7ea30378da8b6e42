"""Every command the planner can render passes SGLang 0.5.23's own argument parser.

Needs `sglang==0.5.23` importable (installed --no-deps with CPU torch: tests/requirements-contract.txt).
Set QWEN35_REQUIRE_CONTRACT=1 (the test command does) to fail instead of skipping when it is missing.
"""

import argparse
import itertools
import json
import logging
import os

import pytest

from qwen35_prov.catalog import load_catalog
from qwen35_prov.errors import UserError
from qwen35_prov.options import PlanOptions
from qwen35_prov.planner import plan

try:
    import sglang
    from sglang.srt.arg_groups.serving_hook import handle_deprecated_args
    from sglang.srt.server_args import ServerArgs
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("QWEN35_REQUIRE_CONTRACT") == "1":
        raise
    pytest.skip(f"SGLang's parser is not installed: {exc}", allow_module_level=True)

pytestmark = pytest.mark.contract
SGLANG_VERSION = load_catalog().recipes.sglang_version


@pytest.fixture(scope="module")
def parser():
    p = argparse.ArgumentParser(allow_abbrev=False, exit_on_error=False)
    ServerArgs.add_cli_args(p)
    return p


class _Warnings(logging.Handler):
    """What SGLang logs at WARNING or above while it parses and resolves a command's deprecated arguments."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def sglang_warnings():
    handler = _Warnings()
    logger = logging.getLogger("sglang")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def every_plan():
    catalog = load_catalog()
    for model, precision, gpu, mtp in itertools.product(catalog.models, ("bf16", "fp8", "fp4"), catalog.gpus,
                                                        (True, False)):
        cell = catalog.recipes.cell(model, precision, gpu, mtp)
        if cell is None:
            continue
        for count in sorted({max(cell.tp, 8), cell.tp * 2 if cell.tp >= 8 else 8}):
            yield f"{gpu}x{count}", PlanOptions(model=model, precision=precision, mtp=mtp)
        if not mtp and catalog.models[model].moe and catalog.gpus[gpu].vendor == "nvidia":
            yield f"{gpu}x{max(cell.tp, 8)}", PlanOptions(model=model, precision=precision, mtp=False, mamba_cache="v2")
        offered = catalog.recipes.offered.get("kv_offload", ())
        if any(c == {"model": model, "precision": precision, "gpu": gpu} for c in offered):
            yield f"{gpu}x{max(cell.tp, 8)}", PlanOptions(model=model, precision=precision, mtp=mtp,
                                                          kv_offload="hicache")


def test_the_pinned_version_is_installed():
    assert sglang.__version__ == SGLANG_VERSION


def test_every_rendered_command_parses(parser, sglang_warnings):
    checked = 0
    kinds = set()
    for cluster, options in every_plan():
        try:
            p = plan(cluster, options)
        except UserError:
            continue
        for node in p.nodes:
            argv = list(node.argv)
            assert argv[:3] == ["python3", "-m", "sglang.launch_server"]
            try:
                args = parser.parse_args(argv[3:])
            except (argparse.ArgumentError, SystemExit) as exc:
                pytest.fail(f"{cluster} {options}: SGLang rejects {argv}: {exc}")
            # SGLang's start-up pass over deprecated arguments (it warns, then rewrites them)
            handle_deprecated_args(ServerArgs.from_cli_args(args))
            assert not sglang_warnings, f"{cluster} {options}: SGLang warns about {argv}: {sglang_warnings}"
            kinds.add(p.cluster.gpu.id)
            assert args.tp_size == p.tp
            assert args.model_path == p.model_path
            assert args.served_model_name == p.repo
            assert args.nnodes == len(p.replicas[node.replica].node_indexes)
            assert args.node_rank == node.node_rank
            assert args.port == node.port
            if p.mem_fraction is not None:
                assert args.mem_fraction_static == p.mem_fraction
            if options.loader_threads != load_catalog().recipes.default_loader_threads:
                assert json.loads(args.model_loader_extra_config) == {"enable_multithread_load": "true",
                                                                      "num_threads": options.loader_threads}
            else:
                assert args.model_loader_extra_config in (None, "{}")
            checked += 1
    # every model (Qwen3.5 and Qwen3.6), every precision and GPU the matrix lists, MTP on and off, two cluster
    # sizes, every node
    assert checked > 300, checked
    assert kinds == set(load_catalog().gpus), kinds


def test_network_weights_render_the_prefetch_flag_sglang_accepts(parser, sglang_warnings):
    """A node whose weights sit on a network filesystem (fleet weights_storage: network) prefetches the shards;
    with the default loader threads multithreaded loading goes off (SGLang's rule), with an explicit count the
    loader configuration keeps it on."""
    for threads in (8, 64):
        p = plan("h100x16", PlanOptions(loader_threads=threads), node_weights_on_network=[True, False])
        on_network, local = p.nodes
        assert "--weight-loader-prefetch-checkpoints" not in local.argv
        args = parser.parse_args(list(on_network.argv)[3:])
        handle_deprecated_args(ServerArgs.from_cli_args(args))
        assert not sglang_warnings, sglang_warnings
        assert args.weight_loader_prefetch_checkpoints is True
        assert (args.model_loader_extra_config != "{}") == (threads != 8), args.model_loader_extra_config


def test_the_warning_check_sees_sglang_deprecations(parser, sglang_warnings):
    """The check above would see the cookbook's old allreduce spelling: SGLang 0.5.23 warns about it."""
    args = parser.parse_args(["--model-path", "/m", "--enable-flashinfer-allreduce-fusion"])
    resolved = ServerArgs.from_cli_args(args)
    handle_deprecated_args(resolved)
    assert any("--enable-flashinfer-allreduce-fusion is deprecated" in m for m in sglang_warnings)
    assert dict(resolved._resolved_overrides[0][1]) == {"flashinfer_allreduce_fusion_backend": "auto"}


@pytest.mark.parametrize("bad", [["--tp", "2"], ["--mamba-scheduler-strategy", "extra_buffer"],
                                 ["--attention-backend", "fa9"]])
def test_the_parser_rejects_what_sglang_would_reject(parser, bad):
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parser.parse_args(["--model-path", "/m", *bad])
