"""Dump SGLang's real command-line contract to JSON for the stand-in engine (a TEST DOUBLE).

Runs where the real SGLang is importable (the project's .venv holds sglang 0.5.23 installed --no-deps for
the contract tests). Records, for every option of `ServerArgs.add_cli_args`: its option strings, the kind of
argparse action, nargs, choices, value type, const and default, so that the stand-in rebuilds a parser that
accepts and rejects exactly what SGLang's parser accepts and rejects. The dump checks itself: the parser it
rebuilds must have the same options, nargs and choices as the real one.

Usage: python dump_server_args.py OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# This folder holds the stand-in's own `sglang` package: keep it from shadowing the real one.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

KINDS = {
    "_StoreAction": "store",
    "_StoreTrueAction": "store_true",
    "_StoreFalseAction": "store_false",
    "_StoreConstAction": "store_const",
    "_AppendAction": "append",
    "_CountAction": "count",
    "BooleanOptionalAction": "boolean_optional",
    "_HelpAction": "help",
}
TYPES = {"int": "int", "float": "float", "str": "str", "loads": "json", "json_list_type": "json",
         "human_readable_int": "human_int", "nullable_str": "str"}


def _kind(action: argparse.Action) -> str:
    for cls in type(action).__mro__:
        if cls.__name__ in KINDS:
            return KINDS[cls.__name__]
    # custom actions (LoRAPathAction, Deprecated*): classify by their shape
    if action.nargs == 0:
        return "store_const" if action.const not in (True, None) else "store_true"
    return "store"


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return None


def dump() -> dict:
    import sglang
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(parser)
    options = []
    for action in parser._actions:
        kind = _kind(action)
        if kind == "help":
            continue
        type_name = getattr(action.type, "__name__", None) if action.type is not None else None
        options.append({
            "option_strings": list(action.option_strings),
            "dest": action.dest,
            "kind": kind,
            "nargs": action.nargs if kind in ("store", "append") else None,
            "choices": sorted(map(str, action.choices)) if action.choices is not None else None,
            "type": TYPES.get(type_name, "str") if kind in ("store", "append") else None,
            "const": _jsonable(action.const) if kind == "store_const" else None,
            "default": _jsonable(action.default),
            "required": bool(action.required),
        })
    return {"sglang_version": sglang.__version__, "prog": parser.prog, "allow_abbrev": parser.allow_abbrev,
            "options": options}


def self_check(spec: dict) -> None:
    """The parser the stand-in rebuilds must match the real one option for option."""
    import importlib.util

    from sglang.srt.server_args import ServerArgs

    # the stand-in's parser builder, loaded by path: its package is also called `sglang`
    path = Path(__file__).resolve().parent / "sglang" / "_standin_args.py"
    module_spec = importlib.util.spec_from_file_location("_sglang_standin_args", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    build_parser = module.build_parser

    real = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(real)
    rebuilt = build_parser(spec)

    def shape(p):
        return {tuple(a.option_strings): (a.nargs, sorted(map(str, a.choices)) if a.choices else None)
                for a in p._actions}

    if shape(real) != shape(rebuilt):
        missing = set(shape(real)) ^ set(shape(rebuilt))
        raise SystemExit(f"the rebuilt parser differs from SGLang's: {sorted(missing)[:5]}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    spec = dump()
    self_check(spec)
    out = Path(argv[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
