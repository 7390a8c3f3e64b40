"""Run every benchmark and assemble bench/RESULTS.md from the sections they write.

Usage::

    make bench                      # all benchmarks (long: 1,000,000-patient runs)
    .venv/bin/python -m bench.run_all --quick
    .venv/bin/python -m bench.run_all --assemble-only

Each benchmark module writes its own section to ``bench/results/<name>.md``; this script
concatenates them, in a fixed order, under a header naming the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = (
    "validate", "simulate", "cox", "concordance", "km", "bayes", "trajectories", "mixed_cox",
    "federated", "count_recovery", "time", "study", "mixed_cox_bayes",
)  # fmt: skip


def assemble() -> Path:
    sections = []
    for name in ORDER:
        path = HERE / "results" / f"{name}.md"
        if path.exists():
            sections.append(path.read_text(encoding="utf-8").strip())
    for path in sorted((HERE / "results").glob("*.md")):
        if path.stem not in ORDER:
            sections.append(path.read_text(encoding="utf-8").strip())
    header = (
        "# Benchmark results\n\n"
        "Recorded by the benchmarks in `bench/` (`make bench`, or `.venv/bin/python -m "
        "bench.<name>`). Peers are timed in the same run on the same machine, so the ratios "
        "are the figures to read; absolute times depend on the machine "
        f"(recorded on {platform.machine()}, {os.cpu_count()} cores).\n"
    )
    out = HERE / "RESULTS.md"
    out.write_text(header + "\n" + "\n\n".join(sections) + "\n", encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="pass --quick to each benchmark")
    parser.add_argument("--assemble-only", action="store_true")
    args = parser.parse_args()
    if not args.assemble_only:
        for name in ORDER:
            module = HERE / f"bench_{name}.py"
            if not module.exists():
                continue
            command = [sys.executable, "-m", f"bench.bench_{name}"] + (
                ["--quick"] if args.quick else []
            )
            print("$", " ".join(command), flush=True)
            subprocess.run(command, check=False, cwd=HERE.parent)
    print(f"wrote {assemble()}")


if __name__ == "__main__":
    main()
