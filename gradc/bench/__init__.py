"""Benchmarks of gradc against other engines: workloads, engine adapters, hardware limits and reports.

`gradc bench` (gradc.cli) and `benchmarks/` (pytest-benchmark) both run `gradc.bench.workloads`.
"""
