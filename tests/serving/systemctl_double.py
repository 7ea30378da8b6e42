#!/usr/bin/env python3
"""TEST DOUBLE of `systemctl` for tests/test_serving_watch.py: the two calls the replica watch makes.

State lives in $SYSTEMCTL_DOUBLE_DIR/<unit>.json ({"active": bool, "inv": str, "start": monotonic seconds});
every try-restart is appended to calls.log. `show` prints what systemd prints for the properties asked;
`try-restart` restarts only an active unit: half a second later, a new InvocationID and main process.
"""

import json
import os
import sys
import time
import uuid
from pathlib import Path

root = Path(os.environ["SYSTEMCTL_DOUBLE_DIR"])


def load(unit):
    path = root / f"{unit}.json"
    return json.loads(path.read_text()) if path.exists() else {"active": False, "inv": "", "start": 0}


def save(unit, state):
    tmp = root / f".{unit}.tmp"
    tmp.write_text(json.dumps(state))
    tmp.replace(root / f"{unit}.json")


args = sys.argv[1:]
if args[:1] == ["show"]:
    unit = args[1]
    st = load(unit)
    print(f"ActiveState={'active' if st['active'] else 'inactive'}")
    print(f"InvocationID={st['inv'] if st['active'] else ''}")
    print(f"ExecMainPID={4242 if st['active'] else 0}")
    print(f"ExecMainStartTimestampMonotonic={int(st['start'] * 1e6) if st['active'] else 0}")
elif args[:1] == ["try-restart"]:
    unit = args[-1]
    with open(root / "calls.log", "a") as log:
        log.write(f"try-restart {unit}\n")
    st = load(unit)
    if st["active"]:
        time.sleep(0.5)  # stopping the old main process takes a moment, as it does for real
        save(unit, {"active": True, "inv": uuid.uuid4().hex, "start": time.monotonic()})
else:
    sys.exit(f"systemctl double: unsupported {args}")
