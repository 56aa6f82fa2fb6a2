"""Run under `mpiexec -n 2`: `fault_worker.py MODE` makes one rank fail; the job must end, not hang."""

from __future__ import annotations

import sys

import numpy as np

import gradc
import gradc.distributed as dist
from gradc import nn
from gradc.nn.parallel import DistributedDataParallel as DDP


def main(mode: str) -> None:
    if mode == "bad_rank_argument":  # rank 1 raises in init; rank 0 must not wait in init's collectives
        dist.init_process_group("mpi", rank=0)
    dist.init_process_group("mpi")
    r = dist.get_rank()
    if mode == "raise_while_others_wait":
        if r == 1:
            raise RuntimeError("boom on rank 1")
        dist.all_reduce(gradc.ones(3))  # would wait for rank 1 forever
    elif mode == "raise_in_training":
        gradc.manual_seed(0)
        ddp = DDP(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)))
        opt = gradc.optim.SGD(ddp.parameters(), lr=0.1)
        x = np.ones((4, 6), dtype=np.float32)
        for step in range(5):
            if r == 0 and step == 2:
                x = np.ones((4, 7), dtype=np.float32)  # a bug on rank 0: the wrong input width
            opt.zero_grad()
            ddp(gradc.tensor(x)).sum().backward()  # rank 1 waits in the gradient allreduce
            opt.step()
    elif mode == "mismatched_collective":
        dist.all_reduce(gradc.ones(3 + r))
    elif mode == "mismatched_model":
        DDP(nn.Linear(5, 3 + r))
    dist.barrier()
    print("finished normally", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
