"""A GPU kind added as data only: mi350x (the air-cooled MI355X: the same gfx950 chip and 288 GB, one upstream
image line). gpus.yaml, recipes.yaml and nccl_floors.yaml name it; no Python knows it. Every plan on it is the
MI355X plan, refusals included; the golden inventory tests/golden/mi350xx8-fp4 shows the rest."""

import itertools

import pytest

from qwen35_prov.catalog import load_catalog
from qwen35_prov.errors import UserError
from qwen35_prov.gpu_facts_parse import match_gpu_kind
from qwen35_prov.options import PlanOptions
from qwen35_prov.planner import plan

CATALOG = load_catalog()
MODELS = sorted(CATALOG.models)


def _outcome(cluster: str, options: PlanOptions):
    """What a user sees: every launch's argv and environment and the image, or the refusal."""
    try:
        p = plan(cluster, options)
    except UserError as exc:
        return "refused", str(exc).replace("mi350x", "GPU").replace("mi355x", "GPU")
    return p.tp, len(p.replicas), p.image, p.memory, [(n.argv, dict(n.env), n.rules) for n in p.nodes]


@pytest.mark.parametrize("model,precision", list(itertools.product(MODELS, ("bf16", "fp8", "fp4"))))
def test_every_plan_on_mi350x_is_the_mi355x_plan(model, precision):
    for count, mtp, kv_offload in itertools.product((1, 2, 8), (False, True), ("disabled", "hicache")):
        options = PlanOptions(model=model, precision=precision, mtp=mtp, kv_offload=kv_offload)
        assert _outcome(f"mi350xx{count}", options) == _outcome(f"mi355xx{count}", options), (count, mtp, kv_offload)


def test_the_kind_is_in_the_catalog_with_the_mi355x_hardware():
    new, old = CATALOG.gpus["mi350x"], CATALOG.gpus["mi355x"]
    assert (new.vendor, new.memory_mib, new.fp4, new.image_family) == (old.vendor, old.memory_mib, old.fp4,
                                                                       old.image_family)
    assert new.name == "AMD Instinct MI350X"


def test_what_amd_smi_reports_names_the_right_kind():
    assert match_gpu_kind("AMD Instinct MI350X", CATALOG.gpus) == "mi350x"
    assert match_gpu_kind("AMD Instinct MI355X OAM", CATALOG.gpus) == "mi355x"


def test_kv_offload_is_offered_on_both_and_named_in_the_refusal():
    assert "--enable-hierarchical-cache" in plan("mi350xx2", PlanOptions(precision="fp4", kv_offload="hicache")).nodes[0].argv
    with pytest.raises(UserError) as err:
        plan("h200x8", PlanOptions(kv_offload="hicache"))
    assert "only for 397b FP4 on mi355x or mi350x;" in str(err.value)
