"""The documented import path of the benchmark helpers, which live in :mod:`clustrix_futures.tools.bench`."""

from clustrix_futures.tools.bench import (
    BenchResult,
    Row,
    Workload,
    find_crossover,
    format_table,
    function_workload,
    plot,
    run_bench,
    synthetic_task,
    synthetic_workloads,
)

__all__ = ["BenchResult", "Row", "Workload", "find_crossover", "format_table", "function_workload", "plot",
           "run_bench", "synthetic_task", "synthetic_workloads"]
