"""Data-parallel training with gradc on MPI: DistributedDataParallel + DistributedSampler.

    mpiexec -n 2 python examples/train_ddp.py --quick           # about a second per epoch
    mpiexec -n 2 python examples/train_ddp.py --eager --verify   # PyTorch-style loop; check vs one process
    mpiexec -n 8 -hostfile hosts python examples/train_ddp.py    # several machines (same gradc everywhere)

Needs the `distributed` extra: pip install -e ".[distributed]" (mpi4py and mpich). The data is a synthetic
classification task (a random teacher network labels Gaussian inputs), the same on every rank; each rank
trains on its DistributedSampler shard. --batch-size is per rank, as in PyTorch, so the global batch is
batch-size x ranks. With --verify, rank 0 also trains a plain copy of the model in one process on every
rank's batch together and prints how far the parameters are apart (float32 rounding: ~1e-7).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import gradc
import gradc.distributed as dist
import gradc.nn as nn
from gradc.nn.parallel import DistributedDataParallel as DDP
from gradc.utils.data.distributed import DistributedSampler


def make_data(n: int, features: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, features)).astype(np.float32)
    teacher = rng.standard_normal((features, classes)).astype(np.float32)
    y = np.argmax(np.tanh(x @ teacher) + 0.1 * rng.standard_normal((n, classes)), axis=1)
    return x, y.astype(np.int64)


def make_model(features: int, hidden: int, classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small run: 2 epochs on 2048 samples")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64, help="per rank")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--eager", action="store_true", help="zero_grad/backward/step instead of gradc.compile_step")
    p.add_argument("--verify", action="store_true", help="rank 0 also trains one process on the global batches")
    args = p.parse_args()
    n, epochs = (2048, 2) if args.quick else (16384, args.epochs)

    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = make_data(n, 32, 10)
    gradc.manual_seed(rank)  # different initial weights on purpose: DDP broadcasts rank 0's
    model = DDP(make_model(32, 128, 10))
    optimizer = gradc.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    step = None if args.eager else gradc.compile_step(model, loss_fn, optimizer)
    sampler = DistributedSampler(range(n), shuffle=True, seed=0, drop_last=True)

    reference = None
    if args.verify and rank == 0:
        reference = make_model(32, 128, 10)
        reference.load_state_dict(model.module.state_dict())
        ref_optimizer = gradc.optim.Adam(reference.parameters(), lr=args.lr)
        ref_step = None if args.eager else gradc.compile_step(reference, loss_fn, ref_optimizer)

    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        mine = np.fromiter(sampler, dtype=np.int64)
        everyone = np.random.default_rng(epoch).permutation(n)[:len(mine) * world]  # what every rank shuffled
        started, total, batches = time.perf_counter(), 0.0, len(mine) // args.batch_size
        for b in range(batches):
            idx = mine[b * args.batch_size:(b + 1) * args.batch_size]
            if step is not None:
                loss = float(step(x[idx], y[idx]))
            else:
                optimizer.zero_grad()
                out = loss_fn(model(gradc.tensor(x[idx])), gradc.tensor(y[idx]))
                out.backward()
                optimizer.step()
                loss = out.item()
            total += loss
            if reference is not None:  # rank r's batch b is every world-th index of the global batch b
                whole = everyone[b * args.batch_size * world:(b + 1) * args.batch_size * world]
                if ref_step is not None:
                    ref_step(x[whole], y[whole])
                else:
                    ref_optimizer.zero_grad()
                    loss_fn(reference(gradc.tensor(x[whole])), gradc.tensor(y[whole])).backward()
                    ref_optimizer.step()
        mean_loss = gradc.tensor(total / max(batches, 1))
        dist.all_reduce(mean_loss, op=dist.ReduceOp.AVG)
        with gradc.no_grad():
            accuracy = float((model(gradc.tensor(x)).argmax(1).numpy() == y).mean())
        if rank == 0:
            print(f"epoch {epoch}: loss {mean_loss.item():.4f}  accuracy {accuracy:.3f}  "
                  f"{batches * args.batch_size * world / (time.perf_counter() - started):.0f} samples/s "
                  f"on {world} rank(s)", flush=True)
    if reference is not None:
        diff = max(float(np.abs(a._data - b._data).max()) for a, b in
                   zip(reference.parameters(), model.module.parameters()))
        print(f"max |DDP - one process| over the parameters: {diff:.2e}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
