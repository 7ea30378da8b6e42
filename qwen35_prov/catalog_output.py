"""The catalogs as tables for people and as JSON for machines."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .catalog import load_catalog


def catalog_to_dict(section: str | None = None) -> dict[str, Any]:
    cat = load_catalog()
    recipes = cat.recipes
    data = {
        "gpus": {k: asdict(v) for k, v in cat.gpus.items()},
        "models": {
            k: {**{f: getattr(m, f) for f in ("name", "moe", "total_params_b", "active_params_b", "revision")},
                "checkpoints": {p: {"repo": c.repo, "weight_gb": c.weight_gb, "repo_by_vendor": dict(c.repo_by_vendor)}
                                for p, c in m.checkpoints.items()}}
            for k, m in cat.models.items()
        },
        "recipes": {
            "sglang_version": recipes.sglang_version,
            "images": dict(recipes.images),
            "matrix": {
                model: {prec: {gpu: {"mtp_off": asdict(recipes.cell(model, prec, gpu, False)),
                                     "mtp_on": asdict(recipes.cell(model, prec, gpu, True))}
                               for gpu in by_gpu}
                        for prec, by_gpu in by_prec.items()}
                for model, by_prec in recipes.matrix.items()
            },
            "rules": [_rule(r) for r in recipes.rules],
            "deployment_rules": [_rule(r) for r in recipes.deployment_rules],
            "mamba_cache": [{"when": dict(m.when), "allowed": list(m.allowed), "default": m.default,
                             "refuse": m.refuse} for m in recipes.mamba_cache],
        },
    }
    return {section: data[section]} if section else data


def _rule(r) -> dict:
    return {"name": r.name, "when": [dict(c) for c in r.when], "unless": dict(r.unless) if r.unless else None,
            "flags": list(r.flags), "env": dict(r.env)}


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def catalog_to_text(section: str | None = None) -> str:
    cat = load_catalog()
    parts = []
    if section in (None, "gpus"):
        rows = [["GPU", "VENDOR", "ARCH", "MEMORY", "MiB (driver)", "NVSWITCH", "FP4", "IMAGE"]]
        for g in cat.gpus.values():
            rows.append([g.id, g.vendor, g.architecture, f"{g.memory_gb:g} GB", str(g.memory_mib),
                         "yes" if g.nvswitch else "no", "yes" if g.fp4 else "no", cat.recipes.images[g.image_family]])
        parts.append(_table(rows))
    if section in (None, "models"):
        rows = [["MODEL", "KIND", "PARAMS", "BF16", "FP8", "FP4"]]
        for m in cat.models.values():
            kind = f"MoE {m.active_params_b:g}B active" if m.moe else "dense"
            cks = [f"{m.checkpoints[p].repo} ({m.checkpoints[p].weight_gb:g} GB)" if p in m.checkpoints else "-"
                   for p in ("bf16", "fp8", "fp4")]
            rows.append([m.id, kind, f"{m.total_params_b:g}B", *cks])
        parts.append(_table(rows))
    if section in (None, "recipes"):
        gpus = list(cat.gpus)
        rows = [["MODEL", "PREC", *gpus]]
        for model, by_prec in cat.recipes.matrix.items():
            for prec, by_gpu in by_prec.items():
                cells = []
                for gpu in gpus:
                    off, on = (cat.recipes.cell(model, prec, gpu, mtp) for mtp in (False, True))
                    if off is None:
                        cells.append("-")
                        continue
                    fmt = lambda c: f"{c.tp}" + (f"/ep{c.ep}" if c.ep else "") + f"/{c.mem if c.mem else '-'}"
                    cells.append(fmt(off) if off == on else f"{fmt(off)}>{fmt(on)}")
                rows.append([model, prec, *cells])
        parts.append(f"SGLang {cat.recipes.sglang_version}; cell = tp[/ep]/mem-fraction, a>b = MTP off > MTP on\n"
                     + _table(rows))
    return "\n\n".join(parts)
