"""DistributedDataParallel: every rank runs the model on its shard; backward averages the gradients.

At construction the ranks compare their parameter names, shapes and dtypes (an error names the first
parameter that differs) and rank 0's parameters and buffers are broadcast, so ranks may start from
different initial weights. Gradients are grouped into buckets of about `bucket_cap_mb` in reverse
parameter order (PyTorch's and Horovod's order: the last layers' gradients are ready first in a
backward). A post-accumulate-grad hook on each parameter packs its bucket and starts a nonblocking
MPI Iallreduce as soon as every gradient of the bucket is accumulated; when the backward ends, the
remaining buckets are started, all are waited for, divided by the world size and copied back into
.grad. Parameters without a gradient on this rank contribute zeros, so every rank ends with the same
.grad (and the same optimizer step). `no_sync()` skips the allreduce for gradient accumulation.

`gradc.compile_step(ddp_model, loss_fn, optimizer)` gives a native step that allreduces between the
compiled backward and the compiled optimizer update (gradc.distributed.compiled).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import numpy as np

from gradc.autograd import hooks
from gradc.distributed import process_group as pg
from gradc.nn.module import Module
from gradc.tensor import Tensor

__all__ = ["DistributedDataParallel"]


class Bucket:
    """Parameters whose gradients travel in one flat buffer."""

    def __init__(self, params: list[tuple[str, Tensor]], dtype: np.dtype) -> None:
        self.names = [n for n, _ in params]
        self.params = [p for _, p in params]
        sizes = [p._data.size for p in self.params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        self.buffer = np.zeros(self.offsets[-1], dtype=dtype)
        self.views = [self.buffer[a:b].reshape(p.shape) for a, b, p in
                      zip(self.offsets[:-1], self.offsets[1:], self.params)]
        self.ready = 0
        self.request: Any = None

    @property
    def nbytes(self) -> int:
        return self.buffer.nbytes

    def pack(self) -> None:
        for p, view in zip(self.params, self.views):
            if p.grad is None:
                view[...] = 0
            else:
                np.copyto(view, p.grad._data)

    def unpack(self, world_size: int) -> None:
        np.divide(self.buffer, world_size, out=self.buffer)
        for p, view in zip(self.params, self.views):
            if p.grad is None:
                p.grad = Tensor._from_array(view.copy())
            else:
                np.copyto(p.grad._data, view)
                p.grad._bump_version()


def make_buckets(named: list[tuple[str, Tensor]], cap_bytes: int) -> list[Bucket]:
    """Greedy buckets of at most cap_bytes (a larger tensor gets its own), in reverse parameter order."""
    buckets, current, size, dtype = [], [], 0, None
    for name, p in reversed(named):
        nbytes = p._data.nbytes
        if current and (size + nbytes > cap_bytes or p._data.dtype != dtype):
            buckets.append(Bucket(current, dtype))
            current, size = [], 0
        current.append((name, p))
        size += nbytes
        dtype = p._data.dtype
    if current:
        buckets.append(Bucket(current, dtype))
    return buckets


class DistributedDataParallel(Module):
    """torch.nn.parallel.DistributedDataParallel for the MPI process group (CPU, one model per rank)."""

    def __init__(self, module: Module, device_ids: Any = None, output_device: Any = None, dim: int = 0,
                 broadcast_buffers: bool = True, process_group: Any = None, bucket_cap_mb: float | None = None,
                 find_unused_parameters: bool = False, check_reduction: bool = False,
                 gradient_as_bucket_view: bool = False, static_graph: bool = False, **kwargs: Any) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel needs a gradc.nn.Module, got {type(module).__name__}")
        comm = pg.comm()  # ValueError before init_process_group, as PyTorch
        self.module = module
        self.broadcast_buffers = broadcast_buffers
        self.require_backward_grad_sync = True
        self.bucket_cap_mb = 25.0 if bucket_cap_mb is None else float(bucket_cap_mb)
        self.world_size = comm.Get_size()
        named = _unique(module.named_parameters())
        self._check_same_model(named, _unique(module.named_buffers()))
        self._sync_module_states()
        trainable = [(n, p) for n, p in named if p.requires_grad]
        self._buckets = make_buckets(trainable, int(self.bucket_cap_mb * 1024 * 1024))
        self._bucket_of = {id(p): b for b in self._buckets for p in b.params}
        self._pending = False
        self.comm_seconds = 0.0  # time in MPI calls of the gradient allreduce, summed (benchmarks read it)
        self._handles = [p.register_post_accumulate_grad_hook(self._grad_ready) for _, p in trainable]

    # --- construction
    def _check_same_model(self, params: list[tuple[str, Tensor]], buffers: list[tuple[str, Tensor]]) -> None:
        """Every rank has the same parameter and buffer names, shapes and dtypes, or every rank raises."""
        mine = [(kind, n, tuple(t.shape), t._data.dtype.str) for kind, table in (("parameter", params),
                ("buffer", buffers)) for n, t in table]
        everyone = pg.comm().allgather(mine)
        for rank, theirs in enumerate(everyone):
            if theirs == everyone[0]:
                continue
            for a, b in zip(everyone[0], theirs):
                if a != b:
                    if a[:2] != b[:2]:
                        raise RuntimeError(f"DistributedDataParallel: the models differ across ranks: rank 0 has "
                                           f"{a[0]} '{a[1]}' where rank {rank} has {b[0]} '{b[1]}'")
                    raise RuntimeError(f"DistributedDataParallel: {a[0]} '{a[1]}' has shape {list(a[2])} "
                                       f"({np.dtype(a[3]).name}) on rank 0 but shape {list(b[2])} "
                                       f"({np.dtype(b[3]).name}) on rank {rank}; every rank must build the "
                                       "same model")
            raise RuntimeError(f"DistributedDataParallel: rank 0 has {len(everyone[0])} parameters and buffers, "
                               f"rank {rank} has {len(theirs)}; every rank must build the same model")

    def _sync_module_states(self) -> None:
        """Broadcast rank 0's parameters and buffers to every rank (in place)."""
        comm = pg.comm()
        for _, t in [*_unique(self.module.named_parameters()), *_unique(self.module.named_buffers())]:
            comm.Bcast(t._data, root=0)
            t._bump_version()

    # --- forward and backward
    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        if self.broadcast_buffers and self.world_size > 1:
            buffers = _unique(self.module.named_buffers())
            if buffers:
                comm = pg.comm()
                for _, b in buffers:
                    comm.Bcast(b._data, root=0)
        return self.module(*inputs, **kwargs)

    def _grad_ready(self, p: Tensor) -> None:
        if not self.require_backward_grad_sync:
            return
        if not self._pending:
            self._pending = True
            hooks.queue_callback(self._finish_backward)
        bucket = self._bucket_of[id(p)]
        bucket.ready += 1
        if bucket.ready == len(bucket.params):
            self._start(bucket)

    def _start(self, bucket: Bucket) -> None:
        MPI = pg.mpi()
        bucket.pack()
        t0 = time.perf_counter()
        bucket.request = pg.comm().Iallreduce(MPI.IN_PLACE, bucket.buffer, MPI.SUM)
        self.comm_seconds += time.perf_counter() - t0

    def _finish_backward(self) -> None:
        """End of a synchronized backward: start buckets some of whose gradients never came, then wait."""
        self._pending = False
        for bucket in self._buckets:
            if bucket.request is None:
                self._start(bucket)
        for bucket in self._buckets:
            t0 = time.perf_counter()
            bucket.request.Wait()
            self.comm_seconds += time.perf_counter() - t0
            bucket.request, bucket.ready = None, 0
            bucket.unpack(self.world_size)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside accumulate .grad locally; the first one after it averages the sum."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def extra_repr(self) -> str:
        return ""


def _unique(named: Iterator[tuple[str, Tensor]]) -> list[tuple[str, Tensor]]:
    seen, out = set(), []
    for name, t in named:
        if id(t) not in seen:
            seen.add(id(t))
            out.append((name, t))
    return out
