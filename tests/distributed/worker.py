"""Run under `mpiexec -n N`: every check of gradc.distributed in one launch (tests/test_distributed.py).

`worker.py OUTDIR [check ...]`: each rank writes OUTDIR/rank<r>.json, {check: "ok" | traceback}. A failed
check does not stop the others; checks that communicate are written so that every rank makes the same calls.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import numpy as np

import gradc
import gradc.distributed as dist
from gradc import nn
from gradc.nn.parallel import DistributedDataParallel as DDP
from gradc.utils.data.distributed import DistributedSampler

CHECKS = {}
TOL = dict(rtol=2e-5, atol=2e-6)  # float32 rounding of sums taken in another order


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def rank_world():
    return dist.get_rank(), dist.get_world_size()


# --- collectives against numpy
def _per_rank(r, dtype, shape=(3, 5)):
    return (np.arange(np.prod(shape)).reshape(shape) * (r + 1) - 4 * r).astype(dtype)


@check
def collectives_all_reduce():
    r, n = rank_world()
    for dtype in (np.float32, np.float64, np.int64):
        everyone = np.stack([_per_rank(k, dtype) for k in range(n)])
        expected = {dist.ReduceOp.SUM: everyone.sum(0), dist.ReduceOp.MAX: everyone.max(0),
                    dist.ReduceOp.MIN: everyone.min(0), dist.ReduceOp.PRODUCT: everyone.prod(0)}
        if dtype != np.int64:
            expected[dist.ReduceOp.AVG] = everyone.sum(0) / n
        for op, want in expected.items():
            t = gradc.tensor(_per_rank(r, dtype))
            version = t._version
            assert dist.all_reduce(t, op=op) is None
            np.testing.assert_allclose(t.numpy(), want, rtol=1e-6, err_msg=f"{op} {dtype}")
            assert t.numpy().dtype == dtype and t._version > version
    t = gradc.tensor(_per_rank(r, np.float32))
    work = dist.all_reduce(t, op=dist.ReduceOp.AVG, async_op=True)
    work.wait()
    np.testing.assert_allclose(t.numpy(), np.mean([_per_rank(k, np.float32) for k in range(n)], 0), rtol=1e-6)
    frozen = np.full(3, r + 1.0, dtype=np.float32)
    frozen.flags.writeable = False  # e.g. a read-only result: reduced into a fresh buffer of the same tensor
    t = gradc.Tensor._from_array(frozen)
    dist.all_reduce(t)
    np.testing.assert_array_equal(t.numpy(), np.full(3, n * (n + 1) / 2))
    scalar = gradc.tensor(float(r + 1))  # a 0-d tensor, as scripts all_reduce their loss
    dist.all_reduce(scalar)
    assert scalar.item() == n * (n + 1) / 2


@check
def collectives_broadcast_gather_scatter():
    r, n = rank_world()
    for src in range(n):
        t = gradc.tensor(_per_rank(r, np.float32))
        dist.broadcast(t, src=src)
        np.testing.assert_array_equal(t.numpy(), _per_rank(src, np.float32))
    out = [gradc.zeros(3, 5) for _ in range(n)]
    dist.all_gather(out, gradc.tensor(_per_rank(r, np.float32)))
    for k in range(n):
        np.testing.assert_array_equal(out[k].numpy(), _per_rank(k, np.float32))
    inputs = [gradc.tensor(_per_rank(r, np.float64, (4,)) + 100 * k) for k in range(n)]
    out = gradc.zeros(4, dtype=gradc.float64)
    dist.reduce_scatter(out, inputs, op=dist.ReduceOp.SUM)
    np.testing.assert_allclose(out.numpy(), sum(_per_rank(k, np.float64, (4,)) + 100 * r for k in range(n)))
    out = gradc.zeros(4, dtype=gradc.float64)
    dist.reduce_scatter(out, [gradc.tensor(_per_rank(r, np.float64, (4,)) + 100 * k) for k in range(n)],
                        op=dist.ReduceOp.MAX)
    np.testing.assert_allclose(out.numpy(), np.max([_per_rank(k, np.float64, (4,)) for k in range(n)], 0) + 100 * r)
    dist.barrier()
    assert dist.get_backend() == "mpi" and dist.is_initialized()
    # torchrun's variables, from mpiexec's, for scripts that read them before init_process_group
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == (str(r), str(n)), os.environ
    assert os.environ["LOCAL_RANK"] == str(r) and os.environ["LOCAL_WORLD_SIZE"] == str(n)


@check
def collectives_reduce_gather_objects():
    r, n = rank_world()
    for dst in range(n):
        t = gradc.tensor(_per_rank(r, np.float32))
        dist.reduce(t, dst=dst, op=dist.ReduceOp.SUM)
        want = sum(_per_rank(k, np.float32) for k in range(n)) if r == dst else _per_rank(r, np.float32)
        np.testing.assert_allclose(t.numpy(), want)
    out = [gradc.zeros(3, 5, dtype=gradc.int64) for _ in range(n)] if r == 1 else None
    dist.gather(gradc.tensor(_per_rank(r, np.int64)), out, dst=1)
    if r == 1:
        for k in range(n):
            np.testing.assert_array_equal(out[k].numpy(), _per_rank(k, np.int64))
    objects = [None] * n
    dist.all_gather_object(objects, {"rank": r})
    assert objects == [{"rank": k} for k in range(n)]
    box = [f"from {r}", r]
    dist.broadcast_object_list(box, src=1)
    assert box == ["from 1", 1]


@check
def collectives_mismatch_raises_before_communicating():
    r, n = rank_world()
    cases = [
        lambda: dist.all_reduce(gradc.zeros(3 + r)),  # sizes differ
        lambda: dist.all_reduce(gradc.zeros(4, dtype=gradc.float64 if r else gradc.float32)),  # dtypes differ
        lambda: dist.all_reduce(gradc.zeros(4), op=dist.ReduceOp.MAX if r else dist.ReduceOp.SUM),
        lambda: dist.broadcast(gradc.zeros(2, 3) if r else gradc.zeros(3, 2), src=0),  # same size, other shape
        lambda: dist.all_reduce(gradc.zeros(4)) if r else dist.broadcast(gradc.zeros(4), src=0),
    ]
    for i, case in enumerate(cases):
        try:
            case()
        except ValueError as e:
            assert "nothing was communicated" in str(e) and "rank 1" in str(e), str(e)
        else:
            raise AssertionError(f"case {i} did not raise")
    try:  # a local mistake is caught before any communication too
        dist.all_gather([gradc.zeros(2)], gradc.zeros(2))
    except ValueError as e:
        assert "world size" in str(e)
    # the group still works afterwards
    t = gradc.ones(2)
    dist.all_reduce(t)
    np.testing.assert_array_equal(t.numpy(), [n, n])


# --- DistributedDataParallel
def make_mlp(seed, bias=True):
    gradc.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16, bias=bias), nn.Tanh(), nn.Linear(16, 5))


def data(n_samples=16):
    rng = np.random.default_rng(7)
    return rng.standard_normal((n_samples, 12)).astype(np.float32), rng.integers(0, 5, n_samples)


def max_diff(a, b):
    return max(float(np.abs(p._data - q._data).max()) for p, q in zip(a.parameters(), b.parameters()))


def assert_same_params(ref, model):
    for (name, p), q in zip(ref.named_parameters(), model.parameters()):
        np.testing.assert_allclose(q._data, p._data, **TOL, err_msg=name)


def assert_same_on_every_rank(model):
    for name, p in model.named_parameters():
        copy = gradc.tensor(p._data.copy())
        dist.broadcast(copy, src=0)
        np.testing.assert_array_equal(p._data, copy.numpy(), err_msg=f"{name} differs from rank 0's")


@check
def ddp_broadcasts_rank0_at_construction():
    r, n = rank_world()
    model = make_mlp(100 + r)  # every rank starts from different weights
    model.register_buffer("running", gradc.tensor(np.full(3, float(r), dtype=np.float32)))
    ddp = DDP(model)
    ref = make_mlp(100)
    assert ddp.module is model
    assert max_diff(ref, model) == 0.0
    np.testing.assert_array_equal(model.running.numpy(), np.zeros(3))
    keys = list(ddp.state_dict())
    assert keys == ["module.running", "module.0.weight", "module.0.bias", "module.2.weight", "module.2.bias"], keys
    names = [name for name, _ in ddp.named_parameters()]
    assert names[0] == "module.0.weight"


@check
def ddp_shape_mismatch_names_the_parameter():
    r, n = rank_world()
    gradc.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3 + r))
    try:
        DDP(model)
    except RuntimeError as e:
        assert "'2.weight'" in str(e) and "[3, 8]" in str(e) and "[4, 8]" in str(e), str(e)
    else:
        raise AssertionError("DDP accepted different models")
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3, bias=not r))
    try:
        DDP(model)
    except RuntimeError as e:
        assert "differ" in str(e) or "rank 0 has" in str(e), str(e)
    else:
        raise AssertionError("DDP accepted different models")


def _optimizers():
    return {"sgd_momentum": lambda ps: gradc.optim.SGD(ps, lr=0.1, momentum=0.9),
            "adam": lambda ps: gradc.optim.Adam(ps, lr=1e-2)}


def _train_pair(opt_name, steps, mode, bucket_cap_mb=None):
    """(reference trained on whole batches in one process, this rank's DDP model trained on its shard)."""
    r, n = rank_world()
    X, Y = data(4 * n)
    loss_fn = nn.CrossEntropyLoss()
    ref, model = make_mlp(100), make_mlp(100 + r)
    ddp = DDP(model, bucket_cap_mb=bucket_cap_mb)
    make = _optimizers()[opt_name]
    opt_ref, opt = make(ref.parameters()), make(ddp.parameters())
    shard = slice(r * 4, (r + 1) * 4)
    if mode == "eager":
        for _ in range(steps):
            opt_ref.zero_grad()
            loss_fn(ref(gradc.tensor(X)), gradc.tensor(Y)).backward()
            opt_ref.step()
            opt.zero_grad()
            loss_fn(ddp(gradc.tensor(X[shard])), gradc.tensor(Y[shard])).backward()
            opt.step()
    else:
        step_ref = gradc.compile_step(ref, loss_fn, opt_ref)
        if mode == "compiled":
            step = gradc.compile_step(ddp, loss_fn, opt)
        else:
            from gradc.distributed.compiled import compile_ddp_step
            step = compile_ddp_step(ddp, loss_fn, opt, mode="buckets", bucket_cap_mb=bucket_cap_mb)
        for _ in range(steps):
            step_ref(X, Y)
            step(X[shard], Y[shard])
    return ref, model


@check
def ddp_eager_equals_one_process():
    for opt_name in _optimizers():
        for cap in (None, 0.0005):  # one bucket; buckets of ~500 bytes (several per step)
            ref, model = _train_pair(opt_name, 4, "eager", cap)
            assert max_diff(ref, make_mlp(100)) > 1e-3  # training moved the weights
            assert_same_params(ref, model)
            assert_same_on_every_rank(model)


@check
def ddp_compiled_equals_one_process():
    for opt_name in _optimizers():
        for mode, cap in (("compiled", None), ("buckets", 0.0005)):
            ref, model = _train_pair(opt_name, 4, mode, cap)
            assert max_diff(ref, make_mlp(100)) > 1e-3
            assert_same_params(ref, model)
            assert_same_on_every_rank(model)


@check
def ddp_compiled_cnn_step_equals_one_process():
    """W7 (PyTorch's MNIST example CNN + Adam, as `gradc bench --ranks`): each rank's compiled step on its
    shard; the mean of the ranks' losses is the whole-batch loss of one process, step by step, and the
    weights move as there (relative L2: an elementwise Adam check fails on float32 noise, see cnn_step)."""
    from gradc.bench import cnn_step
    from gradc.distributed.compiled import compile_ddp_step

    r, n = rank_world()
    x, y, state = cnn_step.initial()
    per = 4
    X, Y = x[:per * n], y[:per * n]
    shard = slice(r * per, (r + 1) * per)
    loss_fn = nn.functional.nll_loss
    ref = cnn_step.net(gradc)
    ref.load_state_dict(state)
    step_ref = gradc.compile_step(ref, loss_fn, gradc.optim.Adam(ref.parameters(), lr=1e-3))
    ref_losses = [float(step_ref(X, Y)) for _ in range(3)]
    for mode in ("buffer", "buckets"):
        model = cnn_step.net(gradc)
        model.load_state_dict(state)
        ddp = DDP(model)
        step = compile_ddp_step(ddp, loss_fn, gradc.optim.Adam(ddp.parameters(), lr=1e-3), mode=mode,
                                bucket_cap_mb=0.25)
        assert mode == "buffer" or len(step.segments) > 2, len(step.segments)  # several buckets
        local = [float(step(X[shard], Y[shard])) for _ in range(3)]
        losses = np.mean(_gather(local), axis=0)
        np.testing.assert_allclose(losses, ref_losses, rtol=2e-6, err_msg=f"{mode}: mean of the ranks' losses")
        assert ref_losses[2] < ref_losses[0] - 1e-3  # training moved the loss
        for (name, p), q in zip(ref.named_parameters(), model.parameters()):
            moved = p._data.astype(np.float64) - state[name]
            err = np.linalg.norm(q._data - p._data) / np.linalg.norm(moved)
            # float32 rounding: ~1e-6; gradients summed instead of averaged: 1e-3 (Adam is nearly scale-invariant)
            assert err < 1e-4, f"{mode}: {name} moved {err:.2e} (relative L2) away from the one-process step"
        assert_same_on_every_rank(model)


def _gather(values):
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, values)
    return out


@check
def ddp_compiled_param_groups_and_frozen_parameters():
    r, n = rank_world()
    X, Y = data(4 * n)
    loss_fn = nn.CrossEntropyLoss()
    shard = slice(r * 4, (r + 1) * 4)
    for mode in ("buffer", "buckets"):
        ref, model = make_mlp(100), make_mlp(100 + r)
        ddp = DDP(model)
        for m in (ref, model):
            m[0].bias.requires_grad_(False)  # frozen: neither allreduced nor updated

        def groups(m):
            return [{"params": [m[0].weight, m[0].bias]}, {"params": list(m[2].parameters()), "lr": 0.02}]

        opt_ref = gradc.optim.SGD(groups(ref), lr=0.1, momentum=0.9)
        opt = gradc.optim.SGD(groups(model), lr=0.1, momentum=0.9)
        from gradc.distributed.compiled import compile_ddp_step
        step_ref = gradc.compile_step(ref, loss_fn, opt_ref)
        step = compile_ddp_step(ddp, loss_fn, opt, mode=mode, bucket_cap_mb=0.0003)
        for i in range(4):
            if i == 2:  # a learning rate changed between steps is read by the next step
                opt_ref.param_groups[1]["lr"] = opt.param_groups[1]["lr"] = 0.05
            step_ref(X, Y)
            step(X[shard], Y[shard])
        assert_same_params(ref, model)
        assert_same_on_every_rank(model)
        np.testing.assert_array_equal(model[0].bias._data, make_mlp(100)[0].bias._data)


@check
def ddp_no_sync_accumulation_equals_one_process():
    r, n = rank_world()
    X, Y = data(8 * n)
    loss_fn = nn.CrossEntropyLoss()
    for opt_name, make in _optimizers().items():
        ref, model = make_mlp(100), make_mlp(100 + r)
        ddp = DDP(model)
        opt_ref, opt = make(ref.parameters()), make(ddp.parameters())
        for _ in range(3):  # the same batch every step: the reference on all of it, each rank on its 8
            opt_ref.zero_grad()
            loss_fn(ref(gradc.tensor(X)), gradc.tensor(Y)).backward()
            opt_ref.step()
            opt.zero_grad()
            mine = np.arange(r * 8, (r + 1) * 8)
            micro = [mine[:4], mine[4:]]
            with ddp.no_sync():  # local accumulation: no communication, gradients differ across ranks
                (loss_fn(ddp(gradc.tensor(X[micro[0]])), gradc.tensor(Y[micro[0]])) / 2).backward()
            local = model[0].weight.grad.numpy().copy()
            (loss_fn(ddp(gradc.tensor(X[micro[1]])), gradc.tensor(Y[micro[1]])) / 2).backward()
            assert not np.allclose(local, model[0].weight.grad.numpy())
            opt.step()
        assert_same_params(ref, model)
        assert_same_on_every_rank(model)
    step = gradc.compile_step(ddp, loss_fn, opt)
    with ddp.no_sync():
        try:
            step(X[:4], Y[:4])
        except RuntimeError as e:
            assert "no_sync" in str(e)
        else:
            raise AssertionError("a compiled step ran under no_sync")


@check
def ddp_with_distributed_sampler_equals_one_process():
    r, n = rank_world()
    X, Y = data(24)
    loss_fn = nn.CrossEntropyLoss()
    per_rank = 3
    for opt_name, make in _optimizers().items():
        for compiled in (False, True):
            ref, model = make_mlp(100), make_mlp(100 + r)
            ddp = DDP(model)
            opt_ref, opt = make(ref.parameters()), make(ddp.parameters())
            sampler = DistributedSampler(range(len(X)), shuffle=True, seed=5)
            steps = [gradc.compile_step(ref, loss_fn, opt_ref), gradc.compile_step(ddp, loss_fn, opt)] \
                if compiled else None
            for epoch in range(2):
                sampler.set_epoch(epoch)
                order = np.random.default_rng(5 + epoch).permutation(len(X))  # what every rank shuffles
                mine = list(sampler)
                assert len(mine) == len(sampler) == len(X) // n
                for k in range(len(mine) // per_rank):
                    idx = mine[k * per_rank:(k + 1) * per_rank]
                    whole = order[k * per_rank * n:(k + 1) * per_rank * n]  # every rank's batch k together
                    if compiled:
                        steps[0](X[whole], Y[whole])
                        steps[1](X[idx], Y[idx])
                        continue
                    opt_ref.zero_grad()
                    loss_fn(ref(gradc.tensor(X[whole])), gradc.tensor(Y[whole])).backward()
                    opt_ref.step()
                    opt.zero_grad()
                    loss_fn(ddp(gradc.tensor(X[idx])), gradc.tensor(Y[idx])).backward()
                    opt.step()
            assert_same_params(ref, model)
            assert_same_on_every_rank(model)


@check
def ddp_unused_parameter_gets_the_same_grad_everywhere():
    r, n = rank_world()

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return self.b(x) if r else self.a(x)  # rank 0 never uses b, the others never use a

    gradc.manual_seed(0)
    ddp = DDP(TwoHeads())
    ddp(gradc.ones(4, 3)).sum().backward()
    for name, p in ddp.module.named_parameters():
        assert p.grad is not None, name
        copy = gradc.tensor(p.grad._data.copy())
        dist.broadcast(copy, src=0)
        np.testing.assert_array_equal(p.grad.numpy(), copy.numpy(), err_msg=name)


def main() -> None:
    dist.init_process_group("mpi")
    rank = dist.get_rank()
    outdir, selected = sys.argv[1], sys.argv[2:] or list(CHECKS)
    results = {}
    for name in selected:
        try:
            CHECKS[name]()
            results[name] = "ok"
        except Exception:
            results[name] = traceback.format_exc()
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
