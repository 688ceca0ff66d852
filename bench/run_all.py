"""Run every benchmark script in bench/ (what `make bench` calls), one process each.

Scripts are found by listing the folder, so a new benchmark is run without editing this file.
The full mode runs each with its own defaults and writes to bench/results/ as the script does;
`--quick` checks that they still run, not to measure: results go to a temporary folder, the
protocol benchmark runs at one size and one repeat, and the real-data simulations (whole
federations on Financial PhraseBank, many minutes even at one round on a shared 2-core
machine) are skipped unless named with `--only`, which then runs them at one round and few
institutions. A script with no quick settings runs with its defaults in both modes.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...]

Exits non-zero when any script fails; the table at the end gives each script's exit code and
wall time. Real-data benchmarks read ../shared/data and are skipped when it is absent.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "financial_phrasebank"

NEEDS_DATA = {"federated_vs_baselines", "protection_accuracy"}


def quick_args(name: str, out: Path) -> list[str]:
    """Arguments that make `name` a smoke run writing under `out` ([] for its defaults)."""
    return {
        "federated_vs_baselines": ["--rounds", "1", "--clients", "2",
                                   "--out", str(out / name)],
        "protection_accuracy": ["--variants", "plain", "secagg", "--rounds", "1",
                                "--clients", "3", "--out", str(out / name)],
        "secagg_overhead": ["--sizes", "minilm", "--institutions", "5", "--dropout-n", "5",
                            "--repeats", "1", "--out", str(out / name)],
    }.get(name, [])


def scripts(only: list[str] | None) -> list[Path]:
    found = sorted(p for p in HERE.glob("*.py") if p.stem != Path(__file__).stem)
    if only:
        unknown = set(only) - {p.stem for p in found}
        if unknown:
            raise SystemExit(f"error: --only {', '.join(sorted(unknown))}: no such script in "
                             f"{HERE} (have {', '.join(p.stem for p in found)})")
        found = [p for p in found if p.stem in only]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, results discarded")
    parser.add_argument("--only", nargs="+", help="script names (without .py) to run")
    args = parser.parse_args()
    results: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="fedpeft-bench-") as scratch:
        for script in scripts(args.only):
            name = script.stem
            if name in NEEDS_DATA and not DATA.is_dir():
                print(f"== {name}: skipped, {DATA} not found", flush=True)
                results.append((name, "skipped", 0.0))
                continue
            if name in NEEDS_DATA and args.quick and not args.only:
                print(f"== {name}: skipped in --quick (name it with --only to run it)", flush=True)
                results.append((name, "skipped", 0.0))
                continue
            extra = quick_args(name, Path(scratch)) if args.quick else []
            print(f"== {name} {' '.join(extra)}", flush=True)
            started = time.perf_counter()
            code = subprocess.run([sys.executable, str(script), *extra], check=False).returncode
            results.append((name, str(code), time.perf_counter() - started))
    print("| script | exit | wall s |")
    print("| --- | --- | --- |")
    for name, status, seconds in results:
        print(f"| {name} | {status} | {seconds:.0f} |")
    return 1 if any(status not in {"0", "skipped"} for _, status, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
