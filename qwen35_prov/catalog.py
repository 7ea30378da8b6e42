"""The GPU, model and recipe catalogs: packaged YAML loaded into typed, validated objects."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping

import yaml

from .errors import CatalogError, UserError

PRECISIONS = ("bf16", "fp8", "fp4")
VENDORS = ("nvidia", "amd")
RULE_FACTS = (
    "vendor", "gpu", "precision", "model", "family", "moe", "mtp", "mamba_v2", "tp_gt_1", "has_ep", "has_mem",
    "multinode", "reasoning_parser", "tool_call_parser", "kv_offload",
    # the deployment's (recipes.yaml deployment_rules)
    "loader_threads_default", "mm_attention_backend", "base_gpu_id", "cuda_ipc_transport", "weights_on_network",
)
MAMBA_CHOICES = ("v1", "v2")
#: Choices the generator offers only for some cells (recipes.yaml `offered`), tested on these facts
OFFERED_FACTS = ("model", "precision", "gpu")


@dataclass(frozen=True)
class Gpu:
    id: str
    vendor: str
    name: str
    architecture: str
    memory_gb: float
    memory_mib: int
    memory_source: str
    nvswitch: bool
    fp4: bool
    image_family: str
    mm_attention_backend: str | None
    gpus_per_node: int = 8
    nvlink_domain: bool = False
    host_architecture: str | None = None   # the CPU every host of this kind has (`uname -m`), where it is one

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024


@dataclass(frozen=True)
class Checkpoint:
    precision: str
    repo: str
    weight_gb: float
    repo_by_vendor: Mapping[str, str] = field(default_factory=dict)

    def repo_for(self, vendor: str) -> str:
        return self.repo_by_vendor.get(vendor, self.repo)


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    family: str          # the model family (Qwen3.5, Qwen3.6): a fact the rules test
    moe: bool
    total_params_b: float
    active_params_b: float
    checkpoints: Mapping[str, Checkpoint]
    revision: str | None = None


@dataclass(frozen=True)
class Cell:
    """One cell of the TP matrix, already resolved for MTP on or off."""

    tp: int
    ep: int | None
    mem: float | None
    min_tp: int


@dataclass(frozen=True)
class Rule:
    name: str
    when: tuple[Mapping[str, Any], ...]
    unless: Mapping[str, Any] | None
    flags: tuple[str, ...]
    env: Mapping[str, str]


@dataclass(frozen=True)
class MambaChoice:
    """recipes.yaml mamba_cache: where `when` matches, the --mamba-cache choices allowed and the default."""
    when: Mapping[str, Any]
    allowed: tuple[str, ...]
    default: str
    refuse: str | None


@dataclass(frozen=True)
class RecipeBook:
    sglang_version: str
    images: Mapping[str, str]
    entrypoint: tuple[str, ...]
    assumed_mem_fraction_static: float
    dist_init_port: int
    default_loader_threads: int
    matrix: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]]
    rules: tuple[Rule, ...]
    offered: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    parsers: Mapping[str, str] = field(default_factory=dict)
    deployment_rules: tuple[Rule, ...] = ()
    mamba_cache: tuple[MambaChoice, ...] = ()

    def cell(self, model: str, precision: str, gpu: str, mtp: bool) -> Cell | None:
        raw = self.matrix.get(model, {}).get(precision, {}).get(gpu)
        if raw is None:
            return None
        base = {k: raw.get(k) for k in ("tp", "ep", "mem")}
        chosen = {**base, **raw["mtp"]} if mtp and "mtp" in raw else base
        # The seed's minimum, where the cell names one, else the cell's own TP; with MTP on, a smaller
        # TP verified without MTP also holds the weights.
        min_tp = min(raw.get("min_tp", base["tp"]), chosen["tp"])
        return Cell(tp=chosen["tp"], ep=chosen.get("ep"), mem=chosen.get("mem"), min_tp=min_tp)


@dataclass(frozen=True)
class Catalog:
    gpus: Mapping[str, Gpu]
    models: Mapping[str, Model]
    recipes: RecipeBook

    def gpu(self, gpu_id: str) -> Gpu:
        try:
            return self.gpus[gpu_id]
        except KeyError:
            raise UserError(f"unknown GPU kind {gpu_id!r}; known: {', '.join(self.gpus)}") from None

    def model(self, model_id: str) -> Model:
        try:
            return self.models[model_id.lower()]
        except KeyError:
            raise UserError(f"unknown model {model_id!r}; known: {', '.join(self.models)}") from None


def _require(where: str, raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in raw:
        raise CatalogError(f"{where}: missing field {key!r}")
    value = raw[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise CatalogError(f"{where}.{key}: expected {_type_name(kind)}, got {value!r}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _type_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(kind))


def _optional(where: str, raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if raw.get(key) is None:
        return None
    return _require(where, raw, key, kind)


def parse_gpus(doc: Mapping[str, Any]) -> dict[str, Gpu]:
    gpus = {}
    for gpu_id, raw in _require("gpus.yaml", doc, "gpus", dict).items():
        where = f"gpus.{gpu_id}"
        vendor = _require(where, raw, "vendor", str)
        if vendor not in VENDORS:
            raise CatalogError(f"{where}.vendor: {vendor!r} is not one of {', '.join(VENDORS)}")
        gpus[gpu_id] = Gpu(
            id=gpu_id,
            vendor=vendor,
            name=_require(where, raw, "name", str),
            architecture=_require(where, raw, "architecture", str),
            memory_gb=_require(where, raw, "memory_gb", (int, float)),
            memory_mib=_require(where, raw, "memory_mib", int),
            memory_source=_require(where, raw, "memory_source", str),
            nvswitch=_require(where, raw, "nvswitch", bool),
            fp4=_require(where, raw, "fp4", bool),
            image_family=_require(where, raw, "image_family", str),
            mm_attention_backend=_optional(where, raw, "mm_attention_backend", str),
            gpus_per_node=_optional(where, raw, "gpus_per_node", int) or 8,
            nvlink_domain=_optional(where, raw, "nvlink_domain", bool) or False,
            host_architecture=_optional(where, raw, "host_architecture", str),
        )
    return gpus


def parse_models(doc: Mapping[str, Any]) -> dict[str, Model]:
    models = {}
    for model_id, raw in _require("models.yaml", doc, "models", dict).items():
        model_id = str(model_id)
        where = f"models.{model_id}"
        checkpoints = {}
        for precision, ck in _require(where, raw, "checkpoints", dict).items():
            if precision not in PRECISIONS:
                raise CatalogError(f"{where}.checkpoints: unknown precision {precision!r}")
            ck_where = f"{where}.checkpoints.{precision}"
            checkpoints[precision] = Checkpoint(
                precision=precision,
                repo=_require(ck_where, ck, "repo", str),
                weight_gb=_require(ck_where, ck, "weight_gb", (int, float)),
                repo_by_vendor=_optional(ck_where, ck, "repo_by_vendor", dict) or {},
            )
        models[model_id] = Model(
            id=model_id,
            name=_require(where, raw, "name", str),
            family=_require(where, raw, "family", str),
            moe=_require(where, raw, "moe", bool),
            total_params_b=_require(where, raw, "total_params_b", (int, float)),
            active_params_b=_require(where, raw, "active_params_b", (int, float)),
            checkpoints=checkpoints,
            revision=_optional(where, raw, "revision", str),
        )
    return models


def _parse_condition(where: str, raw: Any) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: a condition is a mapping of fact to value, got {raw!r}")
    unknown = set(raw) - set(RULE_FACTS)
    if unknown:
        raise CatalogError(f"{where}: unknown fact(s) {sorted(unknown)}; known: {', '.join(RULE_FACTS)}")
    return {k: str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for k, v in raw.items()}


def _parse_rules(section: str, raws: list) -> tuple[Rule, ...]:
    rules = []
    for i, raw in enumerate(raws):
        where = f"{section}[{i}]"
        name = _require(where, raw, "name", str)
        when = raw.get("when", {})
        when_list = when if isinstance(when, list) else [when]
        rules.append(Rule(
            name=name,
            when=tuple(_parse_condition(f"{section}.{name}.when", c) for c in when_list),
            unless=_parse_condition(f"{section}.{name}.unless", raw["unless"]) if "unless" in raw else None,
            flags=tuple(str(f) for f in raw.get("flags", [])),
            env={str(k): str(v) for k, v in raw.get("env", {}).items()},
        ))
    return tuple(rules)


def _parse_mamba_cache(raws: list) -> tuple[MambaChoice, ...]:
    choices = []
    for i, raw in enumerate(raws):
        where = f"mamba_cache[{i}]"
        allowed = tuple(str(c) for c in _require(where, raw, "allowed", list))
        default = _require(where, raw, "default", str)
        if not allowed or set(allowed) - set(MAMBA_CHOICES) or default not in allowed:
            raise CatalogError(f"{where}: allowed must be some of {', '.join(MAMBA_CHOICES)} and hold the default")
        refuse = _optional(where, raw, "refuse", str)
        if refuse is None and set(allowed) != set(MAMBA_CHOICES):
            raise CatalogError(f"{where}: say why the other choices are refused (refuse:)")
        choices.append(MambaChoice(when=_parse_condition(f"{where}.when", raw.get("when") or {}),
                                   allowed=allowed, default=default, refuse=refuse))
    if not choices or choices[-1].when:
        raise CatalogError("mamba_cache: the last entry must match every plan (when: {})")
    return tuple(choices)


def parse_recipes(doc: Mapping[str, Any], gpus: Mapping[str, Gpu], models: Mapping[str, Model]) -> RecipeBook:
    rules = _parse_rules("rules", _require("recipes.yaml", doc, "rules", list))
    matrix = {str(m): v for m, v in _require("recipes.yaml", doc, "matrix", dict).items()}
    for model_id, by_precision in matrix.items():
        if model_id not in models:
            raise CatalogError(f"matrix.{model_id}: no such model in models.yaml")
        for precision, by_gpu in by_precision.items():
            if precision not in models[model_id].checkpoints:
                raise CatalogError(f"matrix.{model_id}.{precision}: the model has no {precision} checkpoint")
            for gpu_id, cell in by_gpu.items():
                where = f"matrix.{model_id}.{precision}.{gpu_id}"
                if gpu_id not in gpus:
                    raise CatalogError(f"{where}: unknown GPU kind")
                if precision == "fp4" and not gpus[gpu_id].fp4:
                    raise CatalogError(f"{where}: {gpu_id} has no FP4 support")
                for part_where, part in ((where, cell), (f"{where}.mtp", cell.get("mtp", {}))):
                    tp = part.get("tp", cell["tp"])
                    if not isinstance(tp, int) or tp < 1 or tp & (tp - 1):
                        raise CatalogError(f"{part_where}.tp: expected a power of two, got {tp!r}")
                    mem = part.get("mem")
                    if mem is not None and not 0 < mem < 1:
                        raise CatalogError(f"{part_where}.mem: expected a fraction in (0, 1), got {mem!r}")
    offered = {}
    for choice, conditions in (doc.get("offered") or {}).items():
        where = f"offered.{choice}"
        if not isinstance(conditions, list) or not conditions:
            raise CatalogError(f"{where}: expected a list of conditions")
        parsed = tuple(_parse_condition(where, c) for c in conditions)
        for c in parsed:
            if set(c) - set(OFFERED_FACTS):
                raise CatalogError(f"{where}: conditions test only {', '.join(OFFERED_FACTS)}, got {sorted(c)}")
        offered[str(choice)] = parsed
    parsers = _require("recipes.yaml", doc, "parsers", dict)
    images = _require("recipes.yaml", doc, "images", dict)
    for gpu in gpus.values():
        if gpu.image_family not in images:
            raise CatalogError(f"gpus.{gpu.id}.image_family: {gpu.image_family!r} has no image in recipes.yaml")
    return RecipeBook(
        sglang_version=str(_require("recipes.yaml", doc, "sglang_version", str)),
        images=images,
        entrypoint=tuple(_require("recipes.yaml", doc, "entrypoint", list)),
        assumed_mem_fraction_static=_require("recipes.yaml", doc, "assumed_mem_fraction_static", float),
        dist_init_port=_require("recipes.yaml", doc["multinode"], "dist_init_port", int),
        default_loader_threads=_require("recipes.yaml", doc, "default_loader_threads", int),
        matrix=matrix,
        rules=rules,
        deployment_rules=_parse_rules("deployment_rules", _require("recipes.yaml", doc, "deployment_rules", list)),
        mamba_cache=_parse_mamba_cache(_require("recipes.yaml", doc, "mamba_cache", list)),
        offered=offered,
        parsers={k: _require("parsers", parsers, k, str) for k in ("reasoning", "tool_call")},
    )


def _read(name: str) -> Any:
    text = resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@functools.lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    gpus = parse_gpus(_read("gpus.yaml"))
    models = parse_models(_read("models.yaml"))
    return Catalog(gpus=gpus, models=models, recipes=parse_recipes(_read("recipes.yaml"), gpus, models))
