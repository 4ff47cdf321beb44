"""Two commits of this project measured against each other, interleaved in one sitting.

Run: ``python benchmarks/compare_commits.py BASE_REV [--rounds 5] [--skip-slurm]`` from the repository root.

BASE_REV is checked out into a temporary git worktree; the working tree is the other side. Each round runs,
for the base and then for the working tree, ``benchmarks/bench_local.py --repeat 1`` and (unless
``--skip-slurm``) the map section of ``benchmarks/bench_slurm.py`` (``--map-only --map-repeat 1``), each side's
script with its own package first on ``PYTHONPATH`` (SLURM jobs inherit it, so the compute side runs that
side's code too). Alternating the sides within every round means load from elsewhere hits both. It prints, per
figure, the median of each side over the rounds and the median of the per-round ratios working tree / base.

The figures: our submit of 10^4 no-ops and our ``map(tiny, range(10**6))`` from bench_local, the
ProcessPoolExecutor figures of the same runs (the baseline each run measures, to show the load was alike), and
bench_slurm's cold and warm map and its hand-written sbatch floor.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_FIGURES = {
    "local submit, ours": r"^submit\s*\|\s*ClusterPoolExecutor\s*\|[^|]*\|[^|]*\|\s*([\d.]+)",
    "local submit, PPE": r"^submit\s*\|\s*ProcessPoolExecutor\s*\|[^|]*\|[^|]*\|\s*([\d.]+)",
    "local map, ours": r"^map\s*\|\s*ClusterPoolExecutor\s*\|\s*default\s*\|[^|]*\|\s*([\d.]+)",
    "local map, PPE chunksize=10000": r"^map\s*\|\s*ProcessPoolExecutor\s*\|\s*chunksize=10000\s*\|[^|]*\|\s*([\d.]+)",
}
SLURM_FIGURES = {
    "slurm map cold, ours": r"ours, cold\s+best\s+([\d.]+) s",
    "slurm map warm, ours": r"ours, warm\s+best\s+([\d.]+) s",
    "slurm map floor (raw sbatch)": r"raw sbatch --array=\S+, \d+ slices\s+best\s+([\d.]+) s",
}


def run_script(checkout: Path, argv: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    done = subprocess.run([sys.executable, *argv], cwd=checkout, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} in {checkout} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def figures(output: str, patterns: dict[str, str]) -> dict[str, float]:
    found = {}
    for name, pattern in patterns.items():
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise SystemExit(f"no figure {name!r} in this output:\n{output}")
        found[name] = float(match.group(1))
    return found


def one_side(checkout: Path, slurm: bool) -> dict[str, float]:
    measured = figures(run_script(checkout, ["benchmarks/bench_local.py", "--repeat", "1"]), LOCAL_FIGURES)
    if slurm:
        output = run_script(checkout, ["benchmarks/bench_slurm.py", "--map-only", "--map-repeat", "1"])
        measured.update(figures(output, SLURM_FIGURES))
    return measured


def report(base: list[dict[str, float]], new: list[dict[str, float]], base_rev: str) -> None:
    print(f"\n{len(base)} interleaved rounds; seconds, median per side; ratio = median of per-round new/base")
    print(f"{'figure':34s} {'base ' + base_rev[:10]:>16s} {'working tree':>14s} {'ratio':>7s}")
    for name in base[0]:
        b = [round_[name] for round_ in base]
        n = [round_[name] for round_ in new]
        ratio = statistics.median(x / y for x, y in zip(n, b))
        print(f"{name:34s} {statistics.median(b):16.3f} {statistics.median(n):14.3f} {ratio:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the commit to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-slurm", action="store_true", help="only bench_local.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base_tree = Path(scratch) / "base"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(base_tree), args.base], cwd=ROOT, check=True)
        try:
            base, new = [], []
            for round_ in range(args.rounds):
                base.append(one_side(base_tree, not args.skip_slurm))
                new.append(one_side(ROOT, not args.skip_slurm))
                print(f"round {round_ + 1}: base {base[-1]}\n         new  {new[-1]}", flush=True)
            report(base, new, args.base)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
