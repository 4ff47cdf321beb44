"""The node's import time on this checkout against a base commit's worktree, interleaved.

    python benchmarks/node_import_time.py RUNS BASE_CHECKOUT [BASE_MODULE]

Runs ``python -X importtime -c 'import MODULE'`` RUNS times in alternation for ``clustrix_futures.node.worker``
here and ``BASE_MODULE`` (default ``clustrix_futures.worker``, the entry point before the layout step) in the
base checkout, with bytecode caches written (``PYTHONDONTWRITEBYTECODE`` removed: with it every run compiles),
from ``/tmp``, and prints the medians of the entry module's cumulative import time and their ratio.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent.parent)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def import_ms(root: str, module: str) -> float:
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], cwd="/tmp",
                         env=dict(ENV, PYTHONPATH=root), capture_output=True, text=True, check=True).stderr
    for line in err.splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)$", line)
        if found and found.group(2) == module:
            return int(found.group(1)) / 1000
    raise SystemExit(f"no import line for {module}:\n{err}")


def main() -> None:
    runs, base = int(sys.argv[1]), sys.argv[2]
    cases = {"base": (base, sys.argv[3] if len(sys.argv) > 3 else "clustrix_futures.worker"),
             "this": (HERE, "clustrix_futures.node.worker")}
    for root, module in cases.values():
        import_ms(root, module)  # write the bytecode caches
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, (root, module) in cases.items():
            times[name].append(import_ms(root, module))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name}: median {value:.2f} ms over {runs} runs")
    print(f"ratio this/base: {medians['this'] / medians['base']:.3f}")


if __name__ == "__main__":
    main()
