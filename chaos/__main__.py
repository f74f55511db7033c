"""``python -m chaos``: run every fault scenario against a throwaway stack and print pass/fail
with figures, then the SQL invariants after each. Exit status 1 if anything failed."""

import json
import sys
import time
import traceback
from typing import Any

from chaos.invariants import check_invariants
from chaos.scenarios import SCENARIOS
from chaos.stack import Stack


def main(selected: list[str]) -> int:
    stack = Stack()
    results: list[dict[str, Any]] = []
    try:
        stack.up()
        for name, scenario in SCENARIOS.items():
            if selected and not any(s.lower() in name.lower() for s in selected):
                continue
            began = time.monotonic()
            try:
                passed, figures = scenario(stack)
            except Exception:
                passed, figures = False, {"error": traceback.format_exc(limit=3)}
            broken = check_invariants(stack)
            ok = passed and not broken
            results.append(
                {
                    "scenario": name,
                    "passed": ok,
                    "seconds": round(time.monotonic() - began, 1),
                    "figures": figures,
                    "broken invariants": broken,
                }
            )
            print(f"{'PASS' if ok else 'FAIL'}  {name}  ({results[-1]['seconds']} s)", flush=True)
            print("      " + json.dumps(figures, default=str), flush=True)
            if broken:
                print("      broken invariants: " + json.dumps(broken), flush=True)
    finally:
        if not all(r["passed"] for r in results):
            for log in sorted(stack.logs.glob("*.log")):
                print(f"--- tail of {log.name}")
                print("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        stack.down()
    passed_count = sum(1 for r in results if r["passed"])
    print(f"chaos: {passed_count} passed, {len(results) - passed_count} failed")
    return 0 if results and passed_count == len(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
