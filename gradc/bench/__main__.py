"""Child processes of `gradc bench`: `python -m gradc.bench child ...`, `... limits ...` and, one per MPI rank
under `mpiexec`, `... distributed --out PATH ...` (gradc.bench.distributed)."""

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradc.bench")
    parser.add_argument("what", choices=("child", "limits", "distributed"))
    parser.add_argument("--engine", default="")
    parser.add_argument("--workloads", default="")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--first-call-only", action="store_true")
    parser.add_argument("--out", default="", help="distributed: where rank 0 writes the JSON document")
    args = parser.parse_args(argv)
    if args.what == "distributed":
        from gradc.bench import distributed
        distributed.worker(args.out, [w for w in args.workloads.split(",") if w], args.quick)
        return 0
    from gradc.bench import runner
    if args.what == "child":
        return runner.child_main(args.engine, args.workloads, args.quick, args.threads, args.first_call_only)
    from gradc.bench import limits, workloads
    runner.limit_cpus(args.threads)
    print("LIMITS " + json.dumps(limits.measure(workloads.select(args.workloads), args.threads, args.quick)),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
