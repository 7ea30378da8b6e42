"""The upstream generator's September 2026 state (../shared/reference/sglang-qwen35-recipes-2026-09.md), cell by
cell, transcribed here independently of the packaged catalog."""

import pytest

from qwen35_prov.errors import UserError
from qwen35_prov.options import PlanOptions
from qwen35_prov.planner import plan

LINEAR_PREFILL = ["--linear-attn-prefill-backend", "flashinfer"]
MOE_TRTLLM = ["--moe-runner-backend", "flashinfer_trtllm"]
NVFP4_MTP_LINEAR = ["--linear-attn-backend", "triton", "--linear-attn-decode-backend", "flashinfer",
                    "--linear-attn-prefill-backend", "flashinfer"]
MNNVL_ENV = {"NCCL_MNNVL_ENABLE": "1", "NCCL_CUMEM_ENABLE": "1", "MC_FORCE_MNNVL": "1",
             "NVSHMEM_REMOTE_TRANSPORT": "none"}
NEW_FLAGS = ("--linear-attn-prefill-backend", "--linear-attn-backend", "--linear-attn-decode-backend",
             "--enable-hierarchical-cache", "--disable-shared-experts-fusion")

# (mtp, mamba choice) of the MTP-on and MTP-off cells; MoE models without MTP offer mamba v1 and v2
MOE_VARIANTS = [(True, None), (False, "v1"), (False, "v2")]
DENSE_VARIANTS = [(True, None), (False, None)]


def argv_env(cluster, **opts):
    node = plan(cluster, PlanOptions(**opts)).nodes[0]
    return list(node.argv), dict(node.env)


def value(argv, flag):
    return argv[argv.index(flag) + 1] if flag in argv else None


def contains(argv, seq):
    return any(argv[i:i + len(seq)] == seq for i in range(len(argv) - len(seq) + 1))


# --- section 1: the 25 changed cells -----------------------------------------------------------------------

@pytest.mark.parametrize("gpu", ["b200", "b300"])
@pytest.mark.parametrize("mtp,mamba", MOE_VARIANTS)
def test_397b_fp8_on_blackwell_adds_symm_mem_linear_prefill_and_trtllm_moe(gpu, mtp, mamba):
    argv, _ = argv_env(f"{gpu}x8", precision="fp8", mtp=mtp, mamba_cache=mamba)
    order = ["--enable-symm-mem", "--flashinfer-allreduce-fusion-backend", "--attention-backend",
             "--linear-attn-prefill-backend", "--moe-runner-backend"]
    if not mtp:
        order.append("--tokenizer-worker-num")
    order.append("--mem-fraction-static")
    positions = [argv.index(f) for f in order]
    assert positions == sorted(positions), argv
    assert contains(argv, LINEAR_PREFILL) and contains(argv, MOE_TRTLLM)
    assert value(argv, "--attention-backend") == {"b200": "trtllm_mha", "b300": "flashinfer"}[gpu]
    assert value(argv, "--mem-fraction-static") == "0.8"
    assert (value(argv, "--mamba-radix-cache-strategy") == "extra_buffer") == (mtp or mamba == "v2")


@pytest.mark.parametrize("gpu", ["b200", "b300"])
@pytest.mark.parametrize("model", ["122b", "35b"])
@pytest.mark.parametrize("mtp,mamba", MOE_VARIANTS)
def test_small_moe_fp8_on_blackwell_at_tp1_adds_linear_prefill_and_trtllm_moe_without_symm_mem(gpu, model, mtp, mamba):
    argv, _ = argv_env(f"{gpu}x1", model=model, precision="fp8", mtp=mtp, mamba_cache=mamba)
    assert contains(argv, LINEAR_PREFILL) and contains(argv, MOE_TRTLLM)
    assert "--enable-symm-mem" not in argv and "--tp-size" not in argv
    assert argv.index("--linear-attn-prefill-backend") < argv.index("--moe-runner-backend")


@pytest.mark.parametrize("gpu", ["b200", "b300"])
@pytest.mark.parametrize("mtp,mamba", DENSE_VARIANTS)
def test_27b_fp8_on_blackwell_adds_only_linear_prefill(gpu, mtp, mamba):
    argv, _ = argv_env(f"{gpu}x1", model="27b", precision="fp8", mtp=mtp, mamba_cache=mamba)
    assert contains(argv, LINEAR_PREFILL)
    assert "--moe-runner-backend" not in argv and "--enable-symm-mem" not in argv


def test_397b_nvfp4_on_b200_with_mtp_adds_the_linear_attention_backends():
    argv, _ = argv_env("b200x4", precision="fp4", mtp=True)
    assert contains(argv, NVFP4_MTP_LINEAR)
    without, _ = argv_env("b200x4", precision="fp4", mtp=False)
    assert not any(f in without for f in NEW_FLAGS)


@pytest.mark.parametrize("mtp", [True, False])
def test_397b_mxfp4_on_mi355x_takes_the_v2_checkpoint_and_int4_quick_reduce(mtp):
    p = plan("mi355xx2", PlanOptions(precision="fp4", mtp=mtp))
    assert p.repo == "amd/Qwen3.5-397B-A17B-MXFP4-AttnFP8-V2"
    assert p.model_path.endswith("/amd/Qwen3.5-397B-A17B-MXFP4-AttnFP8-V2/main")
    assert p.nodes[0].env["ROCM_QUICK_REDUCE_QUANTIZATION"] == "INT4"
    # NVIDIA keeps its own FP4 checkpoint
    assert plan("b300x4", PlanOptions(precision="fp4")).repo == "nvidia/Qwen3.5-397B-A17B-NVFP4-V2"


@pytest.mark.parametrize("cluster,opts", [
    ("h100x16", {}), ("h100x8", {"precision": "fp8"}), ("h200x8", {"precision": "fp8"}),
    ("h200x1", {"model": "35b", "precision": "fp8"}), ("mi300xx8", {}), ("mi325xx2", {"precision": "fp8"}),
    ("b300x4", {"precision": "fp4"}), ("b300x4", {"precision": "fp4", "mtp": False}),
    ("b200x4", {"precision": "fp4", "mtp": False}), ("b200x8", {}), ("b300x8", {"mtp": False}),
])
def test_cells_the_addendum_leaves_alone_get_none_of_its_flags(cluster, opts):
    argv, env = argv_env(cluster, **opts)
    assert not any(f in argv for f in NEW_FLAGS)
    assert not set(MNNVL_ENV) & set(env)
    if "--moe-runner-backend" in argv:  # only the FP4 rules that were there before
        assert opts.get("precision") == "fp4"


# --- section 2: GB200 and GB300 ----------------------------------------------------------------------------

# (model, precision) -> {gpu: (tp, mem)}; mem None = the flag is omitted (the addendum gives no value)
GB_TABLE = {
    ("397b", "bf16"): {"gb200": (8, 0.8), "gb300": (8, 0.8)},
    ("397b", "fp8"): {"gb200": (4, 0.8), "gb300": (4, 0.85)},
    ("122b", "bf16"): {"gb200": (2, 0.8), "gb300": (2, None)},
    ("122b", "fp8"): {"gb200": (1, None), "gb300": (1, None)},
    **{(m, p): {"gb200": (1, None), "gb300": (1, None)} for m in ("35b", "27b") for p in ("bf16", "fp8")},
    **{(m, "bf16"): {"gb200": (1, None), "gb300": (1, None)} for m in ("9b", "4b", "2b", "0.8b")},
}
GB_CASES = [(m, p, g, mtp) for (m, p), row in GB_TABLE.items() for g in row for mtp in (True, False)]


@pytest.mark.parametrize("model,precision,gpu,mtp", GB_CASES)
def test_gb_cells(model, precision, gpu, mtp):
    tp, mem = GB_TABLE[(model, precision)][gpu]
    count = max(tp, 4)
    p = plan(f"{gpu}x{count}", PlanOptions(model=model, precision=precision, mtp=mtp))
    assert p.cluster.gpus_per_node == 4 and p.tp == tp and p.ep is None and p.tp_source == "recipe"
    assert p.nodes_per_replica == (2 if tp == 8 else 1)
    moe = model in ("397b", "122b", "35b")
    for node in p.nodes:
        argv, env = list(node.argv), dict(node.env)
        assert env == MNNVL_ENV
        assert value(argv, "--tp-size") == (str(tp) if tp > 1 else None)
        assert value(argv, "--mem-fraction-static") == (None if mem is None else str(mem))
        assert value(argv, "--flashinfer-allreduce-fusion-backend") == "auto"
        assert value(argv, "--attention-backend") == "trtllm_mha"
        assert value(argv, "--speculative-algorithm") == ("NEXTN" if mtp else None)
        assert (value(argv, "--mamba-radix-cache-strategy") == "extra_buffer") == mtp
        assert value(argv, "--kv-cache-dtype") == ("fp8_e4m3" if precision == "fp8" else None)
        fp8_moe = precision == "fp8" and moe
        assert contains(argv, MOE_TRTLLM) == fp8_moe
        assert value(argv, "--mamba-ssm-dtype") == ("bfloat16" if fp8_moe else None)
        assert ("--disable-shared-experts-fusion" in argv) == fp8_moe
        for never in ("--tokenizer-worker-num", "--enable-symm-mem", "--linear-attn-prefill-backend",
                      "--expert-parallel-size"):
            assert never not in argv
        if tp == 8:
            assert value(argv, "--nnodes") == "2"


def test_gb_mamba_v2_rule_without_mtp_is_as_on_other_nvidia_gpus():
    argv, _ = argv_env("gb200x4", precision="fp8", mtp=False, mamba_cache="v2")
    assert value(argv, "--mamba-radix-cache-strategy") == "extra_buffer"
    with pytest.raises(UserError, match="dense"):
        plan("gb300x4", PlanOptions(model="27b", mtp=False, mamba_cache="v2"))


def test_gb_has_no_fp4_recipe_and_says_where_fp4_is():
    with pytest.raises(UserError) as err:
        plan("gb200x8", PlanOptions(precision="fp4"))
    assert "no recipe for 397b FP4 on gb200" in str(err.value) and "b200" in str(err.value)


def test_gb_trays_hold_four_gpus_unless_told_otherwise():
    p = plan("gb300x16", PlanOptions())
    assert (p.cluster.node_count, len(p.replicas), p.nodes_per_replica) == (4, 2, 2)
    assert plan("gb200x8", PlanOptions(), gpus_per_node=8).nodes_per_replica == 1
    assert plan("gb200x2", PlanOptions(model="122b")).cluster.gpus_per_node == 2


def test_gb_397b_bf16_on_one_tray_names_the_smallest_gb_cluster():
    with pytest.raises(UserError, match="gb200x8"):
        plan("gb200x4", PlanOptions())


# --- section 3: KV cache offloading ------------------------------------------------------------------------

HICACHE = ["--enable-hierarchical-cache", "--hicache-ratio", "1.5", "--hicache-write-policy", "write_through",
           "--hicache-io-backend", "kernel", "--hicache-mem-layout", "page_first"]


@pytest.mark.parametrize("mtp", [True, False])
def test_hicache_replaces_the_disabled_radix_cache_on_mi355x_mxfp4(mtp):
    p = plan("mi355xx2", PlanOptions(precision="fp4", mtp=mtp, kv_offload="hicache"))
    argv, env = list(p.nodes[0].argv), dict(p.nodes[0].env)
    assert contains(argv, HICACHE) and "--disable-radix-cache" not in argv
    assert value(argv, "--kv-cache-dtype") == "fp8_e4m3" and env["ROCM_QUICK_REDUCE_QUANTIZATION"] == "INT4"
    assert p.tp == 2
    assert value(argv, "--max-running-requests") == ("128" if mtp else None)
    off, _ = argv_env("mi355xx2", precision="fp4", mtp=mtp)
    assert "--disable-radix-cache" in off and "--enable-hierarchical-cache" not in off


@pytest.mark.parametrize("cluster,opts", [("h200x8", {}), ("mi355xx4", {}), ("b200x4", {"precision": "fp4"}),
                                          ("mi355xx1", {"model": "122b", "precision": "fp8"})])
def test_kv_offload_elsewhere_is_refused_naming_where_it_exists(cluster, opts):
    with pytest.raises(UserError) as err:
        plan(cluster, PlanOptions(kv_offload="hicache", **opts))
    assert "397b FP4 on mi355x" in str(err.value)


def test_kv_offload_choices():
    with pytest.raises(UserError, match="allowed disabled, hicache"):
        PlanOptions(kv_offload="lmcache")


# --- section 5: Qwen3.6, from the same catalog ---------------------------------------------------------------

QWEN36 = {"3.6-35b": ("Qwen3.6-35B-A3B", True), "3.6-27b": ("Qwen3.6-27B", False)}
EAGLE = ["--speculative-algorithm", "EAGLE", "--speculative-num-steps", "3", "--speculative-eagle-topk", "1",
         "--speculative-num-draft-tokens", "4"]


@pytest.mark.parametrize("model", QWEN36)
@pytest.mark.parametrize("gpu,precision", [(g, p) for g in ("h100", "h200", "b200", "b300") for p in ("bf16", "fp8")]
                         + [(g, "fp4") for g in ("b200", "b300")])
@pytest.mark.parametrize("mtp", [True, False])
def test_qwen36_cells_are_tp1_with_eagle_trtllm_on_blackwell_and_cutlass_experts_for_nvfp4(model, gpu, precision, mtp):
    p = plan(f"{gpu}x1", PlanOptions(model=model, precision=precision, mtp=mtp))
    name, moe = QWEN36[model]
    argv = list(p.nodes[0].argv)
    assert p.tp == 1 and p.ep is None and "--tp-size" not in argv and "--expert-parallel-size" not in argv
    suffix = {"bf16": "", "fp8": "-FP8", "fp4": "-NVFP4"}[precision]
    assert p.repo == ("nvidia/" if precision == "fp4" else "Qwen/") + name + suffix
    assert contains(argv, EAGLE) == mtp and "NEXTN" not in argv
    if mtp:
        assert value(argv, "--mamba-radix-cache-strategy") == "extra_buffer"
    if gpu in ("b200", "b300"):
        assert value(argv, "--attention-backend") == "trtllm_mha"
    assert (value(argv, "--moe-runner-backend") == "flashinfer_cutlass") == (precision == "fp4" and moe)
    assert "--mem-fraction-static" not in argv       # the addendum gives none


@pytest.mark.parametrize("cluster,precision,message", [
    ("mi355xx1", "bf16", "no recipe for 3.6-35b BF16 on mi355x"),     # no AMD cells upstream
    ("h100x1", "fp4", "FP4 needs a GPU with FP4 support"),             # NVFP4 needs Blackwell
])
def test_qwen36_is_refused_where_upstream_has_no_cell(cluster, precision, message):
    with pytest.raises(UserError, match=message):
        plan(cluster, PlanOptions(model="3.6-35b", precision=precision))
