"""Native checks of op-table rows, compiled in batches.

Each row contributes plans (its traced sample: forward outputs, and for differentiable rows the loss
sum(out * cotangent) with its gradients; its NaN/inf sample: forward outputs). A batch of rows becomes
ONE compiled forward function returning every plan's outputs and ONE value_and_grad of the sum of their
losses (each row's inputs appear only in its own loss, so each gradient is that row's own). Every row is
then checked against its own eager results. A batch that fails to build falls back to compiling its rows
one by one, so a failure is always reported on the row that causes it. Batching is only about compile
time: some 400 small compiles cost minutes on a loaded machine, a few dozen large ones seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import gradc

from .dsl import (
    Row,
    Sample,
    _cotangents,
    assert_same,
    convert,
    flat_outputs,
    float_tensors,
    interpreted,
    lookup,
    make_module,
    native_sample,
    row_samples,
)

BATCH = 24  # rows per compiled batch


@dataclass
class Plan:
    row: Row
    arrays: list[np.ndarray]
    forward: Callable[..., list]  # tensors -> flat list of output tensors
    outputs: list  # eager outputs (numpy)
    floats: list[int] = field(default_factory=list)  # arrays differentiated by `loss`
    loss: Callable[..., Any] | None = None
    total: float = 0.0  # eager loss
    grads: list = field(default_factory=list)  # eager gradients, one per `floats`


def _plan(r: Row, s: Sample, grad: bool, wide: bool = True) -> Plan:
    positions = [i for i, a in enumerate(s.args) if isinstance(a, np.ndarray)]
    arrays = [s.args[i].astype(np.float64) if s.args[i].dtype.kind == "f" and wide else s.args[i]
              for i in positions]
    module = make_module("gradc", r, True, make_module("torch", r, True)) if r.is_module else None
    fn = module if r.is_module else lookup("gradc", r.name)
    kwargs = {k: convert("gradc", v, True, False, []) for k, v in s.kwargs.items()}
    fixed = [convert("gradc", a, True, False, []) if not isinstance(a, np.ndarray) else a for a in s.args]

    def rebuild(tensors: tuple) -> tuple:
        args = list(fixed)
        for i, t in zip(positions, tensors):
            args[i] = t
        return tuple(args)

    def forward(*tensors: Any) -> list:
        out = fn(*rebuild(tensors), **kwargs)
        return [o for o in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(o, gradc.Tensor)]

    eager_args = [gradc.from_numpy(a.copy()) for a in arrays]
    floats = [k for k, a in enumerate(arrays) if a.dtype.kind == "f" and (r.wrt is None or positions[k] in r.wrt)]
    if not (grad and floats):
        return Plan(r, arrays, forward, flat_outputs(forward(*eager_args)))
    for k in floats:
        eager_args[k].requires_grad_(True)
    eager_out = forward(*eager_args)
    cts = [gradc.from_numpy(c) for c in _cotangents(float_tensors(eager_out), 0)]

    def loss(*tensors: Any) -> Any:
        total = None
        for o, c in zip(float_tensors(forward(*tensors)), cts):
            term = (o * c).sum()
            total = term if total is None else total + term
        return total

    total = loss(*eager_args)
    total.backward()
    grads = [np.zeros(arrays[k].shape) if eager_args[k].grad is None else eager_args[k].grad.numpy() for k in floats]
    return Plan(r, arrays, forward, flat_outputs(eager_out), floats, loss, float(total.detach().numpy()), grads)


def plans(r: Row) -> list[Plan]:
    with interpreted():  # the eager side of the comparison
        out = [_plan(r, native_sample(r), r.grad)]
        # the NaN/inf sample in float32: the float32 lowering (approximations, rounding guards) on the edge values
        out += [_plan(r, s, False, wide=False) for s in row_samples(r) if s.special]
    return out


def _run(batch: list[Plan]) -> list[tuple[list, list]]:
    """Compile the plans together; (native outputs, native gradients) per plan."""
    offsets, arrays = [], []
    for p in batch:
        offsets.append(len(arrays))
        arrays += p.arrays

    def forward_all(*tensors: Any) -> tuple:
        outs: list = []
        for p, off in zip(batch, offsets):
            outs += p.forward(*tensors[off:off + len(p.arrays)])
        return tuple(outs)

    compiled = gradc.compile(forward_all)(*arrays)
    compiled = list(compiled) if isinstance(compiled, (tuple, list)) else [compiled]
    graded = [(p, off) for p, off in zip(batch, offsets) if p.loss is not None]
    grads_by_plan: dict[int, list] = {}
    if graded:
        def loss_all(*tensors: Any) -> Any:
            total = None
            for p, off in graded:
                term = p.loss(*tensors[off:off + len(p.arrays)])
                total = term if total is None else total + term
            return total

        argnums = tuple(off + k for p, off in graded for k in p.floats)
        value, grads = gradc.value_and_grad(loss_all, argnums=argnums)(*arrays)
        want = sum(p.total for p, _ in graded)
        np.testing.assert_allclose(value, want, rtol=1e-9, atol=1e-12, err_msg="batched loss value")
        grads = list(grads)
        for p, _ in graded:
            grads_by_plan[id(p)], grads = grads[:len(p.floats)], grads[len(p.floats):]
    results, start = [], 0
    for p in batch:
        n = len(p.outputs)
        results.append(([np.asarray(a) for a in compiled[start:start + n]], grads_by_plan.get(id(p), [])))
        start += n
    return results


def _verify(p: Plan, outputs: list, grads: list) -> None:
    float32 = any(a.dtype == np.float32 for a in p.arrays)
    # float32: within the stated error of the native exp/log/tanh approximations (a few ulp)
    rtol, atol = (max(p.row.rtol, 1e-5), max(p.row.atol, 1e-6)) if float32 else (1e-9, 1e-12)
    assert_same(outputs, p.outputs, rtol, atol, f"{p.row.name} native")
    for k, g, want in zip(p.floats, grads, p.grads):
        np.testing.assert_allclose(g, want, rtol=1e-8, atol=1e-11, err_msg=f"{p.row.name} native gradient {k}")


def _fingerprint(s: Sample) -> tuple:
    arrays = tuple(a.tobytes() + f"{a.dtype}{a.shape}".encode() if isinstance(a, np.ndarray) else repr(a)
                   for a in s.args)
    return arrays + (repr(sorted(s.kwargs.items())),)


def _shared_key(r: Row) -> tuple:
    """Rows running the very same gradc function on the very same samples (torch.exp and Tensor.exp, where
    Tensor.exp is gradc.exp) trace to the same program: their native check is done once for both."""
    parts = r.name.split(".")
    target = None
    if len(parts) == 2 and parts[0] == "torch":
        target = getattr(gradc, parts[1], None)
    elif len(parts) == 2 and parts[0] == "Tensor":
        target = getattr(gradc.Tensor, parts[1], None)
    if target is None or not callable(target) or r.is_module:
        return (id(r),)
    return (id(target), r.grad, r.wrt, tuple(_fingerprint(s) for s in row_samples(r)))


class NativeRunner:
    """Runs the native checks of `rows` in compiled batches (lazily, once); `check(row)` reports one row."""

    def __init__(self, rows: list[Row]) -> None:
        self.results: dict[int, Any] = {}  # id(row) -> number of plans checked, or the exception
        self.same: dict[int, Row] = {}  # id(row) -> the row whose identical check stands for it
        first: dict[tuple, Row] = {}
        self.rows = []
        for r in rows:
            key = _shared_key(r)
            if key in first:
                self.same[id(r)] = first[key]
            else:
                first[key] = r
                self.rows.append(r)

    def _measure(self, batch_rows: list[Row]) -> None:
        prepared: list[tuple[Row, list[Plan]]] = []
        for r in batch_rows:
            try:
                prepared.append((r, plans(r)))
            except Exception as e:  # noqa: BLE001  (reported on the row by check())
                self.results[id(r)] = e
        flat = [p for _, ps in prepared for p in ps]
        try:
            outcome = dict(zip(map(id, flat), _run(flat))) if flat else {}
        except Exception:  # noqa: BLE001  (some row breaks the batch: compile them one by one)
            outcome = None
        for r, ps in prepared:
            try:
                for p in ps:
                    native, grads = outcome[id(p)] if outcome is not None else _run([p])[0]
                    _verify(p, native, grads)
                self.results[id(r)] = len(ps)
            except Exception as e:  # noqa: BLE001
                self.results[id(r)] = e

    def check(self, r: Row) -> int:
        r = self.same.get(id(r), r)
        if id(r) not in self.results:
            index = next(i for i, x in enumerate(self.rows) if x is r)
            start = index - index % BATCH
            self._measure(self.rows[start:start + BATCH])
        result = self.results[id(r)]
        if isinstance(result, BaseException):
            raise result
        return result
