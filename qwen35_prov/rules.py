"""Applies the recipe catalog's flag rules to the facts of one node's launch."""

from __future__ import annotations

from typing import Any, Mapping

from .catalog import Rule


def _value_matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, list):
        return any(_value_matches(e, actual) for e in expected)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return str(expected) == str(actual)


def condition_matches(condition: Mapping[str, Any], facts: Mapping[str, Any]) -> bool:
    return all(_value_matches(expected, facts[fact]) for fact, expected in condition.items())


def rule_applies(rule: Rule, facts: Mapping[str, Any]) -> bool:
    if not any(condition_matches(c, facts) for c in rule.when):
        return False
    return rule.unless is None or not condition_matches(rule.unless, facts)


def apply_rules(rules: tuple[Rule, ...], facts: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[list[str], dict[str, str], list[str]]:
    """Returns (flags, env, names of the rules that applied), in catalog order."""
    flags: list[str] = []
    env: dict[str, str] = {}
    applied: list[str] = []
    for rule in rules:
        if not rule_applies(rule, facts):
            continue
        applied.append(rule.name)
        flags.extend(flag.format(**values) for flag in rule.flags)
        env.update(rule.env)
    return flags, env, applied
