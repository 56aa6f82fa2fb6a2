"""The op table's coverage, measured by running its checks: `python -m tests.optable.coverage --markdown`.

For every PyTorch name in the table: eager (gradc runs every sample), grad (float64 gradients equal
PyTorch's), native (compiled value_and_grad/compile equals eager), vs PyTorch (eager values equal
PyTorch's on every sample). A name with several rows passes a column only if all its rows pass. The
count printed last is the number of names whose PyTorch-equality check passed in THIS run (the same
check functions the generated pytest tests call), never a hand-written list.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections import OrderedDict

from .dsl import Row, call, check_errors, check_grad, check_node, check_values, make_module, row_samples
from .native import NativeRunner
from .registry import ROWS

PASS, FAIL, NA = "yes", "FAIL", "-"


def _run(check, r: Row, failures: list) -> str:
    try:
        check(r)
    except Exception as e:  # noqa: BLE001  (a failing check is a table entry, not a crash)
        failures.append(f"{r.name} {check.__name__}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        if "-v" in sys.argv:
            traceback.print_exc()
        return FAIL
    return PASS


def check_eager(r: Row) -> int:
    """gradc runs every sample eagerly (no comparison)."""
    for s in row_samples(r):
        module = make_module("gradc", r, False) if r.is_module else None
        call("gradc", r, s, module=module)
    return 1


def measure(rows: list[Row]) -> tuple[OrderedDict, list[str]]:
    table: OrderedDict[str, dict] = OrderedDict()
    failures: list[str] = []
    native = NativeRunner([r for r in rows if r.native])

    def check_native(r: Row) -> int:
        return native.check(r)
    for r in rows:
        cells = {
            "eager": _run(check_eager, r, failures),
            "grad": _run(check_grad, r, failures) if r.grad else NA,
            "native": _run(check_native, r, failures) if r.native else NA,
            "vs PyTorch": _run(check_values, r, failures),
            "errors": _run(check_errors, r, failures) if r.errors is not None else NA,
            "grad_fn": (_run(check_node, r, failures if r.node else []) if r.grad else NA),
        }
        merged = table.setdefault(r.name, {k: NA for k in cells})
        for k, v in cells.items():
            if v == FAIL or (v == PASS and merged[k] == NA):
                merged[k] = v
    return table, failures


def markdown(table: OrderedDict) -> str:
    cols = ["eager", "grad", "native", "vs PyTorch", "grad_fn"]
    lines = ["| name | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, cells in table.items():
        lines.append(f"| `{name}` | " + " | ".join(cells[c] for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the coverage table as markdown")
    parser.add_argument("--min", type=int, default=0, help="exit 1 if fewer names pass against PyTorch")
    parser.add_argument("-v", action="store_true", help="print tracebacks of failing checks")
    args = parser.parse_args(argv)
    table, failures = measure(ROWS)
    if args.markdown:
        print(markdown(table))
        print()
    passing = sum(cells["vs PyTorch"] == PASS for cells in table.values())
    grads = sum(cells["grad"] == PASS for cells in table.values())
    natives = sum(cells["native"] == PASS for cells in table.values())
    nodes = sum(cells["grad_fn"] == PASS for cells in table.values())
    print(f"{passing} PyTorch names with a passing PyTorch-equality test (of {len(table)} names in the table; "
          f"{grads} with float64 gradients equal to PyTorch's, {natives} compiled natively equal to eager, "
          f"{nodes} with PyTorch's grad_fn names)")
    for f in failures:
        print("failed:", f)
    return 0 if passing >= args.min and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
