"""The data-parallel scaling model (gradc/bench/scaling.py) on saved results.

    python benchmarks/scaling_model.py RESULTS.json

RESULTS.json from `python benchmarks/bench_distributed.py --json PATH` or `gradc bench --ranks 2 --json PATH`.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gradc.bench.scaling import table  # noqa: E402

if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(table(json.load(f)))
