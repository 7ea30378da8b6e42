"""The flag rules of the reference (section 5) and the deployment flags (section 6)."""

import json

import pytest

from qwen35_prov.options import PlanOptions
from qwen35_prov.planner import plan


def argv_of(cluster, **opts):
    return list(plan(cluster, PlanOptions(**opts)).nodes[0].argv)


def env_of(cluster, **opts):
    return dict(plan(cluster, PlanOptions(**opts)).nodes[0].env)


def value(argv, flag):
    return argv[argv.index(flag) + 1]


def test_h200_flagship_command_in_generator_order():
    argv = argv_of("h200x8")
    assert argv[:3] == ["python3", "-m", "sglang.launch_server"]
    order = ["--model-path", "--served-model-name", "--tp-size", "--reasoning-parser", "--tool-call-parser",
             "--speculative-algorithm", "--mamba-radix-cache-strategy", "--flashinfer-allreduce-fusion-backend",
             "--mem-fraction-static", "--context-length", "--model-loader-extra-config", "--mm-attention-backend",
             "--watchdog-timeout", "--enable-metrics", "--host", "--port"]
    positions = [argv.index(f) for f in order]
    assert positions == sorted(positions)
    assert value(argv, "--served-model-name") == "Qwen/Qwen3.5-397B-A17B"
    assert value(argv, "--tp-size") == "8"
    assert value(argv, "--speculative-num-steps") == "3"
    assert value(argv, "--speculative-eagle-topk") == "1"
    assert value(argv, "--speculative-num-draft-tokens") == "4"
    assert value(argv, "--mamba-radix-cache-strategy") == "extra_buffer"
    assert value(argv, "--page-size") == "64"
    assert value(argv, "--mm-attention-backend") == "fa3"
    assert value(argv, "--context-length") == "262144"
    assert json.loads(value(argv, "--model-loader-extra-config")) == {"enable_multithread_load": "true", "num_threads": 64}
    assert value(argv, "--host") == "node0" and value(argv, "--port") == "30000"   # the node's own address
    assert value(argv, "--flashinfer-allreduce-fusion-backend") == "auto"
    assert "--tp" not in argv and "--attention-backend" not in argv


def test_full_flag_names_only():
    for cluster, opts in [("h100x16", {}), ("mi355xx4", {"precision": "fp4"}), ("b200x4", {"precision": "fp4"})]:
        for flag in argv_of(cluster, **opts)[3:]:
            if flag.startswith("-"):
                assert flag.startswith("--") and flag not in ("--tp", "--ep", "--dp")


def test_amd_environment_attention_and_no_mamba_v2():
    env = env_of("mi300xx8")
    assert env == {"SGLANG_USE_AITER": "1", "SGLANG_USE_AITER_UNIFIED_ATTN": "1", "AITER_FLYDSL_FORCE": "1",
                   "SGLANG_MAMBA_SSM_DTYPE": "bfloat16"}
    argv = argv_of("mi300xx8")
    assert value(argv, "--attention-backend") == "aiter" and value(argv, "--page-size") == "16"
    assert "--enable-aiter-allreduce-fusion" in argv
    assert "--mamba-radix-cache-strategy" not in argv
    assert "--mm-attention-backend" not in argv
    assert "--flashinfer-allreduce-fusion-backend" not in argv


def test_amd_dense_model_has_no_moe_ssm_env_and_no_allreduce_fusion_at_tp1():
    env = env_of("mi325xx1", model="27b")
    assert "SGLANG_MAMBA_SSM_DTYPE" not in env and env["SGLANG_USE_AITER"] == "1"
    assert "--enable-aiter-allreduce-fusion" not in argv_of("mi325xx1", model="27b")


def test_mi355x_fp4():
    argv = argv_of("mi355xx2", precision="fp4")
    env = env_of("mi355xx2", precision="fp4")
    assert env["ROCM_QUICK_REDUCE_QUANTIZATION"] == "INT4"
    assert value(argv, "--served-model-name") == "amd/Qwen3.5-397B-A17B-MXFP4-AttnFP8-V2"
    assert "--enable-aiter-allreduce-fusion" not in argv
    assert "--disable-radix-cache" in argv and value(argv, "--kv-cache-dtype") == "fp8_e4m3"
    assert value(argv, "--max-running-requests") == "128"
    assert "--max-running-requests" not in argv_of("mi355xx2", precision="fp4", mtp=False)


def test_h100_fp8_symm_mem_only_with_tp_above_one():
    assert "--enable-symm-mem" in argv_of("h100x8", precision="fp8")
    assert "--enable-symm-mem" not in argv_of("h100x1", model="35b", precision="fp8")


def test_h200_fp8_rules():
    argv = argv_of("h200x8", precision="fp8")
    assert value(argv, "--expert-parallel-size") == "8"
    assert value(argv, "--max-running-requests") == "128"
    assert value(argv, "--chunked-prefill-size") == "16384"
    assert value(argv, "--tokenizer-worker-num") == "6"
    assert value(argv, "--attention-backend") == "flashinfer"
    assert value(argv, "--mamba-ssm-dtype") == "bfloat16"
    dense = argv_of("h200x1", model="27b", precision="fp8")
    assert "--mamba-ssm-dtype" not in dense and value(dense, "--attention-backend") == "flashinfer"


def test_tokenizer_workers_without_mtp_on_h200_b200_b300_only():
    assert value(argv_of("h200x8", mtp=False), "--tokenizer-worker-num") == "6"
    assert value(argv_of("b300x8", mtp=False), "--tokenizer-worker-num") == "6"
    assert "--tokenizer-worker-num" not in argv_of("h100x16", mtp=False)
    assert "--tokenizer-worker-num" not in argv_of("mi300xx8", mtp=False)
    assert "--tokenizer-worker-num" not in argv_of("b200x8")


def test_blackwell_attention_backends():
    assert value(argv_of("b200x8"), "--attention-backend") == "trtllm_mha"
    assert value(argv_of("b300x4", precision="fp4"), "--attention-backend") == "trtllm_mha"
    assert value(argv_of("b300x8"), "--attention-backend") == "flashinfer"
    assert value(argv_of("b300x4", precision="fp8"), "--attention-backend") == "flashinfer"
    assert value(argv_of("b200x8"), "--mm-attention-backend") == "fa4"


def test_b300_small_model_grid_workaround():
    assert value(argv_of("b300x1", model="0.8b"), "--max-running-requests") == "4064"
    assert value(argv_of("b300x1", model="2b"), "--max-running-requests") == "4064"
    assert "--max-running-requests" not in argv_of("b300x1", model="4b")


def test_fp4_blackwell_flags():
    b300 = argv_of("b300x4", precision="fp4")
    assert value(b300, "--moe-runner-backend") == "flashinfer_trtllm"
    assert value(b300, "--fp4-gemm-backend") == "flashinfer_cutlass"
    assert value(b300, "--served-model-name") == "nvidia/Qwen3.5-397B-A17B-NVFP4-V2"
    b200 = argv_of("b200x4", precision="fp4", mtp=False)
    for flag, expected in [("--quantization", "modelopt_fp4"), ("--kv-cache-dtype", "fp8_e4m3"),
                           ("--chunked-prefill-size", "32768"), ("--max-prefill-tokens", "32768"),
                           ("--max-running-requests", "128"), ("--stream-interval", "30"),
                           ("--mem-fraction-static", "0.85")]:
        assert value(b200, flag) == expected
    assert "--disable-radix-cache" in b200
    assert "--flashinfer-allreduce-fusion-backend" not in b200


def test_mamba_cache_choice_rules():
    assert "--mamba-radix-cache-strategy" not in argv_of("h200x8", mtp=False)
    assert value(argv_of("h200x8", mtp=False, mamba_cache="v2"), "--mamba-radix-cache-strategy") == "extra_buffer"
    assert value(argv_of("h200x1", model="9b"), "--mamba-radix-cache-strategy") == "extra_buffer"  # dense + MTP


def test_parsers_and_mtp_can_be_turned_off():
    argv = argv_of("h200x8", mtp=False, reasoning_parser=False, tool_call_parser=False)
    for flag in ("--reasoning-parser", "--tool-call-parser", "--speculative-algorithm"):
        assert flag not in argv


def test_cuda_ipc_transport_is_opt_in_and_nvidia_only():
    assert "SGLANG_USE_CUDA_IPC_TRANSPORT" not in env_of("h200x8")
    assert env_of("h200x8", cuda_ipc_transport=True)["SGLANG_USE_CUDA_IPC_TRANSPORT"] == "1"
    assert "SGLANG_USE_CUDA_IPC_TRANSPORT" not in env_of("mi300xx8", cuda_ipc_transport=True)


def test_deployment_options_reach_the_command():
    argv = argv_of("h200x8", context_length=131072, loader_threads=16, port=31000, weights_dir="/data/w",
                   revision="0123abc" * 5 + "01234")
    assert value(argv, "--context-length") == "131072"
    assert json.loads(value(argv, "--model-loader-extra-config"))["num_threads"] == 16
    assert value(argv, "--port") == "31000"
    assert value(argv, "--model-path") == "/data/w/Qwen/Qwen3.5-397B-A17B/" + "0123abc" * 5 + "01234"


def test_sglang_listens_on_each_nodes_own_address_unless_told_every_interface():
    p = plan("h100x32", PlanOptions(), node_names=["a", "b", "c", "d"],
             node_addresses=["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"])
    assert [(n.host, value(list(n.argv), "--host")) for n in p.nodes] == [
        (a, a) for a in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")]
    every = plan("h100x32", PlanOptions(bind="all"), node_names=["a", "b", "c", "d"],
                 node_addresses=["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"])
    assert {value(list(n.argv), "--host") for n in every.nodes} == {"0.0.0.0"}
    assert every.nodes[1].dist_init == ("10.0.0.1", 20000)


def test_bind_choices():
    from qwen35_prov.errors import UserError

    with pytest.raises(UserError, match="allowed cluster, all"):
        PlanOptions(bind="public")
    with pytest.raises(UserError, match="every network without a key"):
        PlanOptions(bind="all", api_key=False)
    assert PlanOptions(bind="cluster", api_key=False).bind == "cluster"


def test_the_loader_config_only_where_it_differs_from_sglangs_default_of_8_threads():
    assert "--model-loader-extra-config" not in argv_of("h200x8", loader_threads=8)
    assert json.loads(value(argv_of("h200x8", loader_threads=16), "--model-loader-extra-config")) == {
        "enable_multithread_load": "true", "num_threads": 16}
