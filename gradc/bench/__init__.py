"""Benchmarks of gradc against other engines: workloads, engine adapters, hardware limits and reports.

`gradc bench` (gradc.cli) and `benchmarks/` (pytest-benchmark) both run `gradc.bench.workloads` (W1-W5,
value-and-grad calls) and `gradc.bench.train_step` (W6, a whole Adam training step; also
examples/bench_train_step.py). `gradc bench --ranks N` and benchmarks/bench_distributed.py both run
`gradc.bench.distributed` (W6 and W7 data-parallel on MPI) and `gradc.bench.scaling` (the scaling model).
"""
