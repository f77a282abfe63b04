"""The fault table: each fault test records one row (fault, what was observed, what was lost,
time to recover), printed (`pytest -s`) and, when KEEL_FAULT_TABLE names a file, appended to it
as a JSON line, so one run of the fault tests gives the table:

    KEEL_FAULT_TABLE=/tmp/faults.jsonl .venv/bin/python -m pytest -s \
        tests/e2e/test_controlplane_kill.py tests/e2e/test_drain_durable.py \
        tests/e2e/test_database_outage.py
"""

from __future__ import annotations

import json
import os


def record(fault: str, *, observed: str, lost: str, recover_s: float) -> None:
    row = {"fault": fault, "observed": observed, "lost": lost, "recover_s": round(recover_s, 1)}
    print(f"\nFAULT-TABLE | {fault} | {observed} | {lost} | {recover_s:.1f} s")
    path = os.environ.get("KEEL_FAULT_TABLE")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
