"""The stand-in's copy of SGLang's command line (TEST DOUBLE support code, stdlib only).

`server_args.json` beside this file is generated at image build time from SGLang 0.5.23's own parser
(tests/doubles/sglang_standin/dump_server_args.py); this module rebuilds an argparse parser from it, so the
stand-in accepts and rejects exactly the flags, values and choices the real `sglang.launch_server` does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from decimal import Decimal
from pathlib import Path

SPEC_PATH = Path(os.environ.get("SGLANG_STANDIN_ARGS_JSON", Path(__file__).with_name("server_args.json")))


def _human_int(value: str) -> int:
    """SGLang's human_readable_int: 1k, 25.6k, 1M, 1Ki, 1Mi, or a plain integer."""
    value = value.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)", value)
    if match:
        number, suffix = match.groups()
        iec = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
        if suffix in iec:
            if "." in number:
                raise argparse.ArgumentTypeError(f"Decimals are not allowed with IEC suffixes like '{suffix}'.")
            return int(number) * iec[suffix]
        return int(Decimal(number) * {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[suffix])
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Invalid integer value: '{value}'.") from None


def _json(value: str):
    try:
        return json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON {value!r}: {exc}") from None


_json.__name__ = "loads"
_human_int.__name__ = "human_readable_int"
TYPES = {"int": int, "float": float, "str": str, "json": _json, "human_int": _human_int}


def load_spec(path: Path = SPEC_PATH) -> dict:
    return json.loads(Path(path).read_text())


def build_parser(spec: dict) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=spec.get("prog", "sglang serve"), allow_abbrev=spec.get("allow_abbrev", True))
    for opt in spec["options"]:
        kind = opt["kind"]
        names = opt["option_strings"]
        common = {"dest": opt["dest"], "default": opt.get("default")}
        if opt.get("required"):
            common["required"] = True
        if kind in ("store", "append"):
            kwargs = dict(common, action=kind, type=TYPES[opt.get("type") or "str"])
            if opt.get("nargs") is not None:
                kwargs["nargs"] = opt["nargs"]
            if opt.get("choices") is not None:
                # choices are compared after type conversion; the dump holds them as strings
                conv = TYPES[opt.get("type") or "str"]
                kwargs["choices"] = [conv(c) if conv in (int, float) else c for c in opt["choices"]]
            parser.add_argument(*names, **kwargs)
        elif kind in ("store_true", "store_false", "count"):
            parser.add_argument(*names, action=kind, **common)
        elif kind == "store_const":
            parser.add_argument(*names, action="store_const", const=opt.get("const"), **common)
        elif kind == "boolean_optional":
            primary = [n for n in names if not n.startswith("--no-")]
            parser.add_argument(*primary, action=argparse.BooleanOptionalAction, **common)
        else:  # pragma: no cover - the dump only writes the kinds above
            raise ValueError(f"unknown option kind {kind!r} for {names}")
    return parser
