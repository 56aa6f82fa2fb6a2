"""torch.distributed on MPI: `init_process_group("mpi")`, ranks, collectives on gradc tensors.

Launch with `mpiexec -n N python train.py` (one machine) or `mpiexec -n N -hostfile hosts python
train.py` (several). Needs mpi4py and an MPI library: `pip install -e ".[distributed]"`.
"""

from gradc.distributed.collectives import (
    ReduceOp,
    Work,
    all_gather,
    all_gather_object,
    all_reduce,
    broadcast,
    broadcast_object_list,
    gather,
    reduce,
    reduce_scatter,
)
from gradc.distributed.process_group import (
    barrier,
    destroy_process_group,
    get_backend,
    get_rank,
    get_world_size,
    init_process_group,
    is_available,
    is_initialized,
    is_mpi_available,
)

__all__ = ["init_process_group", "destroy_process_group", "is_initialized", "is_available", "is_mpi_available",
           "get_rank", "get_world_size", "get_backend", "barrier", "ReduceOp", "Work", "all_reduce", "broadcast",
           "all_gather", "reduce_scatter", "reduce", "gather", "all_gather_object", "broadcast_object_list"]
