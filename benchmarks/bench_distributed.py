"""Data-parallel weak scaling on MPI: 1 and 2 ranks, one thread per rank, per-rank batch fixed.

    python benchmarks/bench_distributed.py [--quick] [--ranks 1,2] [--workloads W6,W7] [--json PATH]

The same benchmark as `gradc bench --ranks 2` (gradc/bench/distributed.py: workloads W6 and W7, the
paths local / compiled-buffer / compiled-buckets / eager-local / eager, the bare mpi4py Allreduce of the
same bytes), then the scaling model (gradc/bench/scaling.py) fed with the measured step times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gradc.bench import distributed, scaling  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    p.add_argument("--ranks", default="1,2", help="rank counts to run (default 1,2; 1 always runs)")
    p.add_argument("--workloads", default=",".join(distributed.WORKLOADS), help="comma-separated (default W6,W7)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args()
    doc = distributed.run([int(r) for r in args.ranks.split(",")], args.workloads.split(","), args.quick)
    print(distributed.format_report(doc))
    print()
    print(scaling.table(doc))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
