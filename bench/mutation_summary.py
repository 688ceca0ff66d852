"""Mutants killed / surviving per security-core module, from mutmut's results in mutants/.

`make mutation` prints this after the run; docs/benchmarks.md quotes it. A module is one
source file, or a package folder when given as one (`--group`).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

# mutmut's exit codes (mutmut/stats.py): 1 and 3 mean a test failed, 0 that all passed.
KILLED = {1, 3}
SURVIVED = {0}
TIMEOUT = {36, -24, 24, 152, 255}
NO_TESTS = {33, 5}


def _status(code: int | None) -> str:
    if code in KILLED or code in TIMEOUT:  # a mutant that hangs the tests is detected too
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    if code is None:
        return "not run"
    return "other"


def summarise(mutants: Path, groups: list[str]) -> dict[str, Counter[str]]:
    """Status counts per group (a path prefix under src/); each file counts in its first group."""
    counts: dict[str, Counter[str]] = {}
    for meta in sorted(mutants.glob("src/**/*.py.meta")):
        source = str(meta.relative_to(mutants))[: -len(".meta")]
        group = next((g for g in groups if source.startswith(g)), source)
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if not codes:
            continue
        bucket = counts.setdefault(group, Counter())
        for code in codes.values():
            bucket[_status(code)] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--group", action="append", default=[],
                        help="count every file under this path prefix as one module")
    args = parser.parse_args()
    counts = summarise(args.mutants, args.group)
    print("| module | mutants | killed | survived | no tests | not run | killed % |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for module, c in counts.items():
        total = sum(c.values())
        ran = c["killed"] + c["survived"] + c["no tests"]
        share = f"{100 * c['killed'] / ran:.1f}" if ran else "-"
        print(f"| {module} | {total} | {c['killed']} | {c['survived']} | {c['no tests']} "
              f"| {c['not run']} | {share} |")


if __name__ == "__main__":
    main()
