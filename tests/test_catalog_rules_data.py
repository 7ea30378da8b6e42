"""The mamba cache choice and the deployment's flags are the catalog's data (recipes.yaml mamba_cache and
deployment_rules), not the planner's code: changing the YAML changes the plan, and a malformed table is refused
when the catalog loads."""

from __future__ import annotations

import copy

import pytest

from qwen35_prov.catalog import Catalog, CatalogError, _read, load_catalog, parse_gpus, parse_models, parse_recipes
from qwen35_prov.errors import UserError
from qwen35_prov.options import PlanOptions
from qwen35_prov.planner import plan


def catalog_with(change) -> Catalog:
    gpus, models = parse_gpus(_read("gpus.yaml")), parse_models(_read("models.yaml"))
    doc = copy.deepcopy(_read("recipes.yaml"))
    change(doc)
    return Catalog(gpus=gpus, models=models, recipes=parse_recipes(doc, gpus, models))


def head_argv(cluster: str, catalog: Catalog | None = None, **options) -> list[str]:
    return list(plan(cluster, PlanOptions(**options), catalog=catalog or load_catalog()).nodes[0].argv)


def test_the_shipped_mamba_table_decides_as_the_recipes_do():
    assert "extra_buffer" not in head_argv("mi300x8")                         # AMD: v1
    with pytest.raises(UserError, match="needs the FLA kernels of NVIDIA GPUs; AMD GPUs use v1"):
        head_argv("mi300x8", mamba_cache="v2")
    assert "extra_buffer" in head_argv("h200x8")                              # MTP on: v2
    assert "extra_buffer" not in head_argv("h200x8", mtp=False)               # MoE without MTP: v1 by default
    assert "extra_buffer" in head_argv("h200x8", mtp=False, mamba_cache="v2")  # ... v2 on request


def test_a_changed_mamba_table_changes_the_plan_without_code():
    def allow_v2_on_amd(doc):
        doc["mamba_cache"][0] = {"when": {"vendor": "amd"}, "allowed": ["v1", "v2"], "default": "v1"}
    argv = head_argv("mi300x8", catalog_with(allow_v2_on_amd), mamba_cache="v2")
    assert argv[argv.index("--mamba-radix-cache-strategy") + 1] == "extra_buffer"


def test_a_changed_deployment_rule_changes_every_launch_without_code():
    def no_metrics_and_a_longer_watchdog(doc):
        serving = next(r for r in doc["deployment_rules"] if r["name"] == "serving")
        serving["flags"] = ["--watchdog-timeout", "{watchdog_timeout}", "--host", "{host}", "--port", "{port}"]
    argv = head_argv("h100x16", catalog_with(no_metrics_and_a_longer_watchdog))
    assert "--enable-metrics" not in argv and "--enable-metrics" in head_argv("h100x16")
    # the deployment flags come after the recipe's, in the table's order
    shipped = head_argv("h100x16")
    assert shipped.index("--context-length") > shipped.index("--mem-fraction-static")
    assert shipped.index("--context-length") < shipped.index("--watchdog-timeout") < shipped.index("--host")


@pytest.mark.parametrize("change, message", [
    (lambda d: d["mamba_cache"].pop(), "the last entry must match every plan"),
    (lambda d: d["mamba_cache"][0].update(default="v3"), "allowed must be some of v1, v2 and hold the default"),
    (lambda d: d["mamba_cache"][1].pop("refuse"), "say why the other choices are refused"),
    (lambda d: d["deployment_rules"].append({"name": "x", "when": {"gpu_count": 8}}), "unknown fact"),
])
def test_a_malformed_table_is_refused_when_the_catalog_loads(change, message):
    with pytest.raises(CatalogError, match=message):
        catalog_with(change)
