"""Every cell of the reference's TP tables, transcribed here independently of the packaged catalog."""

import pytest

from qwen35_prov.options import PlanOptions
from qwen35_prov.planner import plan

GPUS = ("h100", "h200", "b200", "b300", "mi300x", "mi325x", "mi355x")


def _row(text):
    """'4/0.88 | 2/0.8 -> 4/-' cells -> {gpu: (off, on)} with (tp, mem) tuples; mem None = flag omitted."""
    cells = {}
    for gpu, cell in zip(GPUS, text.split("|")):
        parts = [p.strip() for p in cell.split("->")]
        parsed = []
        for p in parts:
            tp, mem = p.split("/")
            parsed.append((int(tp), None if mem == "-" else float(mem)))
        cells[gpu] = (parsed[0], parsed[-1])
    return cells


# Reference section 3, "Smaller models" (tp / --mem-fraction-static; "->" = value with MTP on).
SMALL = {
    ("122b", "bf16"): _row("4/0.88 | 4/- | 2/0.8 | 2/- | 2/0.8 | 1/0.8 | 1/0.8"),
    ("122b", "fp8"): _row("2/0.8 -> 4/- | 2/- | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8"),
    ("35b", "bf16"): _row("1/0.88 -> 2/- | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8"),
    ("35b", "fp8"): _row("1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8"),
    ("27b", "bf16"): _row("1/0.8 -> 2/- | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8"),
    ("27b", "fp8"): _row("1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8"),
    **{(m, "bf16"): _row("1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8 | 1/0.8") for m in ("9b", "4b", "2b", "0.8b")},
}

# 397b: the upstream generator's recipes (the default when the cluster has the GPUs): (tp, ep, mem).
FLAGSHIP_RECIPE = {
    "bf16": {"h100": (16, None, 0.8), "h200": (8, None, 0.8), "b200": (8, None, 0.8), "b300": (8, None, 0.8),
             "mi300x": (8, None, 0.8), "mi325x": (4, None, 0.8), "mi355x": (4, None, 0.8)},
    "fp8": {"h100": (8, None, 0.8), "h200": (8, 8, 0.8), "b200": (4, None, 0.8), "b300": (4, None, 0.8),
            "mi300x": (4, None, 0.8), "mi325x": (2, None, 0.8), "mi355x": (2, None, 0.8)},
    "fp4": {"b200": (4, None, 0.85), "b300": (4, None, 0.8), "mi355x": (2, None, 0.8)},
}
# The seed's hardware table: the minimum TP whose GPUs hold the weights.
SEED_MINIMUM = {
    "bf16": {"h100": 16, "h200": 8, "b200": 8, "b300": 4, "mi300x": 8, "mi325x": 4, "mi355x": 4},
    "fp8": {"h100": 8, "h200": 4, "b200": 4, "b300": 2, "mi300x": 4, "mi325x": 2, "mi355x": 2},
    "fp4": {"b200": 4, "b300": 2, "mi355x": 2},
}


def _flag(argv, name):
    if name not in argv:
        return None
    return argv[argv.index(name) + 1]


def _tp_of(p):
    argv = p.nodes[0].argv
    return int(_flag(argv, "--tp-size") or 1)


def _mem_of(p):
    value = _flag(p.nodes[0].argv, "--mem-fraction-static")
    return None if value is None else float(value)


@pytest.mark.parametrize("model,precision,gpu,mtp", [
    (m, prec, g, mtp) for (m, prec) in SMALL for g in GPUS for mtp in (False, True)])
def test_small_model_cells(model, precision, gpu, mtp):
    tp, mem = SMALL[(model, precision)][gpu][1 if mtp else 0]
    p = plan(f"{gpu}x{tp}", PlanOptions(model=model, precision=precision, mtp=mtp))
    assert p.tp == tp and _tp_of(p) == tp
    assert "--tp-size" in p.nodes[0].argv if tp > 1 else "--tp-size" not in p.nodes[0].argv
    assert _mem_of(p) == mem
    assert p.tp_source == "recipe"


@pytest.mark.parametrize("precision,gpu", [(p, g) for p in FLAGSHIP_RECIPE for g in FLAGSHIP_RECIPE[p]])
def test_flagship_recipe_cells_without_mtp(precision, gpu):
    tp, ep, mem = FLAGSHIP_RECIPE[precision][gpu]
    p = plan(f"{gpu}x{max(tp, 8)}", PlanOptions(precision=precision, mtp=False))
    assert (_tp_of(p), _flag(p.nodes[0].argv, "--expert-parallel-size"), _mem_of(p)) == (
        tp, None if ep is None else str(ep), mem)


def test_b200_fp4_with_mtp_uses_tp2_ep2():
    p = plan("b200x4", PlanOptions(precision="fp4", mtp=True))
    argv = p.nodes[0].argv
    assert (_flag(argv, "--tp-size"), _flag(argv, "--expert-parallel-size"), _mem_of(p)) == ("2", "2", 0.8)
    assert len(p.replicas) == 2


@pytest.mark.parametrize("precision,gpu", [(p, g) for p in SEED_MINIMUM for g in SEED_MINIMUM[p]])
def test_seed_minimum_is_used_when_the_cluster_is_smaller_than_the_recipe(precision, gpu):
    minimum = SEED_MINIMUM[precision][gpu]
    recipe_tp = FLAGSHIP_RECIPE[precision][gpu][0]
    p = plan(f"{gpu}x{minimum}", PlanOptions(precision=precision, mtp=False))
    assert p.tp == minimum
    assert p.memory.fits
    assert p.tp_source == ("recipe" if minimum == recipe_tp else "seed-minimum")
    if minimum < recipe_tp:
        assert any("smallest TP" in n for n in p.notes)


@pytest.mark.parametrize("precision,gpu", [(p, g) for p in SEED_MINIMUM for g in SEED_MINIMUM[p]
                                           if SEED_MINIMUM[p][g] > 1])
def test_below_the_seed_minimum_the_planner_refuses_and_names_the_smallest_cluster(precision, gpu):
    from qwen35_prov.errors import UserError

    minimum = SEED_MINIMUM[precision][gpu]
    with pytest.raises(UserError) as err:
        plan(f"{gpu}x{minimum // 2}", PlanOptions(precision=precision, mtp=False))
    assert f"{gpu}x{minimum}" in str(err.value)


def test_h200_fp8_on_four_gpus_drops_expert_parallel_and_says_so():
    p = plan("h200x4", PlanOptions(precision="fp8"))
    assert p.tp == 4 and p.ep is None
    assert "--expert-parallel-size" not in p.nodes[0].argv
    assert any("expert parallel size 8 dropped" in n for n in p.notes)
